"""The one table policy (headdb/reports/table.py) on every terminal table: query results, reports,
`runs`, `checkpoints`, `sql`, at 80 and 120 columns: no line wider than the terminal, headers that
are the SQL's column names, every cell on one line and whole, hidden and left-out columns named."""

from __future__ import annotations

import re

import polars as pl
import pytest
from rich.console import Console
from typer.testing import CliRunner

from headdb.cli.app import app
from headdb.reports import REPORTS, run_report
from headdb.reports.table import DataTable, cell_text, drop_order
from headdb.warehouse.queries import catalogue, run_query
from warehouse_builders import shared_study

WIDTHS = [80, 120]

# params under which each packaged query returns rows on the shared study (tests/warehouse_builders.py)
QUERY_PARAMS = {
    "heads_gained": {"base": "qwen-math", "target": "grpo-gsm8k@400"},
    "regime_compare": {"base": "qwen-math"},
    "regime_overlap": {"base": "qwen-math"},
    "regime_layers": {"base": "qwen-math"},
    "head_frequency": {"lineage": "grpo-gsm8k"},
    "head_cohorts": {"lineage": "grpo-gsm8k"},
    "head_dynamics": {"lineage": "grpo-gsm8k", "metric": "reward"},
    "dynamics_correlation": {"lineage": "grpo-gsm8k", "metric": "reward"},
    "effect_map": {"lineage": "grpo-gsm8k"},
    "think_compensatory": {},
    "think_sizes": {},
    "ablation_table": {},
    "ablation_by_level": {"checkpoint": "grpo-gsm8k@400"},
    "benchmark_trajectory": {"lineage": "grpo-gsm8k"},
    "passk_curve": {},
    "newly_solved_missed": {"lineage": "grpo-gsm8k"},
    "circuit_faithfulness": {},
    "top_heads": {"checkpoint": "grpo-gsm8k@100"},
    "circuit_graph": {"checkpoint": "grpo-gsm8k@400", "task": "math"},
    "model_shape": {"lineage": "grpo-gsm8k"},
    "item_rates": lambda st: {"runs": f"{st.run['gen-base']},{st.run['gen-400-A']}"},
    "faithfulness_curve": None,  # the study stores no curve: nothing to print
}
REPORT_PARAMS = {
    "heads_gained": QUERY_PARAMS["heads_gained"],
    "regime_compare": {"base": "qwen-math"},
    "head_frequency": {"lineage": "grpo-gsm8k"},
    "head_cohorts": {"lineage": "grpo-gsm8k"},
    "head_dynamics": {"lineage": "grpo-gsm8k", "metric": "reward"},
    "benchmark_trajectory": {"lineage": "grpo-gsm8k"},
    "effect_map": {"lineage": "grpo-gsm8k"},
    "think_compensatory": {},
    "ablation_table": {},
    "ablation_by_level": {"checkpoint": "grpo-gsm8k@400"},
    "passk_curve": {},
    "newly_solved_missed": {"lineage": "grpo-gsm8k"},
    "circuit_faithfulness": {},
    "top_heads": {"checkpoint": "grpo-gsm8k@100", "n": "3"},
}


@pytest.fixture(scope="module")
def st():
    return shared_study()


def _tables(text: str) -> list[tuple[list[str], list[list[str]]]]:
    """(headers, body rows as cells) of every rich table in `text`; a header that spans lines or a
    cell folded onto a second line would show up as more header lines / rows than expected."""
    out, lines, i = [], text.splitlines(), 0
    while i < len(lines):
        if lines[i].lstrip().startswith("┏"):
            i += 1
            header_lines = []
            while not lines[i].lstrip().startswith("┡"):
                header_lines.append(lines[i])
                i += 1
            assert len(header_lines) == 1, "a header spans lines:\n" + "\n".join(header_lines)
            headers = [h.strip() for h in header_lines[0].strip().strip("┃").split("┃")]
            rows = []
            i += 1
            while not lines[i].lstrip().startswith("└"):
                rows.append([c.strip() for c in lines[i].strip().strip("│").split("│")])
                i += 1
            out.append((headers, rows))
        i += 1
    return out


def _cli(width: int, *args: str) -> str:
    result = CliRunner().invoke(app, list(args), env={"COLUMNS": str(width)})
    assert result.exit_code == 0, result.output
    return result.stdout


