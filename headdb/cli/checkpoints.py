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
def checkpoints(ctx: typer.Context,
                fmt: str = typer.Option("table", "--format", help="table | csv | json | parquet"),
                out: Optional[Path] = typer.Option(None, "--out")) -> None:
    """List registered checkpoints with lineage, regime, step and parent."""
    if ctx.invoked_subcommand is None:
        df = ctx.obj.connect().checkpoints()
        if fmt == "table":
            df = df.select("id", "name", "lineage", "regime", "step", "parent", "digest", "ok_runs")
        emit(df, fmt, out, title="checkpoints")


@app.command()
def add(ctx: typer.Context,
        path: str = typer.Argument(..., help="Local model directory."),
        regime: str = typer.Option(..., "--regime", help="distill | other (sft/grpo runs: `headdb ingest run`)."),
        lineage: str = typer.Option(..., "--lineage"),
        base: Optional[str] = typer.Option(None, "--base", help="The model it derives from (registered as regime base)."),
        step: int = typer.Option(0, "--step"),
        name: Optional[str] = typer.Option(None, "--name")) -> None:
    """Register a plain model (e.g. a distilled one) against its base, without running anything."""
    from headdb.jobs.common import Placement, register_checkpoint_dir

    if regime not in ("distill", "other", "sft", "grpo"):
        raise UserError(f"--regime {regime!r} is not one of distill, other, sft, grpo")
    if base is not None and Path(base).expanduser().resolve() == Path(path).expanduser().resolve():
        raise UserError("--base is the checkpoint itself; give the model it was trained or distilled from")
    db = ctx.obj.connect(create=True)
    parent_id = None
    if base is not None:
        base_name = Path(base).expanduser().resolve().name
        parent_id, _ = register_checkpoint_dir(db, base, Placement(lineage=base_name, regime="base", step=0,
                                                                   name=base_name))
    checkpoint_id, _ = register_checkpoint_dir(db, path, Placement(lineage=lineage, regime=regime, step=step,
                                                                   parent_id=parent_id, name=name))
    err.print(f"checkpoint {checkpoint_id} registered ({regime}, lineage {lineage}"
              + (f", parent {parent_id})" if parent_id else ")"))
