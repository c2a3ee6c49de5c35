"""`headdb report NAME`: terminal reports (rich tables, coloured layer x head heatmaps, bars and
sparklines) and PNG figures for the analyses of the study.

REPORTS maps each report name to its queries and its renderer; every renderer has the signature
`fn(db, params, console, png=None, extra_dirs=())` and returns its main query result.
`run_report(db, name, params, console, png)` looks one up and runs it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping

from headdb.errors import UserError
from headdb.reports import study


@dataclass(frozen=True)
class Report:
    name: str
    queries: tuple[str, ...]
    render: Callable
    description: str


REPORTS: dict[str, Report] = {r.name: r for r in [
    Report("heads_gained", ("heads_gained",), study.report_heads_gained,
           "Heads gained and lost between two checkpoints: table and layer x head map (analysis 1)."),
    Report("regime_compare", ("regime_compare", "regime_overlap", "regime_layers"), study.report_regime_compare,
           "Emergent head sets of several lineages over one base: sizes, Jaccard matrix, per-layer map (1)."),
    Report("head_frequency", ("head_frequency",), study.report_head_frequency,
           "In how many checkpoint circuits of a lineage each head appears: heatmap (2)."),
    Report("head_cohorts", ("head_cohorts",), study.report_head_cohorts,
           "The step at which each head first joins a lineage's circuit: cohorts and heatmap (2)."),
    Report("head_dynamics", ("head_dynamics", "dynamics_correlation"), study.report_head_dynamics,
           "Heads activated / pruned per checkpoint beside the reward curve, and their correlation (3)."),
    Report("benchmark_trajectory", ("benchmark_trajectory",), study.report_benchmark_trajectory,
           "Accuracy per benchmark per checkpoint step of a lineage (4)."),
    Report("effect_map", ("effect_map",), study.report_effect_map,
           "E(l,h) of post-training averaged over a lineage's checkpoints: diverging heatmap (5)."),
    Report("think_compensatory", ("think_sizes", "think_compensatory"), study.report_think_compensatory,
           "Circuit sizes with thinking on vs off and the compensatory heads of think-off (6)."),
    Report("ablation_table", ("ablation_table",), study.report_ablation_table,
           "Benchmark accuracy with and without each head set, against the matching baseline (7)."),
    Report("passk_curve", ("passk_curve",), study.report_passk_curve,
           "pass@k / success@k curves per run and intervention (8)."),
    Report("newly_solved_missed", ("newly_solved_missed",), study.report_newly_solved_missed,
           "Items newly solved / missed per checkpoint vs the base, by failure tag (9)."),
    Report("circuit_faithfulness", ("circuit_faithfulness", "faithfulness_curve"), study.report_circuit_faithfulness,
           "Faithfulness, CPR and CMD of circuits; the faithfulness curve of one run."),
    Report("top_heads", ("top_heads",), study.report_top_heads,
           "The most important heads of a run or checkpoint."),
    Report("circuit", ("circuit_graph",), study.report_circuit,
           "A run's circuit as a graphviz .dot file, and a PNG when `dot` is installed (10)."),
]}


def get_report(name: str) -> Report:
    try:
        return REPORTS[name]
    except KeyError:
        import difflib
        close = difflib.get_close_matches(name, REPORTS, n=1)
        fix = f"did you mean {close[0]}?" if close else f"reports: {', '.join(sorted(REPORTS))}"
        raise UserError(f"unknown report {name!r}; {fix}") from None


def run_report(db, name: str, params: Mapping[str, Any], console, png=None, extra_dirs=(), **kw):
    return get_report(name).render(db, dict(params), console, png, extra_dirs, **kw)
