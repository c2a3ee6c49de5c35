-- name: head_frequency
-- description: Per layer and head: in how many checkpoint circuits of a lineage the head appears,
--   out of the lineage's checkpoints with a circuit on the task. Heads that never appear are left
--   out (the heatmap report fills them with zero). With bootstrap replicates (docs/confidence.md):
--   p_mean, the head's membership p averaged over the checkpoints (the expected frequency under
--   prompt resampling), and n_in_circuit_lo / _hi, the 2.5 / 97.5 percentiles over paired
--   replicates b of the number of checkpoints whose replicate-b circuit has the head. NULL
--   unless every checkpoint circuit has replicates (and, for the interval, the same seed).
-- param: lineage: str                  Lineage name (checkpoints.lineage).
-- param: task: str = NULL              Task id or name; NULL: every task.
-- param: selection: str = 'threshold'  Circuit selection.
-- returns: task_id, task, layer, head, head_label, n_in_circuit, n_checkpoints, frequency,
--   first_step, last_step, p_mean, n_in_circuit_lo, n_in_circuit_hi
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
),
boot AS MATERIALIZED (SELECT * FROM hd_boot() WHERE circuit_id IN (SELECT circuit_id FROM cs)),
-- Per task: do all checkpoint circuits have replicates (marginal p), and how many paired ones.
pairing AS (
    SELECT cs.task_id, bool_and(coalesce(b.n_replicates, 0) > 0) AS all_boot,
           CASE WHEN bool_and(coalesce(b.n_replicates, 0) > 0) AND count(DISTINCT b.bootstrap_seed) = 1
                     AND count(DISTINCT b.items_key) <= 1
                THEN min(b.n_replicates) END AS n_rep
    FROM cs JOIN boot b USING (circuit_id) GROUP BY cs.task_id
),
p_sum AS (
    SELECT cs.task_id, r.layer, r.head, sum(r.n_in / b.n_replicates) AS p_total
    FROM cs JOIN circuit_head_replicates r USING (circuit_id) JOIN boot b USING (circuit_id)
    GROUP BY ALL
),
freq_bits AS (
    SELECT cs.task_id, r.layer, r.head, unnest(hd_bits(r.replicates)) AS b
    FROM cs JOIN circuit_head_replicates r USING (circuit_id)
),
rep_counts AS (
    SELECT g.task_id, g.layer, g.head, g.b, count(f.b) AS n
    FROM (SELECT x.task_id, x.layer, x.head, unnest(range(p.n_rep)) AS b
          FROM hits x JOIN pairing p USING (task_id) WHERE p.n_rep IS NOT NULL) g
    LEFT JOIN freq_bits f USING (task_id, layer, head, b)
    GROUP BY g.task_id, g.layer, g.head, g.b
),
intervals AS (
    SELECT task_id, layer, head, quantile_cont(CAST(n AS DOUBLE), 0.025) AS n_in_circuit_lo,
           quantile_cont(CAST(n AS DOUBLE), 0.975) AS n_in_circuit_hi
    FROM rep_counts GROUP BY ALL
)
SELECT x.task_id, t.name AS task, x.layer, x.head, hd_head(x.layer, x.head) AS head_label,
       x.n_in_circuit, n.n_checkpoints, x.n_in_circuit / n.n_checkpoints AS frequency,
       x.first_step, x.last_step,
       CASE WHEN pr.all_boot THEN coalesce(ps.p_total, 0) / n.n_checkpoints END AS p_mean,
       iv.n_in_circuit_lo, iv.n_in_circuit_hi
FROM hits x
JOIN totals n USING (task_id)
JOIN tasks t USING (task_id)
LEFT JOIN pairing pr USING (task_id)
LEFT JOIN p_sum ps USING (task_id, layer, head)
LEFT JOIN intervals iv USING (task_id, layer, head)
ORDER BY t.name, x.task_id, x.n_in_circuit DESC, x.layer, x.head;
