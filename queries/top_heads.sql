-- name: top_heads
-- description: The n most important heads (head_scores.importance) of one run, or of each
--   checkpoint's latest plain attribution run per task. Heads tied with the n-th are all kept
--   (rank is the SQL rank, 1 = most important). in_circuit: the head is in that run's circuit of
--   the given selection (NULL when the run has none). importance_lo / importance_hi: the 95%
--   bootstrap percentile interval of the importance (docs/confidence.md; NULL without replicates).
-- param: run: int = NULL               run_id; NULL: use checkpoint / task.
-- param: checkpoint: str = NULL        Checkpoint (id, lineage@step or name); NULL: every checkpoint.
-- param: task: str = NULL              Task id or name; NULL: every task.
-- param: n: int = 10                   How many heads per run.
-- param: selection: str = 'threshold'  Circuit selection for in_circuit.
-- returns: run_id, checkpoint, task, rank, layer, head, head_label, importance, score, in_circuit,
--   importance_lo, importance_hi
WITH chosen AS (
    SELECT r.run_id, r.checkpoint_id, r.task_id FROM runs r
    WHERE $run IS NOT NULL AND r.run_id = $run
    UNION ALL
    SELECT DISTINCT i.run_id, i.checkpoint_id, i.task_id FROM hd_importance() i
    WHERE $run IS NULL
      AND ($checkpoint IS NULL OR i.checkpoint_id = hd_checkpoint($checkpoint))
      AND i.task_id IN (SELECT task_id FROM hd_tasks($task))
),
ranked AS (
    SELECT c.run_id, c.checkpoint_id, c.task_id, s.layer, s.head,
           CAST(s.importance AS DOUBLE) AS importance, CAST(s.score AS DOUBLE) AS score,
           CAST(b.importance_lo AS DOUBLE) AS importance_lo, CAST(b.importance_hi AS DOUBLE) AS importance_hi,
           rank() OVER (PARTITION BY c.run_id ORDER BY s.importance DESC NULLS LAST) AS rank
    FROM chosen c JOIN head_scores s USING (run_id)
    LEFT JOIN head_importance_interval b ON b.run_id = s.run_id AND b.layer = s.layer AND b.head = s.head
),
circ AS (
    SELECT run_id, max(circuit_id) AS circuit_id FROM circuits
    WHERE selection = $selection AND run_id IN (SELECT run_id FROM chosen)
    GROUP BY run_id
)
SELECT x.run_id, k.name AS checkpoint, t.name AS task, x.rank, x.layer, x.head,
       hd_head(x.layer, x.head) AS head_label, x.importance, x.score,
       CASE WHEN ci.circuit_id IS NULL THEN NULL
            ELSE EXISTS (SELECT 1 FROM circuit_heads h
                         WHERE h.circuit_id = ci.circuit_id AND h.layer = x.layer AND h.head = x.head) END AS in_circuit,
       x.importance_lo, x.importance_hi
FROM ranked x
LEFT JOIN checkpoints k ON k.checkpoint_id = x.checkpoint_id
LEFT JOIN tasks t ON t.task_id = x.task_id
LEFT JOIN circ ci ON ci.run_id = x.run_id
WHERE x.rank <= $n
ORDER BY x.run_id, x.rank, x.layer, x.head;
