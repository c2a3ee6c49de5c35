"""The renderers of the study's reports: tables, heatmaps and curves from query results.

Every renderer has the signature `(q, df, params, console, png=None)`: `q` is the report's one
ReportSession (headdb.reports.session), `df` the result of the report's main query (never
empty: the spec's empty-result text is shown instead, see headdb.reports), params the query
params, console a rich Console, png an optional path for a matplotlib figure. It returns the
main result so callers and tests can check what was drawn.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
from rich.console import Console
from rich.text import Text

from headdb.reports import plots
from headdb.reports.output import rich_table
from headdb.reports.palette import GAINED, LOST
from headdb.reports.table import DataTable, cell_text
from headdb.reports.terminal import Scale, bar, grid, heatmap, sparkline

CHANGE = {"gained": ("gained", GAINED, "+"), "lost": ("lost", LOST, "-")}
SIDES = {
    "off_only": ("think-off only (compensatory)", "#d73027", "F"),
    "on_only": ("think-on only", "#4575b4", "N"),
    "both": ("both", "#fee090", "B"),
}
CIRCUIT_EDGES_SHOWN = 12  # the circuit report's edge table: the strongest edges only
CONFIDENT = 0.95  # bootstrap confidence below which a heatmap cell is drawn as unsure ("?" keys)


def _unsure(categories: dict) -> dict:
    """categories plus a pale "key?" twin of each: the same set, bootstrap p < CONFIDENT."""
    out = dict(categories)
    for key, (label, colour, glyph) in categories.items():
        pale = "#" + "".join(f"{(int(colour[i : i + 2], 16) + 255) // 2:02x}" for i in (1, 3, 5))
        out[f"{key}?"] = (f"{label}, p < {CONFIDENT:g}", pale, glyph.lower() if glyph.lower() != glyph else glyph + "?")
    return out


def _mark_unsure(df: pl.DataFrame, key: str, p: str) -> pl.DataFrame:
    """Column `shown`: `key`, with "?" appended where the bootstrap p is below CONFIDENT."""
    unsure = pl.col(p).is_not_null() & (pl.col(p) < CONFIDENT) if p in df.columns else pl.lit(False)
    return df.with_columns(pl.when(unsure).then(pl.col(key) + "?").otherwise(pl.col(key)).alias("shown"))


def _confidence_note(console: Console, df: pl.DataFrame, column: str, what: str, *, flag: bool = False) -> None:
    """One line on how sure the rows are, or that their runs have no bootstrap replicates.
    flag: the column is a 0/1 indicator; count the ones."""
    values = df[column].drop_nulls().drop_nans() if column in df.columns else pl.Series([], dtype=pl.Float64)
    if values.len() == 0:
        console.print(
            Text(f"{what}: no bootstrap replicates (attribute with bootstrap > 0 for confidence)", style="yellow")
        )
        return
    if flag:
        console.print(Text(f"{what}: {int(values.sum())} of {values.len()}", style="dim"))
        return
    console.print(
        Text(
            f"{what}: {(values >= CONFIDENT).sum()} of {values.len()} with {column} >= {CONFIDENT:g} "
            f"(median {values.median():.2f})",
            style="dim",
        )
    )


# ----------------------------------------------------------------------------- helpers


def _names(values) -> str:
    """'a, b and c': the names a caption lists."""
    values = [str(v) for v in values]
    return values[0] if len(values) == 1 else ", ".join(values[:-1]) + " and " + values[-1]


def _selection(params) -> str:
    return params.get("selection") or "threshold"


def _groups(df: pl.DataFrame, by: list[str]) -> list[tuple[tuple, pl.DataFrame]]:
    if df.is_empty():
        return []
    keys = df.select(by).unique(maintain_order=True).rows()
    return [(key, df.filter(pl.all_horizontal([pl.col(c).eq_missing(v) for c, v in zip(by, key)]))) for key in keys]


# ---------------------------------------------------------------------- analysis 1


def report_heads_gained(q, df, params, console, png=None):
    n_layers, n_heads = q.shape_of(df, checkpoint=params.get("target"))
    sure = _mark_unsure(
        df.with_columns(
            pl.when(pl.col("change") == "gained").then(pl.col("p_gained")).otherwise(pl.col("p_lost")).alias("p_change")
        ),
        "change",
        "p_change",
    )
    _confidence_note(console, sure, "p_change", "confidence of each change (p_gained / p_lost)")
    panels = []
    for (task, mode), part in _groups(sure, ["task", "mode"]):
        console.print(
            rich_table(
                part.select("change", "head_label", "base_importance", "target_importance", "p_change"),
                title=f"{task} ({mode}): heads gained and lost, {params.get('base')} -> {params.get('target')}",
            )
        )
        values = grid(part, n_layers, n_heads, "shown", categorical=True)
        title = f"{task} ({mode}): +{(part['change'] == 'gained').sum()} / -{(part['change'] == 'lost').sum()}"
        console.print(
            heatmap(
                values,
                scale=Scale("categorical", categories=_unsure(CHANGE), label="change"),
                console=console,
                title=title,
            )
        )
        panels.append((title, values))
    if png:
        tasks = _names(f"{t} ({m})" for (t, m), _ in _groups(sure, ["task", "mode"]))
        caption = (
            f"Heads that join (gained, green) or leave (lost, red) the {_selection(params)} circuit from "
            f"{params.get('base')} to {params.get('target')}, by layer and head, one panel per task ({tasks}); "
            f"pale: bootstrap confidence below {CONFIDENT:g}; grey: no change ({n_layers} x {n_heads} heads)."
        )
        q.wrote(
            console,
            plots.heatmaps(
                png, panels, kind="categorical", categories=_unsure(CHANGE), missing="no change", caption=caption
            ),
        )
    return df


def report_regime_compare(q, sizes, params, console, png=None):
    shown = sizes.select(
        "task", "lineage", "last_step", "base_heads", "heads", "emergent", "kept", "lost", "emergent_heads"
    )
    console.print(rich_table(shown, title=f"emergent heads over {params.get('base')} (circuit sizes in heads)"))
    if sizes["emergent_lo"].null_count() == sizes.height:
        _confidence_note(console, sizes, "emergent_lo", "emergent heads")
    else:
        console.print(
            Text(
                "emergent heads sure at min_confidence (emergent_confident of emergent): "
                + ", ".join(
                    f"{r['lineage']} {r['emergent_confident']}/{r['emergent']}"
                    if r["emergent_confident"] is not None
                    else f"{r['lineage']} (no paired bootstrap replicates)"
                    for r in sizes.iter_rows(named=True)
                ),
                style="dim",
            )
        )
    overlap = q.run("regime_overlap", params)
    layers = q.run("regime_layers", params)
    for (task,), part in _groups(sizes, ["task"]):
        lineages = part["lineage"].to_list()
        ov = overlap.filter(pl.col("task") == task)
        lookup = {}
        for r in ov.iter_rows(named=True):
            lookup[(r["lineage_a"], r["lineage_b"])] = lookup[(r["lineage_b"], r["lineage_a"])] = r

        def jaccard(a: str, b: str) -> str | None:
            r = lookup.get((a, b))
            return (
                "1" if a == b else None if r is None or r["jaccard"] is None else f"{r['jaccard']:.2f} ({r['shared']})"
            )

        matrix = pl.DataFrame(
            {"lineage": lineages, **{b: [jaccard(a, b) for a in lineages] for b in lineages}},
            schema={"lineage": pl.Utf8, **{b: pl.Utf8 for b in lineages}},
        )
        console.print(DataTable(matrix, f"{task}: Jaccard of emergent head sets (shared heads)", keep=["lineage"]))
        lay = layers.filter(pl.col("task") == task)
        if lay.height:
            n_layers = int(lay["layer"].max()) + 1
            values = np.zeros((n_layers, len(lineages)))
            for r in lay.iter_rows(named=True):
                values[r["layer"], lineages.index(r["lineage"])] = r["emergent"]
            console.print(
                heatmap(
                    values,
                    console=console,
                    title=f"{task}: emergent heads per layer",
                    scale=Scale.for_values(values, label="emergent heads", vmin=0),
                    col_labels=[str(i) for i in range(len(lineages))],
                    col_title="lineage",
                )
            )
            console.print(Text("lineages: " + ", ".join(f"{i}={n}" for i, n in enumerate(lineages)), style="dim"))
    if png and layers.height:
        first = layers["task"][0]
        lay = layers.filter(pl.col("task") == first)
        bars = {name: (g["layer"].to_list(), g["emergent"].to_list()) for (name,), g in _groups(lay, ["lineage"])}
        others = sorted(set(layers["task"].to_list()) - {first})
        caption = (
            f"Emergent heads (in the lineage's last {_selection(params)} circuit on {first}, not in "
            f"{params.get('base')}'s) per layer, one bar per lineage ({_names(bars)})"
            + (f"; the tables above also cover {_names(others)}." if others else ".")
        )
        q.wrote(
            console,
            plots.curves(
                png,
                {},
                bars=bars,
                title=f"{first}: emergent heads per layer",
                xlabel="layer",
                ylabel="emergent heads",
                colours={name: q.palette.lineage(name) for name in bars},
                counts=True,
                caption=caption,
            ),
        )
    return sizes


# ---------------------------------------------------------------------- analysis 2


def report_head_frequency(q, df, params, console, png=None):
    n_layers, n_heads = q.shape_of(df, lineage=params.get("lineage"))
    panels = []
    for (task,), part in _groups(df, ["task"]):
        total = int(part["n_checkpoints"][0])
        values = grid(part, n_layers, n_heads, "n_in_circuit", fill=0.0)
        title = f"{params.get('lineage')} / {task}: circuits containing each head (of {total} checkpoints)"
        console.print(
            heatmap(
                values, console=console, title=title, scale=Scale("sequential", 0, max(total, 1), label="checkpoints")
            )
        )
        top = part.head(10).select(
            "head_label",
            "n_in_circuit",
            "frequency",
            "first_step",
            "last_step",
            "p_mean",
            "n_in_circuit_lo",
            "n_in_circuit_hi",
        )
        console.print(rich_table(top, title=f"{task}: most frequent heads"))
        _confidence_note(console, part, "p_mean", f"{task}: expected frequency under prompt resampling")
        panels.append((title, values))
    if png:
        caption = (
            f"How many of the checkpoint circuits ({_selection(params)}) of {params.get('lineage')} contain each "
            f"head, by layer and head, one panel per task ({_names(t for (t,), _ in _groups(df, ['task']))})."
        )
        q.wrote(console, plots.heatmaps(png, panels, label="checkpoints", vmin=0, caption=caption))
    return df


def report_head_cohorts(q, df, params, console, png=None):
    n_layers, n_heads = q.shape_of(df, lineage=params.get("lineage"))
    panels = []
    for (task,), part in _groups(df, ["task"]):
        summary = (
            part.group_by("first_step")
            .agg(
                pl.len().alias("heads"),
                pl.col("still_active").sum().alias("still_active"),
                pl.col("in_base").sum().alias("in_base"),
                pl.col("p_first").mean().alias("mean_p_first"),
            )
            .sort("first_step")
        )
        console.print(rich_table(summary, title=f"{params.get('lineage')} / {task}: cohorts by first step"))
        _confidence_note(console, part, "p_first", f"{task}: heads sure to join at their first step")
        values = grid(part, n_layers, n_heads, "first_step")
        title = f"{task}: step at which each head first joins the circuit"
        console.print(heatmap(values, console=console, title=title, scale=Scale.for_values(values, label="first step")))
        panels.append((title, values))
    if png:
        caption = (
            f"The step of {params.get('lineage')} at which each head first joins the {_selection(params)} circuit, "
            f"one panel per task ({_names(t for (t,), _ in _groups(df, ['task']))}), over "
            f"{int(df['n_checkpoints'].max())} checkpoints; grey: never in the circuit."
        )
        q.wrote(console, plots.heatmaps(png, panels, label="first step", missing="never joined", caption=caption))
    return df


# ---------------------------------------------------------------------- analysis 3


def report_head_dynamics(q, df, params, console, png=None):
    corr = q.run("dynamics_correlation", params)
    metric = df["metric"][0]
    for (task,), part in _groups(df, ["task"]):
        top_change = max([v or 0 for v in part["new"].to_list()] + [v or 0 for v in part["pruned"].to_list()] + [1])
        top_active = max(part["active"].max() or 1, part["cumulative"].max() or 1, 1)
        mvals = [v for v in part["metric_value"].to_list() if v is not None]
        lo, hi = (min(mvals), max(mvals)) if mvals else (0.0, 1.0)
        wmax = max([v for v in part["window_mean"].to_list() if v is not None] + [hi, 1e-9])
        console.print(
            DataTable(
                part.select("step", "active", "new", "pruned", "cumulative", "metric_value", "window_mean"),
                f"{params.get('lineage')} / {task}: head dynamics beside {metric} (metric_value: {metric} at "
                "the step; window_mean: its mean since the previous checkpoint)",
                title_justify="left",
                keep=["step"],
                cells={
                    "active": lambda v: _count_bar(v, top_active, "blue"),
                    "new": lambda v: _count_bar(v, top_change, "green"),
                    "pruned": lambda v: _count_bar(v, top_change, "red"),
                    "window_mean": lambda w: (
                        Text("–") if w is None else Text(f"{cell_text(w)} ") + bar(w, wmax, 8, style="yellow")
                    ),
                },
            )
        )
        line = Text()
        line.append("new     ", style="green")
        line.append(sparkline([float(v) if v is not None else None for v in part["new"].to_list()]))
        line.append("\npruned  ", style="red")
        line.append(sparkline([float(v) if v is not None else None for v in part["pruned"].to_list()]))
        line.append(f"\n{metric[:7]:<8}", style="yellow")
        line.append(sparkline(part["metric_value"].to_list()))
        console.print(line)
        c = corr.filter(pl.col("task") == task)
        if c.height:
            row = c.row(0, named=True)

            def f(v):
                return "n/a" if v is None else f"{v:+.2f}"

            console.print(
                Text(
                    f"correlation with {metric} over {row['n']} checkpoints: new {f(row['corr_new'])}, "
                    f"pruned {f(row['corr_pruned'])}, active {f(row['corr_active'])}; "
                    f"with its mean since the previous checkpoint: new {f(row['corr_new_window'])}",
                    style="bold",
                )
            )
    if png:
        task = df["task"][0]
        part = df.filter(pl.col("task") == task)
        steps = part["step"].to_list()
        bars = {
            "new": (steps, [v or 0 for v in part["new"].to_list()]),
            "pruned": (steps, [v or 0 for v in part["pruned"].to_list()]),
        }
        series = {"active": (steps, part["active"].to_list()), "cumulative": (steps, part["cumulative"].to_list())}
        mv = part.filter(pl.col("metric_value").is_not_null())
        wm = part.filter(pl.col("window_mean").is_not_null())
        twin = {}
        if mv.height:
            twin[f"{metric} at the step"] = (mv["step"].to_list(), mv["metric_value"].to_list())
        if wm.height:
            twin[f"{metric}, mean since previous"] = (wm["step"].to_list(), wm["window_mean"].to_list())
        lineage = str(params.get("lineage"))
        caption = (
            f"Heads of {lineage}'s {_selection(params)} circuit on {task} at each of its {part.height} checkpoints: "
            f"in the circuit (active) and ever in it (cumulative), lines in the lineage's colour; bars: heads new "
            f"(green) and pruned (red) since the previous checkpoint; black, right axis: {metric} at the step "
            f"(dashed) and its mean since the previous checkpoint (dotted)."
        )
        q.wrote(
            console,
            plots.curves(
                png,
                series,
                bars=bars,
                twin=twin or None,
                twin_label=metric,
                title=f"{lineage} / {task}: head dynamics",
                xlabel="step",
                ylabel="heads",
                colours={
                    "active": q.palette.lineage(lineage),
                    "cumulative": q.palette.lineage(lineage),
                    "new": GAINED,
                    "pruned": LOST,
                },
                styles={"active": 0, "cumulative": 1},
                counts=True,
                caption=caption,
            ),
        )
    return df


def _count_bar(value, top, style: str) -> Text:
    if value is None:
        return Text("–")
    return Text(f"{value:>2} ") + bar(value, top, 5, style=style)


# ---------------------------------------------------------------------- analysis 4


def report_benchmark_trajectory(q, df, params, console, png=None):
    df = df.with_columns(
        pl.when(pl.col("k").is_null())
        .then(pl.col("task"))
        .otherwise(pl.col("task") + "@" + pl.col("k").cast(pl.Utf8))
        .alias("series")
    )
    wide = (
        df.select("step", "checkpoint", "is_base", "series", "value")
        .pivot(on="series", index=["step", "checkpoint", "is_base"], values="value")
        .sort(["is_base", "step"], descending=[True, False])
        .drop("is_base")
    )
    console.print(rich_table(wide, title=f"{params.get('lineage')}: {df['metric'][0]} per benchmark"))
    for (series,), part in _groups(df, ["series"]):
        console.print(
            Text(f"{series:>16} ", style="bold")
            + Text(sparkline(part["value"].to_list()), style="cyan")
            + Text(f"  {part['value'][0]:.3g} -> {part['value'][-1]:.3g}", style="dim")
        )
    if png:
        groups = _groups(df, ["series"])
        series = {name: (g["step"].to_list(), g["value"].to_list()) for (name,), g in groups}
        ks = sorted({k for k in df["k"].to_list() if k is not None})
        metric = df["metric"][0]
        steps = df["step"].unique().sort()
        caption = (
            f"{metric} of each benchmark ({_names(df['task'].unique(maintain_order=True))}) at each checkpoint of "
            f"{params.get('lineage')}: {steps.len()} checkpoints, steps {steps.min()}-{steps.max()}, "
            f"n = {df['n'].max()} problems per benchmark; colour: benchmark"
            + (f", marker: k ({_names(ks)})." if ks else ".")
        )
        q.wrote(
            console,
            plots.curves(
                png,
                series,
                title=f"{params.get('lineage')}: benchmark trajectory",
                xlabel="step",
                ylabel=metric,
                colours={name: q.palette.task(g["task"][0]) for (name,), g in groups},
                styles={name: ks.index(g["k"][0]) if g["k"][0] is not None else 0 for (name,), g in groups},
                rate=_is_rate(df["value"]),
                caption=caption,
            ),
        )
    return df


def _is_rate(values: pl.Series) -> bool:
    """Accuracy, pass@k, maj@k: drawn on a 0..1 axis (a reward outside 0..1 keeps its own)."""
    finite = values.drop_nulls()
    return finite.len() > 0 and bool(finite.min() >= 0) and bool(finite.max() <= 1)


# ---------------------------------------------------------------------- analysis 5


def report_effect_map(q, df, params, console, png=None):
    n_layers, n_heads = q.shape_of(df, lineage=params.get("lineage"))
    panels = []
    for (task,), part in _groups(df, ["task"]):
        values = grid(part, n_layers, n_heads, "effect")
        title = f"{params.get('lineage')} / {task}: E(l,h) over {part['n_pairs'][0]} checkpoints"
        console.print(
            heatmap(values, console=console, title=title, scale=Scale("diverging", -1.0, 1.0, label="effect"))
        )
        ranked = part.sort("effect", descending=True)
        console.print(
            rich_table(
                pl.concat([ranked.head(5), ranked.tail(5)])
                .unique(maintain_order=True)
                .select(
                    "head_label",
                    "effect",
                    "effect_min",
                    "effect_max",
                    "mean_importance_pre",
                    "mean_importance_post",
                    "effect_lo",
                    "effect_hi",
                ),
                title=f"{task}: strongest gains and losses",
            )
        )
        sign_sure = part.with_columns(
            pl.when(pl.col("effect_lo").is_null())
            .then(None)
            .otherwise(((pl.col("effect_lo") > 0) | (pl.col("effect_hi") < 0)).cast(pl.Float64))
            .alias("sign_sure")
        )
        _confidence_note(console, sign_sure, "sign_sure", f"{task}: heads whose effect interval excludes 0", flag=True)
        panels.append((title, values))
    if png:
        caption = (
            f"E(l,h), the change in each head's importance from post-training, averaged over the checkpoints of "
            f"{params.get('lineage')} (red: more important after, blue: less), one panel per task "
            f"({_names(t for (t,), _ in _groups(df, ['task']))})."
        )
        q.wrote(
            console, plots.heatmaps(png, panels, kind="diverging", vmin=-1, vmax=1, label="E(l,h)", caption=caption)
        )
    return df


# ---------------------------------------------------------------------- analysis 6


def report_think_compensatory(q, sizes, params, console, png=None):
    console.print(
        rich_table(
            sizes.select(
                "checkpoint",
                "task",
                "heads_on",
                "heads_off",
                "faithfulness_on",
                "faithfulness_off",
                "off_only",
                "on_only",
                "both",
            ),
            title="circuit size (heads) with thinking on vs off",
        )
    )
    heads = q.run("think_compensatory", params, side="all")
    panels = []
    for (ck, task), part in _groups(_mark_unsure(heads, "side", "p_side"), ["checkpoint", "task"]):
        n_layers, n_heads = q.shape_of(part, checkpoint=str(part["checkpoint_id"][0]))
        values = grid(part, n_layers, n_heads, "shown", categorical=True)
        title = f"{ck} / {task}: {(part['side'] == 'off_only').sum()} compensatory heads"
        console.print(
            heatmap(
                values,
                console=console,
                title=title,
                scale=Scale("categorical", categories=_unsure(SIDES), label="circuit"),
            )
        )
        _confidence_note(
            console, part.filter(pl.col("side") == "off_only"), "p_side", f"{ck} / {task}: compensatory heads, p_side"
        )
        panels.append((title, values))
    if png and panels:
        caption = (
            "Heads in the circuit with thinking off only (compensatory), on only, or both, one panel per checkpoint "
            f"and task; pale: bootstrap confidence below {CONFIDENT:g}; grey: in neither circuit."
        )
        q.wrote(
            console,
            plots.heatmaps(
                png, panels, kind="categorical", categories=_unsure(SIDES), missing="in neither", caption=caption
            ),
        )
    return sizes


# ---------------------------------------------------------------------- analysis 7, 8


def _set_label(row) -> str:
    """The head set's label, or 'heads' when it is only the automatic kind + heads text."""
    auto = f"{row['kind']} {row['heads']}"
    return "heads" if row["head_set"] == auto else row["head_set"]


