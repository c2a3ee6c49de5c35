-- Macros shared by the named queries (this file is not a query: its name starts with `_`).
--
-- headdb.queries runs this file, then any `_*.sql` of a user's query directory, in the query's
-- own DuckDB session just before the query. The macros are TEMP: they live only in that session,
-- work on a read-only connection and never change the warehouse. Every definition that several
-- queries depend on ("the circuit of a checkpoint on a task", how a checkpoint is named, which
-- generation run is the plain baseline of an intervened one) is written here once.
--
-- Naming: every macro starts with hd_.

-- A checkpoint reference, as users type it: its id ('12'), 'lineage@step' ('grpo-gsm8k@400'),
-- 'lineage@last' (the lineage's highest step; of two at that step, the later registered) or its
-- name ('checkpoint-400'). Precedence: id, then lineage@step / @last, then name. NULL when
-- nothing matches (queries then return no rows); an error when the reference matches several
-- checkpoints at the same precedence (names repeat across lineages: checkpoint-100 ...).
CREATE OR REPLACE TEMP MACRO hd_checkpoint(ref) AS (
    SELECT CASE
        WHEN count(*) > 1 THEN error('headdb: checkpoint ' || ref || ' matches ' || CAST(count(*) AS VARCHAR)
                                     || ' checkpoints; name it by id or lineage@step: '
                                     || string_agg(candidate, ', ' ORDER BY checkpoint_id)
                                     || ' (see `headdb checkpoints`)')
        ELSE min(checkpoint_id) END
    FROM (
        SELECT checkpoint_id, how,
               'id ' || CAST(checkpoint_id AS VARCHAR) || ' = ' || lineage || '@' || CAST(step AS VARCHAR) AS candidate
        FROM (SELECT checkpoint_id, lineage, step,
                     CASE WHEN CAST(checkpoint_id AS VARCHAR) = ref THEN 1
                          WHEN lineage || '@' || CAST(step AS VARCHAR) = ref THEN 2
                          WHEN lineage || '@last' = ref
                               AND row_number() OVER (PARTITION BY lineage ORDER BY step DESC, checkpoint_id DESC) = 1
                               THEN 2
                          WHEN name = ref THEN 3 END AS how
              FROM checkpoints)
        WHERE how IS NOT NULL
        QUALIFY how = min(how) OVER ()
    )
);

-- Tasks named by a reference: its id or its name (a name may cover several tasks, e.g. the
-- think_on and think_off variants of one task); NULL means every task.
CREATE OR REPLACE TEMP MACRO hd_tasks(ref) AS TABLE
    SELECT * FROM tasks
    WHERE ref IS NULL OR CAST(task_id AS VARCHAR) = ref OR name = ref;

-- The base of a lineage: the parent of its earliest checkpoint (lowest step, then lowest id).
CREATE OR REPLACE TEMP MACRO hd_lineage_base(lin) AS (
    SELECT parent_id FROM checkpoints WHERE lineage = lin ORDER BY step, checkpoint_id LIMIT 1
);

-- True when run `rid` was made without an intervention (no rows in `interventions`).
CREATE OR REPLACE TEMP MACRO hd_plain(rid) AS (
    NOT EXISTS (SELECT 1 FROM interventions i WHERE i.run_id = rid)
);

-- Head label in the form the CLI takes (--ablate L5H1,L7H3).
CREATE OR REPLACE TEMP MACRO hd_head(l, h) AS 'L' || CAST(l AS VARCHAR) || 'H' || CAST(h AS VARCHAR);

-- THE CIRCUIT of checkpoint C on task T under selection S (threshold | topn | greedy | ...):
-- among the ok, plain (no intervention) runs of kind attribution or import on (C, T) that hold a
-- circuit with selection S, take the latest run (highest run_id); within it the last circuit
-- (highest circuit_id) with selection S. One row per (checkpoint, task) — and per selection when
-- sel is NULL, which lists the circuit of every selection.
CREATE OR REPLACE TEMP MACRO hd_circuits(sel) AS TABLE
    SELECT r.checkpoint_id, r.task_id, c.run_id, c.circuit_id, c.selection, c.param,
           c.n_edges, c.n_nodes, c.faithfulness, c.n_replicates, c.stability, c.bootstrap_seed
    FROM circuits c
    JOIN runs r USING (run_id)
    WHERE r.status = 'ok' AND r.kind IN ('attribution', 'import')
      AND r.checkpoint_id IS NOT NULL AND r.task_id IS NOT NULL
      AND (sel IS NULL OR c.selection = sel)
      AND hd_plain(r.run_id)
    QUALIFY row_number() OVER (PARTITION BY r.checkpoint_id, r.task_id, c.selection
                               ORDER BY c.run_id DESC, c.circuit_id DESC) = 1;

-- The heads of those circuits, one row per (checkpoint, task, selection, layer, head).
CREATE OR REPLACE TEMP MACRO hd_circuit_heads(sel) AS TABLE
    SELECT DISTINCT c.checkpoint_id, c.task_id, c.selection, c.circuit_id, h.layer, h.head
    FROM hd_circuits(sel) c
    JOIN circuit_heads h USING (circuit_id);

-- Head importance I(l,h) of checkpoint C on task T: head_scores of the latest (highest run_id)
-- ok, plain attribution/import run on (C, T) that stored head scores.
CREATE OR REPLACE TEMP MACRO hd_importance() AS TABLE
    WITH latest AS (
        SELECT r.checkpoint_id, r.task_id, r.run_id
        FROM runs r
        WHERE r.status = 'ok' AND r.kind IN ('attribution', 'import')
          AND r.checkpoint_id IS NOT NULL AND r.task_id IS NOT NULL
          AND hd_plain(r.run_id)
          AND EXISTS (SELECT 1 FROM head_scores s WHERE s.run_id = r.run_id)
        QUALIFY row_number() OVER (PARTITION BY r.checkpoint_id, r.task_id ORDER BY r.run_id DESC) = 1
    )
    SELECT l.checkpoint_id, l.task_id, l.run_id, s.layer, s.head,
           CAST(s.score AS DOUBLE) AS score, CAST(s.importance AS DOUBLE) AS importance,
           CAST(b.importance_lo AS DOUBLE) AS importance_lo, CAST(b.importance_hi AS DOUBLE) AS importance_hi
    FROM latest l
    JOIN head_scores s USING (run_id)
    LEFT JOIN head_importance_interval b ON b.run_id = s.run_id AND b.layer = s.layer AND b.head = s.head;

-- BOOTSTRAP CONFIDENCE (docs/confidence.md). A circuit made with B bootstrap replicates has
-- circuits.n_replicates = B and, per head found in at least one replicate's circuit, a row in
-- circuit_head_replicates whose `replicates` string has '1' at position b + 1 when replicate b's
-- circuit (same selection and pruning, on the replicate's resampled prompts) contains the head.
-- Replicate b resamples the same prompts in two runs when their bootstrap_seed and task item
-- ids agree, so two circuits are compared replicate by replicate over their first
-- least(B_a, B_b) replicates. Every confidence is NULL for circuits without replicates.

-- The replicate indices b (0-based) set in a replicates string, as a list (unnest it for one
-- row per replicate).
CREATE OR REPLACE TEMP MACRO hd_bits(mask) AS
    list_filter(range(length(mask)), i -> substr(mask, CAST(i AS INTEGER) + 1, 1) = '1');

-- Per circuit: its replicate count and seed, and a key of its task's item ids (two circuits
-- pair replicate by replicate when their seeds and item keys agree; see hd_paired).
CREATE OR REPLACE TEMP MACRO hd_boot() AS TABLE
    SELECT c.circuit_id, c.n_replicates, c.bootstrap_seed, r.task_id, k.items_key
    FROM circuits c
    JOIN runs r USING (run_id)
    LEFT JOIN (SELECT task_id, md5(string_agg(item_id, chr(31) ORDER BY item_id)) AS items_key
               FROM task_items GROUP BY task_id) k USING (task_id);

-- p of a head in a circuit with n_rep replicates, n_in of which contain it (n_in NULL: no
-- circuit_head_replicates row, i.e. 0); NULL when the circuit has no replicates.
CREATE OR REPLACE TEMP MACRO hd_p(n_rep, n_in) AS
    CASE WHEN coalesce(n_rep, 0) > 0 THEN coalesce(n_in, 0) / n_rep END;

-- True when two circuits (their hd_boot columns) can be compared replicate by replicate.
CREATE OR REPLACE TEMP MACRO hd_paired(a_n, a_seed, a_items, b_n, b_seed, b_items) AS
    coalesce(a_n > 0 AND b_n > 0 AND a_seed = b_seed AND a_items = b_items, false);

-- The first n replicates of a head's replicates string (NULL string: in no replicate) as BIT.
CREATE OR REPLACE TEMP MACRO hd_bitstr(mask, n_rep, n) AS
    CAST(left(coalesce(mask, repeat('0', n_rep)), n) AS BIT);

-- Over the first least(a_n, b_n) paired replicates: the fraction whose circuit a has the head
-- and circuit b does not (hd_p_only; p_gained with a = target, b = base), or both have it
-- (hd_p_both). Use under CASE WHEN hd_paired(...): unpaired circuits give no confidence.
CREATE OR REPLACE TEMP MACRO hd_p_only(a_mask, a_n, b_mask, b_n) AS
    bit_count(hd_bitstr(a_mask, a_n, least(a_n, b_n)) & ~hd_bitstr(b_mask, b_n, least(a_n, b_n)))
    / least(a_n, b_n);
CREATE OR REPLACE TEMP MACRO hd_p_both(a_mask, a_n, b_mask, b_n) AS
    bit_count(hd_bitstr(a_mask, a_n, least(a_n, b_n)) & hd_bitstr(b_mask, b_n, least(a_n, b_n)))
    / least(a_n, b_n);

-- The plain generation run of checkpoint C on benchmark task T: the latest (highest run_id) ok
-- generation run on (C, T) without interventions.
CREATE OR REPLACE TEMP MACRO hd_plain_generations() AS TABLE
    SELECT r.run_id, r.checkpoint_id, r.task_id, r.config
    FROM runs r
    WHERE r.kind = 'generation' AND r.status = 'ok' AND r.checkpoint_id IS NOT NULL
      AND hd_plain(r.run_id)
    QUALIFY row_number() OVER (PARTITION BY r.checkpoint_id, r.task_id ORDER BY r.run_id DESC) = 1;

-- A run's settings without the keys that name an intervention: two generation runs with equal
-- hd_settings(config), the same checkpoint_id and the same task_id differ only by the
-- intervention, which is what makes the plain one the MATCHING BASELINE of the other.
-- Imported runs (`ingest samples`) also leave out where their samples came from (file, sha256,
-- results_file, and model: the folder the engine loaded, the exported one for an intervened run),
-- so the same engine with the same sampling settings pairs across files.
-- Top-level keys are compared by their JSON text (headdb writes configs with sorted keys).
CREATE OR REPLACE TEMP MACRO hd_settings(cfg) AS (
    SELECT coalesce(string_agg(j.key || '=' || CAST(j.value AS VARCHAR), ';' ORDER BY j.key), '')
    FROM json_each(cfg) j
    WHERE j.key NOT IN ('intervention', 'interventions', 'head_set', 'label',
                        'file', 'sha256', 'results_file', 'model')
);

-- THE MATCHING BASELINE of every ok intervened generation run: the latest (highest run_id) ok
-- plain generation run with the same checkpoint_id, the same task_id and equal hd_settings(config).
-- Runs without one have no row.
CREATE OR REPLACE TEMP MACRO hd_baselines() AS TABLE
    SELECT t.run_id, p.run_id AS baseline_run
    FROM runs t
    JOIN runs p ON p.checkpoint_id = t.checkpoint_id AND p.task_id = t.task_id
    WHERE t.kind = 'generation' AND t.status = 'ok' AND NOT hd_plain(t.run_id)
      AND p.kind = 'generation' AND p.status = 'ok' AND hd_plain(p.run_id)
      AND hd_settings(p.config) = hd_settings(t.config)
    QUALIFY row_number() OVER (PARTITION BY t.run_id ORDER BY p.run_id DESC) = 1;

-- The head set of every intervened run: its heads as 'L5H1,L7H3', count, kind and factor, and a
-- label: the config's head_set / label / intervention.label when given, else kind + heads.
CREATE OR REPLACE TEMP MACRO hd_head_sets() AS TABLE
    SELECT i.run_id,
           string_agg(hd_head(i.layer, i.head), ',' ORDER BY i.layer, i.head) AS heads,
           count(*) AS n_heads,
           string_agg(DISTINCT i.kind, '+' ORDER BY i.kind) AS kind,
           max(i.factor) AS factor,
           coalesce(any_value(json_extract_string(r.config, '$.head_set')),
                    any_value(json_extract_string(r.config, '$.label')),
                    any_value(json_extract_string(r.config, '$.intervention.label')),
                    string_agg(DISTINCT i.kind, '+' ORDER BY i.kind) || ' '
                      || string_agg(hd_head(i.layer, i.head), ',' ORDER BY i.layer, i.head)) AS head_set
    FROM interventions i
    JOIN runs r USING (run_id)
    GROUP BY i.run_id;

-- Emergent-head comparison of several lineages (regimes) over one base checkpoint, on the tasks
-- where the base has a circuit. scope 'final': each lineage is represented by its last
-- checkpoint (highest step, then highest id) with a circuit on the task; 'union': by all its
-- checkpoints with a circuit (the union of their heads). lins: comma-separated lineage names or
-- NULL for every lineage. The base checkpoint itself never represents a lineage.
CREATE OR REPLACE TEMP MACRO hd_regime_members(base_ref, task_ref, sel, scope, lins) AS TABLE
    SELECT k.lineage, k.regime, k.checkpoint_id, k.step, c.task_id, c.circuit_id
    FROM hd_circuits(sel) c
    JOIN checkpoints k USING (checkpoint_id)
    WHERE c.task_id IN (SELECT b.task_id FROM hd_circuits(sel) b
                        WHERE b.checkpoint_id = hd_checkpoint(base_ref)
                          AND b.task_id IN (SELECT task_id FROM hd_tasks(task_ref)))
      AND c.checkpoint_id <> hd_checkpoint(base_ref)
      AND (lins IS NULL OR list_contains(list_transform(string_split(lins, ','), x -> trim(x)), k.lineage))
    QUALIFY scope = 'union'
         OR row_number() OVER (PARTITION BY k.lineage, c.task_id ORDER BY k.step DESC, k.checkpoint_id DESC) = 1;

-- Per lineage and task: every head of the lineage's set or the base's set, with its status:
-- emergent (lineage only), kept (both), lost (base only).
CREATE OR REPLACE TEMP MACRO hd_regime_sets(base_ref, task_ref, sel, scope, lins) AS TABLE
    WITH members AS (SELECT * FROM hd_regime_members(base_ref, task_ref, sel, scope, lins)),
    lineages AS (SELECT lineage, task_id, any_value(regime) AS regime FROM members GROUP BY ALL),
    lh AS (SELECT DISTINCT m.lineage, m.task_id, h.layer, h.head
           FROM members m JOIN circuit_heads h USING (circuit_id)),
    bh AS (SELECT DISTINCT l.lineage, l.task_id, h.layer, h.head
           FROM lineages l
           JOIN hd_circuits(sel) b ON b.task_id = l.task_id AND b.checkpoint_id = hd_checkpoint(base_ref)
           JOIN circuit_heads h ON h.circuit_id = b.circuit_id)
    SELECT coalesce(lh.lineage, bh.lineage) AS lineage, coalesce(lh.task_id, bh.task_id) AS task_id,
           coalesce(lh.layer, bh.layer) AS layer, coalesce(lh.head, bh.head) AS head,
           CASE WHEN bh.layer IS NULL THEN 'emergent' WHEN lh.layer IS NULL THEN 'lost' ELSE 'kept' END AS status
    FROM lh FULL JOIN bh ON lh.lineage = bh.lineage AND lh.task_id = bh.task_id
                        AND lh.layer = bh.layer AND lh.head = bh.head;

-- Head dynamics of a lineage on each task, one row per checkpoint with a circuit, in step order.
-- previous = the preceding checkpoint of the lineage (by step) with a circuit on the task; for
-- the first one, its parent checkpoint when that has a circuit on the task (else no previous,
-- and new/pruned/kept are NULL). Steps need not be evenly spaced (100, 200, 400 is fine).
-- The training metric is the value logged at the nearest step at or before the checkpoint's
-- step (trainer_state log_history); window_mean averages the metric over (previous step, step]
-- (for the first checkpoint: every logged step up to its step).
CREATE OR REPLACE TEMP MACRO hd_dynamics(lin, task_ref, sel, metric_key) AS TABLE
    WITH cs AS (
        SELECT c.task_id, c.circuit_id, k.checkpoint_id, k.name, k.step, k.parent_id,
               lag(c.circuit_id) OVER w AS prev_circuit,
               lag(k.name) OVER w AS prev_name,
               lag(k.step) OVER w AS prev_step
        FROM hd_circuits(sel) c
        JOIN checkpoints k USING (checkpoint_id)
        WHERE k.lineage = lin AND c.task_id IN (SELECT task_id FROM hd_tasks(task_ref))
        WINDOW w AS (PARTITION BY c.task_id ORDER BY k.step, k.checkpoint_id)
    ),
    ordered AS (
        SELECT cs.task_id, cs.circuit_id, cs.checkpoint_id, cs.name, cs.step, cs.prev_step,
               coalesce(cs.prev_circuit, pc.circuit_id) AS prev_circuit,
               coalesce(cs.prev_name, pk.name) AS prev_name
        FROM cs
        LEFT JOIN hd_circuits(sel) pc
               ON cs.prev_circuit IS NULL AND pc.checkpoint_id = cs.parent_id AND pc.task_id = cs.task_id
        LEFT JOIN checkpoints pk ON pk.checkpoint_id = pc.checkpoint_id
    ),
    cur AS (SELECT DISTINCT o.checkpoint_id, o.task_id, h.layer, h.head
            FROM ordered o JOIN circuit_heads h ON h.circuit_id = o.circuit_id),
    prev AS (SELECT DISTINCT o.checkpoint_id, o.task_id, h.layer, h.head
             FROM ordered o JOIN circuit_heads h ON h.circuit_id = o.prev_circuit),
    diff AS (
        SELECT coalesce(c.checkpoint_id, p.checkpoint_id) AS checkpoint_id,
               coalesce(c.task_id, p.task_id) AS task_id,
               count(c.layer) AS active,
               count(*) FILTER (WHERE p.layer IS NULL) AS new,
               count(*) FILTER (WHERE c.layer IS NULL) AS pruned,
               count(*) FILTER (WHERE c.layer IS NOT NULL AND p.layer IS NOT NULL) AS kept
        FROM cur c
        FULL JOIN prev p ON c.checkpoint_id = p.checkpoint_id AND c.task_id = p.task_id
                        AND c.layer = p.layer AND c.head = p.head
        GROUP BY ALL
    ),
    firsts AS (SELECT o.task_id, h.layer, h.head, min(o.step) AS first_step
               FROM ordered o JOIN circuit_heads h ON h.circuit_id = o.circuit_id
               GROUP BY ALL),
    m AS (SELECT step AS metric_step, value AS metric_value
          FROM training_metrics WHERE lineage = lin AND key = metric_key),
    at_step AS (SELECT o.checkpoint_id, o.task_id, m.metric_step, m.metric_value
             FROM ordered o ASOF LEFT JOIN m ON o.step >= m.metric_step),
    win AS (SELECT o.checkpoint_id, o.task_id, avg(m.metric_value) AS window_mean
            FROM ordered o
            JOIN m ON m.metric_step <= o.step AND (o.prev_step IS NULL OR m.metric_step > o.prev_step)
            GROUP BY ALL)
    SELECT o.task_id, o.step, o.checkpoint_id, o.name AS checkpoint, o.prev_name AS previous,
           o.prev_step,
           coalesce(d.active, 0) AS active,
           CASE WHEN o.prev_circuit IS NULL THEN NULL ELSE coalesce(d.new, 0) END AS new,
           CASE WHEN o.prev_circuit IS NULL THEN NULL ELSE coalesce(d.pruned, 0) END AS pruned,
           CASE WHEN o.prev_circuit IS NULL THEN NULL ELSE coalesce(d.kept, 0) END AS kept,
           (SELECT count(*) FROM firsts f WHERE f.task_id = o.task_id AND f.first_step <= o.step) AS cumulative,
           a.metric_step, a.metric_value, w.window_mean
    FROM ordered o
    LEFT JOIN diff d USING (checkpoint_id, task_id)
    LEFT JOIN at_step a USING (checkpoint_id, task_id)
    LEFT JOIN win w USING (checkpoint_id, task_id);
