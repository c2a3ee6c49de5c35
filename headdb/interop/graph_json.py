"""Interop: the warehouse as hive-partitioned Parquet, and EAP-IG JSON graphs in and out.

Parquet export (`export_parquet(db, dir)`)
    dir/edge_scores/model_key=K/run_id=R/data_0.parquet   (edge_id, score), sorted by edge_id
    dir/graph_edges/model_key=K/data_0.parquet
    dir/graph_nodes/model_key=K/data_0.parquet
    dir/<table>/data_0.parquet                            every other table, one file
    dir/manifest.json                                     tables, row counts, schema version
  Read a table with `polars.scan_parquet("dir/edge_scores/**/*.parquet", hive_partitioning=True)`
  or DuckDB `read_parquet('dir/edge_scores/**/*.parquet', hive_partitioning=true)`; the partition
  columns come back from the folder names. Runs without a checkpoint land under
  model_key=__HIVE_DEFAULT_PARTITION__ (read back as NULL). Files use Parquet 2 data pages
  (delta-packed integers, byte-stream-split floats, zstd). An empty partitioned table is written
  as one empty file with all its columns, so its schema is still readable. The export reads one
  snapshot (one read-only session) and writes into a temporary folder that is renamed into place
  at the end, so DIR is either the complete export or untouched.

EAP-IG JSON (the format of Hanna et al.'s eap library, `Graph.to_json`)
    {"cfg": {"n_layers": L, "n_heads": H, ...},
     "nodes": {"a5.h16": true | false | {"in_graph": b, "score": s}, ...},
     "edges": {"a0.h1->a3.h5<k>": {"score": s, "in_graph": b}, ...}}
  `import_graph_json` stores one file as a run of kind `import` on (checkpoint, task): every edge's
  score in edge_scores, a circuit (selection `selection`, default 'threshold', so the catalogue
  queries see it as the checkpoint's circuit) made of the in_graph edges, its heads in
  circuit_heads, and head_scores with importance I(l,h) = sum of |score| over the edges leaving
  the head, normalised to sum 1 over heads (score: the node score when the file has one).
  A head is in the circuit when its node is marked in_graph; a file without node flags puts a
  head in the circuit when in_graph edges both enter and leave it.
  Edges map onto the model's registered graph layout (graph_edges.name); a name that is not in
  it is refused. When the checkpoint's model_key has no layout yet, the layout is built from
  cfg with headdb.attribution.graph.build_layout (n_kv_heads from cfg, else read off the k/v
  edges of the file) and registered. `export_graph_json` writes a run back in the same format;
  a round trip keeps every edge and its float32 score exactly.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa

from headdb.errors import UserError

# Parquet 2 pages: DELTA_BINARY_PACKED integers (sorted edge ids cost ~nothing) and
# BYTE_STREAM_SPLIT floats before zstd: ~3.5 bytes per edge score instead of ~6.4 with v1 pages.
PARQUET_OPTIONS = "FORMAT parquet, COMPRESSION zstd, PARQUET_VERSION V2"
PARTITIONED = {"edge_scores": ("model_key", "run_id"), "graph_edges": ("model_key",),
               "graph_nodes": ("model_key",)}
_KV_EDGE = re.compile(r"->a\d+\.h(\d+)<[kv]>$")


# ------------------------------------------------------------------------------------ Parquet

def _literal(path: Path | str) -> str:
    return "'" + str(path).replace("'", "''") + "'"


def export_parquet(db, directory: str | Path, *, overwrite: bool = False) -> dict[str, int]:
    """Write every table of the warehouse under `directory` as Parquet; rows per table."""
    target = Path(directory)
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        if not overwrite:
            raise UserError(f"{target} exists and is not an empty folder; choose a new folder or add --overwrite")
    if not target.parent.exists():
        raise UserError(f"cannot export to {target}: folder {target.parent} does not exist")
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    counts: dict[str, int] = {}
    try:
        with db.sink.read() as s:
            con = s.con
            tables = [r[0] for r in con.execute(
                "SELECT table_name FROM information_schema.tables "
                "WHERE table_schema = 'main' AND table_type = 'BASE TABLE' ORDER BY table_name").fetchall()]
            version = con.execute("SELECT max(version) FROM schema_version").fetchone()[0]
            for table in tables:
                if not table.isidentifier():
                    continue
                counts[table] = con.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
                folder = staging / table
                source = _export_source(table)
                keys = PARTITIONED.get(table)
                if keys and counts[table]:
                    order = ", ".join((*keys, "edge_id" if table != "graph_nodes" else "node_id"))
                    con.execute(f"COPY ({source} ORDER BY {order}) TO {_literal(folder)} "
                                f"({PARQUET_OPTIONS}, PARTITION_BY ({', '.join(keys)}))")
                else:
                    folder.mkdir()
                    con.execute(f"COPY ({source}) TO {_literal(folder / 'data_0.parquet')} ({PARQUET_OPTIONS})")
        (staging / "manifest.json").write_text(json.dumps({
            "format": "headdb parquet export", "schema_version": version,
            "exported_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "source": str(db.location),
            "partitioned": {k: list(v) for k, v in PARTITIONED.items()}, "rows": counts}, indent=2))
        if target.exists():
            shutil.rmtree(target)
        os.replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return counts


def _export_source(table: str) -> str:
    if table == "edge_scores":
        # edge_scores has no model_key of its own: it comes through the run's checkpoint.
        return ("SELECT k.model_key, e.run_id, e.edge_id, e.score FROM edge_scores e "
                "LEFT JOIN runs r ON r.run_id = e.run_id LEFT JOIN checkpoints k ON k.checkpoint_id = r.checkpoint_id")
    return f"SELECT * FROM {table}"


# ------------------------------------------------------------------------------ lookups

def resolve_checkpoint(db, ref: str | int) -> int | None:
    """A checkpoint id from an id, lineage@step, name or registered path; None if unknown."""
    ref = str(ref)
    df = db.sql("SELECT checkpoint_id, name, lineage, step, path FROM checkpoints")
    for how in (lambda r: str(r["checkpoint_id"]) == ref,
                lambda r: f"{r['lineage']}@{r['step']}" == ref,
                lambda r: r["name"] == ref,
                lambda r: Path(ref).exists() and r["path"] == str(Path(ref).resolve())):
        found = [r["checkpoint_id"] for r in df.iter_rows(named=True) if how(r)]
        if len(found) > 1:
            raise UserError(f"checkpoint {ref} matches {len(found)} checkpoints; name it by id or lineage@step "
                            "(see `headdb checkpoints`)")
        if found:
            return found[0]
    return None


def resolve_task(db, ref: str | int, mode: str | None = None) -> int | None:
    """A task id from an id or a name (and mode when the name has several); None if unknown."""
    ref = str(ref)
    df = db.sql("SELECT task_id, name, mode FROM tasks")
    by_id = [r for r in df.iter_rows(named=True) if str(r["task_id"]) == ref]
    if by_id:
        return by_id[0]["task_id"]
    named = [r for r in df.iter_rows(named=True) if r["name"] == ref and (mode is None or r["mode"] == mode)]
    if len(named) > 1:
        modes = sorted({r["mode"] for r in named})
        raise UserError(f"task {ref} matches {len(named)} tasks (modes {', '.join(modes)}); give its id or --mode")
    return named[0]["task_id"] if named else None


# --------------------------------------------------------------------------- EAP-IG JSON in

def read_graph_json(file: str | Path) -> tuple[dict, bytes]:
    path = Path(file)
    if not path.is_file():
        raise UserError(f"graph file {path} does not exist")
    raw = path.read_bytes()
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{path} is not JSON ({exc.msg if hasattr(exc, 'msg') else exc}); "
                        "give an EAP-IG graph written by Graph.to_json") from None
    if not isinstance(data, dict) or not isinstance(data.get("cfg"), dict) or not isinstance(data.get("edges"), dict):
        raise UserError(f"{path} is not an EAP-IG graph: it needs top-level 'cfg' and 'edges' objects")
    cfg = data["cfg"]
    for key in ("n_layers", "n_heads"):
        if not isinstance(cfg.get(key), int):
            raise UserError(f"{path}: cfg.{key} is missing or not an integer")
    return data, raw


def _kv_heads(data: dict) -> int:
    cfg = data["cfg"]
    for key in ("n_key_value_heads", "n_kv_heads"):
        if isinstance(cfg.get(key), int) and cfg[key] > 0:
            return cfg[key]
    seen = [int(m.group(1)) for name in data["edges"] if (m := _KV_EDGE.search(name))]
    kv = max(seen) + 1 if seen else cfg["n_heads"]
    return kv if cfg["n_heads"] % kv == 0 else cfg["n_heads"]


def ensure_layout(db, model_key: str, data: dict) -> None:
    """Register the graph layout of `model_key` from the file's cfg when it has none yet."""
    from headdb.attribution.graph import build_layout

    cfg = data["cfg"]
    shape = db.sql("SELECT n_layers, n_heads, n_kv_heads FROM models WHERE model_key = ?", [model_key])
    if shape.height:
        n_layers, n_heads, n_kv = shape.row(0)
        if (n_layers, n_heads) != (cfg["n_layers"], cfg["n_heads"]):
            raise UserError(f"the graph has {cfg['n_layers']} layers x {cfg['n_heads']} heads but model {model_key} "
                            f"has {n_layers} x {n_heads}; import it onto a checkpoint of the right model")
    else:
        n_kv = _kv_heads(data)
    if db.sql("SELECT count(*) AS n FROM graph_nodes WHERE model_key = ?", [model_key])["n"][0]:
        return
    layout = build_layout((cfg["n_layers"], cfg["n_heads"], n_kv))
    d_model = int(cfg.get("d_model") or 0)
    db.register_model({"model_key": model_key, "architecture": str(cfg.get("architecture") or "unknown"),
                       "n_layers": cfg["n_layers"], "n_heads": cfg["n_heads"], "n_kv_heads": n_kv,
                       "d_model": d_model, "d_head": int(cfg.get("d_head") or (d_model // cfg["n_heads"])),
                       "vocab_size": int(cfg.get("d_vocab") or cfg.get("vocab_size") or 0), "config": cfg},
                      layout.nodes_table(), layout.edges_table())


def _flag(value: Any) -> tuple[bool | None, float | None]:
    if isinstance(value, bool):
        return value, None
    if isinstance(value, dict):
        flag = value.get("in_graph")
        score = value.get("score")
        return (bool(flag) if flag is not None else None), (float(score) if isinstance(score, (int, float)) else None)
    return None, None


def import_graph_json(db, file: str | Path, checkpoint_id: int, task_id: int, *, selection: str = "threshold",
                      param: float | None = None, force: bool = False):
    """Store an EAP-IG JSON graph as an `import` run on (checkpoint, task); returns the Run
    (`.skipped` when the same file was imported onto the same pair before)."""
    data, raw = read_graph_json(file)
    found = db.sql("SELECT model_key FROM checkpoints WHERE checkpoint_id = ?", [checkpoint_id])
    if not found.height:
        raise UserError(f"no checkpoint with id {checkpoint_id}; see `headdb checkpoints`")
    if not db.sql("SELECT count(*) AS n FROM tasks WHERE task_id = ?", [task_id])["n"][0]:
        raise UserError(f"no task with id {task_id}")
    model_key = found["model_key"][0]
    ensure_layout(db, model_key, data)

    edges = db.sql("SELECT edge_id, src_node, dst_node, name FROM graph_edges WHERE model_key = ? ORDER BY edge_id",
                   [model_key])
    nodes = db.sql("SELECT node_id, name, kind, layer, head FROM graph_nodes WHERE model_key = ? ORDER BY node_id",
                   [model_key])
    index = dict(zip(edges["name"].to_list(), edges["edge_id"].to_list()))
    ids, scores, in_graph = [], [], []
    for name, entry in data["edges"].items():
        edge_id = index.get(name)
        if edge_id is None:
            raise UserError(f"{Path(file).name}: edge {name!r} is not in the graph of model {model_key}; "
                            "the file was made for another architecture or graph layout")
        if isinstance(entry, dict):
            score, flag = entry.get("score"), entry.get("in_graph", False)
        else:  # a bare number
            score, flag = entry, False
        if not isinstance(score, (int, float)) or isinstance(score, bool):
            continue  # no score: nothing to store for this edge
        ids.append(edge_id)
        scores.append(score)
        in_graph.append(bool(flag))
    ids_a = np.asarray(ids, dtype=np.int32)
    scores_a = np.asarray(scores, dtype=np.float32)
    flags_a = np.asarray(in_graph, dtype=bool)
    if len(np.unique(ids_a)) != len(ids_a):
        raise UserError(f"{Path(file).name}: an edge appears twice")

    # Importance: sum |score| of the edges leaving each head, normalised over heads.
    size = int(edges["edge_id"].max()) + 1 if edges.height else 0
    src_of = np.full(size, -1, dtype=np.int64)
    dst_of = np.full(size, -1, dtype=np.int64)
    src_of[edges["edge_id"].to_numpy()] = edges["src_node"].to_numpy()
    dst_of[edges["edge_id"].to_numpy()] = edges["dst_node"].to_numpy()
    src, dst = src_of[ids_a], dst_of[ids_a]
    node_layer = nodes["layer"].to_numpy()
    node_head = nodes["head"].to_numpy()
    node_kind = nodes["kind"].to_list()
    node_names = nodes["name"].to_list()
    heads = [i for i, k in enumerate(node_kind) if k == "attn"]
    total = np.zeros(len(node_kind), dtype=np.float64)
    np.add.at(total, src, np.abs(scores_a.astype(np.float64)))
    head_sum = total[heads].sum()
    node_flags = {name: _flag(v) for name, v in (data.get("nodes") or {}).items()}
    head_rows = {"layer": [], "head": [], "score": [], "importance": []}
    for n in heads:
        head_rows["layer"].append(int(node_layer[n]))
        head_rows["head"].append(int(node_head[n]))
        head_rows["score"].append(node_flags.get(node_names[n], (None, None))[1])
        head_rows["importance"].append(float(total[n] / head_sum) if head_sum > 0 else 0.0)

    # The circuit: in_graph edges; its nodes and heads.
    c_src, c_dst = src[flags_a], dst[flags_a]
    touched = set(c_src.tolist()) | set(c_dst.tolist())
    has_out, has_in = set(c_src.tolist()), set(c_dst.tolist())
    circuit_heads = []
    for n in heads:
        flag = node_flags.get(node_names[n], (None, None))[0]
        member = flag if flag is not None else (n in has_out and n in has_in)
        if member:
            circuit_heads.append((int(node_layer[n]), int(node_head[n])))
    circuit_nodes = {n for n in touched if node_kind[n] != "attn"} | {
        n for n in heads if (int(node_layer[n]), int(node_head[n])) in set(circuit_heads)}

    digest = hashlib.sha256(raw).hexdigest()
    config = {"source": "eap-ig-json", "file": Path(file).name, "sha256": digest, "selection": selection,
              "param": param}
    run = db.start_run("import", config=config, checkpoint_id=checkpoint_id, task_id=task_id,
                       identity={"file_sha256": digest}, force=force)
    if run.skipped:
        return run
    with run:
        run.add("edge_scores", pa.table({"edge_id": pa.array(ids_a), "score": pa.array(scores_a)}))
        run.add("head_scores", pa.table({"layer": pa.array(head_rows["layer"], pa.int32()),
                                         "head": pa.array(head_rows["head"], pa.int32()),
                                         "score": pa.array(head_rows["score"], pa.float32()),
                                         "importance": pa.array(head_rows["importance"], pa.float32())}))
        run.add("circuits", pa.table({"circuit_id": pa.array([0], pa.int64()), "selection": [selection],
                                      "param": pa.array([param], pa.float64()),
                                      "n_edges": pa.array([int(flags_a.sum())], pa.int32()),
                                      "n_nodes": pa.array([len(circuit_nodes)], pa.int32()),
                                      "faithfulness": pa.array([None], pa.float64())}))
        run.add("circuit_edges", pa.table({"circuit_id": pa.array(np.zeros(int(flags_a.sum()), np.int64)),
                                           "edge_id": pa.array(ids_a[flags_a])}))
        run.add("circuit_heads", pa.table({"circuit_id": pa.array([0] * len(circuit_heads), pa.int64()),
                                           "layer": pa.array([l for l, _ in circuit_heads], pa.int32()),
                                           "head": pa.array([h for _, h in circuit_heads], pa.int32())}))
        run.metric("imported_edges", len(ids_a))
    return run


def new_import_checkpoint(db, *, name: str, lineage: str, step: int, regime: str = "other",
                          parent_id: int | None = None, model_key: str | None = None, data: dict) -> int:
    """Register a checkpoint known only through imported graphs (no weights on this machine).

    Its path is `/imported/<lineage>/<name>` and its digest `imported:<lineage>@<step>`, so every
    graph of the same checkpoint lands on the same row."""
    cfg = data["cfg"]
    if model_key is None:
        same = db.sql("SELECT model_key FROM models WHERE n_layers = ? AND n_heads = ?", [cfg["n_layers"], cfg["n_heads"]])
        model_key = same["model_key"][0] if same.height == 1 else (
            f"eapig-L{cfg['n_layers']}-H{cfg['n_heads']}-KV{_kv_heads(data)}")
    ensure_layout(db, model_key, data)
    return db.register_checkpoint(model_key=model_key, path=f"/imported/{lineage}/{name}",
                                  weights_digest=f"imported:{lineage}@{step}", name=name, lineage=lineage,
                                  regime=regime, step=step, parent_id=parent_id)


def new_import_task(db, *, name: str, mode: str = "plain") -> int:
    """Register a circuit task known only by name (its items live wherever the graph was made)."""
    return db.register_task(name=name, kind="circuit", digest=f"imported:{name}", mode=mode,
                            items=pa.table({"item_id": pa.array([], pa.string())}), source="eap-ig-json")


# -------------------------------------------------------------------------- EAP-IG JSON out

def export_graph_json(db, run_id: int, file: str | Path, *, selection: str | None = None) -> dict[str, int]:
    """Write run `run_id` as an EAP-IG JSON graph; in_graph marks the run's circuit of `selection`
    (default: its threshold circuit, else its last circuit, else none). Returns counts."""
    run = db.sql("SELECT r.run_id, k.model_key FROM runs r LEFT JOIN checkpoints k USING (checkpoint_id) "
                 "WHERE r.run_id = ?", [run_id])
    if not run.height:
        raise UserError(f"no run {run_id}; see `headdb runs`")
    model_key = run["model_key"][0]
    if model_key is None:
        raise UserError(f"run {run_id} has no checkpoint, so its graph layout is unknown")
    shape = db.sql("SELECT * FROM models WHERE model_key = ?", [model_key])
    if not shape.height:
        raise UserError(f"model {model_key} of run {run_id} is not registered")
    shape_row = shape.row(0, named=True)
    scores = db.sql(
        "SELECT e.edge_id, e.name, e.src_node, e.dst_node, s.score FROM edge_scores s "
        "JOIN graph_edges e ON e.edge_id = s.edge_id AND e.model_key = ? WHERE s.run_id = ? ORDER BY e.edge_id",
        [model_key, run_id])
    if not scores.height:
        raise UserError(f"run {run_id} has no edge scores to export")
    circuits = db.sql("SELECT circuit_id, selection FROM circuits WHERE run_id = ? ORDER BY circuit_id", [run_id])
    wanted = selection or "threshold"
    chosen = circuits.filter(pl.col("selection") == wanted)
    if not chosen.height and selection is None:
        chosen = circuits
    if selection is not None and not chosen.height:
        raise UserError(f"run {run_id} has no {selection} circuit; its circuits: "
                        f"{', '.join(sorted(set(circuits['selection']))) or 'none'}")
    circuit_id = chosen["circuit_id"][-1] if chosen.height else None
    in_edges: set[int] = set()
    in_heads: set[tuple[int, int]] = set()
    if circuit_id is not None:
        in_edges = set(db.sql("SELECT edge_id FROM circuit_edges WHERE circuit_id = ?", [circuit_id])["edge_id"])
        hs = db.sql("SELECT layer, head FROM circuit_heads WHERE circuit_id = ?", [circuit_id])
        in_heads = set(zip(hs["layer"].to_list(), hs["head"].to_list()))
    nodes = db.sql("SELECT node_id, name, kind, layer, head FROM graph_nodes WHERE model_key = ? ORDER BY node_id",
                   [model_key])
    flags = scores["edge_id"].is_in(list(in_edges)).to_numpy() if in_edges else np.zeros(scores.height, bool)
    touched = set(scores["src_node"].to_numpy()[flags].tolist()) | set(scores["dst_node"].to_numpy()[flags].tolist())
    node_json = {}
    for r in nodes.iter_rows(named=True):
        node_json[r["name"]] = ((r["layer"], r["head"]) in in_heads) if r["kind"] == "attn" else (r["node_id"] in touched)
    values = scores["score"].cast(pl.Float32).to_numpy().astype(np.float64).tolist()
    edge_json = {name: {"score": value, "in_graph": bool(flag)}
                 for name, value, flag in zip(scores["name"].to_list(), values, flags.tolist())}
    cfg = {"n_layers": shape_row["n_layers"], "n_heads": shape_row["n_heads"],
           "n_key_value_heads": shape_row["n_kv_heads"], "d_model": shape_row["d_model"],
           "parallel_attn_mlp": False, "model_key": model_key, "headdb_run": run_id}
    out = Path(file)
    if not out.parent.exists():
        raise UserError(f"cannot write {out}: folder {out.parent} does not exist")
    tmp = out.with_name(out.name + ".tmp")
    with open(tmp, "w") as fh:
        json.dump({"cfg": cfg, "nodes": node_json, "edges": edge_json}, fh)
    os.replace(tmp, out)
    return {"edges": len(edge_json), "in_graph": int(flags.sum()), "nodes": len(node_json),
            "heads_in_graph": len(in_heads)}
