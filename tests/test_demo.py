"""`headdb demo --quick` end to end: every report it prints has rows, every kind of run landed."""
from __future__ import annotations

import re
import subprocess
import sys
import time

import pytest

import headdb


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    db = root / "demo.duckdb"
    started = time.monotonic()
    out = subprocess.run([sys.executable, "-m", "headdb", "--db", str(db), "demo", "--quick", "--out",
                          str(root / "work")], capture_output=True, text=True, timeout=900)
    return out, db, time.monotonic() - started


def test_demo_quick_succeeds(demo):
    out, _, seconds = demo
    assert out.returncode == 0, out.stderr[-3000:]
    print(f"headdb demo --quick took {seconds:.0f} s")


def test_every_report_has_rows(demo):
    out, _, _ = demo
    sections = re.split(r"^─+ ", out.stdout, flags=re.MULTILINE)[1:]
    names = [s.split()[0] for s in sections]
    assert {"heads_gained", "head_dynamics", "ablation_table", "newly_solved_missed"} <= set(names), names
    for section in sections:
        assert ": no rows" not in section, section[:400]


def test_warehouse_holds_every_kind_of_run_over_three_regimes(demo):
    _, db_path, _ = demo
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
    assert db.sql("SELECT count(DISTINCT key) AS n FROM training_metrics WHERE key IN ('reward', 'loss')")["n"][0] == 2
