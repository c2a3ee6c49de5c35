"""The DuckLake sink with the real parts: a PostgreSQL server (tests/postgres_server.py), the
ducklake and postgres_scanner extensions from their wheels, writer processes, kill -9."""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import numpy as np
import polars as pl
import pyarrow as pa
import pytest
from polars.testing import assert_frame_equal

import headdb
from headdb.errors import UserError
from headdb.resources import schemas_dir
from headdb.warehouse.lake import LakeSink
from headdb.warehouse.migrations import code_version
from headdb.warehouse.queries import catalogue, run_query
from headdb.warehouse.sinks import TransactionAborted
from headdb.warehouse.statements import sql
from warehouse_builders import build_study, shared_study
from writers import LAKE_LAYOUT, edge_table

WRITER = str(Path(__file__).with_name("writers.py"))


def _spawn(lake, *args: str) -> subprocess.Popen:
    env = {**os.environ, "HEADDB_DATA_PATH": str(lake.data_path)}
    return subprocess.Popen(
        [sys.executable, WRITER, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )


def _cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "headdb", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
    )


# -- the schema and the spec ----------------------------------------------------------------------


def test_every_migration_uses_only_what_ducklake_accepts():
    # DuckLake rejects these (NotImplementedException / BinderException at CREATE time).
    refused = re.compile(
        r"\b(PRIMARY\s+KEY|UNIQUE|CHECK\s*\(|REFERENCES|CREATE\s+(UNIQUE\s+)?INDEX|"
        r"SEQUENCE|nextval|ENUM|CREATE\s+TYPE)\b",
        re.I,
    )
    for path in sorted(schemas_dir().glob("*.sql")):
        code = re.sub(r"--[^\n]*", "", path.read_text())
        assert not refused.search(code), f"{path.name}: {refused.search(code).group(0)}"


def test_a_lake_spec_must_name_postgres():
    with pytest.raises(UserError, match="PostgreSQL only"):
        headdb.connect("ducklake:sqlite:x.db", data_path="/tmp")
    with pytest.raises(UserError, match="needs a connection string"):
        headdb.connect("ducklake:postgres:", data_path="/tmp")
    with pytest.raises(UserError, match="is for a DuckLake warehouse"):
        headdb.connect("w.duckdb", data_path="/tmp")


def test_user_mistakes_are_one_line(lake, postgres_server, tmp_path):
    with pytest.raises(UserError, match="give --data-path DIR"):
        headdb.connect(lake.spec)
    with pytest.raises(UserError, match="no warehouse in DuckLake .* create one with"):
        headdb.connect(lake.spec, data_path=lake.data_path, create=False)
    with pytest.raises(UserError, match=r"folder .*nowhere does not exist"):
        headdb.connect(lake.spec, data_path=tmp_path / "nowhere" / "lake")
    gone = f"ducklake:postgres:dbname=lake host={tmp_path} user=postgres"  # no server listens there
    with pytest.raises(UserError, match="cannot reach the lake's PostgreSQL catalog .* No such file"):
        headdb.connect(gone, data_path=lake.data_path)
    headdb.connect(lake.spec, data_path=lake.data_path)
    headdb.connect(lake.spec, data_path=lake.data_path)  # the same path again is fine
    with pytest.raises(UserError, match="is not this lake's data path"):
        headdb.connect(lake.spec, data_path=tmp_path / "elsewhere")
    assert headdb.connect(lake.spec).schema_version() >= 1  # the lake remembers its data path
    # The CLI says it in one line and exits 2.
    out = _cli("--db", gone, "--data-path", str(lake.data_path), "runs")
    assert out.returncode == 2 and "cannot reach the lake's PostgreSQL catalog" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1, out.stderr


