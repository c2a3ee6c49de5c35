"""The executor: a study re-run loads no model, a checkpoint is loaded once for all its jobs, and
a job that raises is recorded as failed while the others land."""

from __future__ import annotations


import pytest

import headdb
from headdb.checkpoints import loading
from headdb.jobs.manifest import load_manifest
from headdb.jobs.study import run_study

MANIFEST = """
[attribution]
steps = 2
topn = 40
curve = false
[generation]
samples = 1
temperature = 0.0
max_new_tokens = 4
[[tasks]]
name = "t"
file = "t.jsonl"
[[benchmarks]]
name = "arith"
source = "synthetic-arithmetic:n=2"
[[models]]
name = "base"
path = "base"
regime = "base"
[[models]]
name = "tuned"
path = "tuned"
regime = "sft"
base = "base"
[[ablations]]
checkpoint = "tuned"
heads = "L0H1"
kind = "mean"
control = true
benchmarks = ["arith"]
"""


@pytest.fixture
def counted_loads(monkeypatch):
    loads = []
    real = loading.load_model

    def counting(path, **kw):
        loads.append(str(path))
        return real(path, **kw)

    monkeypatch.setattr(loading, "load_model", counting)
    return loads


@pytest.fixture(scope="module")
def study_dir(two_checkpoint_study):
    return two_checkpoint_study(MANIFEST)


def test_each_checkpoint_loads_once_and_a_rerun_loads_nothing(study_dir, tmp_path, counted_loads):
    db = headdb.connect(tmp_path / "w.duckdb")
    m = load_manifest(study_dir / "study.toml")
    first = run_study(db, m, say=lambda _: None)
    assert first.ok and len(first.done) == 2 + 2 + 2  # attribution x2, plain generation x2, mean + control
    # base and tuned in stage 1, tuned again for the ablations (their head sets come from stage 1)
    assert sorted(counted_loads) == sorted(
        [str(study_dir / "base"), str(study_dir / "tuned"), str(study_dir / "tuned")]
    )
    counted_loads.clear()
    again = run_study(db, m, say=lambda _: None)
    assert counted_loads == [] and again.loads == 0
    assert again.done == [] and set(again.skipped) == set(first.done)


def test_a_failing_job_is_recorded_and_the_others_land(study_dir, tmp_path, monkeypatch):
    from headdb.jobs.generations import GenerationJob

    def boom(self, loaded, ctx):
        raise RuntimeError("generation exploded")

    monkeypatch.setattr(GenerationJob, "compute", boom)
    db = headdb.connect(tmp_path / "w.duckdb")
    m = load_manifest(study_dir / "study.toml")
    out = run_study(db, m, say=lambda _: None)
    assert not out.ok and len(out.done) == 2  # both attribution runs
    runs = db.sql("SELECT kind, status, error FROM runs ORDER BY run_id")
    failed = runs.filter(runs["status"] == "failed")
    assert set(failed["kind"]) == {"generation"} and all("generation exploded" in e for e in failed["error"])
    assert db.sql("SELECT count(*) AS n FROM generations")["n"][0] == 0


def test_the_python_api_plans_and_executes(study_dir, tmp_path, counted_loads):
    from headdb.attribution.tasks import load_task
    from headdb.jobs import execute, plan_attribution
    from headdb.settings import AttributionSettings

    db = headdb.connect(tmp_path / "w.duckdb")
    plan = plan_attribution(study_dir / "base", load_task(study_dir / "t.jsonl"), AttributionSettings(steps=2, topn=40))
    first = execute(db, plan, say=lambda _: None)
    assert first.ok and len(first.done) == 1 and first.loads == 1
    again = execute(db, plan, say=lambda _: None)
    assert again.skipped == first.done and again.loads == 0 and len(counted_loads) == 1
    assert db.sql("SELECT count(*) AS n FROM edge_scores")["n"][0] > 0


def test_ctrl_c_on_the_command_line_exits_130_and_leaves_no_run_running(study_dir, tmp_path):
    """SIGINT to `headdb ingest generations` mid-job: one line, exit 130, its run recorded as
    interrupted, nothing `running`, no generations stored."""
    import os
    import signal
    import subprocess
    import sys
    import time

    db_path = tmp_path / "w.duckdb"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "headdb",
            "--db",
            str(db_path),
            "ingest",
            "generations",
            "--checkpoint",
            str(study_dir / "base"),
            "--bench",
            "synthetic-arithmetic:n=200",
            "--samples",
            "8",
            "--max-new-tokens",
            "256",
            "--temperature",
            "0.8",
            "--device",
            "cpu",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if db_path.exists():
            try:
                if headdb.connect(db_path, create=False, lock_timeout=0.1).sql(
                    "SELECT count(*) AS n FROM runs WHERE status = 'running'"
                )["n"][0]:
                    break
            except Exception:  # the writer holds the file for a moment
                pass
        time.sleep(0.5)
    time.sleep(1.0)
    assert proc.poll() is None, proc.stderr.read()
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "Traceback" not in err and "headdb: aborted" in err, err
    db = headdb.connect(db_path, create=False)
    assert db.sql("SELECT status, error FROM runs").rows() == [("failed", "interrupted")]
    assert db.sql("SELECT count(*) AS n FROM generations")["n"][0] == 0
