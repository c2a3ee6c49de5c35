-- Statements the Warehouse runs itself. Each is introduced by a `-- name:` line.

-- name: find_run_by_hash
SELECT run_id, status, host, pid
FROM runs
WHERE config_hash = ?
ORDER BY run_id;

-- name: next_run_id
SELECT coalesce(max(run_id), 0) + 1 FROM runs;

-- name: insert_run
INSERT INTO runs (run_id, kind, checkpoint_id, task_id, config, config_hash, status, started_at,
                  versions, git_sha, host, device, dtype, seed, headdb_version, pid)
VALUES (?, ?, ?, ?, ?, ?, 'running', current_timestamp, ?, ?, ?, ?, ?, ?, ?, ?);

-- name: finish_run
UPDATE runs SET status = 'ok', finished_at = current_timestamp, error = NULL WHERE run_id = ?;

-- name: fail_run
UPDATE runs SET status = 'failed', finished_at = current_timestamp, error = ? WHERE run_id = ?;

-- name: running_on_host
SELECT run_id, pid FROM runs WHERE status = 'running' AND host = ? ORDER BY run_id;

-- name: abandon_run
UPDATE runs SET status = 'abandoned', finished_at = current_timestamp, error = ?
WHERE run_id = ? AND status = 'running';

-- name: delete_circuit_children_edges
DELETE FROM circuit_edges WHERE circuit_id IN (SELECT circuit_id FROM circuits WHERE run_id = ?);

-- name: delete_circuit_children_heads
DELETE FROM circuit_heads WHERE circuit_id IN (SELECT circuit_id FROM circuits WHERE run_id = ?);

-- name: delete_circuit_children_replicates
DELETE FROM circuit_head_replicates WHERE circuit_id IN (SELECT circuit_id FROM circuits WHERE run_id = ?);

-- name: delete_run
DELETE FROM runs WHERE run_id = ?;

-- name: next_circuit_id
SELECT coalesce(max(circuit_id), 0) + 1 FROM circuits;

-- name: list_runs
SELECT r.run_id AS id, r.kind, c.name AS checkpoint, t.name AS task, r.status,
       date_diff('millisecond', r.started_at, r.finished_at) / 1000.0 AS duration_s,
       r.started_at, r.host, r.pid, r.error,
       EXISTS (SELECT 1 FROM interventions i WHERE i.run_id = r.run_id) AS intervened
FROM runs r
LEFT JOIN checkpoints c USING (checkpoint_id)
LEFT JOIN tasks t USING (task_id)
ORDER BY r.run_id;

-- name: run_identity
SELECT (SELECT weights_digest || ':' || checkpoint_id FROM checkpoints WHERE checkpoint_id = ?) AS checkpoint_digest,
       (SELECT digest || ':' || kind || ':' || mode FROM tasks WHERE task_id = ?) AS task_digest;

-- name: find_model
SELECT model_key FROM models WHERE model_key = ?;

-- name: model_shape
SELECT n_layers, n_heads, n_kv_heads FROM models WHERE model_key = ?;

-- name: layout_differences
-- Rows in which model ?'s stored graph layout and the candidate (registered as
-- __headdb_layout_nodes / __headdb_layout_edges) differ, counted both ways; 0 = the same layout.
SELECT (SELECT count(*) FROM (
            (SELECT node_id, name, kind, layer, head FROM graph_nodes WHERE model_key = $key
             EXCEPT SELECT node_id, name, kind, layer, head FROM __headdb_layout_nodes)
            UNION ALL
            (SELECT node_id, name, kind, layer, head FROM __headdb_layout_nodes
             EXCEPT SELECT node_id, name, kind, layer, head FROM graph_nodes WHERE model_key = $key)))
     + (SELECT count(*) FROM (
            (SELECT edge_id, src_node, dst_node, dst_port, name FROM graph_edges WHERE model_key = $key
             EXCEPT SELECT edge_id, src_node, dst_node, dst_port, name FROM __headdb_layout_edges)
            UNION ALL
            (SELECT edge_id, src_node, dst_node, dst_port, name FROM __headdb_layout_edges
             EXCEPT SELECT edge_id, src_node, dst_node, dst_port, name FROM graph_edges WHERE model_key = $key)));

-- name: stored_layout_size
SELECT (SELECT count(*) FROM graph_nodes WHERE model_key = ?), (SELECT count(*) FROM graph_edges WHERE model_key = ?);

-- name: count_graph_nodes
SELECT count(*) FROM graph_nodes WHERE model_key = ?;

-- name: find_checkpoint
SELECT checkpoint_id FROM checkpoints WHERE path = ? AND weights_digest = ?;

-- name: next_checkpoint_id
SELECT coalesce(max(checkpoint_id), 0) + 1 FROM checkpoints;

-- name: insert_checkpoint
INSERT INTO checkpoints (checkpoint_id, model_key, name, path, weights_digest, lineage, regime,
                         step, parent_id)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?);

-- name: update_checkpoint
UPDATE checkpoints SET name = ?, lineage = ?, regime = ?, step = ?, parent_id = ?
WHERE checkpoint_id = ?;

-- name: find_task
SELECT task_id FROM tasks WHERE digest = ? AND kind = ? AND mode = ? AND name = ?;

-- name: next_task_id
SELECT coalesce(max(task_id), 0) + 1 FROM tasks;

-- name: insert_task
INSERT INTO tasks (task_id, name, kind, source, digest, n_items, template, mode)
VALUES (?, ?, ?, ?, ?, ?, ?, ?);

-- name: delete_training_metrics
DELETE FROM training_metrics
WHERE lineage = ? AND step IN (SELECT DISTINCT step FROM __headdb_new_metrics);

-- name: list_checkpoints
SELECT c.checkpoint_id AS id, c.name, c.lineage, c.regime, c.step, p.name AS parent,
       c.model_key, c.path, left(c.weights_digest, 12) AS digest,
       (SELECT count(*) FROM runs r WHERE r.checkpoint_id = c.checkpoint_id AND r.status = 'ok') AS ok_runs
FROM checkpoints c
LEFT JOIN checkpoints p ON p.checkpoint_id = c.parent_id
ORDER BY c.lineage, c.step, c.checkpoint_id;
