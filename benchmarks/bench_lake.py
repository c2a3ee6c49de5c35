"""Lake benchmark: many writers into one DuckLake, and the study queries on a lake vs a DuckDB file.

Starts its own PostgreSQL server (Debian's package, unix socket only, as tests/postgres_server.py
does; under root it runs as the `postgres` user) and measures, in one run:

  writers     N writer processes (default 4) each commit R attribution runs of the synthetic
              lineage of bench_warehouse.py (edge scores of every edge, head scores, a top-n and a
              threshold circuit) through the public API, all starting together: total edge-score
              rows per second of wall time from the start signal to the last writer's end, and
              how many transactions lost a race and ran again. The same with N lake writers that
              skip the turn (optimistic only: DuckLake's conflict detection and headdb's re-runs),
              with one writer into a lake, and with N writers into one DuckDB file (which take
              turns on the file lock).
  queries     the 100-checkpoint lineage of bench_warehouse.py ingested one run per checkpoint
              into a DuckDB file and into a lake (the write rate of each), then the median latency
              of heads_gained, head_dynamics and effect_map through run_query on each, and a check
              that both return the same rows.

    .venv/bin/python benchmarks/bench_lake.py                                # 100 checkpoints, 179,749 edges
    .venv/bin/python benchmarks/bench_lake.py --checkpoints 10 --kv-heads 2  # a shorter run
    .venv/bin/python benchmarks/bench_lake.py --quick                        # smoke sizes (make bench --quick)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "tests"))

import headdb  # noqa: E402
from bench_warehouse import LINEAGE, Synth, _ingest_loop, head_columns, register_lineage, timed  # noqa: E402
from headdb.warehouse.queries import run_query  # noqa: E402

QUERIES = ("heads_gained", "head_dynamics", "effect_map")


# ----------------------------------------------------------------------------- writer processes


def writer(db_spec: str, name: str, runs: int, go: str, layers: int, heads: int, kv: int, turns: bool = True) -> None:
    """One writer process: attach, wait for the start signal, commit `runs` runs, report JSON."""
    from headdb.warehouse.lake import LakeSink, is_lake

    synth = Synth(layers, heads, kv)
    if is_lake(db_spec):
        db = headdb.connect(
            sink=LakeSink(db_spec, data_path=os.environ["HEADDB_DATA_PATH"], retry_timeout=3600, take_turns=turns)
        )
    else:
        db = headdb.connect(db_spec, lock_timeout=3600)
    ids, task = register_lineage(db, synth, runs)
    cols = head_columns(synth)
    # Each writer's runs get their own configs (a worker name), on the shared checkpoints.
    print("ready", flush=True)
    while not os.path.exists(go):
        time.sleep(0.005)
    per_run: list[float] = []
    t0 = time.perf_counter()
    _ingest_loop(_Tagged(db, name), synth, runs - 1, ids, task, *cols, per_run)
    elapsed = time.perf_counter() - t0
    conflicts = getattr(db.sink, "conflicts", 0)
    print(json.dumps({"rows": runs * synth.layout.n_edges, "seconds": elapsed, "conflicts": conflicts}), flush=True)


class _Tagged:
    """The Warehouse, with the writer's name added to every run config (distinct jobs per writer)."""

    def __init__(self, db, name: str):
        self.db, self.name = db, name

    def start_run(self, kind, *, config, **kw):
        return self.db.start_run(kind, config={**config, "writer": self.name}, **kw)


