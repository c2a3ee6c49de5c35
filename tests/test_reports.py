"""Terminal reports, heatmaps, PNG figures, the circuit .dot file and the analysis CLI sub-apps."""

from __future__ import annotations

import json
import os
import stat

import numpy as np
import polars as pl
import pytest
import typer
from rich.console import Console
from typer.testing import CliRunner

import headdb
from headdb.cli import app as cli
from headdb.cli.analysis import export_app, parse_params, query_app, report_app
from headdb.cli.ingest import graph_json as ingest_graph_json
from headdb.errors import UserError
from headdb.reports import REPORTS, get_report, run_report
from headdb.reports.circuit import circuit_dot
from headdb.reports.palette import BASE_GREY, Palette
from headdb.reports.plots import caption_of
from headdb.reports.terminal import Scale, heatmap, sparkline
from warehouse_builders import _items, attribution_run, register_tiny_model, shared_study

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def st():
    return shared_study()


def colour_console(width: int = 120) -> Console:
    return Console(record=True, force_terminal=True, color_system="truecolor", width=width)


def plain_console(width: int = 120) -> Console:
    return Console(record=True, color_system=None, width=width)


# -- heatmaps ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("n_layers, n_heads", [(28, 12), (36, 32)])
@pytest.mark.parametrize("kind", ["sequential", "diverging"])
def test_heatmap_renders_readably_at_study_sizes(n_layers, n_heads, kind):
    rng = np.random.default_rng(0)
    values = rng.random((n_layers, n_heads)) * (2 if kind == "diverging" else 1) - (1 if kind == "diverging" else 0)
    values[3, 5] = np.nan
    for console in (colour_console(), plain_console()):
        console.print(heatmap(values, scale=Scale.for_values(values, kind), console=console, title="t"))
        text = console.export_text()
        lines = text.splitlines()
        assert lines[0] == "t"
        rows = [line for line in lines if line.lstrip().startswith("L")]
        assert (
            len(rows) == n_layers
            and rows[0].lstrip().startswith("L0")
            and rows[-1].lstrip().startswith(f"L{n_layers - 1}")
        )
        cell = 3 if n_heads <= 16 else 2
        assert max(len(r.rstrip()) for r in rows) <= 4 + cell * n_heads
        assert max(len(line) for line in lines) <= 120
        assert "no value" in lines[-1]
    ansi = colour_console()
    ansi.print(heatmap(values, scale=Scale.for_values(values, kind), console=ansi))
    styled = ansi.export_text(styles=True)
    assert "48;2;" in styled  # truecolor background cells


def test_categorical_heatmap_and_glyph_fallback():
    values = np.full((4, 3), None, dtype=object)
    values[1, 1], values[2, 0] = "gained", "lost"
    scale = Scale("categorical", categories={"gained": ("gained", "#1a9850", "+"), "lost": ("lost", "#d73027", "-")})
    console = plain_console()
    console.print(heatmap(values, scale=scale, console=console))
    rows = [line for line in console.export_text().splitlines() if line.lstrip().startswith("L")]
    assert "+" in rows[1] and "-" in rows[2] and "+" not in rows[0]


def test_sparkline():
    # a short series: one cell per point with a space between, a missing point a dot
    assert sparkline([0, 1, 2, None, 2]) == "▁ ▅ █ · █"
    assert sparkline([None, None]) == "  "
    assert sparkline([3, 3]) == "▅ ▅"
    assert sparkline([0, 0, 0]) == "▁ ▁ ▁"  # nothing at all is drawn at the bottom
    long = sparkline([float(i % 8) for i in range(20)])  # a long one: contiguous, a point per cell
    assert len(long) == 20 and " " not in long


# -- every report on the study, with a PNG ---------------------------------------------------------------

REPORT_PARAMS = {
    "heads_gained": {"base": "qwen-math", "target": "grpo-gsm8k@400"},
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
    "circuit_faithfulness": {"lineage": "grpo-gsm8k"},
    "top_heads": {"checkpoint": "grpo-gsm8k@100", "n": "2"},
}
EXPECT_TEXT = {
    "heads_gained": "+1 / -2",
    "regime_compare": "Jaccard",
    "head_frequency": "of 3 checkpoints",
    "head_cohorts": "cohorts by first step",
    "head_dynamics": "correlation with reward over 3 checkpoints",
    "benchmark_trajectory": "gsm8k",
    "effect_map": "E(l,h) over 3 checkpoints",
    "think_compensatory": "2 compensatory heads",
    "ablation_table": "no baseline",
    "ablation_by_level": "helps on level hard; no level where it surely hurts",
    "passk_curve": "emergent",
    "newly_solved_missed": "newly_missed",
    "circuit_faithfulness": "threshold",
    "top_heads": "L3H0",
}