def report_ablation_table(q, df, params, console, png=None):
    from headdb.reports.ablation import control_contrasts, delta_intervals

    intervals = delta_intervals(q.run, df)
    contrasts = control_contrasts(q.run, df)
    for (checkpoint, task, metric, k), part in _groups(df, ["checkpoint", "task", "metric", "k"]):
        name = metric + (f"@{k}" if k is not None else "")
        n = part["n"].max()
        rows = [
            {
                "head_set": _set_label(r),
                "kind": r["kind"] + (f" x{r['factor']:g}" if r["kind"] == "scale" and r["factor"] is not None else ""),
                "heads": r["heads"],
                "baseline": r["baseline"],
                "value": r["value"],
                "delta": r["delta"],
                "delta_ci95": None if (ci := intervals.get(int(r["run_id"]))) is None else ci.text(),
            }
            for r in part.iter_rows(named=True)
        ]
        shown = pl.DataFrame(
            rows,
            schema={"head_set": pl.Utf8, "kind": pl.Utf8, "heads": pl.Utf8, "baseline": pl.Float64}
            | {"value": pl.Float64, "delta": pl.Float64, "delta_ci95": pl.Utf8},
        )
        console.print(
            DataTable(
                shown,
                f"{checkpoint} on {task}: {name} with each head set ablated (baseline: without it; n = {n} problems)",
                title_justify="left",
                keep=["head_set", "delta"],
                cells={
                    "delta": lambda d: (
                        Text("no baseline", style="yellow")
                        if d is None
                        else Text(f"{d:+.3f}", style="red" if d < 0 else "green" if d > 0 else "")
                    )
                },
            )
        )
        for c in contrasts.filter((pl.col("checkpoint") == checkpoint) & (pl.col("task") == task)).iter_rows(
            named=True
        ):
            worse = c["difference"] < 0
            sure = c["high"] < 0 or c["low"] > 0
            console.print(
                Text(
                    f"{_set_label_text(c)} {c['heads'].replace(',', ' ')} vs control {c['control_heads'].replace(',', ' ')}: "
                    f"{c['difference']:+.3f} accuracy "
                    f"(95% CI [{c['low']:+.3f}, {c['high']:+.3f}], paired bootstrap over {c['n']} problems): "
                    + (
                        "ablating these heads hurts more than the control"
                        if worse and sure
                        else "ablating these heads hurts less than the control"
                        if sure
                        else "not distinguishable from the control"
                    ),
                    style="bold" if sure else "",
                )
            )
    if png:
        have = df.filter(pl.col("delta").is_not_null())
        if have.height:
            labels = [  # the heads too: two sets of one checkpoint each have a control
                f"{r['checkpoint']} {r['task']} {_set_label(r)} {r['heads']}"
                + (f" ({r['metric']})" if r["metric"] != "accuracy" else "")
                for r in have.iter_rows(named=True)
            ]
            errors = [intervals.get(int(r)) for r in have["run_id"].to_list()]
            q.wrote(
                console,
                plots.barh(
                    png,
                    labels,
                    have["delta"].to_list(),
                    title="effect of ablating each head set",
                    xlabel="accuracy change vs the same checkpoint without ablation",
                    intervals=[(e.low, e.high) if e is not None else None for e in errors],
                    caption=(
                        f"Change in each benchmark's score when a head set is ablated, against the same checkpoint "
                        f"without ablation ({have.height} runs, n = {_names(sorted(set(have['n'].to_list())))} "
                        f"problems); whiskers: 95% paired bootstrap intervals."
                    ),
                ),
            )
        else:
            q.no_png(console, png)
    return df


