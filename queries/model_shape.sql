-- name: model_shape
-- description: The architecture shape (layers, heads) behind a checkpoint, a lineage or a run;
--   every registered shape when none is given. Reports use it to size layer x head heatmaps.
-- param: checkpoint: str = NULL        Checkpoint (id, lineage@step or name).
-- param: lineage: str = NULL           Lineage name.
-- param: run: int = NULL               run_id.
-- returns: model_key, architecture, n_layers, n_heads, n_kv_heads, checkpoints
SELECT m.model_key, m.architecture, m.n_layers, m.n_heads, m.n_kv_heads,
       count(k.checkpoint_id) AS checkpoints
FROM models m
LEFT JOIN checkpoints k USING (model_key)
WHERE ($checkpoint IS NULL OR k.checkpoint_id = hd_checkpoint($checkpoint))
  AND ($lineage IS NULL OR k.lineage = $lineage)
  AND ($run IS NULL OR k.checkpoint_id = (SELECT checkpoint_id FROM runs WHERE run_id = $run))
GROUP BY ALL
ORDER BY checkpoints DESC, m.model_key;
