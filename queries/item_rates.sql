-- name: item_rates
-- description: Per problem of each given generation run: its samples, how many were graded
--   correct (ungraded samples count as wrong, as in accuracy) and the share correct, with the
--   problem's level (task_items). The mean of rate over a run's problems is its accuracy; reports
--   bootstrap over problems with it.
-- param: runs: str                     Comma-separated run ids, e.g. '12,14'.
-- returns: run_id, item_id, level, samples, correct, rate
SELECT g.run_id, g.item_id, any_value(ti.level) AS level, count(*) AS samples,
       count(*) FILTER (WHERE coalesce(g.correct, false)) AS correct,
       avg(CASE WHEN coalesce(g.correct, false) THEN 1.0 ELSE 0.0 END) AS rate
FROM generations g
JOIN runs r USING (run_id)
LEFT JOIN task_items ti ON ti.task_id = r.task_id AND ti.item_id = g.item_id
WHERE list_contains(list_transform(string_split($runs, ','), x -> TRY_CAST(trim(x) AS BIGINT)), g.run_id)
GROUP BY g.run_id, g.item_id
ORDER BY g.run_id, g.item_id;
