-- headdb warehouse schema v2: attribution scores in hannamw/EAP-IG's sign convention.
--
-- Up to v1 headdb stored score(u->v) = (z_u(clean) - z_u(corrupted)) . grad, the negative of
-- EAP-IG's (z_u(corrupted) - z_u(clean)) . grad. From v2 every stored score has EAP-IG's sign.
-- This migration negates what v1 computed natively (runs of kind 'attribution': edge_scores,
-- head_scores.score and the signed run_metrics) and leaves runs of kind 'import' alone: they were
-- read from EAP-IG files and already hold the reference's sign. Plain DDL only (no keys,
-- sequences, indexes or ENUMs), so it runs on DuckDB and on a DuckLake catalog alike.

-- The convention of a run's stored scores: 'corrupted-clean' = EAP-IG's. Every run has it (a
-- run without scores too: it says how any score it held would read).
ALTER TABLE runs ADD COLUMN score_sign VARCHAR DEFAULT 'corrupted-clean';
-- true for runs computed before v2 in the clean-corrupted convention, whose stored numbers this
-- migration negated.
ALTER TABLE runs ADD COLUMN score_sign_converted BOOLEAN DEFAULT false;
UPDATE runs SET score_sign = 'corrupted-clean', score_sign_converted = (kind = 'attribution');

UPDATE edge_scores SET score = -score
WHERE run_id IN (SELECT run_id FROM runs WHERE kind = 'attribution');

-- head_scores.score is the head's node attribution (signed); importance is a sum of |scores|.
UPDATE head_scores SET score = -score
WHERE run_id IN (SELECT run_id FROM runs WHERE kind = 'attribution');

-- Signed run_metrics: input_edge_sum and completeness_residual flip; metric_diff
-- (clean - corrupted) becomes metric_delta (corrupted - clean), which input_edge_sum now
-- approximates. completeness_relative, metric_clean, metric_corrupted keep their values.
UPDATE run_metrics SET value = -value
WHERE key IN ('input_edge_sum', 'completeness_residual', 'metric_diff')
  AND run_id IN (SELECT run_id FROM runs WHERE kind = 'attribution');
UPDATE run_metrics SET key = 'metric_delta'
WHERE key = 'metric_diff' AND run_id IN (SELECT run_id FROM runs WHERE kind = 'attribution');

-- v1's cpr was the area under f for circuits ranked by |score|; MIB's CPR ranks by signed score.
-- Keep the v1 number under the name of what it is (cmd was, and is, MIB's absolute ranking).
UPDATE run_metrics SET key = 'cpr_abs'
WHERE key = 'cpr' AND run_id IN (SELECT run_id FROM runs WHERE kind = 'attribution');

-- Which ranking a faithfulness-curve point belongs to: 'signed' (MIB's CPR) or 'abs' (its CMD,
-- and every v1 curve).
ALTER TABLE faithfulness_curve ADD COLUMN ranking VARCHAR DEFAULT 'abs';
UPDATE faithfulness_curve SET ranking = 'abs';
