"""Interop: EAP-IG JSON graphs in and out (the Parquet export is `headdb.warehouse.export`).

EAP-IG JSON (hannamw/EAP-IG's `Graph.to_json` / `Graph.from_json`, current format)
    {"cfg": {"n_layers": L, "n_heads": H, "parallel_attn_mlp": false, "d_model": D},
     "nodes": {"a5.h16": {"in_graph": b}, ...},          (older files: bare booleans; read too)
     "edges": {"a0.h1->a3.h5<k>": {"score": s, "in_graph": b}, ...}}
  EAP-IG has no grouped-query attention: its k/v ports are per QUERY head (`<k>` of a{l}.h{h},
  h < H); headdb's layout of a GQA model has one k and one v port per KV head (graph.py).
  `import_graph_json` stores one file as a run of kind `import` on (checkpoint, task): every edge's
  score in edge_scores (EAP-IG's sign is headdb's since schema v2; files exported by headdb
  before v2, recognisable by cfg `headdb_run`, are negated), with a GQA model's per-query-head
  k/v ports summed per kv group (exact by linearity) and a kv port in the circuit when any port
  of its group is; a circuit (selection `selection`, default 'threshold', so the catalogue
  queries see it as the checkpoint's circuit) made of the in_graph edges, its heads in
  circuit_heads, and head_scores with importance I(l,h) = sum of |score| over the edges leaving
  the head, normalised to sum 1 over heads (score: the node score when the file has one). The
  run's config records `score_sign` and `kv_ports`. A head is in the circuit when its node is
  marked in_graph; a file without node flags puts a head in the circuit when in_graph edges both
  enter and leave it.
  Layouts: a checkpoint's model must be registered, and its stored layout is verified against
  headdb.attribution.graph.build_layout before anything is written. `new_import_checkpoint`
  attaches a checkpoint known only from files to a model registered from a real checkpoint's
  config (`model_key`), or files it under the graph's own layout `eapig-L{L}-H{H}-KV{H}`; a file
  never registers a real model's shape. `export_graph_json` writes a run in the current format
  (EAP-IG's `from_json` loads it); a GQA run is refused unless `gqa_split` (each kv head's
  k/v edge becomes one per query head with score / n_rep and its in_graph flag). A round trip
  keeps every edge and its float32 score exactly (with gqa_split, exactly when n_rep is a power
  of 2).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa

from headdb.errors import UserError
from headdb.warehouse.refs import find_checkpoint as resolve_checkpoint  # noqa: F401 (API)
from headdb.warehouse.refs import find_task as resolve_task  # noqa: F401 (API)
from headdb.warehouse import reads
from headdb.warehouse.runs import Facts

_KV_EDGE = re.compile(r"->a\d+\.h(\d+)<[kv]>$")


# --------------------------------------------------------------------------- EAP-IG JSON in

SCORE_SIGN = "corrupted-clean"  # EAP-IG's: (z(corrupted) - z(clean)) . grad; edge_scores since schema v2
# MIB attributes with a loss (-logit_diff, -logprob; KL as it is), so a MIB file of a logit-diff or
# logprob run holds EAP-IG's scores negated; export_graph_json(mib_sign=True) writes that, saying so
# in cfg headdb_score_sign, and an import of such a file negates it back.
MIB_SIGN = "clean-corrupted (MIB's loss sign: EAP-IG's negated, for a logit-diff or logprob metric)"
LOSS_NEGATES = ("logit-diff", "logprob")  # metrics whose MIB loss is minus the metric
FILE_MODEL_ARCHITECTURE = "eap-ig-graph"  # models rows of graphs known only from their files
_KV_PORT = r"^(.+)->a(\d+)\.h(\d+)<([kv])>$"


def read_graph_json(file: str | Path) -> tuple[dict, bytes]:
    path = Path(file)
    if not path.is_file():
        raise UserError(f"graph file {path} does not exist")
    raw = path.read_bytes()
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(
            f"{path} is not JSON ({exc.msg if hasattr(exc, 'msg') else exc}); "
            "give an EAP-IG graph written by Graph.to_json"
        ) from None
    if not isinstance(data, dict) or not isinstance(data.get("cfg"), dict) or not isinstance(data.get("edges"), dict):
        raise UserError(f"{path} is not an EAP-IG graph: it needs top-level 'cfg' and 'edges' objects")
    cfg = data["cfg"]
    for key in ("n_layers", "n_heads"):
        if not isinstance(cfg.get(key), int) or isinstance(cfg.get(key), bool) or cfg[key] < 1:
            raise UserError(f"{path}: cfg.{key} is missing or not a positive integer")
    return data, raw


def _legacy_headdb(cfg: dict) -> bool:
    """Written by headdb's export before schema v2: headdb's own k/v port names (one per kv
    head) and headdb's old sign (clean - corrupted), recognisable by its cfg keys."""
    return "headdb_run" in cfg and "headdb_score_sign" not in cfg


