-- name: ablation_table
-- description: Benchmark metric with and without each head set: every ok generation run with
--   interventions beside its matching baseline, the latest ok plain generation run with the same
--   checkpoint_id, the same task_id and the same config once the intervention keys (intervention,
--   interventions, head_set, label) are removed, i.e. the same sampling settings. Runs with no
--   matching baseline are listed with baseline NULL.
-- param: checkpoint: str = NULL        Checkpoint (id, lineage@step or name); NULL: every checkpoint.
-- param: task: str = NULL              Benchmark task id or name; NULL: every benchmark.
-- param: metric: str = 'accuracy'      eval_metrics metric (accuracy, pass@k, maj@k, success@k).
-- param: k: int = NULL                 Only this k (NULL: every k, including NULL for accuracy).
-- returns: checkpoint_id, checkpoint, task, head_set, kind, factor, n_heads, heads, metric, k,
--   value, baseline, delta, n, baseline_n, run_id, baseline_run
WITH treated AS (
    SELECT r.run_id, r.checkpoint_id, r.task_id, r.config, s.heads, s.n_heads, s.kind, s.factor, s.head_set
    FROM runs r JOIN hd_head_sets() s USING (run_id)
    WHERE r.kind = 'generation' AND r.status = 'ok'
      AND ($checkpoint IS NULL OR r.checkpoint_id = hd_checkpoint($checkpoint))
      AND r.task_id IN (SELECT task_id FROM hd_tasks($task))
),
matched AS (SELECT * FROM hd_baselines() WHERE run_id IN (SELECT run_id FROM treated))
SELECT t.checkpoint_id, k.name AS checkpoint, tk.name AS task, t.head_set, t.kind, t.factor, t.n_heads, t.heads,
       em.metric, em.k, em.value, eb.value AS baseline, em.value - eb.value AS delta,
       em.n, eb.n AS baseline_n, t.run_id, m.baseline_run
FROM treated t
JOIN checkpoints k USING (checkpoint_id)
JOIN tasks tk USING (task_id)
JOIN eval_metrics em ON em.run_id = t.run_id
LEFT JOIN matched m ON m.run_id = t.run_id
LEFT JOIN eval_metrics eb ON eb.run_id = m.baseline_run AND eb.metric = em.metric AND eb.k IS NOT DISTINCT FROM em.k
WHERE ($metric IS NULL OR em.metric = $metric) AND ($k IS NULL OR em.k = $k)
ORDER BY k.name, t.checkpoint_id, tk.name, t.head_set, em.metric, em.k NULLS FIRST, t.run_id;