def _set_label_text(c) -> str:
    return "heads" if c["head_set"].startswith(("zero ", "mean ", "scale ")) else c["head_set"]


def report_passk_curve(q, df, params, console, png=None):
    df = df.with_columns(
        (
            pl.col("checkpoint")
            + " "
            + pl.col("task")
            + " ("
            + pl.col("intervention")
            + ") run "
            + pl.col("run_id").cast(pl.Utf8)
        ).alias("curve")
    )
    wide = (
        df.select("curve", "k", "value")
        .with_columns(pl.col("k").cast(pl.Utf8).alias("k"))
        .pivot(on="k", index="curve", values="value")
    )
    console.print(rich_table(wide, title=f"{df['metric'][0]} by k"))
    if png:
        groups = _groups(df, ["curve"])
        series = {name: (g["k"].to_list(), g["value"].to_list()) for (name,), g in groups}
        metric = df["metric"][0]
        caption = (
            f"{metric} against k for {len(series)} generation runs (checkpoint, benchmark, intervention; "
            f"n = {_names(sorted(set(df['n'].to_list())))} problems); colour: benchmark, marker and dash: run, so "
            f"runs with equal values stay visible as nested markers."
        )
        q.wrote(
            console,
            plots.curves(
                png,
                series,
                title=f"{metric} curves",
                xlabel="k",
                ylabel=metric,
                logx=True,
                colours={name: q.palette.task(g["task"][0]) for (name,), g in groups},
                rate=_is_rate(df["value"]),
                caption=caption,
            ),
        )
    return df


