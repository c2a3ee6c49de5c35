"""Writing query results: rich tables for people, csv/json/parquet for programs."""

from __future__ import annotations

import sys
from pathlib import Path

import polars as pl
from rich.console import Console

from headdb.errors import UserError
from headdb.reports.table import DataTable

FORMATS = ("table", "csv", "json", "parquet")


def rich_table(
    df: pl.DataFrame, title: str | None = None, max_rows: int = 200, title_justify: str = "center", **kw
) -> DataTable:
    """A query result as a table that fits the width it is printed at (headdb.reports.table)."""
    return DataTable(df, title, max_rows=max_rows, title_justify=title_justify, **kw)


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
