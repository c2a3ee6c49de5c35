-- name: circuit_graph
-- description: The edges of one run's circuit (its last circuit of the given selection) with
--   source and destination nodes, port and the run's score for each edge: what `headdb report
--   circuit RUN` draws. Without a run: the circuit of a checkpoint on a task (the latest ok plain
--   attribution or import run on that pair, as every other query chooses it).
-- param: run: int = NULL               run_id of an attribution or import run; NULL: checkpoint + task.
-- param: selection: str = 'threshold'  Circuit selection.
-- param: checkpoint: str = NULL        Checkpoint (id, lineage@step or name), when no run is given.
-- param: task: str = NULL              Task id or name, when no run is given.
-- returns: run_id, circuit_id, edge_id, edge, src, dst, port, src_kind, dst_kind, src_layer,
--   dst_layer, src_head, dst_head, score
WITH c AS (
    SELECT circuit_id, run_id FROM circuits WHERE run_id = $run AND selection = $selection
    ORDER BY circuit_id DESC LIMIT 1
),
chosen AS (
    SELECT circuit_id, run_id FROM c
    UNION ALL
    SELECT x.circuit_id, x.run_id FROM hd_circuits($selection) x
    WHERE $run IS NULL AND $checkpoint IS NOT NULL AND $task IS NOT NULL
      AND x.checkpoint_id = hd_checkpoint($checkpoint)
      AND x.task_id IN (SELECT task_id FROM hd_tasks($task))
    QUALIFY row_number() OVER (ORDER BY x.run_id DESC, x.circuit_id DESC) = 1
),
mk AS (
    SELECT ch.run_id, k.model_key FROM chosen ch JOIN runs r USING (run_id) JOIN checkpoints k USING (checkpoint_id)
)
SELECT ch.run_id, ch.circuit_id, e.edge_id, e.name AS edge, s.name AS src, d.name AS dst, e.dst_port AS port,
       s.kind AS src_kind, d.kind AS dst_kind, s.layer AS src_layer, d.layer AS dst_layer,
       s.head AS src_head, d.head AS dst_head, es.score
FROM chosen ch
JOIN mk USING (run_id)
JOIN circuit_edges ce USING (circuit_id)
JOIN graph_edges e ON e.edge_id = ce.edge_id AND e.model_key = mk.model_key
JOIN graph_nodes s ON s.model_key = e.model_key AND s.node_id = e.src_node
JOIN graph_nodes d ON d.model_key = e.model_key AND d.node_id = e.dst_node
LEFT JOIN edge_scores es ON es.run_id = ch.run_id AND es.edge_id = e.edge_id
ORDER BY e.edge_id;