def _file_kv_heads(cfg: dict) -> int:
    """Key/value ports per layer in the file: EAP-IG has one per query head; only a pre-v2
    headdb export of a GQA model has fewer (and says so in cfg)."""
    kv = cfg.get("n_key_value_heads") if _legacy_headdb(cfg) else None
    if isinstance(kv, int) and kv > 0 and cfg["n_heads"] % kv == 0:
        return kv
    return cfg["n_heads"]


def _shape_row(db, model_key: str) -> dict | None:
    return reads.model_row(db, model_key)


def stored_layout(db, model_key: str):
    """The GraphLayout of a registered model, after checking that the stored graph_nodes /
    graph_edges are exactly what the code builds for its shape (UserError otherwise)."""
    from headdb.attribution.graph import build_layout

    row = _shape_row(db, model_key)
    if row is None:
        raise UserError(
            f"model {model_key} is not registered: ingest or register a checkpoint of it first "
            "(its config fixes the graph layout, e.g. `headdb checkpoints add DIR`), or import "
            "without a model key to file the graph under its own EAP-IG layout"
        )
    layout = build_layout((row["n_layers"], row["n_heads"], row["n_kv_heads"]))
    nodes, edges = layout.nodes_table(), layout.edges_table()
    if not db.verify_layout(model_key, nodes, edges):
        db.register_model(row, nodes, edges)  # a shape without its layout: store the one it implies
    return layout


def _check_dims(cfg: dict, layout, model_key: str) -> None:
    if (cfg["n_layers"], cfg["n_heads"]) != (layout.n_layers, layout.n_heads):
        raise UserError(
            f"the graph has {cfg['n_layers']} layers x {cfg['n_heads']} heads but model {model_key} "
            f"has {layout.n_layers} x {layout.n_heads}; import it onto a checkpoint of the right model"
        )
    if _legacy_headdb(cfg) and _file_kv_heads(cfg) not in (cfg["n_heads"], layout.n_kv_heads):
        raise UserError(
            f"the graph has {_file_kv_heads(cfg)} kv heads per layer but model {model_key} has "
            f"{layout.n_kv_heads}; import it onto a checkpoint of the right model"
        )


def file_layout(data: dict):
    """(model_key, layout) of a graph's own EAP-IG layout, for checkpoints known only from files:
    the key `eapig-L{L}-H{H}-KV{kv}` is one no loaded checkpoint can have (those start with the
    model family)."""
    from headdb.attribution.graph import build_layout

    cfg = data["cfg"]
    kv = _file_kv_heads(cfg)
    return f"eapig-L{cfg['n_layers']}-H{cfg['n_heads']}-KV{kv}", build_layout((cfg["n_layers"], cfg["n_heads"], kv))


def _register_file_model(db, data: dict) -> str:
    """Register the graph's own layout (`file_layout`)."""
    cfg = data["cfg"]
    kv = _file_kv_heads(cfg)
    key, layout = file_layout(data)
    d_model = cfg.get("d_model") if isinstance(cfg.get("d_model"), int) else 0
    config = {k: v for k, v in cfg.items() if isinstance(v, (int, float, str, bool))}
    db.register_model(
        {
            "model_key": key,
            "architecture": FILE_MODEL_ARCHITECTURE,
            "n_layers": cfg["n_layers"],
            "n_heads": cfg["n_heads"],
            "n_kv_heads": kv,
            "d_model": d_model,
            "d_head": d_model // cfg["n_heads"],
            "vocab_size": 0,
            "config": config,
        },
        layout.nodes_table(),
        layout.edges_table(),
    )
    return key


