-- name: newly_solved_missed
-- description: Per checkpoint of a lineage versus a base, on each benchmark: items solved now and
--   not by the base (newly_solved) and missed now but solved by the base (newly_missed), from
--   the plain generation runs. An item is solved when the fraction of its correct samples is at
--   least solved_at. failure_tag is the most frequent failure tag among the incorrect samples of
--   the side that failed (the checkpoint for newly_missed, the base for newly_solved); ties go to
--   the alphabetically first tag.
-- param: lineage: str                  Lineage name.
-- param: base: str = NULL              Base checkpoint; NULL: the parent of the lineage's earliest checkpoint.
-- param: task: str = NULL              Benchmark task id or name; NULL: every benchmark.
-- param: solved_at: float = 0.5        Fraction of correct samples at which an item counts as solved.
-- returns: task_id, task, step, checkpoint, change, item_id, level, rate, base_rate, n_samples,
--   base_n_samples, failure_tag, failure_tags
WITH base AS (
    SELECT CASE WHEN $base IS NULL THEN hd_lineage_base($lineage) ELSE hd_checkpoint($base) END AS base_id
),
runs_ AS (
    SELECT g.run_id, g.checkpoint_id, g.task_id
    FROM hd_plain_generations() g
    WHERE g.task_id IN (SELECT task_id FROM hd_tasks($task))
      AND (g.checkpoint_id IN (SELECT checkpoint_id FROM checkpoints WHERE lineage = $lineage)
           OR g.checkpoint_id = (SELECT base_id FROM base))
),
rates AS (
    SELECT r.run_id, r.checkpoint_id, r.task_id, x.item_id,
           avg(CASE WHEN x.correct THEN 1.0 ELSE 0.0 END) AS rate, count(*) AS n_samples
    FROM runs_ r JOIN generations x USING (run_id)
    GROUP BY ALL
),
tag_counts AS (
    SELECT x.run_id, x.item_id, x.failure_tag, count(*) AS n
    FROM runs_ r JOIN generations x USING (run_id)
    WHERE NOT coalesce(x.correct, false) AND x.failure_tag IS NOT NULL
    GROUP BY ALL
),
tags AS (
    SELECT run_id, item_id,
           arg_min(failure_tag, (-n, failure_tag)) AS failure_tag,
           string_agg(failure_tag || ':' || CAST(n AS VARCHAR), ',' ORDER BY n DESC, failure_tag) AS failure_tags
    FROM tag_counts GROUP BY ALL
),
cmp AS (
    SELECT c.task_id, c.checkpoint_id, c.item_id, c.rate, b.rate AS base_rate, c.n_samples,
           b.n_samples AS base_n_samples, c.run_id, b.run_id AS base_run,
           CASE WHEN c.rate >= $solved_at AND b.rate < $solved_at THEN 'newly_solved'
                WHEN c.rate < $solved_at AND b.rate >= $solved_at THEN 'newly_missed' END AS change
    FROM rates c
    JOIN rates b ON b.task_id = c.task_id AND b.item_id = c.item_id
                AND b.checkpoint_id = (SELECT base_id FROM base)
    WHERE c.checkpoint_id IN (SELECT checkpoint_id FROM checkpoints WHERE lineage = $lineage)
      AND c.checkpoint_id <> (SELECT base_id FROM base)
)
SELECT m.task_id, t.name AS task, k.step, k.name AS checkpoint, m.change, m.item_id, ti.level,
       m.rate, m.base_rate, m.n_samples, m.base_n_samples,
       CASE WHEN m.change = 'newly_missed' THEN tc.failure_tag ELSE tb.failure_tag END AS failure_tag,
       CASE WHEN m.change = 'newly_missed' THEN tc.failure_tags ELSE tb.failure_tags END AS failure_tags
FROM cmp m
JOIN checkpoints k USING (checkpoint_id)
JOIN tasks t USING (task_id)
LEFT JOIN task_items ti ON ti.task_id = m.task_id AND ti.item_id = m.item_id
LEFT JOIN tags tc ON tc.run_id = m.run_id AND tc.item_id = m.item_id
LEFT JOIN tags tb ON tb.run_id = m.base_run AND tb.item_id = m.item_id
WHERE m.change IS NOT NULL
ORDER BY t.name, m.task_id, k.step, k.checkpoint_id, m.change DESC, m.item_id;
