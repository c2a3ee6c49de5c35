-- name: regime_compare
-- description: Emergent head sets of several lineages (regimes: distill, SFT, GRPO ...) over one
--   base checkpoint, per task: circuit sizes and how many heads each lineage gained, kept and
--   lost relative to the base. A lineage is represented by its last checkpoint with a circuit on
--   the task (scope = final) or by all of them (scope = union). With bootstrap replicates
--   (docs/confidence.md), replicate b of the lineage's set (the union over its circuits' replicate
--   b) is paired with replicate b of the base's: emergent_lo / emergent_hi are the 2.5 / 97.5
--   percentiles of the number of emergent heads over the paired replicates, emergent_confident
--   how many of the emergent heads have p_gained >= min_confidence. NULL without replicates.
-- param: base: str                     The base checkpoint (id, lineage@step or name).
-- param: task: str = NULL              Task id or name; NULL: every task the base has a circuit on.
-- param: selection: str = 'threshold'  Circuit selection.
-- param: scope: str = 'final' {final|union}  final: last checkpoint per lineage; union: all of them.
-- param: lineages: str = NULL          Comma-separated lineage names; NULL: every lineage.
-- param: min_confidence: float = 0.95  p_gained an emergent head needs to count in emergent_confident.
-- returns: task_id, task, lineage, regime, checkpoints, last_step, base_heads, heads, emergent,
--   kept, lost, emergent_heads, emergent_lo, emergent_hi, emergent_confident
WITH members AS (SELECT * FROM hd_regime_members($base, $task, $selection, $scope, $lineages)),
info AS (
    SELECT lineage, task_id, any_value(regime) AS regime, count(DISTINCT checkpoint_id) AS checkpoints,
           max(step) AS last_step
    FROM members GROUP BY ALL
),
sets AS (SELECT * FROM hd_regime_sets($base, $task, $selection, $scope, $lineages)),
counts AS (
    SELECT lineage, task_id,
           count(*) FILTER (WHERE status IN ('kept', 'lost')) AS base_heads,
           count(*) FILTER (WHERE status IN ('kept', 'emergent')) AS heads,
           count(*) FILTER (WHERE status = 'emergent') AS emergent,
           count(*) FILTER (WHERE status = 'kept') AS kept,
           count(*) FILTER (WHERE status = 'lost') AS lost,
           string_agg(hd_head(layer, head), ',' ORDER BY layer, head) FILTER (WHERE status = 'emergent') AS emergent_heads
    FROM sets GROUP BY ALL
),
base_c AS (
    SELECT b.task_id, b.circuit_id FROM hd_circuits($selection) b
    WHERE b.checkpoint_id = hd_checkpoint($base) AND b.task_id IN (SELECT task_id FROM members)
),
boot AS MATERIALIZED (
    SELECT * FROM hd_boot()
    WHERE circuit_id IN (SELECT circuit_id FROM members UNION ALL SELECT circuit_id FROM base_c)
),
-- Per lineage and task: the replicates shared by its circuits and the base circuit (NULL: not paired).
pairing AS (
    SELECT m.lineage, m.task_id, any_value(bc.circuit_id) AS base_circuit,
           CASE WHEN bool_and(hd_paired(x.n_replicates, x.bootstrap_seed, x.items_key,
                                        y.n_replicates, y.bootstrap_seed, y.items_key))
                THEN least(min(x.n_replicates), min(y.n_replicates)) END AS n_rep
    FROM members m
    JOIN base_c bc USING (task_id)
    JOIN boot x ON x.circuit_id = m.circuit_id
    JOIN boot y ON y.circuit_id = bc.circuit_id
    GROUP BY m.lineage, m.task_id
),
lin_bits AS (
    SELECT DISTINCT * FROM (
        SELECT m.lineage, m.task_id, r.layer, r.head, unnest(hd_bits(r.replicates)) AS b
        FROM members m JOIN circuit_head_replicates r USING (circuit_id))
),
base_bits AS (
    SELECT p.lineage, p.task_id, r.layer, r.head, unnest(hd_bits(r.replicates)) AS b
    FROM pairing p JOIN circuit_head_replicates r ON r.circuit_id = p.base_circuit
),
gained_bits AS (
    SELECT l.* FROM lin_bits l
    JOIN pairing p USING (lineage, task_id)
    ANTI JOIN base_bits x USING (lineage, task_id, layer, head, b)
    WHERE p.n_rep IS NOT NULL AND l.b < p.n_rep
),
rep_counts AS (
    SELECT r.lineage, r.task_id, r.b, count(g.layer) AS emergent
    FROM (SELECT lineage, task_id, unnest(range(n_rep)) AS b FROM pairing WHERE n_rep IS NOT NULL) r
    LEFT JOIN gained_bits g USING (lineage, task_id, b)
    GROUP BY r.lineage, r.task_id, r.b
),
intervals AS (
    SELECT lineage, task_id, quantile_cont(CAST(emergent AS DOUBLE), 0.025) AS emergent_lo,
           quantile_cont(CAST(emergent AS DOUBLE), 0.975) AS emergent_hi
    FROM rep_counts GROUP BY ALL
),
head_p AS (
    SELECT g.lineage, g.task_id, g.layer, g.head, count(*) / any_value(p.n_rep) AS p_gained
    FROM gained_bits g JOIN pairing p USING (lineage, task_id) GROUP BY ALL
),
confident AS (
    SELECT s.lineage, s.task_id,
           count(*) FILTER (WHERE coalesce(h.p_gained, 0) >= $min_confidence) AS emergent_confident
    FROM sets s
    LEFT JOIN head_p h USING (lineage, task_id, layer, head)
    WHERE s.status = 'emergent'
    GROUP BY ALL
)
SELECT i.task_id, t.name AS task, i.lineage, i.regime, i.checkpoints, i.last_step,
       coalesce(c.base_heads, 0) AS base_heads, coalesce(c.heads, 0) AS heads,
       coalesce(c.emergent, 0) AS emergent, coalesce(c.kept, 0) AS kept, coalesce(c.lost, 0) AS lost,
       coalesce(c.emergent_heads, '') AS emergent_heads,
       iv.emergent_lo, iv.emergent_hi,
       CASE WHEN p.n_rep IS NOT NULL THEN coalesce(cf.emergent_confident, 0) END AS emergent_confident
FROM info i
JOIN tasks t USING (task_id)
LEFT JOIN counts c USING (lineage, task_id)
LEFT JOIN pairing p USING (lineage, task_id)
LEFT JOIN intervals iv USING (lineage, task_id)
LEFT JOIN confident cf USING (lineage, task_id)
ORDER BY t.name, i.task_id, i.lineage;
