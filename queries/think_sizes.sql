-- name: think_sizes
-- description: Circuit sizes with thinking on versus off, per checkpoint and task name (tasks
--   paired as in think_compensatory): heads, edges, nodes and faithfulness of each circuit, and
--   the number of heads only off (compensatory), only on, and in both.
-- param: checkpoint: str = NULL        Checkpoint (id, lineage@step or name); NULL: every checkpoint.
-- param: task: str = NULL              Task name or id; NULL: every paired task.
-- param: selection: str = 'threshold'  Circuit selection.
-- returns: checkpoint_id, checkpoint, task, heads_on, heads_off, edges_on, edges_off, nodes_on,
--   nodes_off, faithfulness_on, faithfulness_off, off_only, on_only, both
WITH c AS (
    SELECT c.*, t.name AS task, t.mode,
           (SELECT count(DISTINCT (h.layer, h.head)) FROM circuit_heads h WHERE h.circuit_id = c.circuit_id) AS n_heads
    FROM hd_circuits($selection) c
    JOIN tasks t USING (task_id)
    WHERE t.mode IN ('think_on', 'think_off')
      AND ($checkpoint IS NULL OR c.checkpoint_id = hd_checkpoint($checkpoint))
      AND c.task_id IN (SELECT task_id FROM hd_tasks($task))
    QUALIFY row_number() OVER (PARTITION BY c.checkpoint_id, t.name, t.mode ORDER BY c.task_id DESC) = 1
),
pairs AS (
    SELECT n.checkpoint_id, n.task, n.circuit_id AS on_circuit, f.circuit_id AS off_circuit,
           n.n_heads AS heads_on, f.n_heads AS heads_off, n.n_edges AS edges_on, f.n_edges AS edges_off,
           n.n_nodes AS nodes_on, f.n_nodes AS nodes_off,
           n.faithfulness AS faithfulness_on, f.faithfulness AS faithfulness_off
    FROM c n JOIN c f ON f.checkpoint_id = n.checkpoint_id AND f.task = n.task
    WHERE n.mode = 'think_on' AND f.mode = 'think_off'
),
onh AS (SELECT DISTINCT p.checkpoint_id, p.task, h.layer, h.head FROM pairs p JOIN circuit_heads h ON h.circuit_id = p.on_circuit),
offh AS (SELECT DISTINCT p.checkpoint_id, p.task, h.layer, h.head FROM pairs p JOIN circuit_heads h ON h.circuit_id = p.off_circuit),
sides AS (
    SELECT coalesce(a.checkpoint_id, b.checkpoint_id) AS checkpoint_id, coalesce(a.task, b.task) AS task,
           count(*) FILTER (WHERE a.layer IS NULL) AS off_only,
           count(*) FILTER (WHERE b.layer IS NULL) AS on_only,
           count(*) FILTER (WHERE a.layer IS NOT NULL AND b.layer IS NOT NULL) AS both
    FROM onh a FULL JOIN offh b ON a.checkpoint_id = b.checkpoint_id AND a.task = b.task
                               AND a.layer = b.layer AND a.head = b.head
    GROUP BY ALL
)
SELECT p.checkpoint_id, k.name AS checkpoint, p.task, p.heads_on, p.heads_off, p.edges_on, p.edges_off,
       p.nodes_on, p.nodes_off, p.faithfulness_on, p.faithfulness_off,
       coalesce(s.off_only, 0) AS off_only, coalesce(s.on_only, 0) AS on_only, coalesce(s.both, 0) AS both
FROM pairs p
JOIN checkpoints k USING (checkpoint_id)
LEFT JOIN sides s USING (checkpoint_id, task)
ORDER BY p.checkpoint_id, p.task;
