"""Schema, migrations, run lifecycle, idempotency and read-only SQL of the warehouse."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys

import pyarrow as pa
import pytest

import headdb
from headdb.errors import UserError
from headdb.resources import schemas_dir
from headdb.warehouse.migrations import code_version


def scores(n: int, value: float = 1.0) -> pa.Table:
    return pa.table({"edge_id": pa.array(range(n), pa.int32()), "score": pa.array([value] * n, pa.float32())})


@pytest.fixture
def db(tmp_path):
    return headdb.connect(tmp_path / "w.duckdb")


def test_new_warehouse_has_every_core_table_and_the_latest_version(db):
    assert db.sql("SELECT max(version) AS v FROM schema_version")["v"][0] == code_version()
    tables = set(db.sql("SELECT table_name FROM information_schema.tables")["table_name"])
    core = {
        "schema_version",
        "models",
        "checkpoints",
        "training_metrics",
        "tasks",
        "task_items",
        "runs",
        "graph_nodes",
        "graph_edges",
        "edge_scores",
        "head_scores",
        "circuits",
        "circuit_edges",
        "circuit_heads",
        "generations",
        "interventions",
        "eval_metrics",
    }
    assert core <= tables
    score_type = db.sql(
        "SELECT data_type FROM information_schema.columns WHERE table_name='edge_scores' AND column_name='score'"
    )["data_type"][0]
    assert score_type == "FLOAT"


def test_schemas_are_packaged_next_to_the_code():
    assert (schemas_dir() / "0001_init.sql").is_file()


def _schemas_v1(tmp_path):
    folder = tmp_path / "schemas-v1"
    folder.mkdir()
    shutil.copy(schemas_dir() / "0001_init.sql", folder)
    return folder


def _schemas_with_v2(tmp_path, sql: str):
    folder = tmp_path / "schemas"
    folder.mkdir()
    shutil.copy(schemas_dir() / "0001_init.sql", folder)
    (folder / "0002_next.sql").write_text(sql)
    return folder


def test_migrate_applies_pending_in_order(tmp_path):
    path = tmp_path / "w.duckdb"
    v1 = headdb.connect(path, schemas=_schemas_v1(tmp_path))
    folder = _schemas_with_v2(tmp_path, "ALTER TABLE runs ADD COLUMN note VARCHAR;")
    with pytest.raises(UserError, match="headdb --db .* migrate"):
        headdb.connect(path, schemas=folder)
    db = headdb.Warehouse(v1.sink, schemas=folder)
    assert db.migrate() == [2]
    assert db.schema_version() == 2
    assert "note" in db.sql("SELECT * FROM runs").columns
    assert db.migrate() == []


def test_failed_migration_changes_nothing(tmp_path):
    path = tmp_path / "w.duckdb"
    v1 = headdb.connect(path, schemas=_schemas_v1(tmp_path))
    folder = _schemas_with_v2(tmp_path, "ALTER TABLE runs ADD COLUMN note VARCHAR; SELECT * FROM no_such_table;")
    db = headdb.Warehouse(v1.sink, schemas=folder)
    with pytest.raises(Exception):
        db.migrate()
    assert db.schema_version() == 1
    assert "note" not in db.sql("SELECT * FROM runs").columns


def test_newer_schema_is_refused(tmp_path, db):
    db.sql("INSERT INTO schema_version (version) VALUES (99)", write=True)
    with pytest.raises(UserError, match="newer than this headdb"):
        headdb.connect(db.location)


def test_run_facts_and_status_land_together(db):
    run = db.start_run("attribution", config={"m": 5}, seed=3, device="cpu", dtype="float32")
    assert db.sql("SELECT status FROM runs")["status"].to_list() == ["running"]
    with run:
        run.add("edge_scores", scores(10))
        run.metric("completeness_residual", 0.01)
    row = db.sql("SELECT * FROM runs").row(0, named=True)
    assert row["status"] == "ok" and row["seed"] == 3 and row["finished_at"] is not None
    assert '"duckdb"' in row["versions"] and '"torch"' in row["versions"] and row["host"]
    assert db.sql("SELECT count(*) AS n FROM edge_scores WHERE run_id = ?", [run.run_id])["n"][0] == 10
    assert db.sql("SELECT value FROM run_metrics")["value"].to_list() == [0.01]


def test_exception_mid_job_leaves_failed_run_and_no_facts(db):
    run = db.start_run("attribution", config={"m": 5})
    with pytest.raises(RuntimeError, match="boom"):
        with run:
            run.add("edge_scores", scores(10))
            run.add("head_scores", pa.table({"layer": [0], "head": [1], "score": [0.5], "importance": [1.0]}))
            raise RuntimeError("boom")
    row = db.sql("SELECT status, error FROM runs").row(0, named=True)
    assert row["status"] == "failed" and "boom" in row["error"]
    for table in ("edge_scores", "head_scores", "run_metrics"):
        assert db.sql(f"SELECT count(*) AS n FROM {table}")["n"][0] == 0


def test_repeat_is_skipped_and_force_replaces_atomically(db):
    first = db.start_run("attribution", config={"m": 5})
    with first:
        first.add("edge_scores", scores(4, 1.0))
    again = db.start_run("attribution", config={"m": 5})
    assert again.skipped and again.run_id == first.run_id
    assert db.sql("SELECT count(*) AS n FROM runs")["n"][0] == 1
    other = db.start_run("attribution", config={"m": 6})
    assert not other.skipped
    with other:
        other.add("edge_scores", scores(4, 3.0))

    forced = db.start_run("attribution", config={"m": 5}, force=True)
    assert not forced.skipped and forced.run_id != first.run_id
    # Until the forced run lands, the old one is intact.
    assert db.sql("SELECT sum(score) AS s FROM edge_scores WHERE run_id = ?", [first.run_id])["s"][0] == 4.0
    with forced:
        forced.add("edge_scores", scores(4, 2.0))
    runs = db.sql("SELECT run_id, status FROM runs ORDER BY run_id")
    assert runs["run_id"].to_list() == [other.run_id, forced.run_id]
    assert set(runs["status"]) == {"ok"}
    by_run = db.sql("SELECT run_id, sum(score) AS s FROM edge_scores GROUP BY run_id ORDER BY run_id")
    assert by_run["s"].to_list() == [12.0, 8.0]


def test_failed_run_is_retried_and_replaced(db):
    failing = db.start_run("attribution", config={"m": 5})
    with pytest.raises(ValueError):
        with failing:
            raise ValueError("bad weights")
    retry = db.start_run("attribution", config={"m": 5})
    assert not retry.skipped
    with retry:
        retry.add("edge_scores", scores(3))
    assert db.sql("SELECT run_id, status FROM runs").rows() == [(retry.run_id, "ok")]


def test_a_run_whose_process_died_is_abandoned_not_running(tmp_path):
    """kill -9 between start and commit: `runs` never calls the dead job running, the next
    writer stores it as abandoned, and a re-run of the same config replaces it."""
    path = tmp_path / "w.duckdb"
    headdb.connect(path)
    script = (
        "import os, signal, headdb\n"
        f"db = headdb.connect({str(path)!r})\n"
        "run = db.start_run('attribution', config={'m': 5})\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    died = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert died.returncode == -signal.SIGKILL, died.stderr
    db = headdb.connect(path, create=False)
    assert db.sql("SELECT status FROM runs").rows() == [("running",)]  # what the dead process left
    assert db.runs()["status"].to_list() == ["abandoned"]  # what `headdb runs` shows
    listed = subprocess.run(
        [sys.executable, "-m", "headdb", "--db", str(path), "runs", "--format", "csv"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert listed.returncode == 0 and "abandoned" in listed.stdout and "running" not in listed.stdout
    other = db.start_run("attribution", config={"m": 6})  # the next writer marks it
    row = db.sql("SELECT status, error FROM runs WHERE run_id < ?", [other.run_id]).row(0, named=True)
    assert row["status"] == "abandoned" and "ended before the run finished" in row["error"]
    with other:
        other.add("edge_scores", scores(2))
    assert db.sql("SELECT status FROM runs WHERE run_id = ?", [other.run_id]).rows() == [("ok",)]  # alive: untouched
    again = db.start_run("attribution", config={"m": 5})
    with again:
        again.add("edge_scores", scores(3))
    assert db.sql("SELECT status, count(*) AS n FROM runs GROUP BY 1").rows() == [("ok", 2)]


def test_circuit_ids_become_global(db):
    for value in (1.0, 2.0):
        run = db.start_run("attribution", config={"v": value})
        with run:
            run.add(
                "circuits",
                pa.table(
                    {
                        "circuit_id": [0, 1],
                        "selection": ["topn", "threshold"],
                        "param": [10.0, 0.1],
                        "n_edges": [2, 1],
                        "n_nodes": [3, 2],
                        "faithfulness": [0.9, 0.5],
                    }
                ),
            )
            run.add("circuit_edges", pa.table({"circuit_id": [0, 0, 1], "edge_id": [5, 6, 5]}))
            run.add("circuit_heads", pa.table({"circuit_id": [0, 1], "layer": [1, 1], "head": [0, 0]}))
    circuits = db.sql("SELECT circuit_id, run_id FROM circuits ORDER BY circuit_id")
    assert circuits["circuit_id"].to_list() == [1, 2, 3, 4]
    joined = db.sql(
        "SELECT c.run_id, count(*) AS n FROM circuit_edges e JOIN circuits c USING (circuit_id) GROUP BY 1 ORDER BY 1"
    )
    assert joined["n"].to_list() == [3, 3]


@pytest.mark.parametrize(
    "statement",
    [
        "DROP TABLE runs",
        "INSERT INTO runs (run_id, kind, config, config_hash, status, started_at) VALUES (9,'import','{}','x','ok',now())",
        "UPDATE edge_scores SET score = 0",
        "DELETE FROM edge_scores",
        "COPY edge_scores TO '/tmp/headdb-leak.csv'",
        "SELECT 1; DROP TABLE edge_scores",
        "ATTACH ':memory:' AS other",
    ],
)
def test_read_only_sql_refuses_writes_and_leaves_data(db, statement):
    run = db.start_run("attribution", config={})
    with run:
        run.add("edge_scores", scores(5))
    with pytest.raises(UserError, match="read-only"):
        db.sql(statement)
    assert db.sql("SELECT count(*) AS n FROM edge_scores")["n"][0] == 5
    assert db.sql("SELECT count(*) AS n FROM runs")["n"][0] == 1


def test_sql_with_write_modifies(db):
    db.sql("CREATE TABLE notes (x INTEGER); INSERT INTO notes VALUES (1)", write=True)
    assert db.sql("SELECT x FROM notes")["x"].to_list() == [1]


def test_registration_is_idempotent(db):
    ck = dict(model_key="m", path="/tmp/ckpt-a", weights_digest="abc", lineage="run1", regime="sft", step=100)
    a = db.register_checkpoint(**ck)
    b = db.register_checkpoint(**ck)
    assert a == b
    with pytest.raises(UserError, match="regime"):
        db.register_checkpoint(**{**ck, "regime": "rlhf"})
    items = pa.table({"item_id": ["1", "2"], "clean": ["a", "b"], "corrupted": ["c", "d"], "answer": ["x", "y"]})
    t1 = db.register_task(name="t", kind="circuit", digest="d1", items=items)
    t2 = db.register_task(name="t", kind="circuit", digest="d1", items=items)
    assert t1 == t2 and db.sql("SELECT count(*) AS n FROM task_items")["n"][0] == 2


def test_training_metrics_replace_same_steps(db):
    import polars as pl

    db.add_training_metrics(
        "grpo1", pl.DataFrame({"step": [1, 1, 2], "key": ["loss", "reward", "loss"], "value": [1.0, 0.1, 0.9]})
    )
    db.add_training_metrics("grpo1", pl.DataFrame({"step": [2, 3], "key": ["loss", "loss"], "value": [0.8, 0.7]}))
    got = db.sql("SELECT step, key, value FROM training_metrics ORDER BY step, key").rows()
    assert got == [(1, "loss", 1.0), (1, "reward", 0.1), (2, "loss", 0.8), (3, "loss", 0.7)]


def test_batch_reuses_one_connection_and_keeps_atomicity(db):
    with db.batch():
        ok = db.start_run("attribution", config={"b": 1})
        with ok:
            ok.add("edge_scores", scores(3))
        bad = db.start_run("attribution", config={"b": 2})
        with pytest.raises(RuntimeError):
            with bad:
                bad.add("edge_scores", scores(3))
                raise RuntimeError("boom")
        assert db.sql("SELECT count(*) AS n FROM edge_scores")["n"][0] == 3
    assert db.sql("SELECT status FROM runs ORDER BY run_id")["status"].to_list() == ["ok", "failed"]
    assert db.sql("SELECT count(*) AS n FROM edge_scores")["n"][0] == 3
