-- name: faithfulness_curve
-- description: The MIB faithfulness curve of one attribution run: f at each percentage of edges
--   kept, circuits ranked by |score| (abs: MIB's CMD curve) or by signed score (signed: its CPR
--   curve; runs before schema v2 have only abs). GQA caveat: on a grouped-query-attention model
--   the graph has one k/v port per kv head, not MIB's one per query head, so n_edges and the
--   circuits at each percent differ from MIB's (without GQA the curve is MIB's; docs/attribution.md).
-- param: run: int                      run_id of the attribution run.
-- param: ranking: str = 'abs' {abs|signed}  Which ranking's curve.
-- returns: run_id, percent, n_edges, faithfulness, ranking
SELECT run_id, percent, n_edges, faithfulness, ranking
FROM faithfulness_curve
WHERE run_id = $run AND ranking = $ranking
ORDER BY percent;
