-- name: passk_curve
-- description: pass@k (or success@k, maj@k) against k for every ok generation run, labelled by its
--   intervention (head_set; 'none' for a plain run), for a checkpoint, a lineage or everything.
-- param: checkpoint: str = NULL        Checkpoint (id, lineage@step or name); NULL: every one.
-- param: lineage: str = NULL           Only checkpoints of this lineage.
-- param: task: str = NULL              Benchmark task id or name; NULL: every benchmark.
-- param: metric: str = 'pass@k' {pass@k|success@k|maj@k}  Which curve.
-- returns: run_id, checkpoint, step, task, intervention, metric, k, value, n
SELECT r.run_id, c.name AS checkpoint, c.step, t.name AS task,
       coalesce(s.head_set, 'none') AS intervention, em.metric, em.k, em.value, em.n
FROM runs r
JOIN checkpoints c USING (checkpoint_id)
JOIN tasks t USING (task_id)
JOIN eval_metrics em USING (run_id)
LEFT JOIN hd_head_sets() s USING (run_id)
WHERE r.kind = 'generation' AND r.status = 'ok' AND em.metric = $metric AND em.k IS NOT NULL
  AND ($checkpoint IS NULL OR r.checkpoint_id = hd_checkpoint($checkpoint))
  AND ($lineage IS NULL OR c.lineage = $lineage)
  AND r.task_id IN (SELECT task_id FROM hd_tasks($task))
ORDER BY c.lineage, c.step, c.name, t.name, s.head_set NULLS FIRST, r.run_id, em.k;