# ---------------------------------------------------------------------- analysis 9


def report_newly_solved_missed(q, df, params, console, png=None):
    short = pl.col("change").str.replace("newly_", "")
    summary = (
        df.with_columns(pl.col("failure_tag").fill_null("untagged"), short)
        .group_by("task", "step", "change", "failure_tag")
        .agg(pl.len().alias("items"))
        .pivot(on="failure_tag", index=["task", "step", "change"], values="items")
        .fill_null(0)
        .sort("task", "step", "change")
    )
    console.print(
        rich_table(
            summary,
            title=f"{params.get('lineage')}: items newly solved / missed vs the base, by "
            "failure tag (newly_solved: solved / newly_missed: missed)",
        )
    )
    console.print(
        rich_table(
            df.with_columns(short).select(
                "task", "step", "change", "item_id", "level", "rate", "base_rate", "failure_tag"
            ),
            title="items",
            max_rows=20,
        )
    )
    if png:
        missed = df.filter(pl.col("change") == "newly_missed").with_columns(pl.col("failure_tag").fill_null("untagged"))
        solved = df.filter(pl.col("change") == "newly_solved")
        bars = {
            f"missed: {tag}": (g["step"].to_list(), [1] * g.height) for (tag,), g in _groups(missed, ["failure_tag"])
        }
        bars = {name: _count_by_step(xs) for name, (xs, _) in bars.items()}
        if solved.height:
            bars["solved"] = _count_by_step(solved["step"].to_list())
        reds = _shades("Reds", len(bars) - ("solved" in bars))
        colours = {name: GAINED if name == "solved" else reds.pop() for name in bars}
        caption = (
            f"Benchmark items of {params.get('lineage')} newly solved (green) or newly missed (red shades, by failure "
            f"tag) at each checkpoint, relative to {params.get('base')}: {df.height} item changes over "
            f"{_names(df['task'].unique(maintain_order=True))}."
        )
        q.wrote(
            console,
            plots.curves(
                png,
                {},
                bars=bars,
                title="newly solved / missed per checkpoint",
                xlabel="step",
                ylabel="items",
                colours=colours,
                counts=True,
                caption=caption,
            ),
        )
    return df


