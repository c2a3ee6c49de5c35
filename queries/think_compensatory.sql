-- name: think_compensatory
-- description: Heads of a checkpoint's circuit with thinking switched off and not on (side =
--   off_only: the compensatory heads), on and not off (on_only), or in both, for every task that
--   exists in a think_on and a think_off variant with the same name (tasks.mode). When a name
--   has several tasks of one mode, the latest registered (highest task_id) is used. With
--   bootstrap replicates (docs/confidence.md): p_on / p_off, the head membership p in each
--   circuit, and p_side, the fraction of paired replicates in which the head is on its side
--   (off_only: in the off circuit and not the on one; on_only: the reverse; both: in both).
--   Pairing needs the same seed and the same item ids in both tasks; else p_side is NULL.
-- param: checkpoint: str = NULL        Checkpoint (id, lineage@step or name); NULL: every checkpoint.
-- param: task: str = NULL              Task name or id; NULL: every paired task.
-- param: selection: str = 'threshold'  Circuit selection.
-- param: side: str = 'off_only' {off_only|on_only|both|all}  Which heads to list.
-- returns: checkpoint_id, checkpoint, task, side, layer, head, head_label, importance_on,
--   importance_off, p_on, p_off, p_side
WITH c AS (
    SELECT c.checkpoint_id, c.task_id, c.circuit_id, t.name AS task, t.mode
    FROM hd_circuits($selection) c
    JOIN tasks t USING (task_id)
    WHERE t.mode IN ('think_on', 'think_off')
      AND ($checkpoint IS NULL OR c.checkpoint_id = hd_checkpoint($checkpoint))
      AND c.task_id IN (SELECT task_id FROM hd_tasks($task))
    QUALIFY row_number() OVER (PARTITION BY c.checkpoint_id, t.name, t.mode ORDER BY c.task_id DESC) = 1
),
pairs AS (
    SELECT n.checkpoint_id, n.task, n.circuit_id AS on_circuit, f.circuit_id AS off_circuit,
           n.task_id AS on_task, f.task_id AS off_task
    FROM c n JOIN c f ON f.checkpoint_id = n.checkpoint_id AND f.task = n.task
    WHERE n.mode = 'think_on' AND f.mode = 'think_off'
),
onh AS (SELECT DISTINCT p.checkpoint_id, p.task, h.layer, h.head FROM pairs p JOIN circuit_heads h ON h.circuit_id = p.on_circuit),
boot AS MATERIALIZED (
    SELECT * FROM hd_boot() WHERE circuit_id IN (SELECT on_circuit FROM pairs UNION ALL SELECT off_circuit FROM pairs)
),
offh AS (SELECT DISTINCT p.checkpoint_id, p.task, h.layer, h.head FROM pairs p JOIN circuit_heads h ON h.circuit_id = p.off_circuit),
sides AS (
    SELECT coalesce(a.checkpoint_id, b.checkpoint_id) AS checkpoint_id, coalesce(a.task, b.task) AS task,
           coalesce(a.layer, b.layer) AS layer, coalesce(a.head, b.head) AS head,
           CASE WHEN a.layer IS NULL THEN 'off_only' WHEN b.layer IS NULL THEN 'on_only' ELSE 'both' END AS side
    FROM onh a FULL JOIN offh b ON a.checkpoint_id = b.checkpoint_id AND a.task = b.task
                               AND a.layer = b.layer AND a.head = b.head
)
SELECT s.checkpoint_id, k.name AS checkpoint, s.task, s.side, s.layer, s.head, hd_head(s.layer, s.head) AS head_label,
       ion.importance AS importance_on, ioff.importance AS importance_off,
       hd_p(bon.n_replicates, ron.n_in) AS p_on, hd_p(boff.n_replicates, roff.n_in) AS p_off,
       CASE WHEN hd_paired(bon.n_replicates, bon.bootstrap_seed, bon.items_key,
                           boff.n_replicates, boff.bootstrap_seed, boff.items_key)
            THEN CASE s.side
                 WHEN 'off_only' THEN hd_p_only(roff.replicates, boff.n_replicates, ron.replicates, bon.n_replicates)
                 WHEN 'on_only' THEN hd_p_only(ron.replicates, bon.n_replicates, roff.replicates, boff.n_replicates)
                 ELSE hd_p_both(ron.replicates, bon.n_replicates, roff.replicates, boff.n_replicates) END
       END AS p_side
FROM sides s
JOIN pairs p USING (checkpoint_id, task)
JOIN checkpoints k USING (checkpoint_id)
LEFT JOIN boot bon ON bon.circuit_id = p.on_circuit
LEFT JOIN boot boff ON boff.circuit_id = p.off_circuit
LEFT JOIN circuit_head_replicates ron ON ron.circuit_id = p.on_circuit AND ron.layer = s.layer AND ron.head = s.head
LEFT JOIN circuit_head_replicates roff ON roff.circuit_id = p.off_circuit AND roff.layer = s.layer AND roff.head = s.head
LEFT JOIN hd_importance() ion
       ON ion.checkpoint_id = s.checkpoint_id AND ion.task_id = p.on_task AND ion.layer = s.layer AND ion.head = s.head
LEFT JOIN hd_importance() ioff
       ON ioff.checkpoint_id = s.checkpoint_id AND ioff.task_id = p.off_task AND ioff.layer = s.layer AND ioff.head = s.head
WHERE $side = 'all' OR s.side = $side
ORDER BY s.checkpoint_id, s.task, s.side DESC, s.layer, s.head;
