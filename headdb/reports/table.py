"""The one table policy of every terminal table: query results, `sql`, `runs`, `checkpoints` and
the reports' tables all go through `DataTable`.

- Headers are the column names exactly as the frame (the SQL) has them, so they can be pasted
  into SQL or a param.
- A cell never folds over lines: numbers and identifiers are printed whole (rich `no_wrap`).
- Columns that are NULL in every row are hidden, with one line naming them.
- When the table is wider than the console, free text (cells over 24 characters: a list of
  heads, a description) is cut short with "…" first, then whole columns are left out, least important first, with one line naming them. Least
  important: a `*_id` column beside its name (task_id beside task), layer/head beside
  head_label, then bootstrap and interval columns (p_*, *_lo, *_hi), then the rest from the
  right.

The fitting happens at render time, for the width the table is printed at (a terminal, the
HTML report, a file).
"""

from __future__ import annotations

import math
from typing import Any, Callable, Iterable, Mapping, Sequence

import polars as pl
from rich.cells import cell_len
from rich.console import Console, ConsoleOptions, RenderResult
from rich.table import Table
from rich.text import Text

NULL = "–"
LONG = 24  # text wider than this is free text (a list, a description) that may be cut short to it
Cell = Callable[[Any], "Text | str"]


def cell_text(value: Any) -> str:
    """How a value is printed in a table cell (also what tests look for)."""
    if value is None:
        return NULL
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:.4g}" if math.isfinite(value) else str(value)
    return str(value)


def drop_order(columns: Sequence[str]) -> list[str]:
    """The columns from least to most important (see the module docstring)."""
    names = set(columns)

    def tier(c: str) -> int:
        if (c.endswith("_id") and c[:-3] in names) or (c in ("layer", "head") and "head_label" in names):
            return 0
        if c.startswith("p_") or c.endswith(("_lo", "_hi")):
            return 1
        return 2

    position = {c: i for i, c in enumerate(columns)}
    return sorted(columns, key=lambda c: (tier(c), -position[c]))


def _width(widths: Iterable[int]) -> int:
    ws = list(widths)
    return sum(ws) + 3 * len(ws) + 1  # rich's default box: a border and one space of padding each side


class DataTable:
    """A frame as a rich renderable that fits the width it is printed at (module docstring).

    cells: column -> function making the cell of a value (a bar, a coloured number); other
    columns print `cell_text(value)`. keep: columns never left out (the row's identity)."""

    def __init__(
        self,
        df: pl.DataFrame,
        title: str | None = None,
        *,
        max_rows: int = 200,
        cells: Mapping[str, Cell] | None = None,
        keep: Sequence[str] = (),
        title_justify: str = "center",
    ) -> None:
        self.df = df
        self.title = title
        self.max_rows = max_rows
        self.cells = dict(cells or {})
        self.keep = set(keep)
        self.title_justify = title_justify

    def _rendered(self, shown: pl.DataFrame) -> dict[str, list[Text]]:
        out: dict[str, list[Text]] = {}
        for name in shown.columns:
            make = self.cells.get(name)
            values = shown[name].to_list()
            out[name] = [_as_text(make(v)) if make else _as_text(v) for v in values]
        return out

    def layout(self, width: int) -> tuple[Table, list[str]]:
        """The rich Table for `width` columns and the notes (one line each) to print under it."""
        df, notes = self.df, []
        shown = df.head(self.max_rows)
        empty = [c for c in df.columns if df.height and df[c].null_count() == df.height]
        if empty and len(empty) < len(df.columns):
            shown = shown.drop(empty)
            notes.append(f"hidden, NULL in every row: {', '.join(empty)}")
        cells = self._rendered(shown)
        natural = {c: max([cell_len(c)] + [x.cell_len for x in cells[c]]) for c in shown.columns}
        widths = dict(natural)
        numeric = {c for c, t in shown.schema.items() if t.is_numeric()}
        order = [c for c in drop_order(shown.columns) if c not in self.keep]
        cut: list[str] = []
        for c in order:  # free text first: cut long strings short
            if _width(widths.values()) <= width:
                break
            floor = max(cell_len(c), LONG)  # identifiers (shorter) are never cut
            if c not in numeric and c not in self.cells and widths[c] > floor:
                widths[c] = max(floor, widths[c] - (_width(widths.values()) - width))
                cut.append(c)
        dropped: list[str] = []
        for c in order:  # then leave whole columns out
            if _width(widths.values()) <= width or len(widths) == 1:
                break
            del widths[c]
            dropped.append(c)
        cut = [c for c in cut if c in widths]
        if cut:
            notes.append(f"cut short (…): {', '.join(cut)}")
        if dropped:
            notes.append(f"not shown at {width} columns: {', '.join(dropped)} (--format csv has every column)")
        if df.height > self.max_rows:
            notes.append(f"{self.max_rows} of {df.height} rows shown; use --format csv for all")
        table = Table(title=self.title, header_style="bold", title_justify=self.title_justify)
        for c, w in widths.items():
            table.add_column(
                c,
                justify="right" if c in numeric else "left",
                no_wrap=True,
                overflow="ellipsis",
                min_width=w,
                max_width=w,
            )
        columns = list(widths)
        for i in range(shown.height):
            table.add_row(*(cells[c][i] for c in columns))
        return table, notes

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        table, notes = self.layout(options.max_width)
        yield table
        for note in notes:
            yield Text(note, style="dim")  # wraps between names on a very narrow console


def _as_text(cell: Any) -> Text:
    """A cell as Text (never read as rich markup, which would eat "[...]")."""
    if isinstance(cell, Text):
        return cell
    return Text(NULL, style="dim") if cell is None else Text(cell if isinstance(cell, str) else cell_text(cell))
