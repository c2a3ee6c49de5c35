-- name: benchmark_trajectory
-- description: A benchmark metric per benchmark per checkpoint of a lineage, in step order, from
--   each checkpoint's plain generation run (the latest ok generation run without interventions on
--   that checkpoint and benchmark). With include_base the lineage's base (parent of its earliest
--   checkpoint) comes first, is_base = true.
-- param: lineage: str                  Lineage name.
-- param: task: str = NULL              Benchmark task id or name; NULL: every benchmark.
-- param: metric: str = 'accuracy'      eval_metrics metric.
-- param: k: int = NULL                 Only this k (NULL: every k).
-- param: include_base: bool = true     Start with the lineage's base checkpoint.
-- returns: task_id, task, is_base, step, checkpoint, metric, k, value, n, run_id
WITH ck AS (
    SELECT checkpoint_id, name, step, false AS is_base FROM checkpoints WHERE lineage = $lineage
    UNION ALL
    SELECT checkpoint_id, name, step, true AS is_base FROM checkpoints
    WHERE $include_base AND checkpoint_id = hd_lineage_base($lineage) AND lineage <> $lineage
)
SELECT g.task_id, t.name AS task, ck.is_base, ck.step, ck.name AS checkpoint,
       em.metric, em.k, em.value, em.n, g.run_id
FROM ck
JOIN hd_plain_generations() g USING (checkpoint_id)
JOIN tasks t ON t.task_id = g.task_id
JOIN eval_metrics em ON em.run_id = g.run_id
WHERE g.task_id IN (SELECT task_id FROM hd_tasks($task))
  AND em.metric = $metric AND ($k IS NULL OR em.k = $k)
ORDER BY t.name, g.task_id, em.k NULLS FIRST, ck.is_base DESC, ck.step, ck.checkpoint_id;
