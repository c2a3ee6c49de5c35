"""Warehouse benchmark: ingest rate, bytes per edge score, query latency, and the JSON baseline.

A synthetic GRPO lineage of N checkpoints (plus a base) on the Qwen2.5-0.5B graph layout
(24 layers, 14 heads; the EAP-IG graph has one k and one v port per query head, so
--kv-heads defaults to 14: 179,749 edges; --kv-heads 2 gives headdb's grouped-query layout,
79,813 edges). Each checkpoint gets heavy-tailed edge scores (Student-t, 2 degrees of freedom,
drifting from checkpoint to checkpoint), a top-n circuit of 5000 edges and a threshold circuit,
circuit heads and head importance, all written through the public API (start_run, run.add,
commit), one transaction per checkpoint. The reward curve goes to training_metrics.

Measured:
  ingest        edge-score rows per second of wall time through the API (all facts of a run
                included), and the same rows through one bulk insert (the engine's ceiling);
  storage       growth of the DuckDB file divided by the edge-score rows (bytes per score),
                and the Parquet export's edge_scores folder the same way;
  queries       median latency of heads_gained, head_dynamics and effect_map through
                headdb.warehouse.queries.run_query (each call opens the file, as the CLI does), plus
                importance recomputed from the raw edge_scores in SQL;
  baseline      the same three analyses the way they are done without a warehouse: one EAP-IG
                JSON graph file per checkpoint (json.load) and Python code comparing them.

    .venv/bin/python benchmarks/bench_warehouse.py                 # 100 checkpoints
    .venv/bin/python benchmarks/bench_warehouse.py --checkpoints 5 # a quick run
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import headdb  # noqa: E402
from headdb.attribution.graph import build_layout  # noqa: E402
from headdb.warehouse.export import export_parquet  # noqa: E402
from headdb.warehouse.queries import run_query  # noqa: E402

LINEAGE = "grpo-bench"
TOPN = 5000
THRESHOLD_EDGES = 400


# ----------------------------------------------------------------------------- synthetic data


class Synth:
    """Deterministic checkpoint data on one layout."""

    def __init__(self, n_layers: int, n_heads: int, n_kv: int, seed: int = 0):
        self.layout = build_layout((n_layers, n_heads, n_kv))
        self.n_layers, self.n_heads = n_layers, n_heads
        rng = np.random.default_rng(seed)
        n = self.layout.n_edges
        self.base = (rng.standard_t(2, n) * 1e-3).astype(np.float32)
        self.rng = rng
        kinds = self.layout.node_kind
        self.node_is_head = np.array([k == "attn" for k in kinds])
        self.src = self.layout.edge_src.astype(np.int64)
        self.dst = self.layout.edge_dst.astype(np.int64)
        self.head_nodes = np.flatnonzero(self.node_is_head)

    def checkpoint(self, i: int) -> dict:
        """Scores of checkpoint i: the base plus a heavy-tailed drift that grows with i."""
        rng = np.random.default_rng(1000 + i)
        drift = (rng.standard_t(2, self.layout.n_edges) * 1e-3 * min(1.0, 0.1 + 0.02 * i)).astype(np.float32)
        scores = self.base + drift if i > 0 else self.base.copy()
        order = np.argsort(-np.abs(scores), kind="stable")
        topn = order[:TOPN]
        threshold = order[:THRESHOLD_EDGES]
        touched_out = set(self.src[threshold].tolist())
        touched_in = set(self.dst[threshold].tolist())
        heads = [int(n) for n in self.head_nodes if n in touched_out and n in touched_in]
        imp = np.bincount(self.src, weights=np.abs(scores.astype(np.float64)), minlength=self.layout.n_nodes)
        imp_heads = imp[self.head_nodes]
        imp_heads = imp_heads / imp_heads.sum()
        return {"scores": scores, "topn": topn, "threshold": threshold, "heads": heads, "importance": imp_heads}

    def head_lh(self, node: int) -> tuple[int, int]:
        return int(self.layout.node_layer[node]), int(self.layout.node_head[node])


def reward_curve(n: int) -> dict[int, float]:
    rng = np.random.default_rng(7)
    steps = range(10, 100 * n + 1, 10)
    return {s: float(np.clip(0.2 + 0.6 * (1 - np.exp(-s / (30 * n))) + rng.normal(0, 0.03), 0, 1)) for s in steps}


# ----------------------------------------------------------------------------- warehouse side


def used_bytes(path: Path) -> int:
    """Bytes in the file's used blocks (file growth also counts free blocks DuckDB reuses later)."""
    import duckdb

    con = duckdb.connect(str(path), read_only=True)
    try:
        block, used = con.execute("SELECT block_size, used_blocks FROM pragma_database_size()").fetchone()
    finally:
        con.close()
    return block * used


