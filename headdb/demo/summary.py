"""The demo's closing summary: what the study found, one plain sentence per phenomenon, every
number read from the warehouse through the named queries (nothing here is set or tuned).

Where a phenomenon the study looks for did not show, the sentence says so.
"""

from __future__ import annotations

import polars as pl

from headdb.demo.study import SELECTION
from headdb.reports.ablation import control_contrasts
from headdb.settings import FALLBACK_LABEL

# The label of demo.toml's ablation of SFT's strongest circuit heads, gained or not.
STRONGEST = "strongest circuit heads"
# Below this, a change of a mean over windows of sampled rewards is read as no change.
FLAT = 0.05

# Said after every summary, so that one run's findings are not read as the miniature's: what
# benchmarks/bench_demo.py measured over seeds and kernel paths (docs/demo.md, "Margins").
MARGINS = (
    "These are this run's findings. Over seeds 0-2 and three floating-point kernel paths "
    '(benchmarks/RESULTS.md, "Demo"), SFT gained heads on subtraction in every run and its '
    "circuit's two strongest heads hurt more than the control in every run measured, but GRPO's "
    "circuit changes and the emergent heads' ablation contrast held in some runs only: another seed "
    "or another CPU can reverse them."
)


def _fmt(values) -> str:
    return " ".join("–" if v is None else f"{v:.2f}" for v in values)


def _heads(df: pl.DataFrame, limit: int = 8) -> str:
    labels = df["head_label"].to_list()
    return " ".join(labels[:limit]) + (f" (+{len(labels) - limit} more)" if len(labels) > limit else "")


def accuracy_lines(q) -> list[str]:
    lines = []
    for lineage in ("sft", "grpo"):
        df = q.run("benchmark_trajectory", {"lineage": lineage, "metric": "accuracy"})
        if not df.height:
            lines.append(f"{lineage.upper()}: no accuracy measured.")
            continue
        parts = []
        for (task,), g in df.sort("is_base", "step", descending=[True, False]).group_by("task", maintain_order=True):
            values = g["value"].to_list()
            parts.append(
                f"{task} {values[0]:.2f} -> {values[-1]:.2f} (steps {g['step'][0]}..{g['step'][-1]}: {_fmt(values)})"
            )
        lines.append(f"{lineage.upper()} accuracy, base -> last checkpoint: " + "; ".join(parts) + ".")
    return lines


def sft_lines(q) -> list[str]:
    gained = q.run("heads_gained", {"base": "base", "target": "sft@last", "task": "sub", "selection": SELECTION})
    plus = gained.filter(pl.col("change") == "gained").sort("target_importance", descending=True, nulls_last=True)
    minus = gained.filter(pl.col("change") == "lost")
    if not plus.height:
        return [
            "SFT gained NO head over the base on the subtraction task: its last circuit has no head the base's "
            f"lacks ({minus.height} lost). The phenomenon did not show in this run."
        ]
    cohorts = q.run("head_cohorts", {"lineage": "sft", "task": "sub", "selection": SELECTION}).filter(
        ~pl.col("in_base").fill_null(False)
    )
    kept = cohorts.filter(pl.col("still_active"))
    return [
        f"SFT gained {plus.height} head(s) over the base on the subtraction task ({_heads(plus)}) and lost "
        f"{minus.height}; of the {cohorts.height} head(s) its checkpoints added over the base, {kept.height} "
        f"are still in the last circuit"
        + (
            f" (first added at steps {', '.join(map(str, sorted(set(cohorts['first_step'].to_list()))))})."
            if cohorts.height
            else "."
        )
    ]


