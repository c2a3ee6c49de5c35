"""`headdb study MANIFEST.toml` and `headdb demo`."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from headdb.cli.ingest import ADDRESS, CPUS_PER_JOB, EXECUTOR, GPUS_PER_JOB

err = Console(stderr=True)


def study(
    ctx: typer.Context,
    manifest: Path = typer.Argument(..., help="Study manifest (TOML)."),
    check: bool = typer.Option(False, "--check", help="Resolve everything without loading models; run nothing."),
    root: Optional[Path] = typer.Option(None, "--root", help="Resolve relative paths against this folder."),
    device: Optional[str] = typer.Option(None, "--device"),
    dtype: str = typer.Option("auto", "--dtype"),
    force: bool = typer.Option(False, "--force", help="Recompute runs that are already ok."),
    reports: bool = typer.Option(True, "--reports/--no-reports", help="Print the manifest's reports at the end."),
    executor_name: str = EXECUTOR, address: Optional[str] = ADDRESS, gpus_per_job: float = GPUS_PER_JOB,
    cpus_per_job: float = CPUS_PER_JOB,
) -> None:
    """Run a whole study declared in a manifest; resumable (a re-run does only what is missing)."""
    from headdb.cli.ingest import execution, executor
    from headdb.jobs.manifest import load_manifest
    from headdb.jobs.study import check as check_study, run_study
    from headdb.progress import progress_bar

    m = load_manifest(manifest, root=root)
    how = execution(device, dtype, force)
    runner = executor(executor_name, address, gpus_per_job, cpus_per_job)
    if check:
        for line in check_study(m, ctx.obj.queries):
            err.print(line, highlight=False)
        err.print("[green]manifest ok[/green]")
        return
    from headdb.jobs.study import StudyJobs, check_ablations, plan_models_and_runs

    check_ablations(None, m, plan_models_and_runs(m, StudyJobs(m), how), ctx.obj.queries)  # before the file exists
    db = ctx.obj.connect(create=True)
    with progress_bar(m.name) as progress:
        outcome = run_study(db, m, executor=runner, execution=how, progress=progress, say=err.print)
    err.print(f"study {m.name}: {len(outcome.done)} run(s) added, {len(outcome.skipped)} already there, "
              f"{len(outcome.failed)} failed; {outcome.loads} checkpoint(s) loaded")
    for failure in outcome.failed:
        err.print(f"  failed: {failure}", highlight=False)
    if reports:
        print_reports(db, m)
    if not outcome.ok:
        raise typer.Exit(1)


def print_reports(db, m) -> None:
    from headdb.reports import run_report

    console = Console()
    for spec in m.reports:
        console.rule(f"[bold]{spec.name}[/bold] {spec.params or ''}")
        run_report(db, spec.name, spec.params, console, extra_dirs=db.query_dirs)


def demo(
    ctx: typer.Context,
    quick: bool = typer.Option(False, "--quick", help="Smaller models, runs and benchmarks (about 3 minutes)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Folder for models, runs and tasks "
                                       "(default ./headdb-demo, or ./headdb-demo-quick)."),
    seed: int = typer.Option(0, "--seed"),
    reports: bool = typer.Option(True, "--reports/--no-reports"),
) -> None:
    """The whole study in miniature, offline on a CPU: pretrain a tiny model, post-train it with
    trl (SFT and GRPO), ingest every checkpoint and print the study's reports."""
    import time

    from headdb.progress import progress_bar
    from headdb.jobs.study import run_study
    from headdb.demo.study import FULL, QUICK, build_models, demo_study

    import torch

    from headdb.demo.study import THREADS

    torch.set_num_threads(THREADS)
    started = time.monotonic()
    settings = QUICK if quick else FULL
    root = out or Path("headdb-demo-quick" if quick else "headdb-demo")
    root.mkdir(parents=True, exist_ok=True)
    db = ctx.obj.connect(create=True)
    build_models(root, settings, seed=seed, say=err.print)
    built = time.monotonic()
    m = demo_study(root, settings)
    from headdb.settings import Execution

    with progress_bar("demo") as progress:
        outcome = run_study(db, m, execution=Execution(device="cpu", dtype="float32"), progress=progress,
                            say=err.print)
    ingested = time.monotonic()
    if reports:
        print_reports(db, m)
    err.print(f"demo: models {built - started:.0f} s, ingest {ingested - built:.0f} s, "
              f"total {time.monotonic() - started:.0f} s; {len(outcome.done)} run(s) added, "
              f"{len(outcome.skipped)} already there, {len(outcome.failed)} failed; warehouse {db.location}")
    err.print(f"next: headdb --db {db.location} runs | headdb --db {db.location} query list")
    if not outcome.ok:
        raise typer.Exit(1)
