-- Lookups other packages ask of the warehouse (interop, plans, the CLI): they call the functions
-- of headdb/warehouse/reads.py, which run these. Each is introduced by a `-- name:` line.

-- name: model_row
SELECT * FROM models WHERE model_key = ?;

-- name: checkpoint_model_key
SELECT model_key FROM checkpoints WHERE checkpoint_id = ?;

-- name: checkpoint_path_name
SELECT path, name FROM checkpoints WHERE checkpoint_id = ?;

-- name: checkpoint_with_weights
SELECT checkpoint_id FROM checkpoints WHERE path = ? AND weights_digest = ? ORDER BY checkpoint_id;

-- name: checkpoint_step
SELECT step FROM checkpoints WHERE checkpoint_id = ?;

-- name: task_exists
SELECT count(*) AS n FROM tasks WHERE task_id = ?;

-- name: run_scores_header
SELECT r.run_id, r.score_sign, k.model_key, json_extract_string(r.config, '$.metric') AS metric
FROM runs r LEFT JOIN checkpoints k USING (checkpoint_id)
WHERE r.run_id = ?;

-- name: run_edge_scores
SELECT edge_id, score FROM edge_scores WHERE run_id = ? ORDER BY edge_id;

-- name: run_circuits
SELECT circuit_id, selection FROM circuits WHERE run_id = ? ORDER BY circuit_id;

-- name: circuit_edge_ids
SELECT edge_id FROM circuit_edges WHERE circuit_id = ?;

-- name: circuit_head_pairs
SELECT layer, head FROM circuit_heads WHERE circuit_id = ?;

-- name: base_tables
SELECT table_name FROM information_schema.tables
WHERE table_schema = 'main' AND table_type = 'BASE TABLE'
ORDER BY table_name;

-- name: schema_version
SELECT max(version) FROM schema_version;

-- name: lineage_names
-- every lineage, base lineages first: reports give each one colour, the same in every figure
SELECT lineage, bool_or(regime = 'base') AS is_base
FROM checkpoints WHERE lineage IS NOT NULL
GROUP BY lineage ORDER BY is_base DESC, lineage;

-- name: task_names
SELECT DISTINCT name FROM tasks WHERE name IS NOT NULL ORDER BY name;
