"""`headdb ingest attribution` end to end: every table filled consistently, idempotent, forced."""

from __future__ import annotations

import subprocess
import sys

import pytest

import headdb


@pytest.fixture(scope="module")
def checkpoint(tiny_checkpoint):
    return tiny_checkpoint(arch="qwen2", n_layers=2, n_heads=4, n_kv_heads=2, d_model=64, init_std=0.1, seed=2)


def cli(db, *args):
    return subprocess.run(
        [sys.executable, "-m", "headdb", "--db", str(db), *args], capture_output=True, text=True, timeout=300
    )


def test_attribution_run_fills_the_warehouse(tmp_path, checkpoint, arith_task_file):
    db_path = tmp_path / "w.duckdb"
    args = [
        "ingest",
        "attribution",
        "--checkpoint",
        str(checkpoint),
        "--task",
        str(arith_task_file),
        "--steps",
        "8",
        "--topn",
        "40",
        "--threshold",
        "0.2",
        "--greedy",
        "10",
    ]
    out = cli(db_path, *args)
    assert out.returncode == 0, out.stderr
    db = headdb.connect(db_path, create=False)
    (run_id,) = db.sql("SELECT run_id FROM runs WHERE status = 'ok'")["run_id"].to_list()
    n_edges = db.sql("SELECT count(*) AS n FROM graph_edges")["n"][0]
    assert db.sql("SELECT count(*) AS n, count(DISTINCT edge_id) AS d FROM edge_scores").row(0) == (n_edges, n_edges)
    heads = db.sql("SELECT count(*) AS n, sum(importance) AS s FROM head_scores").row(0)
    assert heads[0] == 8 and abs(heads[1] - 1.0) < 1e-5
    circuits = db.sql("SELECT selection, param, n_edges, faithfulness FROM circuits ORDER BY circuit_id").rows()
    assert [c[0] for c in circuits] == ["topn", "threshold", "greedy"]
    for selection, param, n, f in circuits:
        assert (
            n
            == db.sql(
                "SELECT count(*) AS n FROM circuit_edges JOIN circuits USING (circuit_id) WHERE selection = ?",
                [selection],
            )["n"][0]
        )
        assert f is not None
    assert circuits[0][2] <= 40
    # circuit heads are heads whose node survives in the circuit
    assert db.sql("SELECT count(*) AS n FROM circuit_heads")["n"][0] > 0
    for ranking in ("abs", "signed"):  # MIB's CMD and CPR curves
        curve = db.sql(
            "SELECT percent, faithfulness FROM faithfulness_curve WHERE ranking = ? ORDER BY percent", [ranking]
        ).rows()
        assert [p for p, _ in curve] == [0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 50, 100]
        assert abs(curve[-1][1] - 1.0) < 1e-4
    metrics = dict(db.sql("SELECT key, value FROM run_metrics").rows())
    assert {"completeness_residual", "metric_clean", "metric_corrupted", "cpr", "cmd", "cpr_abs", "cmd_signed"} <= set(
        metrics
    )
    assert abs(metrics["completeness_relative"]) < 0.05
    config = db.sql("SELECT config, versions, dtype, device FROM runs").row(0, named=True)
    assert '"steps": 8' in config["config"] and '"transformer-lens"' in config["versions"]
    assert config["dtype"] == "float32" and config["device"] == "cpu"

    again = cli(db_path, *args)
    assert again.returncode == 0 and "skipped" in again.stderr
    forced = cli(db_path, *args, "--force")
    assert forced.returncode == 0, forced.stderr
    runs = db.sql("SELECT run_id, status FROM runs").rows()
    assert len(runs) == 1 and runs[0][0] != run_id and runs[0][1] == "ok"
    assert db.sql("SELECT count(DISTINCT run_id) AS n FROM edge_scores")["n"][0] == 1


def test_bad_task_file_is_one_line(tmp_path, checkpoint):
    task = tmp_path / "bad.jsonl"
    task.write_text('{"clean": "1+1=", "corrupted": "2+2=", "answer": "2"}\n{"clean": "oops"\n')
    out = cli(tmp_path / "w.duckdb", "ingest", "attribution", "--checkpoint", str(checkpoint), "--task", str(task))
    assert out.returncode == 2 and "Traceback" not in out.stderr and ":2" in out.stderr
    assert not (tmp_path / "w.duckdb").exists()
