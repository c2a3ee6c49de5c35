-- name: regime_layers
-- description: Per-layer distribution of the emergent heads of each lineage over one base (see
--   regime_compare): one row per task, lineage and layer of the base model, zero counts included.
-- param: base: str                     The base checkpoint (id, lineage@step or name).
-- param: task: str = NULL              Task id or name; NULL: every task the base has a circuit on.
-- param: selection: str = 'threshold'  Circuit selection.
-- param: scope: str = 'final' {final|union}  final: last checkpoint per lineage; union: all of them.
-- param: lineages: str = NULL          Comma-separated lineage names; NULL: every lineage.
-- returns: task_id, task, lineage, layer, emergent, kept, lost
WITH lineages AS (
    SELECT DISTINCT lineage, task_id FROM hd_regime_members($base, $task, $selection, $scope, $lineages)
),
layers AS (
    SELECT unnest(range(m.n_layers)) AS layer
    FROM checkpoints k JOIN models m USING (model_key)
    WHERE k.checkpoint_id = hd_checkpoint($base)
),
sets AS (SELECT * FROM hd_regime_sets($base, $task, $selection, $scope, $lineages)),
counts AS (
    SELECT lineage, task_id, layer,
           count(*) FILTER (WHERE status = 'emergent') AS emergent,
           count(*) FILTER (WHERE status = 'kept') AS kept,
           count(*) FILTER (WHERE status = 'lost') AS lost
    FROM sets GROUP BY ALL
)
SELECT g.task_id, t.name AS task, g.lineage, CAST(y.layer AS INTEGER) AS layer,
       coalesce(c.emergent, 0) AS emergent, coalesce(c.kept, 0) AS kept, coalesce(c.lost, 0) AS lost
FROM lineages g
CROSS JOIN layers y
JOIN tasks t USING (task_id)
LEFT JOIN counts c ON c.lineage = g.lineage AND c.task_id = g.task_id AND c.layer = y.layer
ORDER BY t.name, g.task_id, g.lineage, layer;
