-- name: head_cohorts
-- description: The cohort of every head of a lineage: the step of the first checkpoint (in step
--   order) whose circuit contains it, how long it stayed, whether the last checkpoint still has
--   it, and whether the lineage's base already had it. With bootstrap replicates
--   (docs/confidence.md): p_first, p_still_active and p_base, the head's membership p in the
--   circuit of its first checkpoint, of the lineage's last checkpoint and of the base (NULL for
--   a circuit without replicates).
-- param: lineage: str                  Lineage name.
-- param: task: str = NULL              Task id or name; NULL: every task.
-- param: selection: str = 'threshold'  Circuit selection.
-- param: base: str = NULL              Base checkpoint for in_base; NULL: the parent of the
--   lineage's earliest checkpoint.
-- returns: task_id, task, layer, head, head_label, first_step, first_checkpoint, last_step,
--   n_in_circuit, n_checkpoints, still_active, in_base, p_first, p_still_active, p_base
WITH cs AS (
    SELECT c.task_id, c.circuit_id, c.checkpoint_id, k.step, k.name,
           row_number() OVER (PARTITION BY c.task_id ORDER BY k.step DESC, k.checkpoint_id DESC) AS from_last
    FROM hd_circuits($selection) c
    JOIN checkpoints k USING (checkpoint_id)
    WHERE k.lineage = $lineage AND c.task_id IN (SELECT task_id FROM hd_tasks($task))
),
totals AS (SELECT task_id, count(*) AS n_checkpoints FROM cs GROUP BY task_id),
hits AS (
    SELECT cs.task_id, h.layer, h.head,
           min(cs.step) AS first_step,
           arg_min(cs.name, cs.step) AS first_checkpoint,
           max(cs.step) AS last_step,
           count(DISTINCT cs.checkpoint_id) AS n_in_circuit,
           bool_or(cs.from_last = 1) AS still_active,
           arg_min(cs.circuit_id, cs.step) AS first_circuit
    FROM cs JOIN circuit_heads h USING (circuit_id)
    GROUP BY ALL
),
base_circuit AS (
    SELECT b.task_id, b.circuit_id FROM hd_circuits($selection) b
    WHERE b.checkpoint_id = CASE WHEN $base IS NULL THEN hd_lineage_base($lineage) ELSE hd_checkpoint($base) END
),
last_circuit AS (SELECT task_id, circuit_id FROM cs WHERE from_last = 1),
boot AS MATERIALIZED (
    SELECT * FROM hd_boot()
    WHERE circuit_id IN (SELECT circuit_id FROM cs UNION ALL SELECT circuit_id FROM base_circuit)
)
SELECT x.task_id, t.name AS task, x.layer, x.head, hd_head(x.layer, x.head) AS head_label,
       x.first_step, x.first_checkpoint, x.last_step, x.n_in_circuit, n.n_checkpoints, x.still_active,
       CASE WHEN bc.circuit_id IS NULL THEN NULL
            ELSE EXISTS (SELECT 1 FROM circuit_heads bh
                         WHERE bh.circuit_id = bc.circuit_id AND bh.layer = x.layer AND bh.head = x.head) END AS in_base,
       hd_p(bf.n_replicates, rf.n_in) AS p_first,
       hd_p(bl.n_replicates, rl.n_in) AS p_still_active,
       hd_p(bb.n_replicates, rb.n_in) AS p_base
FROM hits x
JOIN totals n USING (task_id)
JOIN tasks t USING (task_id)
LEFT JOIN base_circuit bc USING (task_id)
LEFT JOIN last_circuit lc USING (task_id)
LEFT JOIN boot bf ON bf.circuit_id = x.first_circuit
LEFT JOIN circuit_head_replicates rf ON rf.circuit_id = x.first_circuit AND rf.layer = x.layer AND rf.head = x.head
LEFT JOIN boot bl ON bl.circuit_id = lc.circuit_id
LEFT JOIN circuit_head_replicates rl ON rl.circuit_id = lc.circuit_id AND rl.layer = x.layer AND rl.head = x.head
LEFT JOIN boot bb ON bb.circuit_id = bc.circuit_id
LEFT JOIN circuit_head_replicates rb ON rb.circuit_id = bc.circuit_id AND rb.layer = x.layer AND rb.head = x.head
ORDER BY t.name, x.task_id, x.first_step, x.layer, x.head;