def _flag(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value  # the pre-2025 format: bare booleans
    if isinstance(value, dict) and value.get("in_graph") is not None:
        return bool(value["in_graph"])
    return None


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _file_edges(data: dict, layout, *, fold_kv: bool, file_name: str, model_key: str) -> tuple[pl.DataFrame, int, int]:
    """(edge_id, score float64, in_graph) per layout edge the file scores, the number of scored
    entries in the file, and how many of them were per-query-head k/v entries folded into
    kv-head ports (0 without GQA folding).

    fold_kv: the file indexes k/v ports by query head (EAP-IG): port h of a GQA model becomes
    kv head h // n_rep; a kv port's score is the sum of its group's (exact: the kv head's
    input is shared by the group, so its gradient is the sum of the copies'), and it is in
    the circuit when any of its group's ports is."""
    entries = data["edges"]
    scores = [_number(e.get("score")) if isinstance(e, dict) else _number(e) for e in entries.values()]
    flags = [bool(e.get("in_graph", False)) if isinstance(e, dict) else False for e in entries.values()]
    df = pl.DataFrame(
        {"name": list(entries), "score": scores, "in_graph": flags},
        schema={"name": pl.String, "score": pl.Float64, "in_graph": pl.Boolean},
    )
    df = df.filter(pl.col("score").is_not_null())  # no score: nothing to store for that edge
    n_file, folded = df.height, 0
    if not n_file:
        raise UserError(f"{file_name}: no edge has a score; an EAP-IG graph of a scored run has one per edge")
    if fold_kv and layout.n_rep > 1:
        parts = df["name"].str.extract_groups(_KV_PORT).struct.unnest()
        is_kv = parts["1"].is_not_null()
        folded = int(is_kv.sum())
        kv_name = (
            parts["1"]
            + "->a"
            + parts["2"]
            + ".h"
            + (parts["3"].cast(pl.Int64) // layout.n_rep).cast(pl.String)
            + "<"
            + parts["4"]
            + ">"
        )
        df = df.with_columns(name=pl.when(is_kv).then(kv_name).otherwise(pl.col("name")))
    names = pl.DataFrame({"name": layout.edge_names, "edge_id": np.arange(layout.n_edges, dtype=np.int32)})
    df = df.join(names, on="name", how="left")
    unknown = df.filter(pl.col("edge_id").is_null())
    if unknown.height:
        raise UserError(
            f"{file_name}: edge {unknown['name'][0]!r} is not in the graph of model {model_key}; "
            "the file was made for another architecture or graph layout"
        )
    df = (
        df.group_by("edge_id").agg(pl.col("score").sum(), pl.col("in_graph").any(), pl.len().alias("n")).sort("edge_id")
    )
    if not fold_kv or layout.n_rep == 1:
        if df["n"].max() > 1:
            raise UserError(f"{file_name}: an edge appears twice")
    return df.drop("n"), n_file, folded


def _circuit_heads(layout, edge_ids: np.ndarray, node_flags: dict[str, bool | None]) -> list[int]:
    """Head node ids in the circuit: the node's in_graph flag when the file has one, else heads
    with an in_graph edge leaving them and one entering them (through their own q port or
    their kv group's k/v port)."""
    g = layout
    has_out = np.zeros(g.n_nodes, dtype=bool)
    has_out[g.edge_src[edge_ids]] = True
    has_in = np.zeros(g.n_nodes, dtype=bool)
    port = g.edge_port[edge_ids]
    dst = g.edge_dst[edge_ids]
    has_in[dst[port == "q"]] = True
    for node in dst[(port == "k") | (port == "v")]:  # kv head g serves query heads g*n_rep ..
        first = g.head_node(int(g.node_layer[node]), int(g.node_head[node]) * g.n_rep)
        has_in[first : first + g.n_rep] = True
    out = []
    for n in range(g.n_nodes):
        if g.node_kind[n] != "attn":
            continue
        flag = node_flags.get(g.node_names[n])
        if flag if flag is not None else (has_out[n] and has_in[n]):
            out.append(n)
    return out


def import_graph_json(
    db,
    file: str | Path,
    checkpoint_id: int,
    task_id: int,
    *,
    selection: str = "threshold",
    param: float | None = None,
    force: bool = False,
):
    """Store an EAP-IG JSON graph as an `import` run on (checkpoint, task); returns the Run
    (`.skipped` when the same file was imported onto the same pair before).

    The checkpoint's model must be registered (from its config, or from the file's own layout
    by `new_import_checkpoint`); its stored layout is verified first. Scores keep the file's
    sign (EAP-IG's, headdb's since schema v2), except files exported by headdb before v2, which
    are negated. GQA k/v ports indexed per query head are summed per kv group. The run's
    config records both (`score_sign`, `kv_ports`); run_metrics `imported_edges` counts the
    file's scored edges and `kv_edges_summed` the k/v entries folded into kv-head ports."""
    data, raw = read_graph_json(file)
    model_key = reads.checkpoint_model_key(db, checkpoint_id)
    if model_key is None:
        raise UserError(f"no checkpoint with id {checkpoint_id}; see `headdb checkpoints`")
    if not reads.task_exists(db, task_id):
        raise UserError(f"no task with id {task_id}")
    config, facts = import_facts(
        data, raw, Path(file).name, stored_layout(db, model_key), model_key, selection=selection, param=param
    )
    run = db.start_run("import", config=config, checkpoint_id=checkpoint_id, task_id=task_id, force=force)
    if run.skipped:
        return run
    with run:
        run.facts.extend(facts)
    return run


def import_facts(
    data: dict, raw: bytes, name: str, g, model_key: str, *, selection: str = "threshold", param: float | None = None
) -> tuple[dict, Facts]:
    """The run config and the facts of one EAP-IG JSON graph on a model whose layout is `g`
    (checked against the file first: a mismatch is a UserError, before anything is written)."""
    cfg = data["cfg"]
    _check_dims(cfg, g, model_key)
    legacy = _legacy_headdb(cfg)
    mib = cfg.get("headdb_score_sign") == MIB_SIGN
    edges, n_file, folded = _file_edges(data, g, fold_kv=not legacy, file_name=name, model_key=model_key)
    ids = edges["edge_id"].to_numpy().astype(np.int32)
    sign = -1.0 if legacy or mib else 1.0
    scores = (sign * edges["score"].to_numpy()).astype(np.float32)
    flags = edges["in_graph"].to_numpy().astype(bool)

    # Importance: sum |score| of the edges leaving each head, normalised over heads.
    heads = np.flatnonzero(np.asarray(g.node_kind) == "attn")
    total = np.bincount(g.edge_src[ids], weights=np.abs(scores.astype(np.float64)), minlength=g.n_nodes)
    head_sum = total[heads].sum()
    nodes = data.get("nodes") if isinstance(data.get("nodes"), dict) else {}
    node_flags = {n: _flag(v) for n, v in nodes.items()}
    node_scores = {n: (_number(v.get("score")) if isinstance(v, dict) else None) for n, v in nodes.items()}
    head_score = [node_scores.get(g.node_names[n]) for n in heads]
    head_score = [None if s is None else sign * s for s in head_score]

    # The circuit: in_graph edges; its nodes and heads.
    c_ids = ids[flags]
    in_heads = _circuit_heads(g, c_ids, node_flags)
    touched = set(g.edge_src[c_ids].tolist()) | set(g.edge_dst[c_ids].tolist())
    circuit_nodes = {n for n in touched if g.node_kind[n] != "attn"} | set(in_heads)

    digest = hashlib.sha256(raw).hexdigest()
    if legacy:
        kv_ports = "per kv head (headdb's layout)"
    elif g.n_rep == 1:
        kv_ports = "per query head"
    else:
        kv_ports = f"per query head, summed per kv group of {g.n_rep}"
    config = {
        "source": "eap-ig-json",
        "file": name,
        "sha256": digest,
        "selection": selection,
        "param": param,
        "kv_ports": kv_ports,
        "score_sign": (
            "negated: exported by headdb before schema v2 (clean-corrupted)"
            if legacy
            else "negated: exported by headdb in MIB's loss sign (clean-corrupted)"
            if mib
            else f"as in the file ({SCORE_SIGN})"
        ),
    }
    facts = Facts()
    facts.add("edge_scores", pa.table({"edge_id": pa.array(ids), "score": pa.array(scores)}))
    facts.add(
        "head_scores",
        pa.table(
            {
                "layer": pa.array(g.node_layer[heads], pa.int32()),
                "head": pa.array(g.node_head[heads], pa.int32()),
                "score": pa.array(head_score, pa.float32()),
                "importance": pa.array(total[heads] / head_sum if head_sum > 0 else np.zeros(len(heads)), pa.float32()),
            }
        ),
    )
    facts.add(
        "circuits",
        pa.table(
            {
                "circuit_id": pa.array([0], pa.int64()),
                "selection": [selection],
                "param": pa.array([param], pa.float64()),
                "n_edges": pa.array([len(c_ids)], pa.int32()),
                "n_nodes": pa.array([len(circuit_nodes)], pa.int32()),
                "faithfulness": pa.array([None], pa.float64()),
            }
        ),
    )
    facts.add(
        "circuit_edges", pa.table({"circuit_id": pa.array(np.zeros(len(c_ids), np.int64)), "edge_id": pa.array(c_ids)})
    )
    facts.add(
        "circuit_heads",
        pa.table(
            {
                "circuit_id": pa.array([0] * len(in_heads), pa.int64()),
                "layer": pa.array(g.node_layer[in_heads], pa.int32()),
                "head": pa.array(g.node_head[in_heads], pa.int32()),
            }
        ),
    )
    facts.metric("imported_edges", n_file)
    facts.metric("kv_edges_summed", folded)
    return config, facts


def new_import_checkpoint(
    db,
    *,
    name: str,
    lineage: str,
    step: int,
    regime: str = "other",
    parent_id: int | None = None,
    model_key: str | None = None,
    data: dict,
) -> int:
    """Register a checkpoint known only through imported graphs (no weights on this machine).

    model_key: a model already registered from a real checkpoint's config (the graph is checked
    against it; a key that is not registered is refused, so a file can never fix the layout of a
    real model); None files the checkpoint under the graph's own layout `eapig-L{L}-H{H}-KV{H}`.
    Its path is `/imported/<lineage>/<name>` and its digest `imported:<lineage>@<step>`, so every
    graph of the same checkpoint lands on the same row."""
    if model_key is None:
        model_key = _register_file_model(db, data)
    else:
        _check_dims(data["cfg"], stored_layout(db, model_key), model_key)
    return db.register_checkpoint(
        model_key=model_key,
        path=f"/imported/{lineage}/{name}",
        weights_digest=f"imported:{lineage}@{step}",
        name=name,
        lineage=lineage,
        regime=regime,
        step=step,
        parent_id=parent_id,
    )


def new_import_task(db, *, name: str, mode: str = "plain") -> int:
    """Register a circuit task known only by name (its items live wherever the graph was made)."""
    return db.register_task(
        name=name,
        kind="circuit",
        digest=f"imported:{name}",
        mode=mode,
        items=pa.table({"item_id": pa.array([], pa.string())}),
        source="eap-ig-json",
    )


# -------------------------------------------------------------------------- EAP-IG JSON out


def _gqa_refusal(run_id: int, g) -> UserError:
    return UserError(
        f"run {run_id} is of a grouped-query attention model ({g.n_heads} query heads share {g.n_kv_heads} kv "
        "heads): headdb scores one key/value port per kv head, EAP-IG's graph has one per query head and "
        "would misread these scores; export with gqa_split (CLI --gqa-split) to write each kv head's score "
        "split evenly over its query heads"
    )


def _export_edges(g, ids: np.ndarray, scores: np.ndarray, flags: np.ndarray, gqa_split: bool) -> dict:
    """{EAP-IG edge name: {"score", "in_graph"}}; with GQA, k/v ports expanded per query head."""
    names = g.edge_names
    values = scores.astype(np.float32).astype(np.float64)
    out: dict = {}
    for e, value, flag in zip(ids.tolist(), values.tolist(), flags.tolist()):
        port = g.edge_port[e]
        if g.n_rep == 1 or port not in ("k", "v"):
            out[names[e]] = {"score": value, "in_graph": flag}
            continue
        dst = int(g.edge_dst[e])
        layer, kv = int(g.node_layer[dst]), int(g.node_head[dst])
        src = g.node_names[g.edge_src[e]]
        for h in range(kv * g.n_rep, (kv + 1) * g.n_rep):
            out[f"{src}->a{layer}.h{h}<{port}>"] = {"score": value / g.n_rep, "in_graph": flag}
    return out


def export_graph_json(
    db, run_id: int, file: str | Path, *, selection: str | None = None, gqa_split: bool = False, mib_sign: bool = False
) -> dict[str, int]:
    """Write run `run_id` as an EAP-IG JSON graph in the current `Graph.to_json` format (cfg with
    n_layers, n_heads, parallel_attn_mlp, d_model; nodes {"in_graph"}; edges {"score",
    "in_graph"}), loadable by EAP-IG's `Graph.from_json`; in_graph marks the run's circuit of
    `selection` (default: its threshold circuit, else its last circuit, else none). Scores are
    written in EAP-IG's sign. A GQA model is refused unless gqa_split: then each kv head's k/v
    edge becomes one edge per query head of its group carrying score / n_rep and its in_graph
    (a re-import sums them back). mib_sign: scores in MIB's loss sign, i.e. negated for a run
    whose metric is logit-diff or logprob (MIB's scorer then ranks them as it ranks its own
    files); cfg headdb_score_sign says which sign the file holds. Extra cfg keys headdb_* say
    where the file came from. Returns counts."""
    run = reads.run_scores_header(db, run_id)
    if run is None:
        raise UserError(f"no run {run_id}; see `headdb runs`")
    model_key = run["model_key"]
    if model_key is None:
        raise UserError(f"run {run_id} has no checkpoint, so its graph layout is unknown")
    shape = _shape_row(db, model_key)
    if shape is None:
        raise UserError(f"model {model_key} of run {run_id} is not registered")
    if run["score_sign"] not in (None, SCORE_SIGN):
        raise UserError(
            f"run {run_id} holds scores in the {run['score_sign']} convention; this headdb exports {SCORE_SIGN} only"
        )
    g = stored_layout(db, model_key)
    scores = reads.run_edge_scores(db, run_id)
    if not scores.height:
        raise UserError(f"run {run_id} has no edge scores to export")
    if g.n_rep > 1 and not gqa_split:
        raise _gqa_refusal(run_id, g)
    negate = False
    if mib_sign:
        if run["metric"] is None:
            raise UserError(
                f"run {run_id} records no metric (an imported run?), so its MIB sign is unknown; export it without "
                "mib_sign (CLI --mib-sign)"
            )
        negate = run["metric"] in LOSS_NEGATES
    if not np.isfinite(scores["score"].to_numpy()).all():
        raise UserError(f"run {run_id} has non-finite edge scores; EAP-IG's JSON cannot hold them")
    circuits = reads.run_circuits(db, run_id)
    wanted = selection or "threshold"
    chosen = circuits.filter(pl.col("selection") == wanted)
    if not chosen.height and selection is None:
        chosen = circuits
    if selection is not None and not chosen.height:
        raise UserError(
            f"run {run_id} has no {selection} circuit; its circuits: "
            f"{', '.join(sorted(set(circuits['selection']))) or 'none'}"
        )
    circuit_id = chosen["circuit_id"][-1] if chosen.height else None
    in_edges = np.zeros(0, dtype=np.int64)
    in_heads: set[tuple[int, int]] = set()
    if circuit_id is not None:
        in_edges = reads.circuit_edge_ids(db, circuit_id)["edge_id"].to_numpy()
        hs = reads.circuit_head_pairs(db, circuit_id)
        in_heads = set(zip(hs["layer"].to_list(), hs["head"].to_list()))
    ids = scores["edge_id"].to_numpy()
    flags = np.isin(ids, in_edges)
    touched = set(g.edge_src[ids[flags]].tolist()) | set(g.edge_dst[ids[flags]].tolist())
    node_json = {}
    for n, name in enumerate(g.node_names):
        kind = g.node_kind[n]
        member = (
            (int(g.node_layer[n]), int(g.node_head[n])) in in_heads
            if kind == "attn"
            else kind == "logits" or n in touched
        )  # EAP-IG's logits node is always in the graph
        node_json[name] = {"in_graph": bool(member)}
    values = scores["score"].to_numpy()
    edge_json = _export_edges(g, ids, -values if negate else values, flags, gqa_split)
    cfg = {
        "n_layers": g.n_layers,
        "n_heads": g.n_heads,
        "parallel_attn_mlp": False,
        "d_model": int(shape["d_model"]),
        "headdb_run": int(run_id),
        "headdb_model_key": model_key,
        "headdb_score_sign": MIB_SIGN if negate else SCORE_SIGN,
        "headdb_kv_ports": (
            "per query head" if g.n_rep == 1 else f"kv head score split evenly over its {g.n_rep} query heads"
        ),
    }
    out = Path(file)
    if not out.parent.exists():
        raise UserError(f"cannot write {out}: folder {out.parent} does not exist")
    tmp = out.with_name(out.name + ".tmp")
    with open(tmp, "w") as fh:
        json.dump({"cfg": cfg, "nodes": node_json, "edges": edge_json}, fh, allow_nan=False)
    os.replace(tmp, out)
    return {
        "edges": len(edge_json),
        "in_graph": int(sum(e["in_graph"] for e in edge_json.values())),
        "nodes": len(node_json),
        "heads_in_graph": len(in_heads),
    }