def test_every_report_has_params_for_this_test():
    assert set(REPORT_PARAMS) | {"circuit"} == set(REPORTS)


@pytest.mark.parametrize("name", sorted(REPORT_PARAMS))
def test_report_renders_and_writes_png(st, tmp_path, name):
    console = colour_console(160)
    png = tmp_path / f"{name}.png"
    df = run_report(st.db, name, REPORT_PARAMS[name], console, png)
    assert df.height > 0
    text = console.export_text()
    assert EXPECT_TEXT[name] in text
    assert png.read_bytes()[:8] == PNG_MAGIC
    # the figure says what it shows, from which runs: a sentence naming what the params named
    caption = caption_of(png)
    assert caption.endswith(".") and len(caption.split()) >= 10, caption
    for key in ("lineage", "base", "target", "checkpoint"):
        if key in REPORT_PARAMS[name]:
            assert REPORT_PARAMS[name][key] in caption, (key, caption)
    assert f"wrote {png}: {caption}" in " ".join(text.split()), "the terminal says what the figure shows"


def test_a_lineage_has_one_colour_in_every_figure():
    lineages = [("base", True), ("distill", False), ("grpo", False), ("sft", False)]
    whole = Palette(lineages, ["add", "sub"])
    fewer = Palette(lineages, ["add", "sub"])
    # asked in another order, and for a subset: the same colours, from the warehouse's order
    assert [fewer.lineage(n) for n in ("sft", "grpo")] == [whole.lineage(n) for n in ("sft", "grpo")]
    assert whole.lineage("base") == BASE_GREY
    many = Palette([(f"run{i}", False) for i in range(9)])
    assert len({many.lineage(f"run{i}") for i in range(9)}) == 9 and BASE_GREY not in {
        many.lineage(f"run{i}") for i in range(9)
    }
    assert whole.task("add") != whole.task("sub") and whole.task("add") not in {whole.lineage(n) for n, _ in lineages}


def test_head_dynamics_report_shows_bars_beside_the_reward(st):
    console = plain_console(160)
    run_report(st.db, "head_dynamics", {"lineage": "grpo-gsm8k"}, console)
    text = console.export_text()
    rows = [line for line in text.splitlines() if line.strip("│ ").split(" ")[0] in ("100", "200", "400")]
    assert len(rows) == 3 and all("█" in r for r in rows)
    assert "new -0.72" in text


def _faithfulness_text(tmp_path, n_kv: int) -> str:
    db = headdb.connect(tmp_path / f"kv{n_kv}.duckdb")
    register_tiny_model(db, "tiny-kv", n_heads=4, n_kv=n_kv)
    ck = db.register_checkpoint(model_key="tiny-kv", path="/ckpt/b", weights_digest="d", name="b", lineage="b", step=0)
    task = db.register_task(name="math", kind="circuit", digest="t", items=_items(2))
    attribution_run(db, ck, task, heads=[(0, 1)], config={"method": "eap-ig"}, metrics={"cpr": 0.9, "cmd": 0.1})
    console = plain_console(120)
    run_report(db, "circuit_faithfulness", {}, console)
    return " ".join(console.export_text().split())


def test_cpr_and_cmd_of_a_gqa_model_carry_the_caveat(tmp_path):
    """MIB's graph has one k/v port per query head; headdb's per kv head: the numbers differ."""
    assert "cpr/cmd of tiny-kv: grouped-query attention (4 query heads on 2 kv heads)" in _faithfulness_text(
        tmp_path, 2
    )
    assert "grouped-query" not in _faithfulness_text(tmp_path, 4)


def test_empty_report_says_so_and_writes_no_png(st, tmp_path):
    console = plain_console()
    png = tmp_path / "none.png"
    df = run_report(st.db, "heads_gained", {"base": "qwen-math", "target": "qwen-math"}, console, png)
    assert df.height == 0 and "no rows" in console.export_text() and not png.exists()


def test_report_errors(st):
    with pytest.raises(UserError, match="unknown report 'effect_mp'; did you mean effect_map"):
        get_report("effect_mp")
    with pytest.raises(UserError, match="report head_frequency has no param 'linage'"):
        run_report(st.db, "head_frequency", {"linage": "x"}, plain_console())
    with pytest.raises(UserError, match="param lineage needs a value"):
        run_report(st.db, "head_frequency", {}, plain_console())


