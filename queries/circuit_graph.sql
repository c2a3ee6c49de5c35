-- name: circuit_graph
-- description: The edges of one run's circuit (its last circuit of the given selection) with
--   source and destination nodes, port and the run's score for each edge: what `headdb report
--   circuit RUN` draws.
-- param: run: int                      run_id of an attribution or import run.
-- param: selection: str = 'threshold'  Circuit selection.
-- returns: circuit_id, edge_id, edge, src, dst, port, src_kind, dst_kind, src_layer, dst_layer,
--   src_head, dst_head, score
WITH c AS (
    SELECT circuit_id, run_id FROM circuits WHERE run_id = $run AND selection = $selection
    ORDER BY circuit_id DESC LIMIT 1
),
mk AS (
    SELECT k.model_key FROM runs r JOIN checkpoints k USING (checkpoint_id) WHERE r.run_id = $run
)
SELECT c.circuit_id, e.edge_id, e.name AS edge, s.name AS src, d.name AS dst, e.dst_port AS port,
       s.kind AS src_kind, d.kind AS dst_kind, s.layer AS src_layer, d.layer AS dst_layer,
       s.head AS src_head, d.head AS dst_head, es.score
FROM c
JOIN circuit_edges ce USING (circuit_id)
JOIN graph_edges e ON e.edge_id = ce.edge_id AND e.model_key = (SELECT model_key FROM mk)
JOIN graph_nodes s ON s.model_key = e.model_key AND s.node_id = e.src_node
JOIN graph_nodes d ON d.model_key = e.model_key AND d.node_id = e.dst_node
LEFT JOIN edge_scores es ON es.run_id = c.run_id AND es.edge_id = e.edge_id
ORDER BY e.edge_id;
