"""Executors: the cost Ray adds per job, and what a second Ray worker buys on a real study.

    .venv/bin/python benchmarks/bench_executors.py [--jobs 100] [--checkpoints 6] [--steps 32]

dispatch    100 tiny jobs that need no model (each its own checkpoint task, so each is one Ray
            task), local executor vs Ray on a local cluster: wall time per job, including the
            driver's run bookkeeping (a `running` row, then facts + `ok` in one transaction).
throughput  a study of N tiny checkpoints x one EAP-IG attribution job each, on a local Ray
            cluster with 1 CPU (one worker at a time) and with 2 CPUs (two at once), one torch
            thread per worker, the workers warmed up (imports done) before timing; the ratio is
            the speed-up of the second worker (target >= 1.6x on a 2-core machine). The sides
            alternate and each runs in a fresh warehouse.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa

import headdb
from headdb.demo.tiny import build_tiny_model
from headdb.jobs.executor import LocalExecutor, execute
from headdb.jobs.plan import CheckpointWork, Plan, target
from headdb.warehouse.runs import Facts


@dataclass
class NoopJob:
    """A job with a unique config and one row of facts: what remains is the executor's overhead."""

    index: int
    kind: str = "generation"
    needs_model: bool = False
    label: str = field(default="noop")
    seed: int | None = None

    def validate(self, target) -> None:
        pass

    def register_task(self, db):
        return None

    def config(self, dtype: str) -> dict:
        return {"noop": self.index}

    def compute(self, loaded, ctx) -> Facts:
        facts = Facts()
        facts.add(
            "eval_metrics",
            pa.table(
                {
                    "metric": ["noop"],
                    "k": pa.array([None], pa.int32()),
                    "value": [float(self.index)],
                    "n": pa.array([1], pa.int32()),
                }
            ),
        )
        return facts


def dispatch(root: Path, n_jobs: int, ray_executor) -> dict:
    ck = target(build_tiny_model(root / "noop-model", arch="qwen2", n_layers=1, n_heads=2, n_kv_heads=1, d_model=16))
    plan = Plan([CheckpointWork(ck, [NoopJob(i)]) for i in range(n_jobs)])
    # Ray's workers import headdb and torch on their first task (seconds, once per worker):
    # warm them up, so what is measured is the cost of each further job.
    started = time.perf_counter()
    execute(
        headdb.connect(root / "warmup.duckdb"),
        Plan([CheckpointWork(ck, [NoopJob(-i)]) for i in range(1, 5)]),
        ray_executor,
        say=lambda _: None,
    )
    out = {"ray_warmup_s": time.perf_counter() - started}
    for name, executor in (("local", LocalExecutor()), ("ray", ray_executor)):
        db = headdb.connect(root / f"dispatch-{name}.duckdb")
        started = time.perf_counter()
        result = execute(db, plan, executor, say=lambda _: None)
        out[name] = (time.perf_counter() - started) / n_jobs
        assert result.ok and len(result.done) == n_jobs, result.failed
    return out


def throughput(root: Path, n_checkpoints: int, steps: int, rounds: int) -> dict:
    import ray

    from headdb.attribution.tasks import load_task
    from headdb.jobs.attribution import AttributionJob
    from headdb.jobs.ray_executor import RayExecutor
    from headdb.settings import AttributionSettings

    task_file = root / "task.jsonl"
    task_file.write_text(
        "".join(
            json.dumps({"clean": f"{10 + i}+{20 + i}=", "corrupted": f"{10 + i}+{30 + i}=", "answer": "3"}) + "\n"
            for i in range(16)
        )
    )
    task = load_task(task_file)
    settings = AttributionSettings(steps=steps, topn=200, curve=False)
    cks = [
        target(
            build_tiny_model(root / f"ck{i}", arch="qwen2", n_layers=4, n_heads=8, n_kv_heads=2, d_model=128, seed=i)
        )
        for i in range(n_checkpoints)
    ]
    plan = Plan([CheckpointWork(c, [AttributionJob(task, settings)]) for c in cks])
    times: dict[int, list[float]] = {1: [], 2: []}
    for r in range(rounds):
        for cpus in (1, 2) if r % 2 == 0 else (2, 1):
            ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
            try:
                warm = Plan([CheckpointWork(cks[0], [NoopJob(-i)]) for i in range(1, 2 * cpus + 1)])
                execute(headdb.connect(root / f"warm-{r}-{cpus}.duckdb"), warm, RayExecutor(), say=lambda _: None)
                db = headdb.connect(root / f"tp-{r}-{cpus}.duckdb")
                started = time.perf_counter()
                result = execute(db, plan, RayExecutor(cpus_per_job=1), say=lambda _: None)
                times[cpus].append(time.perf_counter() - started)
                assert result.ok, result.failed
            finally:
                ray.shutdown()
    return {cpus: min(ts) for cpus, ts in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=100)
    ap.add_argument("--checkpoints", type=int, default=6)
    ap.add_argument("--steps", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--only", choices=("dispatch", "throughput"), default=None)
    args = ap.parse_args()
    import ray

    from headdb.jobs.ray_executor import RayExecutor

    root = Path(tempfile.mkdtemp(prefix="headdb-bench-exec-"))
    print(
        f"machine: {platform.machine()}, {platform.python_version()}, ray {ray.__version__}; "
        f"{time.strftime('%Y-%m-%d')}; {' '.join(sys.argv)}"
    )
    if args.only in (None, "dispatch"):
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
        try:
            d = dispatch(root, args.jobs, RayExecutor())
        finally:
            ray.shutdown()
        print(
            f"dispatch over {args.jobs} tiny jobs: local {d['local'] * 1e3:.1f} ms/job, "
            f"ray {d['ray'] * 1e3:.1f} ms/job, Ray adds {(d['ray'] - d['local']) * 1e3:.1f} ms/job "
            f"(after warming its workers: {d['ray_warmup_s']:.1f} s for the first 4 jobs)"
        )
    if args.only in (None, "throughput"):
        t = throughput(root, args.checkpoints, args.steps, args.rounds)
        print(
            f"throughput, {args.checkpoints} checkpoints x 1 attribution job (steps {args.steps}): "
            f"1 worker {t[1]:.1f} s, 2 workers {t[2]:.1f} s, speed-up {t[1] / t[2]:.2f}x (target >= 1.6x)"
        )


if __name__ == "__main__":
    main()