def register_lineage(db, synth: Synth, n: int) -> tuple[dict[int, int], int]:
    """The model, task, reward curve and n+1 checkpoints; (checkpoint ids by index, task id)."""
    layout = synth.layout
    shape = {
        "model_key": "bench-qwen2.5-0.5b",
        "architecture": "Qwen2ForCausalLM",
        "n_layers": synth.n_layers,
        "n_heads": synth.n_heads,
        "n_kv_heads": layout.n_kv_heads,
        "d_model": 896,
        "d_head": 64,
        "vocab_size": 151936,
    }
    db.register_model(shape, layout.nodes_table(), layout.edges_table())
    task = db.register_task(
        name="gsm8k-circuit",
        kind="circuit",
        digest="bench-task",
        items=pa.table({"item_id": ["1"], "clean": ["a"], "corrupted": ["b"]}),
    )
    db.add_training_metrics(
        LINEAGE,
        pa.table(
            {
                "step": pa.array(list(reward_curve(n)), pa.int64()),
                "key": ["reward"] * len(reward_curve(n)),
                "value": list(reward_curve(n).values()),
            }
        ),
    )
    # Checkpoints are registered first (as `headdb ingest run` does); only runs are timed.
    ids, parent = {}, None
    for i in range(n + 1):
        step = 100 * i
        name = "base" if i == 0 else f"checkpoint-{step}"
        ids[i] = parent = db.register_checkpoint(
            model_key=shape["model_key"],
            path=f"/bench/{name}",
            weights_digest=f"w{i}",
            name=name,
            lineage="base" if i == 0 else LINEAGE,
            regime="base" if i == 0 else "grpo",
            step=step,
            parent_id=parent,
        )
    return ids, task


def head_columns(synth: Synth) -> tuple[pa.Array, pa.Array, pa.Array]:
    """(edge ids, head layers, head indices) as the ingest loop adds them."""
    return (
        pa.array(np.arange(synth.layout.n_edges, dtype=np.int32)),
        pa.array([synth.head_lh(h)[0] for h in synth.head_nodes], pa.int32()),
        pa.array([synth.head_lh(h)[1] for h in synth.head_nodes], pa.int32()),
    )


def ingest(db, synth: Synth, n: int, held: bool = False) -> dict:
    layout = synth.layout
    ids, task = register_lineage(db, synth, n)
    edge_ids, head_layer, head_head = head_columns(synth)
    size_before = Path(db.location).stat().st_size
    used_before = used_bytes(Path(db.location))
    ingest_s, gen_s, rows = 0.0, 0.0, 0
    per_run = []
    holder = db.batch() if held else contextlib.nullcontext()
    with holder:
        _ingest_loop(db, synth, n, ids, task, edge_ids, head_layer, head_head, per_run)
    ingest_s = sum(per_run)
    rows = layout.n_edges * (n + 1)
    gen_s = 0.0
    size_after = Path(db.location).stat().st_size
    return {
        "rows": rows,
        "ingest_s": ingest_s,
        "gen_s": gen_s,
        "bytes": size_after - size_before,
        "ids": ids,
        "used_bytes": used_bytes(Path(db.location)) - used_before,
        "ms_per_run": 1000 * statistics.median(per_run),
    }


