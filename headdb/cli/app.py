"""The `headdb` command: a thin typer layer over the Python API."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

import headdb
from headdb.errors import UserError
from headdb.reports.output import emit

app = typer.Typer(
    help="A warehouse for attention-head circuits across training checkpoints.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
err = Console(stderr=True)


class Options:
    """The global options as given (None: not given), resolved by headdb.settings.runtime()."""

    def __init__(self, db: str | None, data_path: str | None, lock_timeout: float | None, queries: list[str]):
        from headdb.settings import runtime

        self.runtime = runtime(
            db=db, data_path=data_path, lock_timeout=lock_timeout, queries=tuple(queries) or None
        )  # a bad value: one line, here
        self.data_path = data_path  # given explicitly (a DuckDB file refuses it; a lake may take the env's)

    @property
    def db(self) -> str:
        return self.runtime.db

    @property
    def lock_timeout(self) -> float:
        return self.runtime.lock_timeout

    def connect(self, *, create: bool = False) -> headdb.Warehouse:
        db = headdb.connect(self.db, create=create, lock_timeout=self.lock_timeout, data_path=self.data_path)
        db.query_dirs = tuple(str(q) for q in self.runtime.queries)
        return db


def _version(value: bool) -> None:
    if value:
        print(f"headdb {headdb.__version__}")
        raise typer.Exit()


def _runtime_help(field: str) -> str:
    from headdb.settings import RUNTIME_ENV, Runtime

    f = Runtime.model_fields[field]
    default = "" if f.default in (None, ()) else f"; default {f.default}"
    return f"{f.description} (env {RUNTIME_ENV[field]}{default})"


@app.callback()
def main_options(
    ctx: typer.Context,
    db: Optional[str] = typer.Option(None, "--db", help=_runtime_help("db"), show_default=False),
    data_path: Optional[str] = typer.Option(None, "--data-path", help=_runtime_help("data_path")),
    lock_timeout: Optional[float] = typer.Option(None, "--lock-timeout", help=_runtime_help("lock_timeout")),
    queries: list[str] = typer.Option(
        [], "--queries", help=_runtime_help("queries") + "; repeatable", show_default=False
    ),
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Show the version and exit."
    ),
) -> None:
    ctx.obj = Options(db, data_path, lock_timeout, queries)


@app.command()
def init(ctx: typer.Context) -> None:
    """Create a warehouse (schema v1 and later migrations)."""
    from headdb.warehouse.store import open_sink

    opts: Options = ctx.obj
    existed = open_sink(opts.db, create=True, lock_timeout=opts.lock_timeout, data_path=opts.data_path).exists()
    db = opts.connect(create=True)
    version = db.schema_version()
    err.print(f"{'warehouse already at' if existed else 'created warehouse'} {db.location} (schema v{version})")


@app.command()
def migrate(ctx: typer.Context) -> None:
    """Apply pending schema migrations in order, in one transaction."""
    opts: Options = ctx.obj
    from headdb.warehouse.store import Warehouse, open_sink

    sink = open_sink(opts.db, create=False, lock_timeout=opts.lock_timeout, data_path=opts.data_path)
    applied = Warehouse(sink).migrate()
    err.print(f"applied migrations {applied}" if applied else "warehouse is up to date")


@app.command()
def runs(
    ctx: typer.Context,
    fmt: str = typer.Option("table", "--format", help="table | csv | json | parquet"),
    out: Optional[Path] = typer.Option(None, "--out", help="Write to this file."),
) -> None:
    """List runs: id, kind, checkpoint, task, status, duration."""
    df = ctx.obj.connect().runs()
    if fmt == "table":
        df = df.select("id", "kind", "checkpoint", "task", "status", "duration_s", "intervened")
    emit(df, fmt, out, title="runs")


@app.command("sql")
def sql_command(
    ctx: typer.Context,
    query: str = typer.Argument(..., help="SQL text; read-only unless --write."),
    write: bool = typer.Option(False, "--write", help="Allow statements that modify the warehouse."),
    fmt: str = typer.Option("table", "--format", help="table | csv | json | parquet"),
    out: Optional[Path] = typer.Option(None, "--out", help="Output file (required for parquet)."),
) -> None:
    """Run SQL against the warehouse."""
    if fmt == "parquet" and out is None:
        raise UserError("--format parquet needs --out FILE")
    df = ctx.obj.connect().sql(query, write=write)
    emit(df, fmt, out)


def _mount() -> None:
    from headdb.cli import (
        analysis as cli_analysis,
        checkpoints as cli_checkpoints,
        export as cli_export,
        ingest as cli_ingest,
        study as cli_study,
    )

    app.add_typer(cli_analysis.query_app, name="query")
    app.add_typer(cli_analysis.report_app, name="report")
    cli_analysis.export_app.command("checkpoint")(cli_export.export_checkpoint)
    app.add_typer(cli_analysis.export_app, name="export")
    app.add_typer(cli_ingest.app, name="ingest")
    app.add_typer(cli_checkpoints.app, name="checkpoints")
    app.command("study")(cli_study.study)
    app.command("demo")(cli_study.demo)


_mount()


def _quiet_libraries() -> None:
    """headdb draws its own progress bars; the libraries' per-file bars are noise around them."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # (transformers reads the hub's setting)


def main() -> None:
    """The console script: a user's mistake is one line on stderr and exit code 2, never a traceback."""
    # typer >= 0.20 carries its own copy of click; its exception classes live there.
    from typer._click import exceptions as click

    _quiet_libraries()
    try:
        code = app(standalone_mode=False)
    except UserError as exc:
        _fail(str(exc))
    except click.NoArgsIsHelpError as exc:
        exc.show()  # a bare `headdb ingest`: the help text is the answer
        sys.exit(2)
    except click.ClickException as exc:  # a mistyped option or value: one line, not a usage box
        command = exc.ctx.command_path if getattr(exc, "ctx", None) is not None else "headdb"
        _fail(f"{exc.format_message()} (see `{command} --help`)")
    except (typer.Abort, KeyboardInterrupt):
        code = 130
    if code == 130:  # Ctrl-C (click returns 130 itself): the open runs were recorded as interrupted
        err.print("headdb: aborted (Ctrl-C); runs that were computing are recorded as interrupted", highlight=False)
    sys.exit(code if isinstance(code, int) else 0)


def _fail(message: str) -> None:
    from rich.text import Text

    # the message as written: never read as rich markup, which would eat "[[models]]"
    err.print(Text("headdb: error: ", style="bold red") + Text(message), highlight=False, soft_wrap=True)
    sys.exit(2)


if __name__ == "__main__":
    main()
