"""`headdb report NAME`: terminal reports (rich tables, coloured layer x head heatmaps, bars and
sparklines) and PNG figures for the analyses of the study.

A report is a spec: its queries (the first is the main one), its renderer, a description and
the text shown when the main query returns no rows. `run_report` is the one runner: it opens
one query session (the user's query folders included), checks the params against the report's
queries, runs the main query, and either says why there is nothing to show or renders it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

from rich.text import Text

from headdb.errors import UserError
from headdb.reports import levels, study
from headdb.reports.session import ReportSession


@dataclass(frozen=True)
class Report:
    name: str
    queries: tuple[str, ...]  # the first is the main query
    render: Callable  # (session, main result, params, console, png) -> main result
    description: str
    empty: str = ""  # why the main query can return no rows, shown instead of a figure


REPORTS: dict[str, Report] = {
    r.name: r
    for r in [
        Report(
            "heads_gained",
            ("heads_gained",),
            study.report_heads_gained,
            "Heads gained and lost between two checkpoints: table and layer x head map (analysis 1).",
            "No head was gained or lost: the two circuits have the same heads, or the checkpoints lack "
            "circuits on a common task with that selection (see `headdb query circuit_faithfulness`).",
        ),
        Report(
            "regime_compare",
            ("regime_compare", "regime_overlap", "regime_layers"),
            study.report_regime_compare,
            "Emergent head sets of several lineages over one base: sizes, Jaccard matrix, per-layer map (1).",
            "The base needs a circuit on the task, and other lineages too.",
        ),
        Report(
            "head_frequency",
            ("head_frequency",),
            study.report_head_frequency,
            "In how many checkpoint circuits of a lineage each head appears: heatmap (2).",
            "The lineage has no checkpoint with a circuit on that task.",
        ),
        Report(
            "head_cohorts",
            ("head_cohorts",),
            study.report_head_cohorts,
            "The step at which each head first joins a lineage's circuit: cohorts and heatmap (2).",
            "The lineage has no checkpoint with a circuit on that task.",
        ),
        Report(
            "head_dynamics",
            ("head_dynamics", "dynamics_correlation"),
            study.report_head_dynamics,
            "Heads activated / pruned per checkpoint beside the reward curve, and their correlation (3).",
            "The lineage has no checkpoint with a circuit on that task.",
        ),
        Report(
            "benchmark_trajectory",
            ("benchmark_trajectory",),
            study.report_benchmark_trajectory,
            "Accuracy per benchmark per checkpoint step of a lineage (4).",
            "No plain generation runs on the lineage's checkpoints for that metric.",
        ),
        Report(
            "effect_map",
            ("effect_map",),
            study.report_effect_map,
            "E(l,h) of post-training averaged over a lineage's checkpoints: diverging heatmap (5).",
            "Checkpoints and their base/parent need head_scores on a common task.",
        ),
        Report(
            "think_compensatory",
            ("think_sizes", "think_compensatory"),
            study.report_think_compensatory,
            "Circuit sizes with thinking on vs off and the compensatory heads of think-off (6).",
            "Needs circuits of one checkpoint on a think_on and a think_off task with the same name.",
        ),
        Report(
            "ablation_table",
            ("ablation_table",),
            study.report_ablation_table,
            "Benchmark accuracy with and without each head set, against the matching baseline (7).",
            "No ok generation runs with interventions match those params.",
        ),
        Report(
            "ablation_by_level",
            ("ablation_by_level",),
            levels.report_ablation_by_level,
            "An ablation's effect by problem level, with a paired bootstrap interval per level: does a head set "
            "help on hard problems and hurt on simple ones? (7)",
            "No ok intervened generation run with a matching baseline matches those params.",
        ),
        Report(
            "passk_curve",
            ("passk_curve",),
            study.report_passk_curve,
            "pass@k / success@k curves per run and intervention (8).",
            "No generation runs with that metric (runs need ks > 1 for a curve).",
        ),
        Report(
            "newly_solved_missed",
            ("newly_solved_missed",),
            study.report_newly_solved_missed,
            "Items newly solved / missed per checkpoint vs the base, by failure tag (9).",
            "No item changed, or the checkpoints or the base lack plain generation runs on a common benchmark.",
        ),
        Report(
            "circuit_faithfulness",
            ("circuit_faithfulness", "faithfulness_curve"),
            study.report_circuit_faithfulness,
            "Faithfulness, CPR and CMD of circuits; the faithfulness curve of one run.",
            "No circuits match.",
        ),
        Report(
            "top_heads",
            ("top_heads",),
            study.report_top_heads,
            "The most important heads of a run or checkpoint.",
            "No head_scores for that run / checkpoint.",
        ),
        Report(
            "circuit",
            ("circuit_graph",),
            study.report_circuit,
            "A run's circuit: its strongest edges, a graphviz .dot file and a PNG figure (10).",
        ),
    ]
}


def get_report(name: str) -> Report:
    try:
        return REPORTS[name]
    except KeyError:
        import difflib

        close = difflib.get_close_matches(name, REPORTS, n=1)
        fix = f"did you mean {close[0]}?" if close else f"reports: {', '.join(sorted(REPORTS))}"
        raise UserError(f"unknown report {name!r}; {fix}") from None


def run_report(
    db,
    name: str,
    params: Mapping[str, Any],
    console,
    png=None,
    extra_dirs=(),
    *,
    announce_files: bool = True,
    figures=None,
    **kw,
):
    """Render report `name` over one query session; returns its main query result.
    announce_files=False: say nothing about the PNG (written or not), for callers that place the
    figure themselves (the HTML study report). figures: a folder for the circuit report's PNG
    (named after its run), instead of png."""
    from headdb.warehouse.queries import query_session

    report = get_report(name)
    params = dict(params)
    with query_session(db, extra_dirs) as session:
        q = ReportSession(session, announce_files)
        q.check_params(name, params, report.queries)
        if (
            name == "circuit"
            and params.get("run") is None
            and (params.get("checkpoint") is None or params.get("task") is None)
        ):
            raise UserError(
                "report circuit needs a run id (`headdb report circuit RUN`), or a checkpoint "
                "and a task (params checkpoint = ..., task = ...)"
            )
        df = q.run(report.queries[0], params)
        if df.is_empty():
            if name == "circuit":
                what = (
                    f"run {params['run']}"
                    if params.get("run") is not None
                    else f"checkpoint {params['checkpoint']} on task {params['task']}"
                )
                raise UserError(
                    f"{what} has no {params.get('selection') or 'threshold'} circuit with "
                    "edges; see `headdb query circuit_faithfulness` for the circuits that exist"
                )
            console.print(Text(f"{name}: no rows. {report.empty}", style="yellow"))
            q.no_png(console, png)
            return df
        if figures is not None:  # a folder: the figure is named after the run
            png = Path(figures) / f"circuit-run{int(df['run_id'][0])}.png"
        return report.render(q, df, params, console, png, **kw)


def print_reports(db, entries, console, extra_dirs=(), files_dir=None) -> None:
    """Each (name, params) report under a rule naming it, one after the other (a study's reports).
    A circuit report writes no .dot file; with files_dir its figure is drawn (matplotlib) into
    files_dir/circuit-runRUN.png, else it stays on the console."""
    for name, params in entries:
        console.rule(f"[bold]{name}[/bold] {_params_text(params)}")
        if name == "circuit":
            run_report(db, name, params, console, extra_dirs=extra_dirs, dot=False, figures=files_dir)
        else:
            run_report(db, name, params, console, extra_dirs=extra_dirs)


def _params_text(params: Mapping[str, Any]) -> str:
    return " ".join(f"{k}={v}" for k, v in (params or {}).items())
