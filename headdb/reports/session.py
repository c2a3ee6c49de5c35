"""One report, one query session: the warehouse is opened and the query catalogue (packaged and
the user's folders) read once, however many queries the report runs."""

from __future__ import annotations

from typing import Any, Iterable, Mapping

import polars as pl
from rich.console import Console
from rich.text import Text

from headdb.errors import UserError
from headdb.reports.palette import Palette
from headdb.warehouse.queries import QuerySession


class ReportSession:
    def __init__(self, session: QuerySession, announce_files: bool = True):
        self.session = session
        self.catalogue = session.catalogue
        self.announce_files = announce_files  # False when figures go somewhere else (an HTML file)
        self._palette: Palette | None = None

    @property
    def palette(self) -> Palette:
        """The warehouse's colours: one per lineage and per task, the same in every figure."""
        if self._palette is None:
            lineages, tasks = self.session.names()
            self._palette = Palette(lineages, tasks)
        return self._palette

    def wrote(self, console: Console, path) -> None:
        """Say that a figure was written, and what it shows (a renderer calls this with what
        plots returned)."""
        from headdb.reports.plots import caption_of

        if self.announce_files:
            caption = caption_of(path)
            console.print(Text(f"wrote {path}" + (f": {caption}" if caption else ""), style="dim"))

    def no_png(self, console: Console, png) -> None:
        if self.announce_files:
            no_png(console, png)

    def run(self, name: str, params: Mapping[str, Any], **only) -> pl.DataFrame:
        """Query `name` with the subset of `params` it declares (plus `only` overrides)."""
        query = self.catalogue.get(name)
        known = {p.name for p in query.params}
        use = {k: v for k, v in {**params, **only}.items() if k in known and v is not None}
        return self.session.run(name, use)

    def check_params(self, report: str, params: Mapping[str, Any], queries: Iterable[str]) -> None:
        """A param no query of the report knows is a typo: say so rather than ignore it."""
        known = {p.name for q in queries for p in self.catalogue.get(q).params}
        for key in params:
            if key not in known:
                raise UserError(f"report {report} has no param {key!r}; its params are {', '.join(sorted(known))}")

    def shape_of(self, df: pl.DataFrame | None = None, **ref) -> tuple[int, int]:
        """(n_layers, n_heads) of the model behind a checkpoint/lineage/run, else from the data."""
        try:
            found = self.run("model_shape", ref)
        except UserError:
            found = pl.DataFrame()
        if found.height:
            return int(found["n_layers"][0]), int(found["n_heads"][0])
        if df is not None and df.height and "layer" in df.columns:
            return int(df["layer"].max()) + 1, int(df["head"].max()) + 1
        return 1, 1


def no_png(console: Console, png) -> None:
    if png:
        console.print(Text(f"nothing to draw, so {png} was not written", style="yellow"))
