-- name: head_frequency
-- description: Per layer and head: in how many checkpoint circuits of a lineage the head appears,
--   out of the lineage's checkpoints with a circuit on the task. Heads that never appear are left
--   out (the heatmap report fills them with zero).
-- param: lineage: str                  Lineage name (checkpoints.lineage).
-- param: task: str = NULL              Task id or name; NULL: every task.
-- param: selection: str = 'threshold'  Circuit selection.
-- returns: task_id, task, layer, head, head_label, n_in_circuit, n_checkpoints, frequency,
--   first_step, last_step
WITH cs AS (
    SELECT c.task_id, c.circuit_id, c.checkpoint_id, k.step
    FROM hd_circuits($selection) c
    JOIN checkpoints k USING (checkpoint_id)
    WHERE k.lineage = $lineage AND c.task_id IN (SELECT task_id FROM hd_tasks($task))
),
totals AS (SELECT task_id, count(DISTINCT checkpoint_id) AS n_checkpoints FROM cs GROUP BY task_id),
hits AS (
    SELECT cs.task_id, h.layer, h.head, count(DISTINCT cs.checkpoint_id) AS n_in_circuit,
           min(cs.step) AS first_step, max(cs.step) AS last_step
    FROM cs JOIN circuit_heads h USING (circuit_id)
    GROUP BY ALL
)
SELECT x.task_id, t.name AS task, x.layer, x.head, hd_head(x.layer, x.head) AS head_label,
       x.n_in_circuit, n.n_checkpoints, x.n_in_circuit / n.n_checkpoints AS frequency,
       x.first_step, x.last_step
FROM hits x
JOIN totals n USING (task_id)
JOIN tasks t USING (task_id)
ORDER BY t.name, x.task_id, x.n_in_circuit DESC, x.layer, x.head;
