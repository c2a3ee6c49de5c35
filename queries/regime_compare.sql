-- name: regime_compare
-- description: Emergent head sets of several lineages (regimes: distill, SFT, GRPO ...) over one
--   base checkpoint, per task: circuit sizes and how many heads each lineage gained, kept and
--   lost relative to the base. A lineage is represented by its last checkpoint with a circuit on
--   the task (scope = final) or by all of them (scope = union).
-- param: base: str                     The base checkpoint (id, lineage@step or name).
-- param: task: str = NULL              Task id or name; NULL: every task the base has a circuit on.
-- param: selection: str = 'threshold'  Circuit selection.
-- param: scope: str = 'final' {final|union}  final: last checkpoint per lineage; union: all of them.
-- param: lineages: str = NULL          Comma-separated lineage names; NULL: every lineage.
-- returns: task_id, task, lineage, regime, checkpoints, last_step, base_heads, heads, emergent,
--   kept, lost, emergent_heads
WITH members AS (SELECT * FROM hd_regime_members($base, $task, $selection, $scope, $lineages)),
info AS (
    SELECT lineage, task_id, any_value(regime) AS regime, count(DISTINCT checkpoint_id) AS checkpoints,
           max(step) AS last_step
    FROM members GROUP BY ALL
),
sets AS (SELECT * FROM hd_regime_sets($base, $task, $selection, $scope, $lineages)),
counts AS (
    SELECT lineage, task_id,
           count(*) FILTER (WHERE status IN ('kept', 'lost')) AS base_heads,
           count(*) FILTER (WHERE status IN ('kept', 'emergent')) AS heads,
           count(*) FILTER (WHERE status = 'emergent') AS emergent,
           count(*) FILTER (WHERE status = 'kept') AS kept,
           count(*) FILTER (WHERE status = 'lost') AS lost,
           string_agg(hd_head(layer, head), ',' ORDER BY layer, head) FILTER (WHERE status = 'emergent') AS emergent_heads
    FROM sets GROUP BY ALL
)
SELECT i.task_id, t.name AS task, i.lineage, i.regime, i.checkpoints, i.last_step,
       coalesce(c.base_heads, 0) AS base_heads, coalesce(c.heads, 0) AS heads,
       coalesce(c.emergent, 0) AS emergent, coalesce(c.kept, 0) AS kept, coalesce(c.lost, 0) AS lost,
       coalesce(c.emergent_heads, '') AS emergent_heads
FROM info i
JOIN tasks t USING (task_id)
LEFT JOIN counts c USING (lineage, task_id)
ORDER BY t.name, i.task_id, i.lineage;
