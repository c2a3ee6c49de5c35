"""A hand-made warehouse with known answers, built only through the public write API.

`build_study(path)` registers a 4-layer x 3-head model and a miniature study:

  lineage    checkpoint (name)           step  parent        circuit heads on task `math` (threshold)
  base       base (qwen-math)               0  -             L0H0 L1H1 L2H2
  grpo-gsm8k checkpoint-100               100  base          L0H0 L1H1 L3H0
  grpo-gsm8k checkpoint-200               200  ckpt-100      L0H0 L3H0 L3H1 L2H1
  grpo-gsm8k checkpoint-400  (no 300!)    400  ckpt-200      L0H0 L3H1
  sft        checkpoint-100               100  base          L0H0 L1H1 L2H2 L1H0
  sft        checkpoint-200               200  base          L0H0 L1H1 L2H2 L1H0 L2H0
  distill    r1-distill                     0  base          L0H0 L2H0 L3H2
  qwen3      qwen3                          0  -             (think tasks only, below)

The names checkpoint-100/-200 exist in two lineages (ambiguous references). Extra runs test what
"the circuit" means: grpo@400 also has an OLDER attribution run (circuit L1H2) and a NEWER run
under an intervention (circuit L2H2); both must be ignored. Base and grpo@400 also carry a
`topn` circuit. Task `trivia` has a circuit for the base only.

Head importance (head_scores) on `math` for base and the grpo checkpoints is given in
IMPORTANCE (grpo@400 stores only its non-zero heads). Think on/off (qwen3, task gsm-think):
on = L1H0 L2H1, off = L1H0 L2H1 L0H2 L3H2. Generations, eval metrics, interventions and the
GRPO reward curve are described next to the code that writes them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import polars as pl
import pyarrow as pa

import headdb
from headdb.attribution.graph import build_layout

N_LAYERS, N_HEADS = 4, 3
MODEL_KEY = "tiny-L4-H3"

CIRCUITS = {
    "base": [(0, 0), (1, 1), (2, 2)],
    "grpo@100": [(0, 0), (1, 1), (3, 0)],
    "grpo@200": [(0, 0), (3, 0), (3, 1), (2, 1)],
    "grpo@400": [(0, 0), (3, 1)],
    "sft@100": [(0, 0), (1, 1), (2, 2), (1, 0)],
    "sft@200": [(0, 0), (1, 1), (2, 2), (1, 0), (2, 0)],
    "distill": [(0, 0), (2, 0), (3, 2)],
}
TOPN = {"base": [(0, 1)], "grpo@400": [(0, 1), (1, 2)]}
IMPORTANCE = {
    "base": {(0, 0): 0.5, (1, 1): 0.3, (2, 2): 0.2},
    "grpo@100": {(0, 0): 0.4, (1, 1): 0.2, (3, 0): 0.4},
    "grpo@200": {(0, 0): 0.25, (3, 0): 0.25, (3, 1): 0.25, (2, 1): 0.25},
    "grpo@400": {(0, 0): 0.5, (3, 1): 0.5},
}
THINK_ON = [(1, 0), (2, 1)]
THINK_OFF = [(1, 0), (2, 1), (0, 2), (3, 2)]
REWARD = {50: 0.1, 100: 0.2, 150: 0.3, 250: 0.5, 390: 0.6}
FAITHFULNESS = {"base": 0.81, "grpo@100": 0.7, "grpo@200": 0.75, "grpo@400": 0.9}

SAMPLING_A = {"samples": 2, "temperature": 0.6, "top_p": 0.95, "seed": 0}
SAMPLING_B = {"samples": 2, "temperature": 0.0, "top_p": 1.0, "seed": 0}
SAMPLING_C = {"samples": 2, "temperature": 1.0, "top_p": 1.0, "seed": 0}

# Generations on gsm8k: item -> [(correct, failure_tag), ...] per sample.
GEN_BASE = {
    "q1": [(True, None), (True, None)],
    "q2": [(False, "wrong_answer"), (False, "truncated")],
    "q3": [(True, None), (False, "wrong_answer")],
    "q4": [(False, "repetition"), (False, "repetition")],
}
GEN_400 = {
    "q1": [(False, "truncated"), (False, "repetition")],
    "q2": [(True, None), (True, None)],
    "q3": [(False, "no_answer"), (False, "no_answer")],
    "q4": [(False, "repetition"), (False, "no_answer")],
}

# The zero-ablation of grpo@400 (its baseline is GEN_400): by level, easy (q1, q2) 0.5 -> 0.5 and
# hard (q3, q4) 0 -> 0.75.
GEN_ABLATED = {
    "q1": [(True, None), (True, None)],
    "q2": [(False, "wrong_answer"), (False, "wrong_answer")],
    "q3": [(True, None), (True, None)],
    "q4": [(True, None), (False, "repetition")],
}


@dataclass
class Study:
    db: headdb.Warehouse
    ck: dict[str, int] = field(default_factory=dict)  # label -> checkpoint_id
    task: dict[str, int] = field(default_factory=dict)  # label -> task_id
    run: dict[str, int] = field(default_factory=dict)  # label -> run_id


def layout_tables(n_layers: int = N_LAYERS, n_heads: int = N_HEADS, n_kv: int | None = None):
    layout = build_layout((n_layers, n_heads, n_kv or n_heads))
    return layout, layout.nodes_table(), layout.edges_table()


def register_tiny_model(
    db, model_key: str = MODEL_KEY, n_layers: int = N_LAYERS, n_heads: int = N_HEADS, n_kv: int | None = None
):
    _, nodes, edges = layout_tables(n_layers, n_heads, n_kv)
    shape = {
        "model_key": model_key,
        "architecture": "Qwen2ForCausalLM",
        "n_layers": n_layers,
        "n_heads": n_heads,
        "n_kv_heads": n_kv or n_heads,
        "d_model": 16,
        "d_head": 4,
        "vocab_size": 50,
    }
    return db.register_model(shape, nodes, edges)


def heads_table(heads, circuit_id: int = 0) -> pa.Table:
    return pa.table(
        {
            "circuit_id": pa.array([circuit_id] * len(heads), pa.int64()),
            "layer": pa.array([l for l, _ in heads], pa.int32()),
            "head": pa.array([h for _, h in heads], pa.int32()),
        }
    )


def circuits_table(rows) -> pa.Table:
    """rows: (local circuit_id, selection, param, n_edges, n_nodes, faithfulness)."""
    cols = list(zip(*rows))
    return pa.table(
        {
            "circuit_id": pa.array(cols[0], pa.int64()),
            "selection": list(cols[1]),
            "param": pa.array(cols[2], pa.float64()),
            "n_edges": pa.array(cols[3], pa.int32()),
            "n_nodes": pa.array(cols[4], pa.int32()),
            "faithfulness": pa.array(cols[5], pa.float64()),
        }
    )


def head_scores_table(importance: dict, all_heads: bool = True) -> pa.Table:
    keys = [(l, h) for l in range(N_LAYERS) for h in range(N_HEADS)] if all_heads else sorted(importance)
    return pa.table(
        {
            "layer": pa.array([l for l, _ in keys], pa.int32()),
            "head": pa.array([h for _, h in keys], pa.int32()),
            "score": pa.array([importance.get(k, 0.0) * 2 for k in keys], pa.float32()),
            "importance": pa.array([importance.get(k, 0.0) for k in keys], pa.float32()),
        }
    )


def attribution_run(
    db,
    checkpoint_id,
    task_id,
    *,
    heads,
    config,
    topn=None,
    importance=None,
    all_heads=True,
    faithfulness=None,
    edge_ids=None,
    edge_scores=None,
    intervention=None,
    metrics=None,
) -> int:
    run = db.start_run("attribution", config=config, checkpoint_id=checkpoint_id, task_id=task_id)
    with run:
        rows = [(0, "threshold", 0.1, len(edge_ids or []) or 5, len(heads) + 2, faithfulness)]
        run.add("circuit_heads", heads_table(heads, 0))
        if edge_ids:
            run.add(
                "circuit_edges",
                pa.table(
                    {"circuit_id": pa.array([0] * len(edge_ids), pa.int64()), "edge_id": pa.array(edge_ids, pa.int32())}
                ),
            )
        if topn is not None:
            rows.append((1, "topn", 5000.0, 50, len(topn) + 2, None))
            run.add("circuit_heads", heads_table(topn, 1))
        run.add("circuits", circuits_table(rows))
        if importance is not None:
            run.add("head_scores", head_scores_table(importance, all_heads))
        if edge_scores is not None:
            run.add("edge_scores", edge_scores)
        if intervention is not None:
            run.add("interventions", intervention)
        for key, value in (metrics or {}).items():
            run.metric(key, value)
    return run.run_id


def generation_run(
    db, checkpoint_id, task_id, *, sampling, intervention=None, metrics=(), gens=None, label=None
) -> int:
    """metrics: (metric, k, value, n) rows. intervention: (kind, factor, [(layer, head)...])."""
    spec = None
    if intervention is not None:
        kind, factor, heads = intervention
        spec = {"kind": kind, "heads": ",".join(f"L{l}H{h}" for l, h in heads), "factor": factor, "reference": None}
        if label:
            spec["label"] = label
    config = {"sampling": sampling, "chat": "auto", "mode": "plain", "ks": [1, 2], "intervention": spec}
    run = db.start_run("generation", config=config, checkpoint_id=checkpoint_id, task_id=task_id)
    with run:
        if metrics:
            m, k, v, n = zip(*metrics)
            run.add(
                "eval_metrics",
                pa.table(
                    {
                        "metric": list(m),
                        "k": pa.array(k, pa.int32()),
                        "value": pa.array(v, pa.float64()),
                        "n": pa.array(n, pa.int32()),
                    }
                ),
            )
        if intervention is not None:
            kind, factor, heads = intervention
            run.add(
                "interventions",
                pa.table(
                    {
                        "layer": pa.array([l for l, _ in heads], pa.int32()),
                        "head": pa.array([h for _, h in heads], pa.int32()),
                        "kind": [kind] * len(heads),
                        "factor": pa.array([factor] * len(heads), pa.float64()),
                    }
                ),
            )
        if gens:
            rows = [(item, i, ok, tag) for item, samples in gens.items() for i, (ok, tag) in enumerate(samples)]
            run.add(
                "generations",
                pa.table(
                    {
                        "item_id": [r[0] for r in rows],
                        "sample_idx": pa.array([r[1] for r in rows], pa.int32()),
                        "completion": ["..."] * len(rows),
                        "extracted": ["1"] * len(rows),
                        "correct": [r[2] for r in rows],
                        "n_tokens": pa.array([10] * len(rows), pa.int32()),
                        "finish_reason": ["stop"] * len(rows),
                        "failure_tag": [r[3] for r in rows],
                    }
                ),
            )
    return run.run_id


def _items(n: int, prefix: str = "q", levels=None) -> pa.Table:
    ids = [f"{prefix}{i + 1}" for i in range(n)]
    return pa.table(
        {"item_id": ids, "problem": [f"problem {i}" for i in ids], "answer": ["1"] * n, "level": levels or ["easy"] * n}
    )


def build_study(path: str | Path, **connect: object) -> Study:
    """connect: extra headdb.connect() arguments (a lake's data_path)."""
    db = headdb.connect(path, **connect)
    st = Study(db)
    register_tiny_model(db)

    def ck(label, name, lineage, regime, step, parent=None):
        st.ck[label] = db.register_checkpoint(
            model_key=MODEL_KEY,
            path=f"/ckpt/{lineage}/{name}",
            weights_digest=f"digest-{label}",
            name=name,
            lineage=lineage,
            regime=regime,
            step=step,
            parent_id=st.ck[parent] if parent else None,
        )

    ck("base", "qwen-math", "base", "base", 0)
    ck("grpo@100", "checkpoint-100", "grpo-gsm8k", "grpo", 100, "base")
    ck("grpo@200", "checkpoint-200", "grpo-gsm8k", "grpo", 200, "grpo@100")
    ck("grpo@400", "checkpoint-400", "grpo-gsm8k", "grpo", 400, "grpo@200")
    ck("sft@100", "checkpoint-100", "sft", "sft", 100, "base")
    ck("sft@200", "checkpoint-200", "sft", "sft", 200, "base")
    ck("distill", "r1-distill", "distill", "distill", 0, "base")
    ck("qwen3", "qwen3", "qwen3", "base", 0)

    st.task["math"] = db.register_task(name="math", kind="circuit", digest="t-math", items=_items(3, "m"))
    st.task["trivia"] = db.register_task(name="trivia", kind="circuit", digest="t-trivia", items=_items(2, "t"))
    st.task["think_on"] = db.register_task(
        name="gsm-think", kind="circuit", digest="t-think", items=_items(2, "g"), mode="think_on"
    )
    st.task["think_off"] = db.register_task(
        name="gsm-think", kind="circuit", digest="t-think", items=_items(2, "g"), mode="think_off"
    )
    st.task["gsm8k"] = db.register_task(
        name="gsm8k", kind="benchmark", digest="b-gsm8k", items=_items(4, "q", ["easy", "easy", "hard", "hard"])
    )
    st.task["aime"] = db.register_task(name="aime", kind="benchmark", digest="b-aime", items=_items(2, "a"))

    math = st.task["math"]
    # grpo@400: an OLDER run with another circuit; the latest ok plain run must win.
    st.run["grpo@400-old"] = attribution_run(
        db, st.ck["grpo@400"], math, heads=[(1, 2)], config={"method": "eap", "v": "old"}, importance={(1, 2): 1.0}
    )
    layout, _, _ = layout_tables()
    edge_names = ["input->a0.h0<q>", "a0.h0->a3.h1<v>", "a3.h1->logits", "input->a3.h1<k>"]
    edge_ids = [layout.edge_id(n) for n in edge_names]
    scores = pa.table(
        {
            "edge_id": pa.array(range(layout.n_edges), pa.int32()),
            "score": pa.array([((i * 37) % 11 - 5) / 10 for i in range(layout.n_edges)], pa.float32()),
        }
    )
    for label, heads in CIRCUITS.items():
        extra = {}
        if label == "grpo@400":
            extra = dict(edge_ids=edge_ids, edge_scores=scores, all_heads=False, metrics={"cpr": 0.8, "cmd": 0.2})
        st.run[label] = attribution_run(
            db,
            st.ck[label],
            math,
            heads=heads,
            config={"method": "eap-ig", "v": "main"},
            topn=TOPN.get(label),
            importance=IMPORTANCE.get(label),
            faithfulness=FAITHFULNESS.get(label),
            **extra,
        )
    # grpo@400: a NEWER run under an intervention (an ablated attribution run): never "the circuit".
    st.run["grpo@400-ablated"] = attribution_run(
        db,
        st.ck["grpo@400"],
        math,
        heads=[(2, 2)],
        config={"method": "eap-ig", "v": "ablated"},
        importance={(2, 2): 1.0},
        intervention=pa.table(
            {
                "layer": pa.array([3], pa.int32()),
                "head": pa.array([1], pa.int32()),
                "kind": ["zero"],
                "factor": pa.array([0.0], pa.float64()),
            }
        ),
    )
    # A failed attribution run leaves no facts.
    failing = db.start_run(
        "attribution", config={"method": "eap-ig", "v": "failing"}, checkpoint_id=st.ck["grpo@400"], task_id=math
    )
    try:
        with failing:
            failing.add("circuit_heads", heads_table([(0, 2)]))
            raise RuntimeError("out of memory")
    except RuntimeError:
        pass
    st.run["base-trivia"] = attribution_run(
        db, st.ck["base"], st.task["trivia"], heads=[(0, 0)], config={"method": "eap-ig", "v": "main"}
    )
    st.run["think_on"] = attribution_run(
        db,
        st.ck["qwen3"],
        st.task["think_on"],
        heads=THINK_ON,
        config={"method": "eap-ig", "mode": "think_on"},
        faithfulness=0.9,
        importance={(1, 0): 0.6, (2, 1): 0.4},
    )
    st.run["think_off"] = attribution_run(
        db,
        st.ck["qwen3"],
        st.task["think_off"],
        heads=THINK_OFF,
        config={"method": "eap-ig", "mode": "think_off"},
        faithfulness=0.6,
        importance={(1, 0): 0.3, (2, 1): 0.3, (0, 2): 0.2, (3, 2): 0.2},
    )

    db.add_training_metrics(
        "grpo-gsm8k",
        pl.DataFrame(
            {
                "step": list(REWARD) + [100, 400],
                "key": ["reward"] * len(REWARD) + ["loss", "loss"],
                "value": list(REWARD.values()) + [1.0, 0.5],
            }
        ),
    )

    g = st.task["gsm8k"]
    # Plain generation runs: base and the grpo checkpoints on gsm8k (grpo@400 twice: sampling B
    # first, then A, so A is the latest plain run), grpo@100 also on aime.
    st.run["gen-base"] = generation_run(
        db,
        st.ck["base"],
        g,
        sampling=SAMPLING_A,
        gens=GEN_BASE,
        metrics=[("accuracy", None, 0.5, 4), ("pass@k", 1, 0.5, 4), ("pass@k", 2, 0.6, 4)],
    )
    st.run["gen-100"] = generation_run(
        db, st.ck["grpo@100"], g, sampling=SAMPLING_A, metrics=[("accuracy", None, 0.55, 4)]
    )
    st.run["gen-100-aime"] = generation_run(
        db, st.ck["grpo@100"], st.task["aime"], sampling=SAMPLING_A, metrics=[("accuracy", None, 0.1, 2)]
    )
    st.run["gen-200"] = generation_run(
        db, st.ck["grpo@200"], g, sampling=SAMPLING_A, metrics=[("accuracy", None, 0.6, 4)]
    )
    st.run["gen-400-B"] = generation_run(
        db, st.ck["grpo@400"], g, sampling=SAMPLING_B, metrics=[("accuracy", None, 0.7, 4)]
    )
    st.run["gen-400-A"] = generation_run(
        db,
        st.ck["grpo@400"],
        g,
        sampling=SAMPLING_A,
        gens=GEN_400,
        metrics=[("accuracy", None, 0.6, 4), ("pass@k", 1, 0.6, 4), ("pass@k", 2, 0.8, 4)],
    )
    # Intervened runs on grpo@400: zero-ablation under A (baseline A), scaling under B (baseline
    # B), and one under sampling C, which has no plain run (no baseline).
    st.run["abl-zero"] = generation_run(
        db,
        st.ck["grpo@400"],
        g,
        sampling=SAMPLING_A,
        intervention=("zero", 0.0, [(3, 1), (0, 0)]),
        label="emergent",
        gens=GEN_ABLATED,
        metrics=[("accuracy", None, 0.4, 4), ("pass@k", 1, 0.4, 4), ("pass@k", 2, 0.5, 4)],
    )
    st.run["abl-scale"] = generation_run(
        db,
        st.ck["grpo@400"],
        g,
        sampling=SAMPLING_B,
        intervention=("scale", 1.3, [(3, 1)]),
        metrics=[("accuracy", None, 0.75, 4)],
    )
    st.run["abl-orphan"] = generation_run(
        db,
        st.ck["grpo@400"],
        g,
        sampling=SAMPLING_C,
        intervention=("zero", 0.0, [(1, 1)]),
        metrics=[("accuracy", None, 0.3, 4)],
    )
    return st


_SHARED: dict[str, Study] = {}


def shared_study() -> Study:
    """One study per test process, built on first use in a temporary folder; read it only."""
    if "study" not in _SHARED:
        import atexit
        import shutil
        import tempfile

        folder = tempfile.mkdtemp(prefix="headdb-study-")
        atexit.register(shutil.rmtree, folder, True)
        _SHARED["study"] = build_study(Path(folder) / "study.duckdb")
    return _SHARED["study"]
