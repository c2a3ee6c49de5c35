"""`headdb demo --quick` end to end: quiet output, every report renders or says in words why it is
empty, every kind of run landed, the HTML report holds every report of the manifest, and the
closing summary agrees with the warehouse (checked with plain SQL, not the named queries).

What the demo *finds* (how many heads SFT gains, whether GRPO's circuit moves, whether an
ablation beats its control) depends on every bit of the trained weights, which differ between
CPUs; so no test here asserts a finding. `benchmarks/bench_demo.py` measures the findings over
seeds x floating-point kernel paths (benchmarks/RESULTS.md, "Demo")."""

from __future__ import annotations

import base64
import os
import re
import subprocess
import sys
import time

import pytest

import headdb
from headdb.demo.study import SELECTION, demo_manifest
from headdb.jobs.manifest import load_manifest
from headdb.reports import REPORTS

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    db = root / "demo.duckdb"
    started = time.monotonic()
    env = {**os.environ, "COLUMNS": "80"}
    out = subprocess.run(
        [sys.executable, "-m", "headdb", "--db", str(db), "demo", "--quick", "--out", str(root / "work")],
        capture_output=True,
        text=True,
        timeout=900,
        env=env,
        cwd=root,
    )
    return out, db, root / "work", time.monotonic() - started


def test_demo_quick_succeeds_quietly(demo):
    out, _, work, seconds = demo
    assert out.returncode == 0, out.stderr[-3000:]
    print(f"headdb demo --quick took {seconds:.0f} s")
    # no trainer log dicts, library progress bars or log records on the terminal: they are in the log
    for stream in (out.stdout, out.stderr):
        assert "{'loss'" not in stream and "'reward'" not in stream and "it/s]" not in stream, stream[-2000:]
        assert not re.search(r"^(INFO|WARNING|I\d{4}|W\d{4})", stream, flags=re.MULTILINE), stream[-2000:]
    log = (work / "demo.log").read_text()
    assert "'loss'" in log and "'reward'" in log
    for stage in ("pretraining", "SFT (trl)", "GRPO (trl)", "ingest base"):
        assert stage in out.stderr
    # every progress bar the terminal shows ends finished (none left behind at, say, 0/2)
    counts = re.findall(r"(\d+)/(\d+)\s", out.stderr)
    assert counts and all(done == total for done, total in counts), out.stderr[-3000:]
    assert f"log: {work / 'demo.log'}" in out.stderr and str(work / "demo-report.html") in out.stderr
    assert not list(work.parent.glob("*.dot")) and not list(work.glob("*.dot"))  # no .dot anywhere
    assert list(work.glob("circuit-run*.png"))  # the circuit's figure goes to the demo folder


def _sections(stdout: str) -> list[str]:
    return re.split(r"^─+ ", stdout, flags=re.MULTILINE)[1:]


def _unwrap(text: str) -> str:
    return " ".join(text.split())


def test_every_report_renders_or_says_why_it_is_empty(demo):
    out, _, _, _ = demo
    sections = _sections(out.stdout)
    names = [s.split()[0] for s in sections]
    expected = [r.name for r in load_manifest(demo_manifest()).reports]
    assert names == expected + ["what"], names
    for name, section in zip(names, sections):
        if ": no rows." in section:
            # an empty answer is said in words: the report's own reason, never a bare "no rows"
            assert REPORTS[name].empty and _unwrap(REPORTS[name].empty) in _unwrap(section), section[:400]
        else:
            assert "┃" in section or name in ("circuit", "what"), section[:400]  # a table was drawn
    summary = _unwrap(sections[-1])
    for topic in ("SFT accuracy", "GRPO accuracy", "GRPO's reward", "GRPO's circuit on addition", "Ablating"):
        assert topic in summary, summary


def test_output_fits_80_columns(demo):
    out, _, _, _ = demo
    wide = [line for line in out.stdout.splitlines() if len(line) > 80]
    assert not wide, wide[:5]