def _shades(name: str, n: int) -> list[str]:
    """n distinct shades of a sequential colour map, darkest last."""
    from matplotlib import colormaps
    from matplotlib.colors import to_hex

    return [to_hex(colormaps[name](0.45 + 0.5 * i / max(n - 1, 1))) for i in range(n)]


def _count_by_step(steps):
    values, counts = np.unique(np.asarray(steps), return_counts=True)
    return values.tolist(), counts.tolist()


# ---------------------------------------------------------------------- faithfulness, top heads


def report_circuit_faithfulness(q, df, params, console, png=None):
    for (selection, param), part in _groups(df, ["selection", "param"]):
        shown = part.select(
            pl.when(pl.col("step") == 0)
            .then(pl.col("checkpoint"))
            .otherwise(pl.col("lineage") + "@" + pl.col("step").cast(pl.Utf8))
            .alias("checkpoint"),
            pl.col("task")
            + pl.when(pl.col("mode") == "plain").then(pl.lit("")).otherwise(" (" + pl.col("mode") + ")").alias("task"),
            "n_heads",
            "n_edges",
            "faithfulness",
            "cpr",
            "cmd",
            "run_id",
        )
        console.print(
            rich_table(
                shown,
                title=f"circuit faithfulness: {selection} circuits" + ("" if param is None else f" ({param:g})"),
                title_justify="left",
            )
        )
    _gqa_caveat(q, df, console)
    if png:
        runs = df["run_id"].unique().to_list()
        if len(runs) == 1:
            curve = q.run("faithfulness_curve", {"run": runs[0]})
            if curve.height:
                q.wrote(
                    console,
                    plots.curves(
                        png,
                        {f"run {runs[0]}": (curve["percent"].to_list(), curve["faithfulness"].to_list())},
                        title="faithfulness vs circuit size",
                        xlabel="% of edges kept",
                        ylabel="faithfulness",
                        logx=True,
                        colours={f"run {runs[0]}": q.palette.lineage(str(df["lineage"][0]))},
                        caption=(
                            f"Faithfulness of the circuit of run {runs[0]} ({df['checkpoint'][0]}, {df['task'][0]}) "
                            f"against the share of its edges kept, at {curve.height} circuit sizes."
                        ),
                    ),
                )
                return df
        have = df.filter(pl.col("faithfulness").is_not_null())
        if not have.height:
            q.no_png(console, png)
            return df
        groups = _groups(have, ["lineage", "task", "selection"])
        series = {
            f"{lin} {task} {sel}": (g["step"].to_list(), g["faithfulness"].to_list()) for (lin, task, sel), g in groups
        }
        tasks = sorted({task for (_, task, _), _ in groups})
        caption = (
            f"Faithfulness of each checkpoint's circuit ({_names(sorted(set(have['selection'].to_list())))}) against "
            f"its training step: {have.height} circuits of {_names(sorted(set(have['lineage'].to_list())))}; "
            f"colour: lineage (grey: the base), marker and dash: task ({_names(tasks)})."
        )
        q.wrote(
            console,
            plots.curves(
                png,
                series,
                title="faithfulness per checkpoint",
                xlabel="step",
                ylabel="faithfulness",
                colours={f"{lin} {task} {sel}": q.palette.lineage(lin) for (lin, task, sel), _ in groups},
                styles={f"{lin} {task} {sel}": tasks.index(task) for (lin, task, sel), _ in groups},
                caption=caption,
            ),
        )
    return df