def test_cli_init_runs_and_query_on_a_lake_from_the_environment(lake):
    env = {"HEADDB_DB": lake.spec, "HEADDB_DATA_PATH": str(lake.data_path)}
    assert _cli("init", env=env).returncode == 0
    out = _cli("sql", "select count(*) as n from schema_version", "--format", "csv", env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["n", str(code_version())], out.stdout  # every migration applied
    assert _cli("runs", env=env).returncode == 0
    refused = _cli("sql", "delete from runs", env=env)
    assert refused.returncode == 2 and "read-only" in refused.stderr


# -- transactions ---------------------------------------------------------------------------------


def test_a_swallowed_error_never_passes_for_a_commit(lake, tmp_path):
    for db in (headdb.connect(lake.spec, data_path=lake.data_path), headdb.connect(tmp_path / "w.duckdb")):

        def body(s):
            s.execute("INSERT INTO run_metrics VALUES (1, 'a', 1.0)")
            try:
                s.execute("INSERT INTO run_metrics VALUES (1, NULL, 2.0)")  # NOT NULL: aborts the transaction
            except duckdb.Error:
                pass  # a caller that swallows it must not be told its writes landed

        with pytest.raises(TransactionAborted, match="NOT NULL"):
            db.sink.transaction(body)
        assert db.sql("SELECT count(*) AS n FROM run_metrics")["n"][0] == 0


def test_two_writers_that_read_the_same_max_get_different_ids(lake):
    """Writer A reads max(run_id) + 1, writer B commits a run before A commits: A's transaction
    conflicts and runs again on the new snapshot. (DuckLake alone lets both commit the same id:
    appends to one table do not conflict - the control at the end shows it.) A takes no turn, as
    if its turn had timed out, so that B can commit inside A's transaction."""
    a = headdb.connect(sink=LakeSink(lake.spec, data_path=lake.data_path, take_turns=False))
    b = headdb.connect(lake.spec)
    assert a.sink is not b.sink
    seen = []

    def body(s):
        run_id = s.scalar(sql("warehouse", "next_run_id"))
        seen.append(run_id)
        if len(seen) == 1:
            b.start_run("import", config={"who": "b"})  # commits in between, on its own connection
        s.execute(
            "INSERT INTO runs (run_id, kind, config, config_hash, status, started_at) "
            "VALUES (?, 'import', '{}', 'a', 'ok', current_timestamp)",
            [run_id],
        )
        return run_id

    assert a.sink.transaction(body) == 2
    assert seen == [1, 2] and a.sink.conflicts == 1
    assert sorted(a.sql("SELECT run_id FROM runs")["run_id"]) == [1, 2]

    # Control: the same interleaving on two bare DuckLake connections, without headdb's write
    # token, commits the same id twice.
    cons = [LakeSink(lake.spec)._open() for _ in range(2)]
    for con in cons:
        con.execute("BEGIN")
    ids = [con.execute(sql("warehouse", "next_run_id")).fetchone()[0] for con in cons]
    for con, run_id in zip(cons, ids):
        con.execute(
            "INSERT INTO runs (run_id, kind, config, config_hash, status, started_at) "
            "VALUES (?, 'import', '{}', 'c', 'ok', current_timestamp)",
            [run_id],
        )
        con.execute("COMMIT")
    assert ids == [3, 3]


def test_four_writer_processes_every_run_lands_once(lake, tmp_path):
    n_runs, n_rows = 5, 10_000
    go = tmp_path / "go"
    names = ["w0", "w1", "opt-2", "opt-3"]  # two take turns, two race them (tests/writers.py)
    procs = [_spawn(lake, "lake-runs", lake.spec, name, str(n_runs), str(n_rows), str(go)) for name in names]
    for proc in procs:  # all four attach the new lake (and create its schema) at once, then wait
        assert proc.stdout.readline().strip() == "ready", proc.stderr.read()
    go.touch()
    conflicts = waits = 0
    for proc in procs:
        out, errs = proc.communicate(timeout=120)
        assert proc.returncode == 0, errs
        report = json.loads(out.strip().splitlines()[-1])
        conflicts, waits = conflicts + report["conflicts"], waits + report["turn_waits"]
    assert conflicts > 0 and waits > 0, "the writers never overlapped; the test proved nothing"

    db = headdb.connect(lake.spec, create=False)
    runs = db.sql("SELECT run_id, status, config FROM runs ORDER BY run_id")
    assert runs["status"].to_list() == ["ok"] * 4 * n_runs
    assert runs["run_id"].to_list() == list(range(1, 4 * n_runs + 1))  # unique and without gaps
    configs = sorted((c["worker"], c["i"]) for c in map(json.loads, runs["config"]))
    assert configs == sorted((name, i) for name in names for i in range(n_runs))
    # Entities all four registered at once exist once.
    assert db.sql("SELECT count(*) AS n FROM checkpoints WHERE name = 'shared'")["n"][0] == 1
    assert db.sql("SELECT count(*) AS n FROM checkpoints")["n"][0] == 5
    assert db.sql("SELECT count(*) AS n FROM tasks")["n"][0] == 1
    assert db.sql("SELECT count(*) AS n FROM models")["n"][0] == 1
    assert db.sql("SELECT count(*) AS n FROM graph_nodes")["n"][0] == LAKE_LAYOUT[0].num_rows  # one layout
    # Every run's facts are its own: scores equal the writer's table for its seed, circuits unique.
    per_run = db.sql(
        "SELECT r.run_id, json_extract(r.config, '$.i')::INT AS i, count(*) AS n, "
        "sum(e.score::DOUBLE) AS total FROM runs r JOIN edge_scores e USING (run_id) GROUP BY ALL"
    )
    assert per_run.height == 4 * n_runs and set(per_run["n"]) == {n_rows}
    for i, total in zip(per_run["i"], per_run["total"]):
        expected = float(np.asarray(edge_table(n_rows, seed=i)["score"], dtype=np.float64).sum())
        assert total == pytest.approx(expected, rel=1e-9, abs=1e-6)
    circuits = db.sql("SELECT circuit_id, run_id, selection FROM circuits")
    assert circuits.height == 2 * 4 * n_runs and circuits["circuit_id"].n_unique() == circuits.height
    heads = db.sql(
        "SELECT c.selection, count(*) AS n FROM circuits c JOIN circuit_heads h USING (circuit_id) "
        "GROUP BY ALL ORDER BY 1"
    )
    assert heads.rows() == [("threshold", 4 * n_runs), ("topn", 2 * 4 * n_runs)]
    wrong = db.sql(
        "SELECT count(*) AS n FROM circuits c JOIN runs r USING (run_id) JOIN circuit_heads h USING (circuit_id) "
        "WHERE h.head <> (json_extract(r.config, '$.i')::INT % 2) AND NOT (c.selection = 'topn' AND h.head = "
        "1 - json_extract(r.config, '$.i')::INT % 2)"
    )
    assert wrong["n"][0] == 0  # each circuit's heads are those its own run wrote


def _check_consistent(db, big: int) -> dict[int, int]:
    facts = dict(db.sql("SELECT run_id, count(*) AS n FROM edge_scores GROUP BY run_id").rows())
    status = dict(db.sql("SELECT run_id, status FROM runs").rows())
    for run_id, n in facts.items():
        assert status.get(run_id) == "ok", f"facts of run {run_id} with status {status.get(run_id)}"
        assert n == big, f"run {run_id} has {n} of {big} rows"
    assert all(run_id in facts for run_id, s in status.items() if s == "ok")
    return facts


def test_kill_9_mid_commit_leaves_no_partial_run(lake):
    big = 1_000_000
    rng = random.Random(11)
    headdb.connect(lake.spec, data_path=lake.data_path)
    done = _spawn(lake, "big", lake.spec, str(big), "keep")
    assert done.wait(120) == 0, done.stderr.read()
    kept = _check_consistent(headdb.connect(lake.spec, create=False), big)
    assert len(kept) == 1
    files = lake.data_path / "main" / "edge_scores"
    killed_mid_commit = 0
    for attempt in range(4):
        before = set(files.iterdir())
        proc = _spawn(lake, "big", lake.spec, str(big), f"kill-{attempt}")
        assert proc.stdout.readline().strip() == "committing", proc.stderr.read()
        if attempt % 2 == 0:  # the moment its first Parquet file exists: data written, catalog not yet
            while proc.poll() is None and not set(files.iterdir()) - before:
                time.sleep(0.001)
        else:
            time.sleep(rng.uniform(0.0, 0.3))
        finished = proc.poll() is not None
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        db = headdb.connect(lake.spec, create=False)  # the lake opens
        facts = _check_consistent(db, big)  # nothing partial
        assert set(kept) <= set(facts), "an earlier run was lost"
        killed_mid_commit += not finished and len(facts) == len(kept)
        kept = facts
    assert killed_mid_commit >= 2, "the writer finished before it could be killed"
    # The killed writers left their rows: each next writer on this host marked its predecessors'
    # rows abandoned (their pids are gone), only the last one still reads `running` in the table,
    # and `runs` shows none as running. A re-run of a killed job replaces its row and completes.
    left = dict(db.sql("SELECT status, count(*) AS n FROM runs WHERE status <> 'ok' GROUP BY 1").rows())
    assert sum(left.values()) >= 2 and left.get("running", 0) <= 1 and set(left) <= {"running", "abandoned"}
    assert "running" not in db.runs()["status"].to_list()
    rerun = _spawn(lake, "big", lake.spec, str(big), "kill-0")
    assert rerun.wait(120) == 0, rerun.stderr.read()
    db = headdb.connect(lake.spec, create=False)
    after = _check_consistent(db, big)
    assert len(after) == len(kept) + 1
    assert db.sql("SELECT count(*) AS n FROM runs WHERE config LIKE '%kill-0%'").rows() == [(1,)]
    # The killed writers' Parquet files belong to no snapshot; maintenance deletes them (and
    # compacts), and every fact stays.
    on_disk = {p for p in lake.data_path.rglob("*.parquet")}
    with db.sink.read() as s:
        listed = {Path(r[0]) for r in s.rows("SELECT data_file FROM ducklake_list_files('headdb_lake', 'edge_scores')")}
    assert listed < {p for p in on_disk if p.parent.name == "edge_scores"}, "no orphans to clean up"
    db.maintain(keep_hours=0)
    with db.sink.read() as s:
        referenced = {
            Path(f)
            for table in ("edge_scores", "runs", "run_metrics")
            for r in s.rows(f"SELECT data_file, delete_file FROM ducklake_list_files('headdb_lake', '{table}')")
            for f in r
            if f is not None
        }
    left = {p for p in lake.data_path.rglob("*.parquet") if p.parent.name in ("edge_scores", "runs", "run_metrics")}
    assert left == referenced
    assert _check_consistent(db, big) == after


# -- the same answers ----------------------------------------------------------------------------

VOLATILE = {"started_at", "finished_at", "registered_at", "applied_at", "pid", "host", "versions", "git_sha"}
PARAMS = {"lineage": "grpo-gsm8k", "base": "qwen-math", "target": "grpo-gsm8k@400"}


def _table(db, name: str) -> pl.DataFrame:
    df = db.sql(f"SELECT * FROM {name}")
    df = df.drop([c for c in df.columns if c in VOLATILE])
    return df.sort(df.columns, nulls_last=True)


def test_every_named_query_answers_the_same_on_a_file_and_a_lake(lake):
    file_study = shared_study()
    lake_study = build_study(lake.spec, data_path=lake.data_path)
    tables = file_study.db.sql("SELECT table_name FROM information_schema.tables WHERE table_schema = 'main'")
    for name in tables["table_name"]:
        on_lake, on_file = _table(lake_study.db, name), _table(file_study.db, name)
        differ = [c for c in on_file.columns if not on_lake[c].equals(on_file[c])]
        assert on_lake.equals(on_file), (
            f"{name}: columns {differ} differ\n{on_lake.select(differ)}\n{on_file.select(differ)}"
        )
    cat = catalogue()
    non_empty = 0
    generation_runs = file_study.db.sql("SELECT run_id FROM runs WHERE kind = 'generation' ORDER BY 1")["run_id"]
    given = {**PARAMS, "run": file_study.run["grpo@400"], "runs": ",".join(map(str, generation_runs))}
    for name in cat.names():
        query = cat.get(name)
        params = {p.name: given[p.name] for p in query.params if p.required}
        on_file = run_query(file_study.db, name, params)
        on_lake = run_query(lake_study.db, name, params)
        # Exact, but for the last bits of floats: DuckDB's parallel aggregates (corr, avg) do not
        # add in a fixed order, so even one DuckDB file can differ from itself there.
        assert_frame_equal(on_lake, on_file, rel_tol=1e-12, abs_tol=1e-12)
        non_empty += on_file.height > 0
    assert non_empty >= len(cat.names()) - 2  # the comparison is about real rows


def _upgraded_from_v1(path, tmp_path, **connect) -> headdb.Warehouse:
    """A v1 warehouse with a native attribution run and an import run, migrated to the current
    schema by `migrate` (the same migrations on either sink)."""
    from headdb.warehouse.store import Warehouse
    from warehouse_builders import MODEL_KEY, attribution_run, register_tiny_model

    v1 = tmp_path / f"v1-{len(list(tmp_path.glob('v1-*')))}"
    v1.mkdir()
    shutil.copy(schemas_dir() / "0001_init.sql", v1)
    db = headdb.connect(path, schemas=v1, **connect)
    register_tiny_model(db)
    ck = db.register_checkpoint(model_key=MODEL_KEY, path="/ckpt/a", weights_digest="a")
    scores = pa.table({"edge_id": pa.array([0, 1, 2], pa.int32()), "score": pa.array([0.5, -0.25, 0.0], pa.float32())})
    attribution_run(
        db,
        ck,
        None,
        heads=[(0, 0)],
        config={"method": "eap-ig"},
        edge_scores=scores,
        metrics={"metric_diff": -0.6, "cpr": 0.8},
    )
    imported = db.start_run("import", config={"source": "json"}, checkpoint_id=ck)
    with imported:
        imported.add("edge_scores", scores)
    assert Warehouse(db.sink).migrate() == list(range(2, code_version() + 1))
    return Warehouse(db.sink)


def test_an_old_lake_migrates_like_an_old_file(lake, tmp_path):
    on_file = _upgraded_from_v1(tmp_path / "w.duckdb", tmp_path)
    on_lake = _upgraded_from_v1(lake.spec, tmp_path, data_path=lake.data_path)
    assert on_lake.schema_version() == on_file.schema_version() == code_version()
    tables = on_file.sql("SELECT table_name FROM information_schema.tables WHERE table_schema = 'main'")
    for name in tables["table_name"]:
        assert _table(on_lake, name).equals(_table(on_file, name)), name
    assert on_lake.sql("SELECT score FROM edge_scores ORDER BY run_id, edge_id")["score"].to_list() == [
        -0.5,
        0.25,
        0.0,
        0.5,
        -0.25,
        0.0,
    ]  # the native run negated, the import kept


# -- the training callback -----------------------------------------------------------------------


def test_training_callback_fills_a_lake(lake, tmp_path, monkeypatch):
    pytest.importorskip("trl")
    monkeypatch.chdir(tmp_path)  # the ingest subprocess works here
    from headdb.demo import recipes
    from headdb.training.callback import HeadDBCallback

    base = recipes.pretrain_base(
        tmp_path / "base", steps=2, batch_size=4, seed=0, n_layers=1, n_heads=2, n_kv_heads=1, d_model=32
    )
    callback = HeadDBCallback(
        lake.spec,
        data_path=lake.data_path,
        lineage="live",
        regime="sft",
        base=base,
        wait=True,
        log_file=tmp_path / "ingest.log",
        args=["--bench", "synthetic-arithmetic:n=2", "--samples", "1", "--max-new-tokens", "2"],
    )
    recipes.train_sft(base, tmp_path / "sft", steps=2, save_steps=2, batch_size=4, seed=0, callbacks=[callback])
    assert callback.returncodes == [0], (tmp_path / "ingest.log").read_text()[-2000:]
    db = headdb.connect(lake.spec, create=False)
    assert db.sql("SELECT name FROM checkpoints ORDER BY checkpoint_id")["name"].to_list() == [
        "base",
        "live/checkpoint-2",
    ]
    assert set(db.sql("SELECT status FROM runs")["status"]) == {"ok"}
    assert db.sql("SELECT count(DISTINCT checkpoint_id) AS n FROM runs WHERE kind = 'generation'")["n"][0] == 2
    assert db.sql("SELECT count(*) AS n FROM generations")["n"][0] == 2 * 2  # 2 items x 1 sample, 2 checkpoints
