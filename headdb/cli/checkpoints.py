"""`headdb checkpoints` (list) and `headdb checkpoints add` (register a model against a base)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from headdb.errors import UserError
from headdb.reports.output import emit

app = typer.Typer(help="List or register checkpoints.", invoke_without_command=True)
err = Console(stderr=True)


@app.callback()
def checkpoints(
    ctx: typer.Context,
    fmt: str = typer.Option("table", "--format", help="table | csv | json | parquet"),
    out: Optional[Path] = typer.Option(None, "--out"),
) -> None:
    """List registered checkpoints with lineage, regime, step and parent."""
    if ctx.invoked_subcommand is None:
        df = ctx.obj.connect().checkpoints()
        if fmt == "table":
            df = df.select("id", "name", "lineage", "regime", "step", "parent", "digest", "ok_runs")
        emit(df, fmt, out, title="checkpoints")


@app.command()
def add(
    ctx: typer.Context,
    path: str = typer.Argument(..., help="Local model directory."),
    regime: str = typer.Option(..., "--regime", help="distill | other (sft/grpo runs: `headdb ingest run`)."),
    lineage: str = typer.Option(..., "--lineage"),
    base: Optional[str] = typer.Option(None, "--base", help="The model it derives from (registered as regime base)."),
    step: int = typer.Option(0, "--step"),
    name: Optional[str] = typer.Option(None, "--name"),
) -> None:
    """Register a plain model (e.g. a distilled one) against its base, without running anything."""
    from headdb.jobs.job import Placement
    from headdb.jobs.plan import target
    from headdb.jobs.registration import register_target
    from headdb.settings import POST_TRAINING, check_choice

    check_choice("regime", regime, POST_TRAINING)
    if base is not None and Path(base).expanduser().resolve() == Path(path).expanduser().resolve():
        raise UserError("--base is the checkpoint itself; give the model it was trained or distilled from")
    base_target = None
    if base is not None:
        base_name = Path(base).expanduser().resolve().name
        base_target = target(base, Placement(lineage=base_name, regime="base", step=0, name=base_name))
    checkpoint = target(path, Placement(lineage=lineage, regime=regime, step=step, name=name))
    db = ctx.obj.connect(create=True)  # both directories checked first: a mistake writes nothing
    parent_id = register_target(db, base_target) if base_target is not None else None
    checkpoint_id = register_target(db, checkpoint, parent_id)
    err.print(
        f"checkpoint {checkpoint_id} registered ({regime}, lineage {lineage}"
        + (f", parent {parent_id})" if parent_id else ")")
    )