def _gqa_caveat(q, df, console) -> None:
    """Next to CPR/CMD of a grouped-query-attention model: they are headdb's own, not MIB's."""
    measured = df.filter(pl.col("cpr").is_not_null() | pl.col("cmd").is_not_null())
    if not measured.height:
        return
    shapes = pl.concat([q.run("model_shape", {"run": run}) for run in measured["run_id"].unique().sort().to_list()])
    grouped = shapes.filter(pl.col("n_kv_heads") < pl.col("n_heads")).unique("model_key", maintain_order=True)
    for row in grouped.iter_rows(named=True):
        console.print(
            Text(
                f"cpr/cmd of {row['model_key']}: grouped-query attention ({row['n_heads']} query heads on "
                f"{row['n_kv_heads']} kv heads). headdb's graph has one k/v port per kv head, MIB's one per query "
                "head, so these are headdb's own and not comparable with MIB's (docs/attribution.md, \"GQA and CPR/CMD\").",
                style="dim",
            )
        )


def report_top_heads(q, df, params, console, png=None):
    for (run_id,), part in _groups(df, ["run_id"]):
        top = part["importance"].max() or 1.0
        console.print(
            DataTable(
                part.select("rank", "head_label", "importance", "in_circuit"),
                f"run {run_id}: {part['checkpoint'][0]} / {part['task'][0]}",
                keep=["head_label", "importance"],
                cells={"importance": lambda v: Text("–") if v is None else Text(f"{v:.4f} ") + bar(v, top, 20)},
            )
        )
    if png:
        first = df.filter(pl.col("run_id") == df["run_id"][0])
        q.wrote(
            console,
            plots.barh(
                png,
                first["head_label"].to_list(),
                first["importance"].to_list(),
                title=f"top heads of run {df['run_id'][0]}",
                xlabel="importance",
                caption=(
                    f"The {first.height} most important heads of run {df['run_id'][0]} "
                    f"({params.get('checkpoint') or first['checkpoint'][0]}, "
                    f"{first['task'][0]}) by importance I(l,h) (the head's share of the run's |edge score| leaving heads)."
                ),
            ),
        )
    return df


