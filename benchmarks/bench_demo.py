"""The demo across seeds: times, and whether the study's phenomena show in each seed.

    python benchmarks/bench_demo.py [--seeds 0,1,2] [--quick] [--out DIR] [--markdown FILE]

Runs `headdb demo --seed S` once per seed, one after the other, each in a fresh folder and
warehouse (the terminal output of each goes to DIR/seedS.out / .err), and measures its wall
time, its CPU time (one torch thread: on an idle machine wall time is about the CPU time) and
the load average around it. Then it reads each warehouse through the named queries and writes a
markdown section (to --markdown, else stdout) with, per seed: accuracy per lineage over the
checkpoints, the heads each regime gained, GRPO's new/pruned heads per checkpoint beside the
reward and their correlation, SFT's kept heads, and each ablation's delta against its
layer-matched control with a paired bootstrap interval over problems. Nothing is tuned here:
the script only reads what the demo measured.
"""
from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import polars as pl

ROOT = Path(__file__).resolve().parent.parent


def run_seed(seed: int, out: Path, quick: bool) -> dict:
    folder, db = out / f"seed{seed}", out / f"seed{seed}.duckdb"
    env = {**os.environ, "COLUMNS": "80", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "headdb", "--db", str(db), "demo", "--seed", str(seed), "--out", str(folder)]
    if quick:
        cmd.append("--quick")
    load_before = os.getloadavg()
    cpu_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    with open(out / f"seed{seed}.out", "w") as so, open(out / f"seed{seed}.err", "w") as se:
        rc = subprocess.run(cmd, stdout=so, stderr=se, env=env, cwd=out).returncode
    wall = time.monotonic() - started
    cpu_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (cpu_after.ru_utime - cpu_before.ru_utime) + (cpu_after.ru_stime - cpu_before.ru_stime)
    return {"seed": seed, "rc": rc, "wall": wall, "cpu": cpu, "load": (load_before, os.getloadavg()), "db": db}


def _fmt(v, digits=3) -> str:
    return "–" if v is None else (f"{v:.{digits}f}" if isinstance(v, float) else str(v))


def _md(df: pl.DataFrame) -> list[str]:
    lines = ["| " + " | ".join(df.columns) + " |", "|" + "---|" * len(df.columns)]
    for row in df.iter_rows():
        lines.append("| " + " | ".join(_fmt(v) for v in row) + " |")
    return lines