def concurrent(
    db_spec: str, data_path: Path | None, n_writers: int, runs: int, args, work: Path, turns: bool = True
) -> dict:
    go = work / f"go-{time.monotonic_ns()}"
    env = {**os.environ, **({"HEADDB_DATA_PATH": str(data_path)} if data_path else {})}
    command = [
        sys.executable,
        __file__,
        "--writer",
        db_spec,
        "",
        str(runs),
        str(go),
        "--layers",
        str(args.layers),
        "--heads",
        str(args.heads),
        "--kv-heads",
        str(args.kv_heads or args.heads),
        *([] if turns else ["--no-turns"]),
    ]
    procs = []
    for k in range(n_writers):
        command[4] = f"w{k}"
        procs.append(subprocess.Popen(list(command), stdout=subprocess.PIPE, text=True, env=env))
    for proc in procs:
        line = proc.stdout.readline().strip()
        assert line == "ready", f"writer did not start: {line!r}"
    t0 = time.perf_counter()
    go.touch()
    reports = []
    for proc in procs:
        out, _ = proc.communicate(timeout=7200)
        assert proc.returncode == 0, "a writer failed"
        reports.append(json.loads(out.strip().splitlines()[-1]))
    wall = time.perf_counter() - t0
    rows = sum(r["rows"] for r in reports)
    db = headdb.connect(db_spec, create=False)
    landed = db.sql("SELECT count(*) AS n FROM runs WHERE status = 'ok'")["n"][0]
    assert landed == n_writers * runs, f"{landed} of {n_writers * runs} runs landed"
    return {
        "writers": n_writers,
        "runs": n_writers * runs,
        "rows": rows,
        "wall_s": wall,
        "rows_per_s": rows / wall,
        "conflicts": sum(r["conflicts"] for r in reports),
    }


# ----------------------------------------------------------------------------- one lineage, two sinks


def fill(db, synth: Synth, n: int) -> dict:
    ids, task = register_lineage(db, synth, n)
    per_run: list[float] = []
    _ingest_loop(db, synth, n, ids, task, *head_columns(synth), per_run)
    rows = synth.layout.n_edges * (n + 1)
    return {"rows": rows, "rows_per_s": rows / sum(per_run), "ms_per_run": 1000 * statistics.median(per_run)}