# ---------------------------------------------------------------------- analysis 10


def report_circuit(q, df, params, console, png=None, out: str | Path | None = None, dot: bool = True):
    """A run's circuit: a summary line and its strongest edges on the console, and
    - dot=True (`headdb report circuit`): a graphviz .dot file (`out`, default circuit-runRUN.dot)
      and a PNG, rendered by `dot` when graphviz is installed, else drawn with matplotlib when a
      PNG path is given;
    - dot=False (a study's reports, the HTML report): no .dot; the PNG, when a path is given,
      drawn with matplotlib."""
    from headdb.reports.circuit import write_circuit

    selection = params.get("selection") or "threshold"
    run = int(df["run_id"][0])
    where = f"run {run}" if params.get("run") is not None else f"{params['checkpoint']} / {params['task']} (run {run})"
    title = f"{where}: {selection} circuit, {df.height} edges"
    n_heads_in = df.filter(pl.col("dst_kind") == "attn")["dst"].n_unique()
    console.print(Text(f"{title}; {n_heads_in} heads receive edges", style="bold"))
    strongest = df.sort(pl.col("score").abs(), descending=True, nulls_last=True).head(CIRCUIT_EDGES_SHOWN)
    console.print(
        DataTable(
            strongest.select("edge", "port", "score"),
            f"the {strongest.height} strongest of {df.height} edges by |score|",
            keep=["edge", "score"],
        )
    )
    caption = (
        f"The {selection} circuit of {where}: {df.height} edges from the input through heads (blue boxes) and "
        f"MLPs (green) to the logits; red edges have a positive score, blue a negative one, wider for a larger "
        f"|score|; grey dots are heads outside the circuit."
    )
    if not dot:
        if png:
            n_layers, n_heads = q.shape_of(df, run=run)
            q.wrote(console, plots.circuit(png, df, n_layers=n_layers, n_heads=n_heads, title=title, caption=caption))
        return df
    dot_path = Path(out) if out else Path(f"circuit-run{run}.dot")
    if dot_path.is_dir():  # a folder for the file
        dot_path = dot_path / f"circuit-run{run}.dot"
    dot_file, png_path, note = write_circuit(df, dot_path, png, name=f"circuit_run{run}", title=title)
    if png and png_path is None:
        n_layers, n_heads = q.shape_of(df, run=run)
        png_path = plots.circuit(png, df, n_layers=n_layers, n_heads=n_heads, title=title, caption=caption)
        note = f"wrote {dot_file}; graphviz `dot` is not installed, so {png_path} is drawn with matplotlib"
    if q.announce_files:
        console.print(Text(note, style="dim" if png_path else "yellow"))
    return df
