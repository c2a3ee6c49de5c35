-- name: ablation_by_level
-- description: An ablation's effect by difficulty: per intervened generation run with a matching
--   baseline (as in ablation_table) and per level of its benchmark's items (task_items.level), the
--   accuracy with and without the head set over that level's problems and the difference. A
--   problem's accuracy is the share of its samples graded correct (ungraded count as wrong), over
--   the problems both runs sampled; problems without a level form level NULL. Levels are ordered
--   by the number in them (1, 'Level 2', ...), then by name. The report adds a paired bootstrap
--   interval per level (the item_rates of both runs).
-- param: checkpoint: str = NULL        Checkpoint (id, lineage@step or name); NULL: every checkpoint.
-- param: task: str = NULL              Benchmark task id or name; NULL: every benchmark.
-- returns: checkpoint_id, checkpoint, task, head_set, kind, factor, heads, level, n, value,
--   baseline, delta, run_id, baseline_run
WITH pairs AS (
    SELECT r.run_id, m.baseline_run, r.checkpoint_id, r.task_id, s.head_set, s.kind, s.factor, s.heads
    FROM runs r
    JOIN hd_head_sets() s USING (run_id)
    JOIN hd_baselines() m USING (run_id)
    WHERE ($checkpoint IS NULL OR r.checkpoint_id = hd_checkpoint($checkpoint))
      AND r.task_id IN (SELECT task_id FROM hd_tasks($task))
),
rates AS (
    SELECT g.run_id, g.item_id, avg(CASE WHEN coalesce(g.correct, false) THEN 1.0 ELSE 0.0 END) AS rate
    FROM generations g
    WHERE g.run_id IN (SELECT run_id FROM pairs UNION SELECT baseline_run FROM pairs)
    GROUP BY ALL
),
items AS (
    SELECT p.*, ti.level, a.rate, b.rate AS base_rate
    FROM pairs p
    JOIN rates a ON a.run_id = p.run_id
    JOIN rates b ON b.run_id = p.baseline_run AND b.item_id = a.item_id
    LEFT JOIN task_items ti ON ti.task_id = p.task_id AND ti.item_id = a.item_id
)
SELECT i.checkpoint_id, k.name AS checkpoint, t.name AS task, i.head_set, i.kind, i.factor, i.heads, i.level,
       count(*) AS n, avg(i.rate) AS value, avg(i.base_rate) AS baseline, avg(i.rate) - avg(i.base_rate) AS delta,
       i.run_id, i.baseline_run
FROM items i
JOIN checkpoints k USING (checkpoint_id)
JOIN tasks t USING (task_id)
GROUP BY i.checkpoint_id, k.name, t.name, i.head_set, i.kind, i.factor, i.heads, i.level, i.run_id, i.baseline_run
ORDER BY k.name, i.checkpoint_id, t.name, i.head_set, i.run_id,
         TRY_CAST(regexp_extract(i.level, '(\d+)', 1) AS INTEGER) NULLS LAST, i.level NULLS LAST;
