"""`headdb ingest generations / ablation` end to end on a tiny local checkpoint."""

from __future__ import annotations

import subprocess
import sys

import pytest

import headdb


@pytest.fixture(scope="module")
def checkpoint(tiny_checkpoint):
    return tiny_checkpoint(arch="qwen2", n_layers=2, n_heads=4, n_kv_heads=2, d_model=64, init_std=0.2, seed=11)


def cli(db, *args):
    return subprocess.run(
        [sys.executable, "-m", "headdb", "--db", str(db), *args], capture_output=True, text=True, timeout=300
    )


def test_ablation_has_a_matching_baseline_and_is_idempotent(tmp_path, checkpoint):
    db_path = tmp_path / "w.duckdb"
    args = [
        "ingest",
        "ablation",
        "--checkpoint",
        str(checkpoint),
        "--bench",
        "synthetic-arithmetic:n=6",
        "--heads",
        "L0H1,L1H2",
        "--control",
        "--samples",
        "2",
        "--temperature",
        "0",
        "--max-new-tokens",
        "12",
        "--k",
        "1,2",
    ]
    out = cli(db_path, *args)
    assert out.returncode == 0, out.stderr
    db = headdb.connect(db_path, create=False)
    runs = db.sql("SELECT run_id, status, config FROM runs ORDER BY run_id")
    assert runs["status"].to_list() == ["ok"] * 3
    plain, ablated, control = runs["run_id"].to_list()
    assert db.sql("SELECT count(*) AS n FROM interventions WHERE run_id = ?", [plain])["n"][0] == 0
    heads = db.sql("SELECT layer, head, kind FROM interventions WHERE run_id = ? ORDER BY 1, 2", [ablated]).rows()
    assert heads == [(0, 1, "zero"), (1, 2, "zero")]
    control_heads = db.sql("SELECT layer, head FROM interventions WHERE run_id = ? ORDER BY 1, 2", [control]).rows()
    assert sorted(l for l, _ in control_heads) == [0, 1] and not set(control_heads) & {(0, 1), (1, 2)}
    # 6 problems x 2 samples each, all graded
    counts = db.sql("SELECT run_id, count(*) AS n, count(failure_tag) AS tagged FROM generations GROUP BY 1 ORDER BY 1")
    assert counts["n"].to_list() == [12, 12, 12] and counts["tagged"].to_list() == [12, 12, 12]
    metrics = db.sql("SELECT metric, k, n FROM eval_metrics WHERE run_id = ? ORDER BY metric, k", [plain]).rows()
    assert ("pass@k", 2, 6) in metrics and ("accuracy", None, 6) in metrics
    # ablating heads changes what the model writes
    texts = {
        r: db.sql("SELECT completion FROM generations WHERE run_id = ? ORDER BY item_id, sample_idx", [r])[
            "completion"
        ].to_list()
        for r in (plain, ablated)
    }
    assert texts[plain] != texts[ablated]
    # a repeat is skipped, nothing duplicated
    again = cli(db_path, *args)
    assert again.returncode == 0 and again.stderr.count("skipped") == 3
    assert db.sql("SELECT count(*) AS n FROM generations")["n"][0] == 36


def test_scale_one_leaves_generations_identical(tmp_path, checkpoint):
    db_path = tmp_path / "w.duckdb"
    common = [
        "ingest",
        "generations",
        "--checkpoint",
        str(checkpoint),
        "--bench",
        "synthetic-arithmetic:n=4",
        "--samples",
        "1",
        "--temperature",
        "0",
        "--max-new-tokens",
        "10",
    ]
    out = cli(db_path, *common, "--scale", "L0H0,L1H3=1.0")
    assert out.returncode == 0, out.stderr
    db = headdb.connect(db_path, create=False)
    plain, scaled = db.sql("SELECT run_id FROM runs ORDER BY run_id")["run_id"].to_list()
    get = "SELECT completion FROM generations WHERE run_id = ? ORDER BY item_id"
    assert db.sql(get, [plain])["completion"].to_list() == db.sql(get, [scaled])["completion"].to_list()


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--heads", "L9H0"], "out of range"),
        (["--heads", "five"], "L<layer>H<head>"),
        (["--heads", "L0H0", "--kind", "scale"], "needs a factor"),
    ],
)
def test_bad_ablation_arguments_are_one_line(tmp_path, checkpoint, args, fragment):
    db_path = tmp_path / "w.duckdb"
    out = cli(
        db_path,
        "ingest",
        "ablation",
        "--checkpoint",
        str(checkpoint),
        "--bench",
        "synthetic-arithmetic:n=2",
        "--samples",
        "1",
        "--max-new-tokens",
        "4",
        *args,
    )
    assert out.returncode == 2 and "Traceback" not in out.stderr and fragment in out.stderr


def test_not_a_model_directory(tmp_path):
    out = cli(
        tmp_path / "w.duckdb",
        "ingest",
        "generations",
        "--checkpoint",
        str(tmp_path),
        "--bench",
        "synthetic-arithmetic:n=2",
    )
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert not (tmp_path / "w.duckdb").exists()


def test_head_set_from_a_named_query(tmp_path, checkpoint, arith_task_file):
    db_path = tmp_path / "w.duckdb"
    out = cli(
        db_path,
        "ingest",
        "attribution",
        "--checkpoint",
        str(checkpoint),
        "--task",
        str(arith_task_file),
        "--steps",
        "2",
        "--no-curve",
    )
    assert out.returncode == 0, out.stderr
    db = headdb.connect(db_path, create=False)
    top = db.query("top_heads", checkpoint="model", n=2)
    expected = sorted(zip(top["layer"].to_list(), top["head"].to_list()))[:2]
    out = cli(
        db_path,
        "ingest",
        "ablation",
        "--checkpoint",
        str(checkpoint),
        "--bench",
        "synthetic-arithmetic:n=2",
        "--heads-query",
        "top_heads",
        "--param",
        "checkpoint=model",
        "--param",
        "n=2",
        "--order-by",
        "importance",
        "--top",
        "2",
        "--samples",
        "1",
        "--max-new-tokens",
        "4",
    )
    assert out.returncode == 0, out.stderr
    got = db.sql("SELECT layer, head FROM interventions ORDER BY 1, 2").rows()
    assert got == expected and len(got) == 2
    label = db.sql("SELECT config FROM runs r WHERE EXISTS (SELECT 1 FROM interventions i WHERE i.run_id = r.run_id)")
    assert '"label": "top_heads"' in label["config"][0]
    none = cli(
        db_path,
        "ingest",
        "ablation",
        "--checkpoint",
        str(checkpoint),
        "--bench",
        "synthetic-arithmetic:n=2",
        "--heads-query",
        "top_heads",
        "--param",
        "checkpoint=nosuch",
    )
    # a reference that names nothing is refused by name (not read as "the query returned no heads")
    assert none.returncode == 2 and "no checkpoint 'nosuch' in the warehouse" in none.stderr
