-- headdb warehouse schema v1.
-- The only place tables are defined. Core names are fixed (docs/architecture.md); columns may be added by
-- later migrations, never renamed. No ENUM types (DuckLake rejects them): values are validated
-- in code. Large fact tables carry no indexes so that bulk Arrow inserts stay fast.

CREATE TABLE schema_version (
    version    INTEGER   NOT NULL,
    applied_at TIMESTAMP NOT NULL DEFAULT current_timestamp
);

-- One row per architecture shape; checkpoints of one shape share one graph layout.
CREATE TABLE models (
    model_key    VARCHAR PRIMARY KEY,
    architecture VARCHAR NOT NULL,
    n_layers     INTEGER NOT NULL,
    n_heads      INTEGER NOT NULL,
    n_kv_heads   INTEGER NOT NULL,
    d_model      INTEGER NOT NULL,
    d_head       INTEGER NOT NULL,
    vocab_size   INTEGER NOT NULL,
    config_json  VARCHAR
);

-- regime: base | sft | grpo | distill | other. lineage: the training run a checkpoint belongs to.
CREATE TABLE checkpoints (
    checkpoint_id  BIGINT PRIMARY KEY,
    model_key      VARCHAR NOT NULL,
    name           VARCHAR NOT NULL,
    path           VARCHAR NOT NULL,
    weights_digest VARCHAR NOT NULL,
    lineage        VARCHAR NOT NULL,
    regime         VARCHAR NOT NULL,
    step           BIGINT  NOT NULL,
    parent_id      BIGINT,
    registered_at  TIMESTAMP NOT NULL DEFAULT current_timestamp
);

-- Every numeric key of a trainer_state.json log_history entry.
CREATE TABLE training_metrics (
    lineage VARCHAR NOT NULL,
    step    BIGINT  NOT NULL,
    key     VARCHAR NOT NULL,
    value   DOUBLE
);

-- kind: circuit | benchmark. mode: think_on | think_off | plain.
CREATE TABLE tasks (
    task_id  BIGINT PRIMARY KEY,
    name     VARCHAR NOT NULL,
    kind     VARCHAR NOT NULL,
    source   VARCHAR,
    digest   VARCHAR NOT NULL,
    n_items  INTEGER NOT NULL,
    template VARCHAR,
    mode     VARCHAR NOT NULL
);

CREATE TABLE task_items (
    task_id   BIGINT  NOT NULL,
    item_id   VARCHAR NOT NULL,
    problem   VARCHAR,
    answer    VARCHAR,
    clean     VARCHAR,
    corrupted VARCHAR,
    level     VARCHAR,
    meta      VARCHAR
);

-- kind: attribution | generation | import. status: running | ok | failed.
-- An ablation or scaling run is a generation or attribution run with rows in `interventions`.
CREATE TABLE runs (
    run_id         BIGINT PRIMARY KEY,
    kind           VARCHAR NOT NULL,
    checkpoint_id  BIGINT,
    task_id        BIGINT,
    config         VARCHAR NOT NULL,
    config_hash    VARCHAR NOT NULL,
    status         VARCHAR NOT NULL,
    started_at     TIMESTAMP NOT NULL,
    finished_at    TIMESTAMP,
    error          VARCHAR,
    versions       VARCHAR,
    git_sha        VARCHAR,
    host           VARCHAR,
    device         VARCHAR,
    dtype          VARCHAR,
    seed           BIGINT,
    headdb_version VARCHAR,
    pid            INTEGER
);

-- Scalars a run measured about itself (completeness residual, metric values, CPR, CMD, ...).
CREATE TABLE run_metrics (
    run_id BIGINT  NOT NULL,
    key    VARCHAR NOT NULL,
    value  DOUBLE
);

-- Graph layout, EAP-IG names: input, a{L}.h{H}, m{L}, logits. kind: input | attn | mlp | logits.
CREATE TABLE graph_nodes (
    model_key VARCHAR NOT NULL,
    node_id   INTEGER NOT NULL,
    name      VARCHAR NOT NULL,
    kind      VARCHAR NOT NULL,
    layer     INTEGER,
    head      INTEGER
);

-- dst_port: q | k | v for edges into heads, '' otherwise. name: EAP-IG edge name, e.g. a0.h1->a3.h5<k>.
CREATE TABLE graph_edges (
    model_key VARCHAR NOT NULL,
    edge_id   INTEGER NOT NULL,
    src_node  INTEGER NOT NULL,
    dst_node  INTEGER NOT NULL,
    dst_port  VARCHAR NOT NULL,
    name      VARCHAR NOT NULL
);

-- The large table: one float32 per edge per run (mean score over the run's examples).
CREATE TABLE edge_scores (
    run_id  BIGINT  NOT NULL,
    edge_id INTEGER NOT NULL,
    score   FLOAT   NOT NULL
);

-- score: the head's node attribution; importance: I(l,h), sum of |edge score| leaving the head,
-- normalised to sum 1 over heads.
CREATE TABLE head_scores (
    run_id     BIGINT  NOT NULL,
    layer      INTEGER NOT NULL,
    head       INTEGER NOT NULL,
    score      FLOAT,
    importance FLOAT
);

-- selection: topn | threshold | greedy (param: n, tau or n).
CREATE TABLE circuits (
    circuit_id   BIGINT PRIMARY KEY,
    run_id       BIGINT  NOT NULL,
    selection    VARCHAR NOT NULL,
    param        DOUBLE,
    n_edges      INTEGER NOT NULL,
    n_nodes      INTEGER NOT NULL,
    faithfulness DOUBLE
);

CREATE TABLE circuit_edges (
    circuit_id BIGINT  NOT NULL,
    edge_id    INTEGER NOT NULL
);

CREATE TABLE circuit_heads (
    circuit_id BIGINT  NOT NULL,
    layer      INTEGER NOT NULL,
    head       INTEGER NOT NULL
);

-- MIB faithfulness curve: f at each percentage of edges kept (CPR/CMD go to run_metrics).
CREATE TABLE faithfulness_curve (
    run_id       BIGINT NOT NULL,
    percent      DOUBLE NOT NULL,
    n_edges      INTEGER NOT NULL,
    faithfulness DOUBLE
);

CREATE TABLE generations (
    run_id        BIGINT  NOT NULL,
    item_id       VARCHAR NOT NULL,
    sample_idx    INTEGER NOT NULL,
    completion    VARCHAR,
    extracted     VARCHAR,
    correct       BOOLEAN,
    n_tokens      INTEGER,
    finish_reason VARCHAR,
    failure_tag   VARCHAR
);

-- The head set a run was made under; kind: zero | mean | scale. No rows: a plain run.
CREATE TABLE interventions (
    run_id BIGINT  NOT NULL,
    layer  INTEGER NOT NULL,
    head   INTEGER NOT NULL,
    kind   VARCHAR NOT NULL,
    factor DOUBLE
);

-- accuracy, pass@k, maj@k ... with n problems.
CREATE TABLE eval_metrics (
    run_id BIGINT  NOT NULL,
    metric VARCHAR NOT NULL,
    k      INTEGER,
    value  DOUBLE,
    n      INTEGER
);