def latencies(db, n: int, repeat: int) -> tuple[dict, dict]:
    last = f"{LINEAGE}@{100 * n}"
    calls = {
        "heads_gained": {"base": "base", "target": last},
        "head_dynamics": {"lineage": LINEAGE},
        "effect_map": {"lineage": LINEAGE},
    }
    lat, out = {}, {}
    for name, params in calls.items():
        run_query(db, name, params)  # warm caches, as a second CLI call would find them
        lat[name], out[name] = timed(lambda: run_query(db, name, params), repeat)
    return lat, out


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoints", type=int, default=100)
    ap.add_argument("--layers", type=int, default=24)
    ap.add_argument("--heads", type=int, default=14)
    ap.add_argument("--kv-heads", type=int, default=None, help="default: --heads (EAP-IG's ungrouped graph)")
    ap.add_argument("--writers", type=int, default=4)
    ap.add_argument("--writer-runs", type=int, default=10, help="runs each concurrent writer commits")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--writer", nargs=4, metavar=("DB", "NAME", "RUNS", "GO"), help=argparse.SUPPRESS)
    ap.add_argument("--no-turns", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--quick", action="store_true", help="smoke sizes: 3 checkpoints, GQA layout, 2 runs per writer")
    args = ap.parse_args(argv)
    if args.quick:
        args.checkpoints, args.kv_heads, args.writer_runs, args.repeat = 3, 2, 2, 1
    if args.writer:
        spec, name, runs, go = args.writer
        writer(spec, name, int(runs), go, args.layers, args.heads, args.kv_heads or args.heads, not args.no_turns)
        return {}

    from postgres_server import PostgresServer, find_bin

    work = Path(tempfile.mkdtemp(prefix="headdb-bench-lake-"))
    server = PostgresServer(find_bin()).start()
    results: dict = {}
    try:
        synth = Synth(args.layers, args.heads, args.kv_heads or args.heads)
        n = args.checkpoints
        results.update(edges=synth.layout.n_edges, checkpoints=n)
        print(f"layout {synth.layout.n_edges:,} edges; work folder {work}", file=sys.stderr)

        lake = "ducklake:postgres:" + server.create_database("writers4")
        results["lake_writers"] = concurrent(lake, work / "w4", args.writers, args.writer_runs, args, work)
        print(f"  {args.writers} lake writers: {results['lake_writers']}", file=sys.stderr)
        lake_opt = "ducklake:postgres:" + server.create_database("optimistic4")
        results["lake_writers_optimistic"] = concurrent(
            lake_opt, work / "o4", args.writers, args.writer_runs, args, work, turns=False
        )
        print(f"  {args.writers} optimistic lake writers: {results['lake_writers_optimistic']}", file=sys.stderr)
        lake1 = "ducklake:postgres:" + server.create_database("writers1")
        results["lake_one_writer"] = concurrent(lake1, work / "w1", 1, args.writer_runs, args, work)
        print(f"  1 lake writer: {results['lake_one_writer']}", file=sys.stderr)
        results["file_writers"] = concurrent(str(work / "w4.duckdb"), None, args.writers, args.writer_runs, args, work)
        print(f"  {args.writers} file writers: {results['file_writers']}", file=sys.stderr)

        file_db = headdb.connect(work / "study.duckdb")
        results["file_ingest"] = fill(file_db, synth, n)
        print(f"  file ingest: {results['file_ingest']}", file=sys.stderr)
        t0 = time.perf_counter()
        lake_db = headdb.connect("ducklake:postgres:" + server.create_database("study"), data_path=work / "study")
        results["lake_connect_s"] = time.perf_counter() - t0
        results["lake_ingest"] = fill(lake_db, synth, n)
        print(f"  lake ingest: {results['lake_ingest']}", file=sys.stderr)
        results["file_query_s"], on_file = latencies(file_db, n, args.repeat)
        results["lake_query_s"], on_lake = latencies(lake_db, n, args.repeat)
        from polars.testing import assert_frame_equal

        for name in QUERIES:
            assert_frame_equal(on_lake[name], on_file[name], rel_tol=1e-9, abs_tol=1e-12)
        results["same_rows"] = True
        t0 = time.perf_counter()
        headdb.connect(lake_db.location)
        results["lake_reconnect_s"] = time.perf_counter() - t0
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)
    report(results, args)
    return results


def report(r: dict, args) -> None:
    print(
        f"\nheaddb lake benchmark ({platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"duckdb {__import__('duckdb').__version__}); {r['edges']:,} edges per run"
    )
    for key, label in (
        ("lake_writers", f"{args.writers} writers -> one lake"),
        ("lake_writers_optimistic", "  same, optimistic only (no turns)"),
        ("lake_one_writer", "1 writer -> lake"),
        ("file_writers", f"{args.writers} writers -> one DuckDB file"),
    ):
        w = r[key]
        print(
            f"{label:34} {w['rows_per_s'] / 1e6:6.2f} M rows/s  ({w['runs']} runs, {w['rows']:,} rows, "
            f"{w['wall_s']:.1f} s, {w['conflicts']} transactions re-run)"
        )
    print(
        f"{'sequential ingest, 1 txn per ckpt':34} file {r['file_ingest']['rows_per_s'] / 1e6:.2f} M rows/s "
        f"({r['file_ingest']['ms_per_run']:.0f} ms/run), lake {r['lake_ingest']['rows_per_s'] / 1e6:.2f} M rows/s "
        f"({r['lake_ingest']['ms_per_run']:.0f} ms/run); {r['checkpoints']} checkpoints + base"
    )
    for name in QUERIES:
        print(f"{'query ' + name:34} file {r['file_query_s'][name]:.3f} s   lake {r['lake_query_s'][name]:.3f} s")
    print(f"{'open a lake (load + attach)':34} {r['lake_reconnect_s']:.2f} s; same rows on both: {r['same_rows']}")
    print(json.dumps(r, default=float))


if __name__ == "__main__":
    main()
