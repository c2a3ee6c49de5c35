"""`headdb study MANIFEST.toml` and `headdb demo`."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

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
) -> None:
    """Run a whole study declared in a manifest; resumable (a re-run does only what is missing)."""
    from headdb.manifest import load_manifest
    from headdb.progress import progress_bar
    from headdb.study import check as check_study, run_study

    m = load_manifest(manifest, root=root)
    if check:
        for line in check_study(m):
            err.print(line, highlight=False)
        err.print("[green]manifest ok[/green]")
        return
    db = ctx.obj.connect(create=True)
    with progress_bar(m.name) as progress:
        outcome = run_study(db, m, device=device, dtype=dtype, force=force, progress=progress, say=err.print)
    err.print(f"study {m.name}: {len(outcome.done)} run(s) added, {len(outcome.skipped)} already there, "
              f"{len(outcome.failed)} failed")
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
        run_report(db, spec.name, spec.params, console)