def _ingest_loop(db, synth, n, ids, task, edge_ids, head_layer, head_head, per_run) -> None:
    layout = synth.layout
    ingest_s, gen_s, rows = 0.0, 0.0, 0
    for i in range(n + 1):
        t0 = time.perf_counter()
        data = synth.checkpoint(i)
        lh = [synth.head_lh(h) for h in data["heads"]]
        gen_s += time.perf_counter() - t0
        t0 = time.perf_counter()
        run = db.start_run("attribution", config={"method": "eap-ig", "bench": i}, checkpoint_id=ids[i], task_id=task)
        with run:
            run.add("edge_scores", pa.table({"edge_id": edge_ids, "score": pa.array(data["scores"])}))
            run.add(
                "head_scores",
                pa.table(
                    {
                        "layer": head_layer,
                        "head": head_head,
                        "score": pa.array(data["importance"].astype(np.float32)),
                        "importance": pa.array(data["importance"].astype(np.float32)),
                    }
                ),
            )
            run.add(
                "circuits",
                pa.table(
                    {
                        "circuit_id": pa.array([0, 1], pa.int64()),
                        "selection": ["topn", "threshold"],
                        "param": [float(TOPN), 0.1],
                        "n_edges": pa.array([TOPN, THRESHOLD_EDGES], pa.int32()),
                        "n_nodes": pa.array([0, len(data["heads"])], pa.int32()),
                        "faithfulness": pa.array([None, None], pa.float64()),
                    }
                ),
            )
            run.add(
                "circuit_edges",
                pa.table(
                    {
                        "circuit_id": pa.array(np.r_[np.zeros(TOPN, np.int64), np.ones(THRESHOLD_EDGES, np.int64)]),
                        "edge_id": pa.array(np.r_[data["topn"], data["threshold"]].astype(np.int32)),
                    }
                ),
            )
            run.add(
                "circuit_heads",
                pa.table(
                    {
                        "circuit_id": pa.array([1] * len(lh), pa.int64()),
                        "layer": pa.array([a for a, _ in lh], pa.int32()),
                        "head": pa.array([b for _, b in lh], pa.int32()),
                    }
                ),
            )
        elapsed = time.perf_counter() - t0
        per_run.append(elapsed)
        ingest_s += elapsed
        rows += layout.n_edges
        if i % 10 == 0:
            print(f"  ingested {i + 1}/{n + 1} checkpoints ({rows / ingest_s / 1e6:.2f} M rows/s)", file=sys.stderr)


def bulk_ceiling(path: Path, synth: Synth, n: int) -> float:
    """Rows per second of one bulk Arrow insert of n+1 runs' edge scores (no run lifecycle)."""
    import duckdb

    con = duckdb.connect(str(path))
    con.execute("CREATE TABLE edge_scores (run_id BIGINT NOT NULL, edge_id INTEGER NOT NULL, score FLOAT NOT NULL)")
    edge_ids = np.arange(synth.layout.n_edges, dtype=np.int32)
    tables = [
        pa.table(
            {
                "run_id": pa.array(np.full(len(edge_ids), i, np.int64)),
                "edge_id": pa.array(edge_ids),
                "score": pa.array(synth.checkpoint(i)["scores"]),
            }
        )
        for i in range(min(n + 1, 21))
    ]
    t0 = time.perf_counter()
    for t in tables:
        con.register("t", t)
        con.execute("INSERT INTO edge_scores SELECT * FROM t")
        con.unregister("t")
    con.close()
    return sum(t.num_rows for t in tables) / (time.perf_counter() - t0)


