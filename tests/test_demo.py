"""`headdb demo --quick` end to end: quiet output, every report it prints has rows, every kind of
run landed, and the HTML report holds every report of the manifest with its figure."""
from __future__ import annotations

import base64
import os
import re
import subprocess
import sys
import time

import pytest

import headdb
from headdb.demo.study import demo_manifest
from headdb.jobs.manifest import load_manifest

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    db = root / "demo.duckdb"
    started = time.monotonic()
    env = {**os.environ, "COLUMNS": "80"}
    out = subprocess.run([sys.executable, "-m", "headdb", "--db", str(db), "demo", "--quick", "--out",
                          str(root / "work")], capture_output=True, text=True, timeout=900, env=env, cwd=root)
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
    assert f"log: {work / 'demo.log'}" in out.stderr and str(work / "demo-report.html") in out.stderr
    assert not list(work.parent.glob("*.dot"))  # the circuit's .dot file goes to the demo folder
    assert list(work.glob("circuit-run*.dot"))


def test_every_report_has_rows_and_a_summary(demo):
    out, _, _, _ = demo
    sections = re.split(r"^─+ ", out.stdout, flags=re.MULTILINE)[1:]
    names = [s.split()[0] for s in sections]
    expected = [r.name for r in load_manifest(demo_manifest()).reports]
    assert names == expected + ["what"], names
    for section in sections:
        assert ": no rows" not in section, section[:400]
    summary = sections[-1]
    for topic in ("SFT accuracy", "GRPO accuracy", "GRPO's reward", "GRPO's circuit on addition", "Ablating"):
        assert topic in summary, summary


def test_output_fits_80_columns(demo):
    out, _, _, _ = demo
    wide = [line for line in out.stdout.splitlines() if len(line) > 80]
    assert not wide, wide[:5]


def test_html_report_holds_every_report_with_its_figure(demo):
    _, _, work, _ = demo
    text = (work / "demo-report.html").read_text()
    sections = re.findall(r'<section id="r\d+-([a-z_]+)">(.*?)</section>', text, flags=re.S)
    assert [name for name, _ in sections] == [r.name for r in load_manifest(demo_manifest()).reports]
    for name, body in sections:
        images = re.findall(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"', body)
        assert len(images) == 1 and base64.b64decode(images[0])[:8] == PNG_MAGIC, name
    assert "What the study found" in text and not re.search(r'(src|href)="(https?:|//)', text)


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