def test_html_report_holds_every_report_with_its_figure_or_why_not(demo):
    _, _, work, _ = demo
    text = (work / "demo-report.html").read_text()
    sections = re.findall(r'<section id="r\d+-([a-z_]+)">(.*?)</section>', text, flags=re.S)
    assert [name for name, _ in sections] == [r.name for r in load_manifest(demo_manifest()).reports]
    for name, body in sections:
        images = re.findall(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"', body)
        if images:
            assert len(images) == 1 and base64.b64decode(images[0])[:8] == PNG_MAGIC, name
        else:
            assert "no rows" in body, name
    assert "What the study found" in text and not re.search(r'(src|href)="(https?:|//)', text)


def test_the_readmes_commands_after_the_demo_run_on_its_warehouse(demo, tmp_path, monkeypatch):
    """README's blocks marked `docs-test: demo` (what to ask after the demo, the query catalogue),
    command by command, on the demo's warehouse, from a
    folder that has the repository's ingest/ manifests (as a clone has)."""
    from typer.testing import CliRunner

    from headdb.cli.app import app
    from test_docs_commands import ROOT, argv, demo_commands

    _, db, _, _ = demo
    commands = demo_commands()
    assert len(commands) >= 12  # both blocks found
    (tmp_path / "ingest").symlink_to(ROOT / "ingest")
    monkeypatch.chdir(tmp_path)
    for command in commands:
        result = CliRunner().invoke(app, ["--db", str(db), *argv(command)], env={"COLUMNS": "80"})
        assert result.exit_code == 0, f"{command}\n{result.output[-2000:]}\n{result.exception!r}"
        assert result.output.strip(), command
    assert all((tmp_path / f).exists() for f in ("dynamics.png", "effect.png", "study.html"))


def _heads(db, checkpoint_sql: str, task: str) -> set[tuple[int, int]]:
    rows = db.sql(f"""
        SELECT h.layer, h.head FROM circuit_heads h
        JOIN circuits c USING (circuit_id) JOIN runs r USING (run_id) JOIN tasks t USING (task_id)
        WHERE r.status = 'ok' AND c.selection = '{SELECTION}' AND t.name = '{task}'
          AND r.checkpoint_id = ({checkpoint_sql})""").rows()
    return {(int(a), int(b)) for a, b in rows}


def _last(lineage: str) -> str:
    return f"SELECT checkpoint_id FROM checkpoints WHERE lineage = '{lineage}' ORDER BY step DESC LIMIT 1"


def test_the_summary_agrees_with_the_warehouse(demo):
    """Each sentence of 'what the demo found' against plain SQL over the warehouse's tables."""
    out, db_path, _, _ = demo
    summary = _unwrap(_sections(out.stdout)[-1])
    db = headdb.connect(db_path, create=False)
    base = _heads(db, _last("base"), "sub")
    sft = _heads(db, _last("sft"), "sub")
    gained = sorted(sft - base)
    if gained:
        assert f"SFT gained {len(gained)} head(s) over the base on the subtraction task" in summary, summary
        assert f"and lost {len(base - sft)};" in summary
        for layer, head in gained[:8]:
            assert f"L{layer}H{head}" in summary
    else:
        assert "SFT gained NO head over the base on the subtraction task" in summary, summary
    # GRPO's circuit on addition, checkpoint by checkpoint (base first)
    steps = db.sql("SELECT checkpoint_id FROM checkpoints WHERE lineage = 'grpo' ORDER BY step").rows()
    chain = [_heads(db, _last("base"), "add")] + [_heads(db, str(cid), "add") for (cid,) in steps]
    changed = [bool(a ^ b) for a, b in zip(chain, chain[1:])]
    if any(changed):
        new = " ".join(str(len(b - a)) for a, b in zip(chain, chain[1:]))
        assert f"new heads {new}," in summary, summary
    else:
        assert "GRPO's circuit on addition did NOT change" in summary, summary
    grpo_gained = chain[-1] - chain[0]
    assert f"GRPO's last circuit on addition gained {len(grpo_gained)} head(s) over the base" in summary
    # each ablation: its accuracy minus the plain run's, from eval_metrics
    deltas = db.sql("""
        WITH acc AS (
            SELECT r.run_id, r.checkpoint_id, r.task_id, m.value,
                   EXISTS (SELECT 1 FROM interventions i WHERE i.run_id = r.run_id) AS intervened,
                   (SELECT string_agg('L' || i.layer || 'H' || i.head, ',' ORDER BY i.layer, i.head)
                    FROM interventions i WHERE i.run_id = r.run_id) AS heads
            FROM runs r JOIN eval_metrics m USING (run_id)
            WHERE r.status = 'ok' AND r.kind = 'generation' AND m.metric = 'accuracy' AND m.k IS NULL)
        SELECT a.heads, a.value - p.value AS delta
        FROM acc a JOIN acc p ON p.checkpoint_id = a.checkpoint_id AND p.task_id = a.task_id AND NOT p.intervened
        WHERE a.intervened""").rows()
    ablations = re.findall(
        r"Ablating the (?:emergent heads|top heads|strongest circuit heads) (\S+) .*?: ([+-]\d\.\d{3}) accuracy",
        summary,
    )
    assert ablations, summary
    assert "Ablating the strongest circuit heads " in summary, summary  # demo.toml's label is summary.STRONGEST
    measured = {frozenset(heads.split(",")): delta for heads, delta in deltas}
    for heads, delta in ablations:
        key = frozenset(heads.split(","))
        assert key in measured, (heads, measured)
        assert abs(measured[key] - float(delta)) <= 5e-4 + 1e-9, (heads, measured[key], delta)  # printed to 3 places


def test_warehouse_holds_every_kind_of_run_over_three_regimes(demo):
    _, db_path, _, _ = demo
    db = headdb.connect(db_path, create=False)
    assert db.sql("SELECT count(*) AS n FROM runs WHERE status <> 'ok'")["n"][0] == 0
    kinds = db.sql("""
        SELECT CASE WHEN r.kind = 'generation' AND EXISTS (SELECT 1 FROM interventions i WHERE i.run_id = r.run_id)
                    THEN 'ablation' ELSE r.kind END AS kind,
               list(DISTINCT c.regime ORDER BY c.regime) AS regimes
        FROM runs r JOIN checkpoints c USING (checkpoint_id) WHERE r.status = 'ok' GROUP BY 1 ORDER BY 1""").rows()
    kinds = dict(kinds)
    assert set(kinds) == {"ablation", "attribution", "generation"}
    assert kinds["attribution"] == ["base", "grpo", "sft"] and kinds["generation"] == ["base", "grpo", "sft"]
    assert kinds["ablation"] == ["grpo", "sft"]
    assert db.sql("SELECT count(DISTINCT key) AS n FROM training_metrics WHERE key IN ('reward', 'loss')")["n"][0] == 2


def test_a_second_demo_into_the_same_warehouse_is_refused_before_it_builds(demo, tmp_path):
    """The demo's study names its checkpoints base, sft@last and grpo@last: a second demo from
    another folder would make them ambiguous after minutes of training, so it is refused at once,
    in one line, with nothing written."""
    _, db_path, _, _ = demo
    before = db_path.read_bytes()
    other = tmp_path / "other"
    out = subprocess.run(
        [sys.executable, "-m", "headdb", "--db", str(db_path), "demo", "--quick", "--out", str(other)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "already holds a checkpoint named base" in lines[0] and "--db" in lines[0], lines
    assert "Traceback" not in out.stderr and not other.exists()
    assert db_path.read_bytes() == before
