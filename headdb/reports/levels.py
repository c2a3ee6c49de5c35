"""The trade-off report: does a head set help on hard problems and hurt on simple ones?

One table per intervened run (checkpoint, benchmark, head set) from `ablation_by_level`: per level
of the benchmark's problems, the accuracy without and with the intervention, the difference and
its paired bootstrap interval over that level's problems (headdb.reports.ablation), then one line
naming the levels where the interval lies above zero (helps) and below zero (hurts).
"""

from __future__ import annotations

import polars as pl
from rich.text import Text

from headdb.reports import plots
from headdb.reports.ablation import level_intervals
from headdb.reports.table import DataTable


def _level(level: str | None) -> str:
    return "(none)" if level is None else str(level)


def verdict(levels: list[str | None], intervals: list) -> str:
    """Which levels the head set surely helps or hurts (95% interval above / below zero)."""
    helps = [_level(l) for l, iv in zip(levels, intervals) if iv is not None and iv.low > 0]
    hurts = [_level(l) for l, iv in zip(levels, intervals) if iv is not None and iv.high < 0]
    if helps and hurts:
        return f"a trade-off: helps on level {', '.join(helps)} and hurts on level {', '.join(hurts)}"
    if helps:
        return f"helps on level {', '.join(helps)}; no level where it surely hurts"
    if hurts:
        return f"hurts on level {', '.join(hurts)}; no level where it surely helps"
    return "no level where the effect is clear (every interval spans 0)"


def _names_of(values: pl.Series) -> str:
    found = sorted(set(values.to_list()))
    return f"{found[0]}" if len(found) == 1 else f"{found[0]}-{found[-1]}"


def report_ablation_by_level(q, df, params, console, png=None):
    intervals = level_intervals(q.run, df)
    bars: list[tuple[str, float, tuple[float, float] | None]] = []
    for _, part in df.group_by("run_id", maintain_order=True):
        first = part.row(0, named=True)
        kind = first["kind"] + (f" x{first['factor']:g}" if first["kind"] == "scale" and first["factor"] else "")
        auto = f"{first['kind']} {first['heads']}"
        name = "heads" if first["head_set"] == auto else first["head_set"]
        found = [intervals.get((int(r["run_id"]), r["level"])) for r in part.iter_rows(named=True)]
        shown = part.select(
            pl.col("level").map_elements(_level, return_dtype=pl.Utf8).alias("level"),
            "n",
            "baseline",
            "value",
            "delta",
            pl.Series("delta_ci95", [None if iv is None else iv.text() for iv in found], dtype=pl.Utf8),
        )
        console.print(
            DataTable(
                shown,
                f"{first['checkpoint']} on {first['task']}: {name} ({kind} {first['heads'].replace(',', ' ')}) "
                "by level (baseline: without it)",
                title_justify="left",
                keep=["level", "delta"],
                cells={"delta": lambda d: Text(f"{d:+.3f}", style="red" if d < 0 else "green" if d > 0 else "")},
            )
        )
        for r, iv in zip(part.iter_rows(named=True), found):
            bars.append(
                (
                    f"{first['checkpoint']} {name} level {_level(r['level'])}",
                    r["delta"],
                    None if iv is None else (iv.low, iv.high),
                )
            )
        sure = any(iv is not None and (iv.low > 0 or iv.high < 0) for iv in found)
        console.print(
            Text(
                f"{name}: {verdict(part['level'].to_list(), found)} (paired bootstrap over each level's problems)",
                style="bold" if sure else "",
            )
        )
    if png:
        labels, values, errors = zip(*bars)
        q.wrote(
            console,
            plots.barh(
                png,
                list(labels),
                list(values),
                title="effect of each head set by level",
                xlabel="accuracy change vs the same checkpoint without the intervention",
                intervals=list(errors),
                caption=(
                    f"Change in accuracy per difficulty level when each head set is intervened on at "
                    f"{params.get('checkpoint') or _names_of(df['checkpoint'])}, against the same checkpoint without it ({df['run_id'].n_unique()} runs, {len(bars)} levels in all, "
                    f"n = {_names_of(df['n'])} problems per level); whiskers: 95% paired bootstrap intervals."
                ),
            ),
        )
    return df
