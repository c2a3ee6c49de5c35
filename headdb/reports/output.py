"""Writing query results: rich tables for people, csv/json/parquet for programs."""

from __future__ import annotations

import sys
from pathlib import Path

import polars as pl
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from headdb.errors import UserError

FORMATS = ("table", "csv", "json", "parquet")


def _cell(value) -> str:
    if value is None:
        return "[dim]–[/dim]"
    if isinstance(value, float):
        return f"{value:.4g}"
    return escape(str(value))


def rich_table(df: pl.DataFrame, title: str | None = None, max_rows: int = 200, title_justify: str = "center") -> Table:
    """A query result as a rich table; headers wrap at underscores (written as spaces), so a
    narrow terminal wraps a header by words, not by letters."""
    table = Table(title=title, header_style="bold", show_lines=False, title_justify=title_justify)
    for name, dtype in df.schema.items():
        table.add_column(name.replace("_", " "), justify="right" if dtype.is_numeric() else "left", overflow="fold")
    for row in df.head(max_rows).iter_rows():
        table.add_row(*(_cell(v) for v in row))
    if df.height > max_rows:
        table.caption = f"{max_rows} of {df.height} rows shown; use --format csv for all"
    return table


def emit(df: pl.DataFrame, fmt: str = "table", out: Path | None = None, title: str | None = None) -> None:
    """Write `df` in `fmt` to stdout, or to `out` (required for parquet)."""
    if fmt not in FORMATS:
        raise UserError(f"--format {fmt!r} is not one of {', '.join(FORMATS)}")
    if fmt == "parquet":
        if out is None:
            raise UserError("--format parquet needs --out FILE")
        df.write_parquet(out)
        return
    if fmt == "table":
        if out is not None:
            with open(out, "w") as fh:
                Console(file=fh, width=200).print(rich_table(df, title))
        else:
            Console().print(rich_table(df, title))
        return
    text = df.write_csv() if fmt == "csv" else df.write_json()
    if out is not None:
        Path(out).write_text(text)
    else:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
