-- name: circuit_faithfulness
-- description: Faithfulness of circuits: for each checkpoint and task, the circuit of every
--   selection (or one) with its size in edges, nodes and heads, its faithfulness
--   f = (m_circuit - m_corrupt)/(m_clean - m_corrupt), and the run's CPR and CMD as MIB defines
--   them (area under f with edges ranked by signed score; area under |1 - f| ranked by |score|;
--   from run_metrics) when they were measured. Runs before schema v2 have no signed curve: NULL cpr.
--   GQA caveat: on a grouped-query-attention model headdb's graph has one k/v port per kv head,
--   MIB's (EAP-IG's) one per query head (823 vs 1519 edges on the test grid), so the curve's
--   fractions keep other circuits and cpr/cmd are not MIB's; without GQA they equal MIB's to 1e-6.
--   n_replicates and stability: bootstrap replicates the circuit was re-selected from and the
--   mean Jaccard index of their head sets with its own (docs/confidence.md; NULL without them).
-- param: lineage: str = NULL           Only checkpoints of this lineage.
-- param: checkpoint: str = NULL        Only this checkpoint (id, lineage@step or name).
-- param: task: str = NULL              Task id or name; NULL: every task.
-- param: selection: str = NULL         Only this selection; NULL: every selection.
-- returns: lineage, step, checkpoint, task, mode, selection, param, n_edges, n_nodes, n_heads,
--   faithfulness, cpr, cmd, run_id, circuit_id, n_replicates, stability
SELECT k.lineage, k.step, k.name AS checkpoint, t.name AS task, t.mode, c.selection, c.param,
       c.n_edges, c.n_nodes,
       (SELECT count(DISTINCT (h.layer, h.head)) FROM circuit_heads h WHERE h.circuit_id = c.circuit_id) AS n_heads,
       c.faithfulness,
       (SELECT max(value) FROM run_metrics m WHERE m.run_id = c.run_id AND lower(m.key) = 'cpr') AS cpr,
       (SELECT max(value) FROM run_metrics m WHERE m.run_id = c.run_id AND lower(m.key) = 'cmd') AS cmd,
       c.run_id, c.circuit_id, c.n_replicates, c.stability
FROM hd_circuits($selection) c
JOIN checkpoints k USING (checkpoint_id)
JOIN tasks t USING (task_id)
WHERE ($lineage IS NULL OR k.lineage = $lineage)
  AND ($checkpoint IS NULL OR c.checkpoint_id = hd_checkpoint($checkpoint))
  AND c.task_id IN (SELECT task_id FROM hd_tasks($task))
ORDER BY k.lineage, k.step, k.checkpoint_id, t.name, t.mode, c.selection, c.param;