def grpo_lines(q) -> list[str]:
    lines = []
    dyn = q.run("head_dynamics", {"lineage": "grpo", "task": "add", "metric": "reward", "selection": SELECTION})
    if not dyn.height:
        return ["GRPO: no circuits on the addition task, so no dynamics."]
    windows = [v for v in dyn["window_mean"].to_list() if v is not None]
    if len(windows) >= 2:
        change = windows[-1] - windows[0]
        verdict = "rose" if change > FLAT else "fell" if change < -FLAT else "stayed flat (no rise)"
        lines.append(
            f"GRPO's reward {verdict}: mean per window between checkpoints {_fmt(windows)} "
            f"({change:+.2f} from the first window to the last)."
        )
    else:
        lines.append("GRPO's reward: fewer than two checkpoint windows, so no trend.")
    post = dyn.filter(pl.col("new").is_not_null())
    if not post.height or (post["new"].sum() == 0 and post["pruned"].sum() == 0):
        lines.append(
            f"GRPO's circuit on addition did NOT change: no head was activated or pruned at any of its "
            f"{post.height} checkpoints, so there are no dynamics to set beside the reward. The study's "
            "GRPO dynamics did not show in this run."
        )
        return lines + _grpo_gained(q)
    corr = q.run("dynamics_correlation", {"lineage": "grpo", "task": "add", "metric": "reward", "selection": SELECTION})
    c = corr.row(0, named=True) if corr.height else {}

    def r(v):
        return "n/a" if v is None else f"{v:+.2f}"

    lines.append(
        f"GRPO's circuit on addition, per checkpoint (steps {' '.join(map(str, post['step'].to_list()))}): "
        f"new heads {' '.join(map(str, post['new'].to_list()))}, pruned {' '.join(map(str, post['pruned'].to_list()))}; "
        f"correlation with the reward over {c.get('n', 0)} checkpoints: new {r(c.get('corr_new'))}, "
        f"pruned {r(c.get('corr_pruned'))} (new vs the mean reward since the previous checkpoint "
        f"{r(c.get('corr_new_window'))})."
    )
    return lines + _grpo_gained(q)


def _grpo_gained(q) -> list[str]:
    gained = q.run("heads_gained", {"base": "base", "target": "grpo@last", "task": "add", "selection": SELECTION})
    plus = gained.filter(pl.col("change") == "gained")
    return [
        f"GRPO's last circuit on addition gained {plus.height} head(s) over the base"
        + (f" ({_heads(plus)})" if plus.height else "")
        + f" and lost {(gained['change'] == 'lost').sum()}."
    ]


def ablation_lines(q) -> list[str]:
    table = q.run("ablation_table", {"metric": "accuracy"})
    if not table.height:
        return ["No ablation ran (no head set was found)."]
    lines = []
    for c in control_contrasts(q.run, table).iter_rows(named=True):
        what = (
            f"top heads {c['heads']} (fallback: no emergent head)"
            if c["head_set"].startswith(FALLBACK_LABEL)
            else f"strongest circuit heads {c['heads']} (gained or not)"
            if c["head_set"] == STRONGEST
            else f"emergent heads {c['heads']}"
        )
        sure = c["high"] < 0 or c["low"] > 0
        verdict = (
            "hurts MORE than the layer-matched control"
            if c["high"] < 0
            else "hurts LESS than the control"
            if c["low"] > 0
            else "is NOT distinguishable from the layer-matched control"
        )
        lines.append(
            f"Ablating the {what} of {c['checkpoint']} on {c['task']}: {c['delta']:+.3f} accuracy, control "
            f"{c['control_delta']:+.3f}; difference {c['difference']:+.3f}, 95% CI "
            f"[{c['low']:+.3f}, {c['high']:+.3f}] over {c['n']} problems: {verdict}"
            + ("." if sure else " at this sample size.")
        )
    return lines


def summarize(db) -> list[str]:
    """One line per finding, measured from `db` (a demo warehouse)."""
    from headdb.reports.session import ReportSession
    from headdb.warehouse.queries import query_session

    with query_session(db, db.query_dirs) as session:
        q = ReportSession(session)
        return accuracy_lines(q) + sft_lines(q) + grpo_lines(q) + ablation_lines(q)
