-- headdb warehouse schema: bootstrap confidence (headdb.attribution.bootstrap / confidence).
-- Runs made with bootstrap replicates (eap / eap-ig with bootstrap B > 0) fill these tables and
-- columns; every other run (bootstrap 0, exact patching, imports, runs older than this
-- migration) has no rows here and NULL columns, which queries report as "no replicates".
-- edge_scores and head_scores are not altered: a migration that ALTERs a table an earlier
-- migration of the same transaction UPDATEd fails in DuckDB, and the large table stays as it was.
-- Plain DDL only (no keys, sequences, indexes or ENUMs): DuckDB and DuckLake alike.

-- Bootstrap standard error of an edge's mean score (sd of its B replicate means).
CREATE TABLE edge_score_se (
    run_id  BIGINT  NOT NULL,
    edge_id INTEGER NOT NULL,
    se      FLOAT   NOT NULL
);

-- The 2.5 and 97.5 percentiles of a head's importance I(l,h) over the B replicates.
CREATE TABLE head_importance_interval (
    run_id        BIGINT  NOT NULL,
    layer         INTEGER NOT NULL,
    head          INTEGER NOT NULL,
    importance_lo FLOAT   NOT NULL,
    importance_hi FLOAT   NOT NULL
);

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