def seed_section(result: dict) -> tuple[list[str], dict]:
    import headdb
    from headdb.demo.study import SELECTION
    from headdb.reports.ablation import control_contrasts
    from headdb.reports.session import ReportSession
    from headdb.warehouse.queries import query_session

    db = headdb.connect(result["db"], create=False)
    (l1, l5, l15), (m1, m5, m15) = result["load"]
    lines = [f"#### seed {result['seed']}: wall {result['wall']:.0f} s, CPU {result['cpu']:.0f} s "
             f"(exit {result['rc']}; load average 1/5/15 min before {l1:.1f}/{l5:.1f}/{l15:.1f}, "
             f"after {m1:.1f}/{m5:.1f}/{m15:.1f})", ""]
    verdict = {}
    with query_session(db) as session:
        q = ReportSession(session)
        lines.append("Accuracy (4 samples at T 0.6, mean over problems), base then each checkpoint:")
        lines.append("")
        for lineage in ("sft", "grpo"):
            traj = q.run("benchmark_trajectory", {"lineage": lineage, "metric": "accuracy"})
            wide = (traj.select("step", "task", "value").pivot(on="task", index="step", values="value").sort("step"))
            lines += [f"{lineage}:", ""] + _md(wide) + [""]
        sizes = q.run("regime_compare", {"base": "base", "selection": SELECTION})
        lines += [f"Heads gained over the base at each lineage's last checkpoint ({SELECTION} circuits):", ""]
        lines += _md(sizes.select("task", "lineage", "base_heads", "heads", "emergent", "lost", "emergent_heads")) + [""]
        sub = sizes.filter((pl.col("lineage") == "sft") & (pl.col("task") == "sub"))
        cohorts = q.run("head_cohorts", {"lineage": "sft", "task": "sub", "selection": SELECTION}).filter(~pl.col("in_base").fill_null(False))
        kept = int(cohorts["still_active"].sum()) if cohorts.height else 0
        lines += [f"SFT on sub: {cohorts.height} head(s) added over the base across its checkpoints, {kept} still in "
                  f"the last circuit; first added at steps {sorted(set(cohorts['first_step'].to_list()))}.", ""]
        verdict["sft_gains"] = bool(sub.height and sub["emergent"][0] > 0)
        verdict["sft_keeps"] = bool(cohorts.height and kept == cohorts.height)
        dyn = q.run("head_dynamics", {"lineage": "grpo", "task": "add", "metric": "reward", "selection": SELECTION})
        lines += ["GRPO on add, per checkpoint (reward: at the step; window: mean since the previous checkpoint):", ""]
        lines += _md(dyn.select("step", "active", "new", "pruned", "cumulative", "metric_value", "window_mean")
                     .rename({"metric_value": "reward", "window_mean": "window"})) + [""]
        corr = q.run("dynamics_correlation", {"lineage": "grpo", "task": "add", "metric": "reward",
                                              "selection": SELECTION})
        if corr.height:
            c = corr.row(0, named=True)
            lines += [f"Correlation with the reward over {c['n']} checkpoints: new {_fmt(c['corr_new'], 2)}, pruned "
                      f"{_fmt(c['corr_pruned'], 2)}, active {_fmt(c['corr_active'], 2)}; new vs window "
                      f"{_fmt(c['corr_new_window'], 2)}, pruned vs window {_fmt(c['corr_pruned_window'], 2)}.", ""]
        windows = [v for v in dyn["window_mean"].to_list() if v is not None]
        verdict["reward_rise"] = (windows[-1] - windows[0]) if len(windows) >= 2 else None
        table = q.run("ablation_table", {"metric": "accuracy"})
        contrasts = control_contrasts(q.run, table)
        lines += ["Ablations (zero) at the last checkpoint: the regime's emergent heads vs a random layer-matched "
                  "control; difference = accuracy(emergent ablated) - accuracy(control ablated), paired bootstrap "
                  "95% CI over problems (2000 resamples):", ""]
        lines += _md(contrasts.select("checkpoint", "task", "head_set", "heads", "delta", "control_delta", "difference",
                                      "low", "high", "n")) + [""]
        for c in contrasts.iter_rows(named=True):
            verdict[f"ablation {c['checkpoint'].split('/')[0]}"] = (c["high"] < 0, c["difference"])
    return lines, verdict


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--quick", action="store_true", help="`headdb demo --quick` and one seed (a smoke run)")
    ap.add_argument("--out", type=Path, default=None, help="work folder (default: a new temporary one)")
    ap.add_argument("--markdown", type=Path, default=None)
    args = ap.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")][: 1 if args.quick else None]
    if args.out is None:
        import tempfile
        args.out = Path(tempfile.mkdtemp(prefix="headdb-bench-demo-"))
    args.out.mkdir(parents=True, exist_ok=True)
    lines = [f"`headdb demo{' --quick' if args.quick else ''}`, seeds {', '.join(map(str, seeds))}, "
             f"{time.strftime('%Y-%m-%d')}, {os.cpu_count()} CPUs, work folder {args.out}", ""]
    summary = []
    for seed in seeds:
        result = run_seed(seed, args.out, args.quick)
        print(f"seed {seed}: exit {result['rc']}, wall {result['wall']:.0f} s, CPU {result['cpu']:.0f} s", flush=True)
        if result["rc"] != 0:
            lines += [f"#### seed {seed}: the demo FAILED (exit {result['rc']}); see {args.out}/seed{seed}.err", ""]
            continue
        section, verdict = seed_section(result)
        lines += section
        summary.append((seed, verdict))
    lines += ["Per seed: " + "; ".join(
        f"seed {seed}: SFT gained heads {'yes' if v.get('sft_gains') else 'NO'}"
        f" (all kept: {'yes' if v.get('sft_keeps') else 'no'}), GRPO reward change "
        f"{_fmt(v.get('reward_rise'), 2)}, "
        + ", ".join(f"{k} hurts more than control: {'yes' if v[k][0] else 'no'} ({v[k][1]:+.3f})"
                    for k in v if k.startswith("ablation"))
        for seed, v in summary)]
    text = "\n".join(lines) + "\n"
    if args.markdown:
        args.markdown.write_text(text)
        print(f"wrote {args.markdown}")
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    raise SystemExit(main())
