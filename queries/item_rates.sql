-- name: item_rates
-- description: Per problem of each given generation run: its samples, how many were graded
--   correct (ungraded samples count as wrong, as in accuracy) and the share correct. The mean of
--   rate over a run's problems is its accuracy; reports bootstrap over problems with it.
-- param: runs: str                     Comma-separated run ids, e.g. '12,14'.
-- returns: run_id, item_id, samples, correct, rate
SELECT g.run_id, g.item_id, count(*) AS samples,
       count(*) FILTER (WHERE coalesce(g.correct, false)) AS correct,
       avg(CASE WHEN coalesce(g.correct, false) THEN 1.0 ELSE 0.0 END) AS rate
FROM generations g
WHERE list_contains(list_transform(string_split($runs, ','), x -> TRY_CAST(trim(x) AS BIGINT)), g.run_id)
GROUP BY ALL
ORDER BY g.run_id, g.item_id;
