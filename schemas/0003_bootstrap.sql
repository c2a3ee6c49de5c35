-- headdb warehouse schema: bootstrap confidence (headdb.attribution.bootstrap / confidence).
-- Runs made with bootstrap replicates (eap / eap-ig with bootstrap B > 0) fill these columns
-- and rows; every other run (bootstrap 0, exact patching, imports, runs older than this
-- migration) leaves them NULL / absent, which queries report as "no replicates".

-- Bootstrap standard error of the edge's mean score (sd of its B replicate means).
ALTER TABLE edge_scores ADD COLUMN se FLOAT;

-- The 2.5 and 97.5 percentiles of the head's importance I(l,h) over the B replicates.
ALTER TABLE head_scores ADD COLUMN importance_lo FLOAT;
ALTER TABLE head_scores ADD COLUMN importance_hi FLOAT;

-- n_replicates: B, the replicates each circuit was re-selected from (same selection, param and
-- pruning); stability: mean over replicates of the Jaccard index of the replicate circuit's
-- head set with this circuit's; bootstrap_seed: the seed of the replicate weights (replicate b
-- of two circuits pairs the same prompts when their seeds and task item ids agree).
ALTER TABLE circuits ADD COLUMN n_replicates INTEGER;
ALTER TABLE circuits ADD COLUMN stability DOUBLE;
ALTER TABLE circuits ADD COLUMN bootstrap_seed BIGINT;

-- Per circuit and head: in how many replicates' circuits the head is (n_in), and which:
-- replicates is a string of n_replicates characters, '1' at position b + 1 when replicate b's
-- circuit has the head (cast it to BIT for bit_count / & / ~). Heads in no replicate have no row.
CREATE TABLE circuit_head_replicates (
    circuit_id BIGINT  NOT NULL,
    layer      INTEGER NOT NULL,
    head       INTEGER NOT NULL,
    n_in       INTEGER NOT NULL,
    replicates VARCHAR NOT NULL
);
