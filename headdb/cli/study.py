"""`headdb study MANIFEST.toml` and `headdb demo`."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from headdb.cli.ingest import ADDRESS, CPUS_PER_JOB, DEVICE, DTYPE, EXECUTOR, FORCE, GPUS_PER_JOB, WORKERS

err = Console(stderr=True)


def study(
    ctx: typer.Context,
    manifest: Path = typer.Argument(..., help="Study manifest (TOML)."),
    check: bool = typer.Option(False, "--check", help="Resolve everything without loading models; run nothing."),
    root: Optional[Path] = typer.Option(None, "--root", help="Resolve relative paths against this folder."),
    device: Optional[str] = DEVICE,
    dtype: str = DTYPE,
    force: bool = FORCE,
    reports: bool = typer.Option(True, "--reports/--no-reports", help="Print the manifest's reports at the end."),
    executor_name: str = EXECUTOR,
    address: Optional[str] = ADDRESS,
    gpus_per_job: float = GPUS_PER_JOB,
    cpus_per_job: float = CPUS_PER_JOB,
    workers: int = WORKERS,
) -> None:
    """Run a whole study declared in a manifest; resumable (a re-run does only what is missing)."""
    from headdb.cli.ingest import execution, executor
    from headdb.jobs.manifest import load_manifest

    m = load_manifest(manifest, root=root)  # before torch is imported: a typo is reported in a second
    from headdb.jobs.study import check as check_study, run_study
    from headdb.progress import progress_bar

    how = execution(device, dtype, force)
    runner = executor(executor_name, address, gpus_per_job, cpus_per_job, workers)
    if check:
        for line in check_study(m, ctx.obj.runtime.queries):
            err.print(line, highlight=False)
        err.print("[green]manifest ok[/green]")
        return
    from headdb.jobs.study import StudyJobs, check_ablations, check_reports, plan_models_and_runs

    check_reports(m, ctx.obj.runtime.queries)  # before the file exists
    check_ablations(None, m, plan_models_and_runs(m, StudyJobs(m), how), ctx.obj.runtime.queries)
    db = ctx.obj.connect(create=True)
    with progress_bar(m.name) as progress:
        outcome = run_study(db, m, executor=runner, execution=how, progress=progress, say=err.print)
    err.print(
        f"study {m.name}: {len(outcome.done)} run(s) added, {len(outcome.skipped)} already there, "
        f"{len(outcome.failed)} failed; {outcome.loads} checkpoint(s) loaded"
    )
    for failure in outcome.failed:
        err.print(f"  failed: {failure}", highlight=False)
    if reports:
        print_reports(db, m)
    if not outcome.ok:
        raise typer.Exit(1)


def print_reports(db, m, console: Console | None = None) -> None:
    from headdb.reports import print_reports as print_all

    print_all(db, [(r.name, r.params) for r in m.reports], console or Console(), db.query_dirs)


def demo(
    ctx: typer.Context,
    quick: bool = typer.Option(False, "--quick", help="Smaller models, runs and benchmarks (under 2 minutes)."),
    out: Optional[Path] = typer.Option(
        None,
        "--out",
        help="Folder for models, runs, tasks, the log and the HTML "
        "report (default ./headdb-demo, or ./headdb-demo-quick).",
    ),
    seed: int = typer.Option(
        0,
        "--seed",
        help="Training seed (weights, data order, sampling); the benchmarks "
        "and circuit tasks stay the same, so seeds are comparable.",
    ),
    reports: bool = typer.Option(True, "--reports/--no-reports"),
) -> None:
    """The whole study in miniature, offline on a CPU: pretrain a tiny model, post-train it with
    trl (SFT and GRPO), ingest every checkpoint, print the study's reports and what they found,
    and write them all into one HTML file."""
    from headdb.demo.run import check_warehouse, run_demo
    from headdb.demo.study import FULL, QUICK
    from headdb.demo.summary import MARGINS

    settings = QUICK if quick else FULL
    root = out or Path("headdb-demo-quick" if quick else "headdb-demo")
    db = ctx.obj.connect(create=True)
    check_warehouse(db, root)
    err.print(
        f"headdb demo{' --quick' if quick else ''}: building in {root}/ (library logs: {root}/demo.log)",
        highlight=False,
    )
    done = run_demo(
        db,
        root,
        settings,
        seed=seed,
        console=err,
        out=Console(),
        reports=reports,
        title="headdb demo" + (" (quick)" if quick else "") + f", seed {seed}",
    )
    outcome, t = done.outcome, done.seconds
    out_console = Console()
    out_console.rule("[bold]what the demo found[/bold] (every number measured above)")
    for line in done.summary:
        out_console.print(f"- {line}", highlight=False, markup=False)
    out_console.print(MARGINS, highlight=False, markup=False)
    err.print(
        f"demo: models {t['models']:.0f} s, ingest {t['ingest']:.0f} s, reports {t['reports']:.0f} s, "
        f"total {t['total']:.0f} s; {len(outcome.done)} run(s) added, {len(outcome.skipped)} already there, "
        f"{len(outcome.failed)} failed",
        highlight=False,
    )
    err.print(
        f"report: {done.html}  (open it in a browser: every report with its figure, self-contained)", highlight=False
    )
    err.print(f"log: {done.log}   warehouse: {db.location}", highlight=False)
    err.print(
        f"next: headdb --db {db.location} runs | headdb --db {db.location} report study "
        f"{_manifest_path()} --html study.html",
        highlight=False,
    )
    if not outcome.ok:
        raise typer.Exit(1)


def _manifest_path() -> str:
    from headdb.demo.study import demo_manifest

    return str(demo_manifest())
