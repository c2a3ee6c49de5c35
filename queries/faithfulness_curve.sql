-- name: faithfulness_curve
-- description: The MIB faithfulness curve of one attribution run: f at each percentage of edges kept.
-- param: run: int                      run_id of the attribution run.
-- returns: run_id, percent, n_edges, faithfulness
SELECT run_id, percent, n_edges, faithfulness
FROM faithfulness_curve
WHERE run_id = $run
ORDER BY percent;
