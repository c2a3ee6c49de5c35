"""The headdb command: exit codes, one-line errors, formats, lock waiting."""

from __future__ import annotations

import json
import subprocess
import sys

import duckdb
import polars as pl

import headdb


def cli(*args: str, db=None, timeout: float = 60) -> subprocess.CompletedProcess:
    prefix = ["--db", str(db)] if db is not None else []
    return subprocess.run(
        [sys.executable, "-m", "headdb", *prefix, *args], capture_output=True, text=True, timeout=timeout
    )


def assert_one_line_error(proc, fragment: str):
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert fragment in lines[0]


def test_init_then_schema_version_shows_every_migration(tmp_path):
    from headdb.warehouse.migrations import code_version

    db = tmp_path / "w.duckdb"
    assert cli("init", db=db).returncode == 0
    out = cli("sql", "select version from schema_version order by version", "--format", "json", db=db)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == [{"version": v} for v in range(1, code_version() + 1)]
    assert "1" in cli("sql", "select * from schema_version", db=db).stdout


def test_version():
    out = cli("--version")
    assert out.returncode == 0 and out.stdout.startswith("headdb ")


def test_bad_db_path_is_one_line(tmp_path):
    assert_one_line_error(cli("init", db=tmp_path / "missing-dir" / "w.duckdb"), "does not exist")
    assert_one_line_error(cli("init", db=tmp_path), "is a directory")
    assert list(tmp_path.iterdir()) == []


def test_missing_warehouse_for_reading(tmp_path):
    assert_one_line_error(cli("runs", db=tmp_path / "none.duckdb"), "headdb --db")


def test_not_a_duckdb_file(tmp_path):
    junk = tmp_path / "junk.duckdb"
    junk.write_text("hello")
    assert_one_line_error(cli("runs", db=junk), "cannot open warehouse")


def test_refused_statement_is_one_line_and_harmless(tmp_path):
    db = tmp_path / "w.duckdb"
    cli("init", db=db)
    assert_one_line_error(cli("sql", "DROP TABLE runs", db=db), "read-only")
    assert cli("sql", "select count(*) from runs", db=db).returncode == 0
    assert_one_line_error(cli("sql", "selec nonsense", db=db), "SQL error")


def test_newer_schema_is_one_line(tmp_path):
    path = tmp_path / "w.duckdb"
    headdb.connect(path).sql("INSERT INTO schema_version (version) VALUES (42)", write=True)
    assert_one_line_error(cli("runs", db=path), "newer than this headdb")


def test_formats(tmp_path):
    db = tmp_path / "w.duckdb"
    cli("init", db=db)
    csv = cli("sql", "select 1 as a, 'x' as b", "--format", "csv", db=db)
    assert csv.stdout.splitlines() == ["a,b", "1,x"]
    out = tmp_path / "r.parquet"
    assert cli("sql", "select 1 as a", "--format", "parquet", "--out", str(out), db=db).returncode == 0
    assert pl.read_parquet(out)["a"].to_list() == [1]
    assert_one_line_error(cli("sql", "select 1", "--format", "parquet", db=db), "--out")


def test_runs_table(tmp_path):
    path = tmp_path / "w.duckdb"
    db = headdb.connect(path)
    run = db.start_run("attribution", config={})
    with run:
        pass
    out = cli("runs", db=path)
    assert out.returncode == 0 and "attribution" in out.stdout and "ok" in out.stdout


def test_env_var_selects_warehouse(tmp_path):
    path = tmp_path / "env.duckdb"
    proc = subprocess.run(
        [sys.executable, "-m", "headdb", "init"],
        capture_output=True,
        text=True,
        env={**__import__("os").environ, "HEADDB_DB": str(path)},
    )
    assert proc.returncode == 0 and path.exists()


def test_writer_waits_for_the_lock_then_gives_up_clearly(tmp_path):
    path = tmp_path / "w.duckdb"
    headdb.connect(path)
    holder = duckdb.connect(str(path))  # this process holds the write lock
    try:
        proc = cli("--lock-timeout", "1.5", "sql", "select 1", db=path)
    finally:
        holder.close()
    assert_one_line_error(
        proc.__class__(
            proc.args,
            proc.returncode,
            proc.stdout,
            "\n".join(l for l in proc.stderr.splitlines() if "waiting" not in l),
        ),
        "stayed locked",
    )
    assert "waiting for the warehouse lock" in proc.stderr


def test_writer_waits_and_succeeds_when_lock_is_released(tmp_path):
    path = tmp_path / "w.duckdb"
    headdb.connect(path)
    holder = duckdb.connect(str(path))
    proc = subprocess.Popen(
        [sys.executable, "-m", "headdb", "--db", str(path), "sql", "--write", "create table t as select 1 as x"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    # release the lock once the writer says it waits (a fixed sleep raced a slow start on a busy machine)
    first = proc.stderr.readline()
    holder.close()
    out, errs = proc.communicate(timeout=60)
    assert proc.returncode == 0, first + errs
    assert "waiting for the warehouse lock" in first
    assert headdb.connect(path).sql("select x from t")["x"].to_list() == [1]
