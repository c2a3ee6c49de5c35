-- name: heads_gained
-- description: Heads in the target checkpoint's circuit and not in the base's (change = gained),
--   and in the base's and not the target's (change = lost), per task on which both checkpoints
--   have a circuit (see hd_circuits in _macros.sql for which circuit that is). With bootstrap
--   replicates (docs/confidence.md): p_base / p_target, the fraction of replicates whose base /
--   target circuit has the head, and p_gained / p_lost, the fraction of paired replicates
--   (replicate b of both runs resamples the same prompts) in which the head is in the target's
--   circuit and not the base's / the reverse. NULL when a run has no replicates.
-- param: base: str                     Reference checkpoint: id, lineage@step or name.
-- param: target: str                   The checkpoint compared with it (id, lineage@step or name).
-- param: task: str = NULL              Task id or name; NULL: every task both have a circuit on.
-- param: selection: str = 'threshold'  Circuit selection (threshold | topn | greedy | ...).
-- param: min_confidence: float = NULL  Keep only changes this sure: gained heads with p_gained,
--   lost heads with p_lost >= it (rows without replicates are dropped); NULL: keep all.
-- returns: task_id, task, mode, change, layer, head, head_label, base_importance, target_importance,
--   p_base, p_target, p_gained, p_lost
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
),
boot AS MATERIALIZED (SELECT * FROM hd_boot() WHERE circuit_id IN (SELECT circuit_id FROM c)),
conf AS MATERIALIZED (
    SELECT c.task_id, c.layer, c.head,
           hd_p(bb.n_replicates, rb.n_in) AS p_base,
           hd_p(bt.n_replicates, rt.n_in) AS p_target,
           CASE WHEN hd_paired(bt.n_replicates, bt.bootstrap_seed, bt.items_key,
                               bb.n_replicates, bb.bootstrap_seed, bb.items_key)
                THEN hd_p_only(rt.replicates, bt.n_replicates, rb.replicates, bb.n_replicates) END AS p_gained,
           CASE WHEN hd_paired(bt.n_replicates, bt.bootstrap_seed, bt.items_key,
                               bb.n_replicates, bb.bootstrap_seed, bb.items_key)
                THEN hd_p_only(rb.replicates, bb.n_replicates, rt.replicates, bt.n_replicates) END AS p_lost
    FROM changes c
    JOIN pairs p USING (task_id)
    JOIN boot bb ON bb.circuit_id = p.base_circuit
    JOIN boot bt ON bt.circuit_id = p.target_circuit
    LEFT JOIN circuit_head_replicates rb ON rb.circuit_id = p.base_circuit AND rb.layer = c.layer AND rb.head = c.head
    LEFT JOIN circuit_head_replicates rt ON rt.circuit_id = p.target_circuit AND rt.layer = c.layer AND rt.head = c.head
)
SELECT c.task_id, tk.name AS task, tk.mode, c.change, c.layer, c.head, hd_head(c.layer, c.head) AS head_label,
       max(i.importance) FILTER (WHERE i.checkpoint_id = p.base_id) AS base_importance,
       max(i.importance) FILTER (WHERE i.checkpoint_id = p.target_id) AS target_importance,
       f.p_base, f.p_target, f.p_gained, f.p_lost
FROM changes c
JOIN pairs p USING (task_id)
JOIN tasks tk USING (task_id)
JOIN conf f ON f.task_id = c.task_id AND f.layer = c.layer AND f.head = c.head
LEFT JOIN imp i ON i.task_id = c.task_id AND i.layer = c.layer AND i.head = c.head
WHERE $min_confidence IS NULL
   OR (CASE WHEN c.change = 'gained' THEN f.p_gained ELSE f.p_lost END) >= $min_confidence
GROUP BY ALL
ORDER BY tk.name, c.task_id, c.change, c.layer, c.head;
