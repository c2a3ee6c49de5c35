-- name: heads_gained
-- description: Heads in the target checkpoint's circuit and not in the base's (change = gained),
--   and in the base's and not the target's (change = lost), per task on which both checkpoints
--   have a circuit (see hd_circuits in _macros.sql for which circuit that is).
-- param: base: str                     Reference checkpoint: id, lineage@step or name.
-- param: target: str                   The checkpoint compared with it (id, lineage@step or name).
-- param: task: str = NULL              Task id or name; NULL: every task both have a circuit on.
-- param: selection: str = 'threshold'  Circuit selection (threshold | topn | greedy | ...).
-- returns: task_id, task, mode, change, layer, head, head_label, base_importance, target_importance
WITH ids AS MATERIALIZED (
    SELECT hd_checkpoint($base) AS base_id, hd_checkpoint($target) AS target_id
),
c AS MATERIALIZED (
    SELECT x.checkpoint_id, x.task_id, x.circuit_id
    FROM hd_circuits($selection) x, ids
    WHERE x.checkpoint_id IN (ids.base_id, ids.target_id)
      AND x.task_id IN (SELECT task_id FROM hd_tasks($task))
),
pairs AS MATERIALIZED (
    SELECT b.task_id, b.checkpoint_id AS base_id, t.checkpoint_id AS target_id,
           b.circuit_id AS base_circuit, t.circuit_id AS target_circuit
    FROM c b JOIN c t ON t.task_id = b.task_id, ids
    WHERE b.checkpoint_id = ids.base_id AND t.checkpoint_id = ids.target_id
),
members AS (
    SELECT p.task_id, h.layer, h.head,
           bool_or(h.circuit_id = p.base_circuit) AS in_base,
           bool_or(h.circuit_id = p.target_circuit) AS in_target
    FROM pairs p JOIN circuit_heads h ON h.circuit_id IN (p.base_circuit, p.target_circuit)
    GROUP BY ALL
),
changes AS (
    SELECT task_id, layer, head, CASE WHEN in_target THEN 'gained' ELSE 'lost' END AS change
    FROM members WHERE in_base <> in_target
),
imp AS (
    SELECT i.* FROM hd_importance() i, ids WHERE i.checkpoint_id IN (ids.base_id, ids.target_id)
)
SELECT c.task_id, tk.name AS task, tk.mode, c.change, c.layer, c.head, hd_head(c.layer, c.head) AS head_label,
       max(i.importance) FILTER (WHERE i.checkpoint_id = p.base_id) AS base_importance,
       max(i.importance) FILTER (WHERE i.checkpoint_id = p.target_id) AS target_importance
FROM changes c
JOIN pairs p USING (task_id)
JOIN tasks tk USING (task_id)
LEFT JOIN imp i ON i.task_id = c.task_id AND i.layer = c.layer AND i.head = c.head
GROUP BY ALL
ORDER BY tk.name, c.task_id, c.change, c.layer, c.head;