def timed(fn, repeat: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


# ----------------------------------------------------------------------------- JSON baseline


def write_json_graphs(folder: Path, synth: Synth, n: int) -> dict:
    folder.mkdir(parents=True, exist_ok=True)
    names = synth.layout.edge_names
    node_names = synth.layout.node_names
    t0 = time.perf_counter()
    total = 0
    for i in range(n + 1):
        data = synth.checkpoint(i)
        in_graph = np.zeros(synth.layout.n_edges, bool)
        in_graph[data["threshold"]] = True
        heads = set(data["heads"])
        touched = set(synth.src[in_graph].tolist()) | set(synth.dst[in_graph].tolist())
        nodes = {nm: (k in heads) if synth.node_is_head[k] else (k in touched) for k, nm in enumerate(node_names)}
        edges = {
            nm: {"score": float(s), "in_graph": bool(g)}
            for nm, s, g in zip(names, data["scores"].tolist(), in_graph.tolist())
        }
        graph = {
            "cfg": {"n_layers": synth.n_layers, "n_heads": synth.n_heads, "parallel_attn_mlp": False},
            "nodes": nodes,
            "edges": edges,
        }
        path = folder / f"step-{100 * i:06d}.json"
        with open(path, "w") as fh:
            json.dump(graph, fh)
        total += path.stat().st_size
    (folder / "trainer_state.json").write_text(
        json.dumps({"log_history": [{"step": s, "reward": r} for s, r in reward_curve(n).items()]})
    )
    return {"bytes": total, "write_s": time.perf_counter() - t0}


def _load(path: Path) -> dict:
    with open(path) as fh:
        return json.load(fh)


def _heads(graph: dict) -> set[str]:
    return {
        name
        for name, flag in graph["nodes"].items()
        if name.startswith("a") and (flag if isinstance(flag, bool) else flag.get("in_graph"))
    }


def baseline_heads_gained(folder: Path, n: int):
    base, target = _load(folder / "step-000000.json"), _load(folder / f"step-{100 * n:06d}.json")
    b, t = _heads(base), _heads(target)
    return sorted(t - b), sorted(b - t)


def baseline_head_dynamics(folder: Path, n: int):
    files = [folder / f"step-{100 * i:06d}.json" for i in range(n + 1)]
    sets = [_heads(_load(f)) for f in files]
    log = json.loads((folder / "trainer_state.json").read_text())["log_history"]
    rewards = sorted((e["step"], e["reward"]) for e in log if "reward" in e)
    rows = []
    for i in range(1, n + 1):
        step = 100 * i
        new, pruned = len(sets[i] - sets[i - 1]), len(sets[i - 1] - sets[i])
        before = [r for s, r in rewards if s <= step]
        rows.append((step, len(sets[i]), new, pruned, before[-1] if before else None))
    pairs = [(r[2], r[4]) for r in rows if r[4] is not None]
    corr = float(np.corrcoef(*zip(*pairs))[0, 1]) if len(pairs) > 1 else None
    return rows, corr


def _importance(graph: dict) -> dict[str, float]:
    out: dict[str, float] = {}
    for name, edge in graph["edges"].items():
        src = name.split("->", 1)[0]
        if src[0] == "a":
            out[src] = out.get(src, 0.0) + abs(edge["score"])
    total = sum(out.values())
    return {k: v / total for k, v in out.items()}


def baseline_effect_map(folder: Path, n: int):
    pre = _importance(_load(folder / "step-000000.json"))
    sums: dict[str, float] = {k: 0.0 for k in pre}
    for i in range(1, n + 1):
        post = _importance(_load(folder / f"step-{100 * i:06d}.json"))
        for k in sums:
            a, b = post.get(k, 0.0), pre.get(k, 0.0)
            sums[k] += (a - b) / (a + b + 1e-6)
    return {k: v / n for k, v in sums.items()}


# ----------------------------------------------------------------------------- main


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoints", type=int, default=100, help="checkpoints in the lineage (plus one base)")
    ap.add_argument("--layers", type=int, default=24)
    ap.add_argument("--heads", type=int, default=14)
    ap.add_argument("--kv-heads", type=int, default=None, help="default: --heads (EAP-IG's ungrouped graph)")
    ap.add_argument("--repeat", type=int, default=5, help="query repetitions (median)")
    ap.add_argument("--baseline-repeat", type=int, default=1)
    ap.add_argument("--dir", type=Path, default=None, help="work folder (default: a temporary one, removed)")
    ap.add_argument("--skip-baseline", action="store_true")
    args = ap.parse_args(argv)
    n = args.checkpoints
    work = args.dir or Path(tempfile.mkdtemp(prefix="headdb-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    synth = Synth(args.layers, args.heads, args.kv_heads or args.heads)
    print(
        f"layout: {args.layers} layers x {args.heads} heads ({synth.layout.n_kv_heads} kv heads): "
        f"{synth.layout.n_edges:,} edges; {n} checkpoints + base; work folder {work}",
        file=sys.stderr,
    )
    results: dict = {"edges": synth.layout.n_edges, "checkpoints": n}
    try:
        path = work / "bench.duckdb"
        if path.exists():
            path.unlink()
        db = headdb.connect(path)
        ing = ingest(db, synth, n)
        results["ingest_rows_per_s"] = ing["rows"] / ing["ingest_s"]
        results["ingest_s"] = ing["ingest_s"]
        results["ms_per_run"] = ing["ms_per_run"]
        results["rows"] = ing["rows"]
        results["bytes_per_score"] = ing["bytes"] / ing["rows"]
        results["used_bytes_per_score"] = ing["used_bytes"] / ing["rows"]
        results["db_bytes"] = path.stat().st_size
        held_path = work / "held.duckdb"
        held = ingest(headdb.connect(held_path), synth, n, held=True)
        results["held_rows_per_s"] = held["rows"] / held["ingest_s"]
        results["held_ms_per_run"] = held["ms_per_run"]
        results["held_used_bytes_per_score"] = held["used_bytes"] / held["rows"]
        results["bulk_rows_per_s"] = bulk_ceiling(work / "bulk.duckdb", synth, n)
        t0 = time.perf_counter()
        export_parquet(db, work / "parquet", overwrite=True)
        results["parquet_export_s"] = time.perf_counter() - t0
        results["parquet_bytes_per_score"] = folder_bytes(work / "parquet" / "edge_scores") / ing["rows"]

        last = f"{LINEAGE}@{100 * n}"
        queries = {
            "heads_gained": lambda: run_query(db, "heads_gained", {"base": "base", "target": last}),
            "head_dynamics": lambda: run_query(db, "head_dynamics", {"lineage": LINEAGE}),
            "effect_map": lambda: run_query(db, "effect_map", {"lineage": LINEAGE}),
        }
        lat = {}
        outputs = {}
        for name, fn in queries.items():
            fn()  # warm the OS file cache, as the baseline's files are warm after writing
            lat[name], outputs[name] = timed(fn, args.repeat)
        from headdb.warehouse.queries import query_session

        warm = {}
        with query_session(db) as session:
            warm["heads_gained"], _ = timed(
                lambda: session.run("heads_gained", {"base": "base", "target": last}), args.repeat
            )
            warm["head_dynamics"], _ = timed(lambda: session.run("head_dynamics", {"lineage": LINEAGE}), args.repeat)
            warm["effect_map"], _ = timed(lambda: session.run("effect_map", {"lineage": LINEAGE}), args.repeat)
        results["warm_query_s"] = warm
        raw_sql = (
            "SELECT e.run_id, n.layer, n.head, sum(abs(e.score)) AS s FROM edge_scores e "
            "JOIN graph_edges g ON g.edge_id = e.edge_id AND g.model_key = 'bench-qwen2.5-0.5b' "
            "JOIN graph_nodes n ON n.model_key = g.model_key AND n.node_id = g.src_node "
            "WHERE n.kind = 'attn' GROUP BY ALL"
        )
        lat["importance_from_raw_edges"], _ = timed(lambda: db.sql(raw_sql), max(1, args.repeat // 2))
        results["query_s"] = lat

        if not args.skip_baseline:
            js = write_json_graphs(work / "json", synth, n)
            results["json_bytes_per_score"] = js["bytes"] / ing["rows"]
            results["json_write_rows_per_s"] = ing["rows"] / js["write_s"]
            base = {}
            base["heads_gained"], gained = timed(lambda: baseline_heads_gained(work / "json", n), args.baseline_repeat)
            base["head_dynamics"], dyn = timed(lambda: baseline_head_dynamics(work / "json", n), args.baseline_repeat)
            base["effect_map"], eff = timed(lambda: baseline_effect_map(work / "json", n), args.baseline_repeat)
            results["baseline_s"] = base
            # the two sides agree
            hg = outputs["heads_gained"]
            assert sorted(
                f"a{r['layer']}.h{r['head']}" for r in hg.filter(hg["change"] == "gained").iter_rows(named=True)
            ) == sorted(gained[0]), "heads_gained differs from the baseline"
            hd = outputs["head_dynamics"]
            assert hd["new"].to_list() == [r[2] for r in dyn[0]], "head_dynamics differs from the baseline"
            em = outputs["effect_map"]
            worst = max(abs(r["effect"] - eff[f"a{r['layer']}.h{r['head']}"]) for r in em.iter_rows(named=True))
            assert worst < 1e-4, f"effect_map differs from the baseline by {worst}"
    finally:
        if args.dir is None:
            shutil.rmtree(work, ignore_errors=True)
    report(results)
    return results


def report(r: dict) -> None:
    print(
        f"\nheaddb warehouse benchmark: {r['checkpoints']} checkpoints + base x {r['edges']:,} edges "
        f"= {r['rows']:,} edge scores ({platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()})"
    )
    print(f"{'measure':44} {'headdb':>14} {'JSON baseline':>14} {'ratio':>10} {'target':>12}")
    print(
        f"{'ingest, edge scores/s (API, 1 txn per ckpt)':44} {r['ingest_rows_per_s'] / 1e6:>12.2f} M "
        f"{r.get('json_write_rows_per_s', float('nan')) / 1e6:>12.2f} M "
        f"{r['ingest_rows_per_s'] / r.get('json_write_rows_per_s', float('nan')):>9.1f}x {'>= 2 M/s':>12}"
    )
    print(
        f"{'  same, inside db.batch() (one connection)':44} {r['held_rows_per_s'] / 1e6:>12.2f} M "
        f"{'':>14} {'':>10} {'>= 2 M/s':>12}"
    )
    print(f"{'  bulk insert ceiling (no run lifecycle)':44} {r['bulk_rows_per_s'] / 1e6:>12.2f} M")
    print(
        f"{'bytes per edge score (DuckDB file)':44} {r['bytes_per_score']:>14.2f} "
        f"{r.get('json_bytes_per_score', float('nan')):>14.1f} "
        f"{r.get('json_bytes_per_score', float('nan')) / r['bytes_per_score']:>9.1f}x {'<= 5':>12}"
    )
    print(
        f"{'  bytes per edge score (used blocks)':44} {r['used_bytes_per_score']:>14.2f} {'':>14} {'':>10} {'<= 5':>12}"
    )
    print(f"{'  used blocks, ingested inside db.batch()':44} {r['held_used_bytes_per_score']:>14.2f}")
    print(f"{'  bytes per edge score (Parquet export)':44} {r['parquet_bytes_per_score']:>14.2f}")
    print(f"{'  median ms per checkpoint run (API)':44} {r['ms_per_run']:>14.1f}")
    for name in ("heads_gained", "head_dynamics", "effect_map"):
        q = r["query_s"][name]
        w = r["warm_query_s"][name]
        b = r.get("baseline_s", {}).get(name, float("nan"))
        print(f"{'query ' + name + ', s (run_query)':44} {q:>14.4f} {b:>14.2f} {b / q:>9.0f}x {'< 1 s, >=100x':>12}")
        print(f"{'  same in an open query_session, s':44} {w:>14.4f} {b:>14.2f} {b / w:>9.0f}x")
    print(f"{'  importance from raw edge_scores (SQL), s':44} {r['query_s']['importance_from_raw_edges']:>14.3f}")
    print(json.dumps({k: v for k, v in r.items()}, default=float))


if __name__ == "__main__":
    main()
