"""`headdb ingest run` on a training output directory: metrics, lineage, resume, failures."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys

import pytest

import headdb
from headdb.checkpoints.discovery import discover, training_metrics

LOG_HISTORY = [
    {
        "step": 1,
        "loss": 2.5,
        "learning_rate": 1e-4,
        "epoch": 0.1,
        "reward": 0.25,
        "rewards/accuracy_reward/mean": 0.25,
        "completions/mean_length": 12.0,
        "kl": 0.0,
    },
    {
        "step": 2,
        "loss": 2.1,
        "learning_rate": 9e-5,
        "epoch": 0.2,
        "reward": 0.5,
        "reward_std": 0.1,
        "kl": 0.01,
        "note": "text is not numeric",
        "flag": True,
    },
    {"step": 3, "loss": 1.9, "epoch": 0.3, "entropy": 1.2},
    {"step": 3, "train_runtime": 12.5, "train_loss": 2.2, "epoch": 0.3},
]


def make_run_dir(root, base, steps=(1, 2, 3), final=True):
    run = root / "run"
    run.mkdir()
    for step in steps:
        ck = run / f"checkpoint-{step}"
        shutil.copytree(base, ck)
        # checkpoints differ from the base and from each other in their weights
        from safetensors.torch import load_file, save_file

        tensors = load_file(ck / "model.safetensors")
        name = sorted(tensors)[0]
        tensors[name] = tensors[name] + 0.01 * step
        save_file(tensors, ck / "model.safetensors", metadata={"format": "pt"})
        history = [e for e in LOG_HISTORY if e["step"] <= step]
        (ck / "trainer_state.json").write_text(json.dumps({"global_step": step, "log_history": history}))
    if final:
        for item in (run / f"checkpoint-{steps[-1]}").iterdir():
            if item.name != "trainer_state.json":
                shutil.copy(item, run / item.name)
        (run / "trainer_state.json").write_text(json.dumps({"global_step": steps[-1], "log_history": LOG_HISTORY}))
    return run


@pytest.fixture(scope="module")
def base(tmp_path_factory, tiny_checkpoint):
    return tiny_checkpoint(
        at=tmp_path_factory.mktemp("base") / "base",
        arch="qwen2",
        n_layers=2,
        n_heads=4,
        n_kv_heads=2,
        d_model=64,
        init_std=0.2,
        seed=5,
    )


def cli(db, *args, **kw):
    return subprocess.run(
        [sys.executable, "-m", "headdb", "--db", str(db), *args], capture_output=True, text=True, timeout=600, **kw
    )


RUN_ARGS = [
    "--regime",
    "grpo",
    "--lineage",
    "g1",
    "--bench",
    "synthetic-arithmetic:n=3",
    "--samples",
    "1",
    "--temperature",
    "0",
    "--max-new-tokens",
    "6",
]


def numeric_entries(history):
    return sorted(
        (e["step"], k, float(v))
        for e in history
        for k, v in e.items()
        if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool)
    )


def test_a_final_model_with_new_weights_is_its_own_checkpoint(tmp_path, base):
    run = make_run_dir(tmp_path, base, steps=(1, 2))
    from safetensors.torch import load_file, save_file

    tensors = load_file(run / "model.safetensors")
    name = sorted(tensors)[0]
    tensors[name] = tensors[name] * 1.5
    save_file(tensors, run / "model.safetensors", metadata={"format": "pt"})
    db_path = tmp_path / "w.duckdb"
    out = cli(db_path, "checkpoints", "--format", "csv")
    assert out.returncode == 2  # no warehouse yet
    out = cli(db_path, "ingest", "run", str(run), "--regime", "sft", "--lineage", "s1")
    assert out.returncode == 0, out.stderr
    names = headdb.connect(db_path, create=False).sql("SELECT name, step FROM checkpoints ORDER BY checkpoint_id")
    assert names.rows() == [("s1/checkpoint-1", 1), ("s1/checkpoint-2", 2), ("s1/final", 2)]


def test_discover_and_metrics(tmp_path, base):
    run = make_run_dir(tmp_path, base)
    found = discover(run)
    assert [(c.step, c.final) for c in found] == [(1, False), (2, False), (3, False), (3, True)]
    rows = training_metrics(run / "trainer_state.json")
    assert sorted(rows.rows()) == numeric_entries(LOG_HISTORY)


def test_whole_run_then_idempotent_rerun(tmp_path, base):
    run = make_run_dir(tmp_path, base)
    db_path = tmp_path / "w.duckdb"
    out = cli(db_path, "ingest", "run", str(run), "--base", str(base), *RUN_ARGS)
    assert out.returncode == 0, out.stderr
    db = headdb.connect(db_path, create=False)
    cks = db.sql(
        "SELECT c.name, c.lineage, c.regime, c.step, p.name AS parent FROM checkpoints c "
        "LEFT JOIN checkpoints p ON p.checkpoint_id = c.parent_id ORDER BY c.checkpoint_id"
    ).rows()
    assert cks == [
        ("base", "base", "base", 0, None),
        ("g1/checkpoint-1", "g1", "grpo", 1, "base"),
        ("g1/checkpoint-2", "g1", "grpo", 2, "base"),
        ("g1/checkpoint-3", "g1", "grpo", 3, "base"),
    ]
    metrics = db.sql("SELECT step, key, value FROM training_metrics WHERE lineage = 'g1'").rows()
    assert sorted(metrics) == numeric_entries(LOG_HISTORY)
    assert db.sql("SELECT count(*) AS n FROM runs WHERE status = 'ok' AND kind = 'generation'")["n"][0] == 4
    before = db.sql("SELECT count(*) AS n FROM generations")["n"][0]
    again = cli(db_path, "ingest", "run", str(run), "--base", str(base), *RUN_ARGS)
    assert again.returncode == 0 and "0 run(s) added, 4 already there" in again.stderr
    assert db.sql("SELECT count(*) AS n FROM generations")["n"][0] == before
    assert sorted(db.sql("SELECT step, key, value FROM training_metrics").rows()) == numeric_entries(LOG_HISTORY)


def test_interrupted_ingest_resumes_without_duplicates(tmp_path, base):
    run = make_run_dir(tmp_path, base, steps=(1, 2, 3, 4), final=False)
    db_path = tmp_path / "w.duckdb"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "headdb",
            "--db",
            str(db_path),
            "ingest",
            "run",
            str(run),
            "--base",
            str(base),
            *RUN_ARGS,
        ],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    )
    lines = []
    for line in proc.stderr:  # kill right after the second run has landed
        lines.append(line)
        if sum("ok" in l and "run " in l for l in lines) >= 2:
            break
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    db = headdb.connect(db_path, create=False)
    landed = db.sql("SELECT count(*) AS n FROM runs WHERE status = 'ok'")["n"][0]
    assert 2 <= landed < 5
    out = cli(db_path, "ingest", "run", str(run), "--base", str(base), *RUN_ARGS)
    assert out.returncode == 0, out.stderr
    per_ck = db.sql("SELECT checkpoint_id, count(*) AS n FROM runs WHERE status = 'ok' GROUP BY 1 ORDER BY 1")
    assert per_ck["n"].to_list() == [1] * 5
    assert db.sql("SELECT count(*) AS n FROM generations")["n"][0] == 5 * 3
    assert db.sql("SELECT count(*) AS n FROM runs WHERE status <> 'ok'")["n"][0] == 0  # the stale row was replaced


def test_a_cut_or_empty_checkpoint_is_refused_before_anything_is_written(tmp_path, base):
    """An interrupted save (weights cut short, or an empty folder) is a plan error naming the
    checkpoint: exit 2, one line, nothing written; the plan of the rest holds once it is fixed."""
    from headdb.errors import UserError
    from headdb.jobs.training_run import plan_training_run

    run = make_run_dir(tmp_path, base, steps=(1, 2, 3), final=False)
    weights = run / "checkpoint-2" / "model.safetensors"
    whole = weights.read_bytes()
    weights.write_bytes(whole[: len(whole) - 100])
    db_path = tmp_path / "w.duckdb"
    out = cli(db_path, "ingest", "run", str(run), "--base", str(base), *RUN_ARGS)
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
    assert [line for line in out.stderr.splitlines() if line.strip()] == [
        f"headdb: error: {weights}: truncated (its header describes {len(whole)} bytes, the file has "
        f"{len(whole) - 100}); the save was interrupted or the copy is incomplete: save or copy the checkpoint "
        "again, or move it aside"
    ]
    assert not db_path.exists()
    weights.write_bytes(whole)
    shutil.rmtree(run / "checkpoint-3")
    (run / "checkpoint-3").mkdir()
    with pytest.raises(UserError, match="checkpoint-3.*no config.json"):
        plan_training_run(run, regime="grpo", lineage="g1", base=base)
    (run / "checkpoint-3").rmdir()
    plan = plan_training_run(run, regime="grpo", lineage="g1", base=base)
    assert [w.target.placement.step for w in plan.work] == [0, 1, 2]


def test_bad_regime_is_one_line(tmp_path, base):
    run = make_run_dir(tmp_path, base, steps=(1,), final=False)
    out = cli(tmp_path / "w.duckdb", "ingest", "run", str(run), "--regime", "rlhf", "--lineage", "x")
    assert out.returncode == 2 and "Traceback" not in out.stderr and "regime" in out.stderr
