"""How sure an ablation's effect is: paired bootstrap intervals over problems.

For the rows of `ablation_table` measured as accuracy: the interval of each delta (the head set
ablated against the plain run of the same checkpoint and settings), and, where a checkpoint and
benchmark also have a control set, the difference between the head set's accuracy and the
control's, problem by problem, with its interval. Both use the per-problem rates of the
`item_rates` query (headdb.evals.bootstrap explains the resampling).
"""

from __future__ import annotations

from typing import Callable

import polars as pl

from headdb.evals.bootstrap import paired_difference
from headdb.settings import CONTROL_LABEL

Run = Callable[[str, dict], pl.DataFrame]


def _rates(run: Run, run_ids) -> dict[int, pl.DataFrame]:
    ids = sorted({int(r) for r in run_ids if r is not None})
    if not ids:
        return {}
    rates = run("item_rates", {"runs": ",".join(map(str, ids))})
    return {int(key[0]): part.select("item_id", "level", "rate") for key, part in rates.group_by("run_id")}


def _paired(rates: dict[int, pl.DataFrame], a: int, b: int):
    if a not in rates or b not in rates:
        return None
    both = rates[a].select("item_id", "rate").join(rates[b].select("item_id", "rate"), on="item_id", suffix="_b")
    if not both.height:
        return None
    return paired_difference(both["rate"].to_numpy(), both["rate_b"].to_numpy())


def _layer_profile(heads: pl.Expr) -> pl.Expr:
    """'L1H5,L2H3,L1H4' -> '1,1,2': the layers of a head set, sorted (what a control matches)."""
    return (
        heads.str.split(",")
        .list.eval(pl.element().str.extract(r"^L(\d+)H", 1).cast(pl.Int64))
        .list.sort()
        .list.eval(pl.element().cast(pl.Utf8))
        .list.join(",")
    )


def accuracy_rows(df: pl.DataFrame) -> pl.DataFrame:
    return df.filter((pl.col("metric") == "accuracy") & pl.col("k").is_null())


def delta_intervals(run: Run, df: pl.DataFrame) -> dict[int, object]:
    """run_id -> Interval of (ablated - plain) accuracy, for accuracy rows with a baseline."""
    acc = accuracy_rows(df).filter(pl.col("baseline_run").is_not_null())
    rates = _rates(run, acc["run_id"].to_list() + acc["baseline_run"].to_list())
    out = {}
    for run_id, baseline in acc.select("run_id", "baseline_run").iter_rows():
        interval = _paired(rates, run_id, baseline)
        if interval is not None:
            out[int(run_id)] = interval
    return out


def control_contrasts(run: Run, df: pl.DataFrame) -> pl.DataFrame:
    """Per checkpoint and benchmark with a control set: each other head set's accuracy minus the
    control's over the same problems (negative: the head set hurts more), with its interval."""
    acc = accuracy_rows(df).with_columns(_layer_profile(pl.col("heads")).alias("layers"))
    controls = acc.filter(pl.col("head_set") == CONTROL_LABEL).select(
        "checkpoint_id",
        "task",
        "kind",
        "layers",
        pl.col("run_id").alias("control_run"),
        pl.col("heads").alias("control_heads"),
        pl.col("delta").alias("control_delta"),
    )
    # A control is drawn for one head set: as many heads per layer and the same kind. When several
    # sets share a profile, the control run started right after the set's run is its own; with none
    # after it, its control's job had already run (two sets of the same layers drew the same heads,
    # and a job runs once), so the latest one before it is.
    joined = acc.filter(pl.col("head_set") != CONTROL_LABEL).join(
        controls, on=["checkpoint_id", "task", "kind", "layers"]
    )
    after = joined.filter(pl.col("control_run") > pl.col("run_id")).sort("control_run")
    before = joined.filter(pl.col("control_run") < pl.col("run_id")).sort("control_run", descending=True)
    after = after.group_by("run_id", maintain_order=True).first()
    before = (
        before.group_by("run_id", maintain_order=True).first().join(after.select("run_id"), on="run_id", how="anti")
    )
    pairs = pl.concat([after, before]).sort("run_id")
    rates = _rates(run, pairs["run_id"].to_list() + pairs["control_run"].to_list())
    rows = []
    for r in pairs.iter_rows(named=True):
        interval = _paired(rates, r["run_id"], r["control_run"])
        if interval is None:
            continue
        rows.append(
            {
                "checkpoint": r["checkpoint"],
                "task": r["task"],
                "head_set": r["head_set"],
                "heads": r["heads"],
                "control_heads": r["control_heads"],
                "delta": r["delta"],
                "control_delta": r["control_delta"],
                "difference": interval.estimate,
                "low": interval.low,
                "high": interval.high,
                "n": interval.n,
            }
        )
    schema = {
        "checkpoint": pl.Utf8,
        "task": pl.Utf8,
        "head_set": pl.Utf8,
        "heads": pl.Utf8,
        "control_heads": pl.Utf8,
        "delta": pl.Float64,
        "control_delta": pl.Float64,
        "difference": pl.Float64,
        "low": pl.Float64,
        "high": pl.Float64,
        "n": pl.Int64,
    }
    return pl.DataFrame(rows, schema=schema)


def level_intervals(run: Run, df: pl.DataFrame) -> dict[tuple[int, str | None], object]:
    """(run_id, level) -> Interval of (intervened - plain) accuracy over that level's problems,
    for the rows of `ablation_by_level` (the same paired bootstrap as `delta_intervals`)."""
    rates = _rates(run, df["run_id"].to_list() + df["baseline_run"].to_list())
    out = {}
    for run_id, baseline, level in df.select("run_id", "baseline_run", "level").iter_rows():
        on_level = {r: part.filter(pl.col("level").eq_missing(level)) for r, part in rates.items()}
        interval = _paired(on_level, int(run_id), int(baseline))
        if interval is not None:
            out[(int(run_id), level)] = interval
    return out