# -- circuit pictures --------------------------------------------------------------------------------------


def test_circuit_report_writes_dot_and_explains_missing_graphviz(st, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    console = plain_console(200)
    out = tmp_path / "c.dot"
    df = run_report(st.db, "circuit", {"run": st.run["grpo@400"]}, console, None, out=out)
    dot = out.read_text()
    assert dot.startswith("digraph circuit_run") and dot.rstrip().endswith("}")
    assert dot.count('" -> "') == df.height == 4
    assert '"a0.h0" -> "a3.h1"' in dot and 'label="v"' in dot and "rank=same" in dot
    assert "graphviz `dot` is not installed" in console.export_text()
    assert not (tmp_path / "c.png").exists()


def test_circuit_report_draws_the_png_itself_without_graphviz(st, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    console = plain_console(200)
    df = run_report(
        st.db, "circuit", {"checkpoint": "grpo-gsm8k@400", "task": "math"}, console, tmp_path / "c.png", out=tmp_path
    )
    assert (tmp_path / "c.png").read_bytes()[:8] == PNG_MAGIC
    assert (tmp_path / f"circuit-run{st.run['grpo@400']}.dot").exists()  # a folder as --out: the file goes in it
    assert "drawn with matplotlib" in " ".join(console.export_text().split()) and df.height == 4
    with pytest.raises(UserError, match="needs a run id .* or a checkpoint and a task"):
        run_report(st.db, "circuit", {"checkpoint": "grpo-gsm8k@400"}, console)


def test_circuit_report_runs_dot_when_installed(st, tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "dot"  # stands in for graphviz: copies a PNG header to the -o file
    fake.write_text(
        '#!/bin/sh\nwhile [ $# -gt 0 ]; do if [ "$1" = -o ]; then shift; printf \'\\211PNG\\r\\n\\032\\n\' > "$1"; fi; shift; done\n'
    )
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", str(bin_dir) + os.pathsep + os.environ.get("PATH", ""))
    console = plain_console(200)
    run_report(st.db, "circuit", {"run": st.run["grpo@400"]}, console, tmp_path / "pic.png", out=tmp_path / "c.dot")
    assert (tmp_path / "pic.png").read_bytes()[:8] == PNG_MAGIC
    assert "wrote" in console.export_text()


def test_circuit_report_without_a_circuit(st):
    with pytest.raises(UserError, match="has no threshold circuit with edges"):
        run_report(st.db, "circuit", {"run": st.run["grpo@100"]}, plain_console())


def test_circuit_dot_quotes_names():
    df = pl.DataFrame(
        {
            "edge": ['a"b->c'],
            "src": ['a"b'],
            "dst": ["c"],
            "port": [""],
            "src_kind": ["attn"],
            "dst_kind": ["logits"],
            "src_layer": [0],
            "dst_layer": [None],
            "score": [None],
        },
        schema_overrides={"dst_layer": pl.Int32, "score": pl.Float32},
    )
    assert '"a\\"b" -> "c"' in circuit_dot(df)


# -- the CLI sub-apps ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def app():
    """The sub-apps mounted the way headdb/cli.py mounts them."""
    app = typer.Typer(no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False)
    app.callback()(cli.main_options)
    app.add_typer(query_app, name="query")
    app.add_typer(report_app, name="report")
    app.add_typer(export_app, name="export")
    ingest = typer.Typer(no_args_is_help=True)
    ingest.command("graph-json")(ingest_graph_json)
    app.add_typer(ingest, name="ingest")
    return app


def invoke(app, *args):
    return CliRunner().invoke(app, list(map(str, args)))


def test_cli_query_list_and_run(app, st):
    db = st.db.location
    listed = invoke(app, "--db", db, "query", "list", "--format", "json")
    assert listed.exit_code == 0 and "heads_gained" in {r["name"] for r in json.loads(listed.stdout)}
    out = invoke(
        app,
        "--db",
        db,
        "query",
        "heads_gained",
        "--param",
        "base=qwen-math",
        "-p",
        "target=grpo-gsm8k@400",
        "--format",
        "csv",
    )
    assert out.exit_code == 0, out.output
    assert out.stdout.splitlines()[0].startswith("task_id,task,mode,change,layer,head")
    assert len(out.stdout.splitlines()) == 4
    help_text = invoke(app, "query", "--help").stdout
    assert "heads_gained" in help_text and "effect_map" in help_text


@pytest.mark.parametrize("width", [80, 120])
def test_listings_are_one_line_per_entry_at_the_terminal_width(width):
    """`query list` and `report list`: one unwrapped line per query / report, then a footer;
    `query show NAME` gives the params and the SQL."""
    import os
    import subprocess
    import sys

    from headdb.reports import REPORTS
    from headdb.warehouse.queries import catalogue

    env = {**os.environ, "COLUMNS": str(width)}

    def lines(*args):
        out = subprocess.run(
            [sys.executable, "-m", "headdb", *args], capture_output=True, text=True, env=env, timeout=300
        )
        assert out.returncode == 0, out.stderr
        return out.stdout.splitlines()

    names = catalogue().names()
    listed = lines("query", "list")
    assert [line.split()[0] for line in listed[:-1]] == list(names) and "query show NAME" in listed[-1]
    assert all(len(line) <= width for line in listed)
    reports = lines("report", "list")
    assert [line.split()[0] for line in reports[:-1]] == list(REPORTS) and all(len(x) <= width for x in reports)
    shown = lines("query", "show", "top_heads")
    assert shown[0].startswith("top_heads") and "params:" in shown and "sql:" in shown
    assert any(line.strip().startswith("n: int = 10") for line in shown)


@pytest.mark.parametrize(
    "args, message",
    [
        (("query", "nope"), "unknown query 'nope'"),
        (("query", "heads_gained", "-p", "base"), "--param expects NAME=VALUE"),
        (("query", "heads_gained", "-p", "base=a"), "param target needs a value"),
        (("query", "top_heads", "-p", "n=many"), "param n must be an integer"),
        (("query", "heads_gained", "-p", "base=a", "-p", "target=b", "--format", "parquet"), "--out FILE"),
    ],
)
def test_cli_query_errors_are_user_errors(app, st, args, message):
    result = invoke(app, "--db", st.db.location, *args)
    assert isinstance(result.exception, UserError) and message in str(result.exception)


def test_cli_report_with_png(app, st, tmp_path):
    png = tmp_path / "f.png"
    result = invoke(
        app, "--db", st.db.location, "report", "head_frequency", "-p", "lineage=grpo-gsm8k", "--png", png, "--no-color"
    )
    assert result.exit_code == 0, result.output
    assert "of 3 checkpoints" in result.stdout and png.read_bytes()[:8] == PNG_MAGIC


def test_cli_export_and_ingest_graph_json(app, st, tmp_path):
    graph_file = tmp_path / "g.json"
    result = invoke(app, "--db", st.db.location, "export", "graph-json", st.run["grpo@400"], "--out", graph_file)
    assert result.exit_code == 0, result.output
    graph = json.loads(graph_file.read_text())
    assert sum(e["in_graph"] for e in graph["edges"].values()) == 4
    target = tmp_path / "other.duckdb"
    headdb.connect(target)
    result = invoke(
        app, "--db", target, "ingest", "graph-json", graph_file, "--ref", "checkpoint-400", "--task", "math"
    )
    assert isinstance(result.exception, UserError) and "--new" in str(result.exception)
    result = invoke(
        app,
        "--db",
        target,
        "ingest",
        "graph-json",
        graph_file,
        "--ref",
        "checkpoint-400",
        "--task",
        "math",
        "--new",
        "--lineage",
        "grpo",
        "--step",
        "400",
        "--regime",
        "grpo",
    )
    assert result.exit_code == 0, result.output
    again = invoke(app, "--db", target, "ingest", "graph-json", graph_file, "--ref", "grpo@400", "--task", "math")
    assert again.exit_code == 0 and "already in the warehouse" in again.output
    db = headdb.connect(target)
    assert db.sql("SELECT count(*) AS n FROM edge_scores")["n"][0] == len(graph["edges"])
    heads = db.sql("SELECT layer, head FROM circuit_heads ORDER BY 1, 2").rows()
    assert heads == [(0, 0), (3, 1)]
    out = tmp_path / "parquet"
    result = invoke(app, "--db", target, "export", "parquet", out)
    assert result.exit_code == 0, result.output
    assert pl.scan_parquet(str(out / "edge_scores" / "**" / "*.parquet"), hive_partitioning=True).select(
        pl.len()
    ).collect().item() == len(graph["edges"])


def test_parse_params():
    assert parse_params(["a=1", "b=x=y", "c="]) == {"a": "1", "b": "x=y", "c": ""}
    with pytest.raises(UserError, match="given twice"):
        parse_params(["a=1", "a=2"])


# -- the study report as one HTML file ---------------------------------------------------------------------


def _manifest_with_every_report(st, folder) -> tuple[object, list[str]]:
    lines, names = ['[study]\nname = "mini"\n'], []
    for name in sorted(REPORT_PARAMS):
        params = ", ".join(f"{k} = {json.dumps(v)}" for k, v in REPORT_PARAMS[name].items())
        lines.append(f'[[reports]]\nname = "{name}"\nparams = {{ {params} }}\n')
        names.append(name)
    lines.append('[[reports]]\nname = "circuit"\nparams = { checkpoint = "grpo-gsm8k@400", task = "math" }\n')
    names.append("circuit")
    path = folder / "mini.toml"
    path.write_text("\n".join(lines))
    return path, names


def test_report_study_html_holds_every_report_with_its_figure(app, st, tmp_path):
    import base64
    import re

    manifest, names = _manifest_with_every_report(st, tmp_path)
    out = tmp_path / "study.html"
    result = invoke(app, "--db", st.db.location, "report", "study", manifest, "--html", out)
    assert result.exit_code == 0, result.output
    text = out.read_text()
    assert text.startswith("<!DOCTYPE html>") and text.rstrip().endswith("</html>")
    sections = re.findall(r'<section id="r(\d+)-([a-z_]+)">(.*?)</section>', text, flags=re.S)
    assert [name for _, name, _ in sections] == names
    for _, name, body in sections:
        assert f"<h2>{name}</h2>" in body
        images = re.findall(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"', body)
        assert len(images) == 1, name
        assert base64.b64decode(images[0])[:8] == PNG_MAGIC, name
        assert '<pre class="terminal"' in body and "wrote " not in body  # figures are inline, not files
        caption = re.findall(r"<figcaption>(.*?)</figcaption>", body, flags=re.S)
        assert len(caption) == 1 and caption[0].endswith(".") and len(caption[0].split()) >= 10, (name, caption)
    assert EXPECT_TEXT["head_dynamics"] in text and "E(l,h) over 3 checkpoints" in text
    # self-contained: nothing is fetched from elsewhere
    assert not re.search(r'(src|href)="(https?:|//|file:)', text) and "<script" not in text and "<link" not in text


def test_report_study_errors(app, st, tmp_path):
    empty = tmp_path / "empty.toml"
    empty.write_text('[study]\nname = "x"\n')
    result = invoke(app, "--db", st.db.location, "report", "study", empty, "--html", tmp_path / "x.html")
    assert isinstance(result.exception, UserError) and "no [[reports]] entries" in str(result.exception)
    bad = tmp_path / "bad.toml"
    bad.write_text('[[reports]]\nname = "heads_gaind"\n')
    result = invoke(app, "--db", st.db.location, "report", "study", bad, "--html", tmp_path / "x.html")
    assert isinstance(result.exception, UserError) and "did you mean heads_gained" in str(result.exception)
    assert not (tmp_path / "x.html").exists()


def test_report_study_draws_the_circuit_where_asked_and_nothing_in_the_working_folder(app, st, tmp_path, monkeypatch):
    """`report study` (terminal or --html) writes no .dot or figure into the working folder; the
    HTML holds the circuit figure, drawn with matplotlib even where graphviz is installed."""
    import base64
    import re

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "dot"  # a graphviz that leaves a mark when run: it must not be
    fake.write_text(f"#!/bin/sh\ntouch {tmp_path / 'dot-was-run'}\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", str(bin_dir) + os.pathsep + os.environ.get("PATH", ""))
    manifest, _ = _manifest_with_every_report(st, tmp_path)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    terminal = invoke(app, "--db", st.db.location, "report", "study", manifest)
    assert terminal.exit_code == 0, terminal.output
    assert f"run {st.run['grpo@400']}): threshold circuit, 4 edges" in " ".join(terminal.stdout.split())
    assert "--png" not in terminal.stdout and ".dot" not in terminal.stdout
    out = tmp_path / "study.html"
    result = invoke(app, "--db", st.db.location, "report", "study", manifest, "--html", out)
    assert result.exit_code == 0, result.output
    assert list(cwd.iterdir()) == [] and not (tmp_path / "dot-was-run").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bin", "cwd", "mini.toml", "study.html"]
    section = re.search(r'<section id="r\d+-circuit">(.*?)</section>', out.read_text(), flags=re.S).group(1)
    [image] = re.findall(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"', section)
    png = base64.b64decode(image)
    assert png[:8] == PNG_MAGIC and len(png) > 5000  # a real drawing, not graphviz's (fake) output
    assert "strongest of 4 edges" in section
