"""Evals at cluster speed, the headdb side: how fast `headdb ingest samples` imports another
engine's completions, and how long `headdb export checkpoint` takes on a tiny model.

    .venv/bin/python benchmarks/bench_evals_at_scale.py [--problems 500] [--samples 4]

A vLLM-format JSONL of problems x samples completions (synthetic arithmetic, half of them right)
is imported twice: by the command (a fresh process: interpreter, torch and transformers imports
included) and through the Python API in this process (plan, grade, store; the import proper).
The export writes a zero-ablation of two heads into a copy of a tiny Qwen2 checkpoint; its time is
the command's wall time and the export's own (load, edit, save, without the process start).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

import headdb
from headdb.demo.tiny import build_tiny_model
from headdb.jobs.executor import execute
from headdb.jobs.exported import plan_export, run_export
from headdb.jobs.generations import Benchmark
from headdb.jobs.imported_generations import plan_imported_generations
from headdb.settings import InterventionSettings


def samples_file(path: Path, bench: Benchmark, samples: int) -> int:
    sampling = {"n": samples, "temperature": 0.6, "top_p": 0.95, "max_tokens": 64, "seed": 0}
    lines = []
    for i, (item, gold) in enumerate(bench.items.select("item_id", "answer").iter_rows()):
        outs = [
            {
                "text": f"Adding up, the answer is \\boxed{{{gold if (i + s) % 2 else int(gold) + 1}}}.",
                "finish_reason": "stop",
                "token_ids": list(range(24)),
            }
            for s in range(samples)
        ]
        lines.append(json.dumps({"id": item, "outputs": outs, "sampling_params": sampling, "engine": "vllm"}))
    path.write_text("\n".join(lines) + "\n")
    return len(lines) * samples


def cli(*args: object) -> float:
    started = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "headdb", *map(str, args)], capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(out.stderr)
    return time.perf_counter() - started


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--problems", type=int, default=500)
    ap.add_argument("--samples", type=int, default=4)
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp())
    model = build_tiny_model(root / "model", arch="qwen2", n_layers=2, n_heads=4, n_kv_heads=2, d_model=64, seed=0)
    spec = f"synthetic-arithmetic:n={args.problems}"
    bench = Benchmark.load(spec)
    n = samples_file(root / "samples.jsonl", bench, args.samples)

    startup = cli("--version")  # the interpreter and headdb's CLI, which every command pays
    command = cli("--db", root / "cli.duckdb", "ingest", "samples", root / "samples.jsonl", "--bench", spec,
                  "--checkpoint", model, "--k", "1,4")  # fmt: skip
    db = headdb.connect(root / "api.duckdb")
    started = time.perf_counter()
    plan = plan_imported_generations(db, root / "samples.jsonl", bench, checkpoint=model, ks=(1, 4))
    outcome = execute(db, plan, say=lambda *_: None)
    api = time.perf_counter() - started
    assert len(outcome.done) == 1

    export_cli = cli("--db", root / "cli.duckdb", "export", "checkpoint", "--checkpoint", model,
                     "--ablate", "L0H1,L1H3", "--out", root / "exported-cli")  # fmt: skip
    export = plan_export(db, model, InterventionSettings(kind="zero", heads="L0H1,L1H3"), root / "exported-api")
    _, export_api = run_export(db, export)

    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"threads {torch.get_num_threads()}"
    )
    print(f"process start (`headdb --version`): {startup:.2f} s")
    print(f"ingest samples, {n} completions ({args.problems} problems x {args.samples}):")
    print(f"  command (new process):  {command:6.2f} s  {n / command:8.0f} samples/s")
    print(f"  API (plan + execute):   {api:6.2f} s  {n / api:8.0f} samples/s")
    print("export checkpoint, tiny Qwen2 (2 layers, 4 heads, d_model 64), zero L0H1,L1H3:")
    print(f"  command (new process):  {export_cli:6.2f} s")
    print(f"  API (load, edit, save): {export_api:6.2f} s")


if __name__ == "__main__":
    main()
