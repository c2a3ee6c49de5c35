"""The local executor with worker processes (`--workers N`): a worker killed mid-job fails its jobs
and a re-run completes them; Ctrl-C leaves no run `running`; GPUs are shared out. (That it stores
what one process stores is checked beside Ray, in test_ray.py, whose study and job helpers these
tests share.)"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest

import headdb
from headdb.attribution.tasks import load_task
from headdb.jobs.attribution import AttributionJob
from headdb.jobs.executor import execute
from headdb.jobs.plan import CheckpointWork, Plan, target
from headdb.jobs.process_executor import ProcessExecutor, gpu_slots
from headdb.settings import AttributionSettings
from test_ray import MANIFEST, SlowAttribution


@pytest.fixture(scope="module")
def study_dir(two_checkpoint_study):
    return two_checkpoint_study(MANIFEST)


def _plan(study_dir, release: str, slow_both: bool) -> Plan:
    task = load_task(study_dir / "t.jsonl")
    settings = AttributionSettings(steps=2, topn=40, curve=False)
    second = SlowAttribution(task, settings, release=release) if slow_both else AttributionJob(task, settings)
    return Plan(
        [
            CheckpointWork(target(study_dir / "base"), [SlowAttribution(task, settings, release=release)]),
            CheckpointWork(target(study_dir / "tuned"), [second]),
        ]
    )


def _wait_for(path: Path) -> None:
    deadline = time.monotonic() + 120
    while not path.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert path.exists()


def test_a_killed_worker_fails_its_jobs_and_a_rerun_completes_them(study_dir, tmp_path):
    db = headdb.connect(tmp_path / "w.duckdb")
    release = str(tmp_path / "release")
    plan = _plan(study_dir, release, slow_both=False)
    result = {}
    driver = threading.Thread(
        target=lambda: result.update(out=execute(db, plan, ProcessExecutor(workers=2), say=lambda _: None))
    )
    driver.start()
    _wait_for(Path(release + ".pid"))
    time.sleep(1.0)  # the other worker's job (not slow) lands first
    os.kill(int(Path(release + ".pid").read_text()), signal.SIGKILL)
    driver.join(timeout=300)
    out = result["out"]
    kinds = sorted((r.checkpoint, r.status, r.error_kind) for r in out.records)
    assert ("base", "failed", "worker") in kinds
    assert db.sql("SELECT count(*) AS n FROM runs WHERE status = 'running'")["n"][0] == 0
    assert db.sql("SELECT count(DISTINCT run_id) AS n FROM edge_scores")["n"][0] == len(out.done)
    Path(release).touch()
    again = execute(db, plan, say=lambda _: None)  # what is missing, wherever it runs (in process: faster)
    assert again.ok and len(again.done) + len(again.skipped) == 2
    assert db.sql("SELECT count(*) AS n FROM runs WHERE status = 'ok'")["n"][0] == 2


def test_ctrl_c_stops_the_workers_and_leaves_no_run_running(study_dir, tmp_path, default_sigint):
    db = headdb.connect(tmp_path / "w.duckdb")
    release = str(tmp_path / "release")
    plan = _plan(study_dir, release, slow_both=True)

    def press_ctrl_c():
        _wait_for(Path(release + ".pid"))
        time.sleep(0.5)
        os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=press_ctrl_c, daemon=True).start()
    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        execute(db, plan, ProcessExecutor(workers=2), say=lambda _: None)
    assert time.monotonic() - started < 100  # not after the jobs' 120 s sleep
    runs = db.sql("SELECT status, error FROM runs")
    assert runs.height == 2 and set(runs["status"]) == {"failed"} and set(runs["error"]) == {"interrupted"}
    Path(release).touch()
    again = execute(db, plan, say=lambda _: None)
    assert again.ok and len(again.done) == 2


def test_each_worker_sees_its_own_gpu_round_robin():
    assert gpu_slots(2, ["0", "1", "2"]) == ["0", "1"]
    assert gpu_slots(4, ["0", "1"]) == ["0", "1", "0", "1"]
    assert gpu_slots(3, []) == []


def test_workers_are_for_the_local_executor():
    from headdb.errors import UserError
    from headdb.settings import ExecutorSettings

    with pytest.raises(UserError, match="--workers applies to --executor local"):
        ExecutorSettings(executor="ray", workers=2)
    with pytest.raises(ValueError):
        ExecutorSettings(workers=0)