def test_every_packaged_query_has_params_here():
    """A query added to the package without params in this test is not checked: say so."""
    missing = set(catalogue().names()) - set(QUERY_PARAMS)
    assert not missing, f"add params for {sorted(missing)} to QUERY_PARAMS"


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("name", sorted(n for n, p in QUERY_PARAMS.items() if p is not None))
def test_query_table_fits_and_prints_every_cell_whole(st, name, width):
    params = QUERY_PARAMS[name]
    params = params(st) if callable(params) else params
    df = run_query(st.db, name, params)
    assert df.height > 0, f"{name} returns no rows on the study: fix QUERY_PARAMS"
    args = ["--db", st.db.location, "query", name]
    for k, v in params.items():
        args += ["-p", f"{k}={v}"]
    text = _cli(width, *args)
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= width, text
    [(headers, rows)] = _tables(text)
    assert set(headers) <= set(df.columns), headers  # names exactly as SQL returns them
    assert len(rows) == min(df.height, 200)  # one line per row: nothing folded
    shown = df.head(200)
    for i, row in enumerate(rows):
        for column, printed in zip(headers, row):
            expected = cell_text(shown[column][i])
            assert printed == expected or (printed.endswith("…") and expected.startswith(printed[:-1])), (
                name,
                column,
                printed,
                expected,
            )
            if shown.schema[column].is_numeric():
                assert printed == expected  # a number is never cut
    notes = "\n".join(lines[lines.index(next(x for x in lines if x.lstrip().startswith("└"))) + 1 :])
    for column in set(df.columns) - set(headers):
        assert re.search(rf"\b{column}\b", notes), (name, column, notes)  # a left-out column is named


def test_heads_gained_at_80_columns_keeps_the_names_and_numbers_whole(st):
    """The issue's example: 13 columns folded into letter fragments ("tas/k", "imp/ort/anc/e")."""
    text = _cli(
        80, "--db", st.db.location, "query", "heads_gained", "-p", "base=qwen-math", "-p", "target=grpo-gsm8k@400"
    )
    [(headers, rows)] = _tables(text)
    assert headers == ["task", "mode", "change", "head_label", "base_importance", "target_importance"]
    assert rows[0] == ["math", "plain", "gained", "L3H1", "0", "0.5"]
    assert "hidden, NULL in every row: p_base, p_target, p_gained, p_lost" in text
    assert "not shown at 80 columns: head, layer, task_id" in text  # redundant with head_label, task


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("name", sorted(REPORT_PARAMS))
def test_report_tables_fit_and_keep_numbers_whole(st, name, width):
    def render(w: int) -> str:
        console = Console(record=True, color_system=None, width=w)
        df = run_report(st.db, name, REPORT_PARAMS[name], console)
        assert df.height > 0
        return console.export_text()

    text, wide = render(width), render(400)
    assert max(len(line) for line in text.splitlines()) <= width, text
    tables = _tables(text)
    assert tables, name
    number = re.compile(r"(?<![\w.])[-+]?\d+(?:\.\d+)?(?:e[-+]?\d+)?(?![\w.])")
    wide_numbers = set(number.findall(wide))
    for headers, rows in tables:
        assert all(h and " " not in h for h in headers), headers
        for row in rows:
            assert row[0], row  # a row's first cell is never empty: no cell went on to a second line
            for cell in row:
                for found in number.findall(cell):
                    assert found in wide_numbers, (name, cell)  # no number broken into fragments


@pytest.mark.parametrize("width", WIDTHS)
def test_runs_checkpoints_and_sql_fit(st, width):
    db = st.db.location
    for args in (("runs",), ("checkpoints",), ("sql", "SELECT * FROM runs")):
        text = _cli(width, "--db", db, *args)
        assert max(len(line) for line in text.splitlines()) <= width, text
        [(headers, rows)] = _tables(text)
        assert rows and all(" " not in h for h in headers)


def test_every_report_with_a_table_is_covered():
    assert set(REPORT_PARAMS) | {"circuit"} == set(REPORTS)


# -- the policy on a small frame with known answers -------------------------------------------------------------


def _render(df: pl.DataFrame, width: int, **kw) -> str:
    console = Console(record=True, color_system=None, width=width)
    console.print(DataTable(df, "t", **kw))
    return console.export_text()


def test_a_narrow_table_leaves_out_the_least_important_columns_and_says_so():
    df = pl.DataFrame(
        {
            "task_id": [1, 1],
            "task": ["math", "math"],
            "layer": [0, 3],
            "head": [1, 2],
            "head_label": ["L0H1", "L3H2"],
            "importance": [-0.0030060606, 0.5],
            "importance_lo": [-0.004, 0.4],
            "p_kept": [None, None],
            "note": ["a long free-text note of many words " * 2, "short"],
        }
    )
    assert drop_order(df.columns)[:5] == ["head", "layer", "task_id", "p_kept", "importance_lo"]
    text = _render(df, 60)
    [(headers, rows)] = _tables(text)
    assert "p_kept" not in headers and "hidden, NULL in every row: p_kept" in text
    assert headers[:3] == ["task", "head_label", "importance"]
    assert rows[0][2] == "-0.003006"  # whole, on one line
    assert max(len(line) for line in text.splitlines()) <= 60
    left_out = set(df.columns) - set(headers) - {"p_kept"}
    assert all(c in text.split("not shown at 60 columns:")[1] for c in left_out)
    wide = _render(df, 300)
    [(headers, rows)] = _tables(wide)
    assert headers == [c for c in df.columns if c != "p_kept"] and "not shown" not in wide


def test_markup_in_values_is_printed_as_it_is():
    text = _render(pl.DataFrame({"name": ["[[models]]", "[bold]x[/bold]"]}), 80)
    assert "[[models]]" in text and "[bold]x[/bold]" in text
