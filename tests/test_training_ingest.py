"""Real trl runs (SFTTrainer, GRPOTrainer) on a tiny model, ingested end to end; the callback."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import headdb

pytest.importorskip("trl")

from headdb.demo import recipes  # noqa: E402
from headdb.training.callback import HeadDBCallback  # noqa: E402

TINY = dict(n_layers=1, n_heads=2, n_kv_heads=1, d_model=32)


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return recipes.pretrain_base(tmp_path_factory.mktemp("base") / "base", steps=3, batch_size=4, seed=0, **TINY)


def numeric_entries(history):
    return sorted(
        (e["step"], k, float(v))
        for e in history
        for k, v in e.items()
        if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool)
    )


def cli(db, *args):
    return subprocess.run(
        [sys.executable, "-m", "headdb", "--db", str(db), *args], capture_output=True, text=True, timeout=600
    )


@pytest.mark.parametrize("regime", ["sft", "grpo"])
def test_real_trl_run_ingested_end_to_end(tmp_path, base, regime):
    out = tmp_path / regime
    if regime == "sft":
        recipes.train_sft(base, out, steps=4, save_steps=2, batch_size=4, seed=0)
    else:
        recipes.train_grpo(
            base, out, steps=4, save_steps=2, num_generations=2, prompts_per_step=1, max_completion_length=8, seed=0
        )
    db_path = tmp_path / "w.duckdb"
    args = [
        "ingest",
        "run",
        str(out),
        "--regime",
        regime,
        "--lineage",
        f"{regime}-run",
        "--base",
        str(base),
        "--bench",
        "synthetic-arithmetic:n=2",
        "--samples",
        "1",
        "--max-new-tokens",
        "4",
    ]
    first = cli(db_path, *args)
    assert first.returncode == 0, first.stderr
    db = headdb.connect(db_path, create=False)
    final_state = json.loads((out / "trainer_state.json").read_text())
    got = db.sql("SELECT step, key, value FROM training_metrics WHERE lineage = ?", [f"{regime}-run"]).rows()
    assert sorted(got) == numeric_entries(final_state["log_history"])
    if regime == "grpo":
        assert {"reward", "reward_std", "kl"} <= {k for _, k, _ in got}
    else:
        assert "loss" in {k for _, k, _ in got}
    cks = db.sql(
        "SELECT c.lineage, c.regime, c.step, p.name AS parent FROM checkpoints c "
        "LEFT JOIN checkpoints p ON p.checkpoint_id = c.parent_id ORDER BY c.step, c.checkpoint_id"
    ).rows()
    assert cks[0] == ("base", "base", 0, None)
    assert [(l, r, s, p) for l, r, s, p in cks[1:3]] == [
        (f"{regime}-run", regime, 2, "base"),
        (f"{regime}-run", regime, 4, "base"),
    ]
    n_runs = db.sql("SELECT count(*) AS n FROM runs WHERE status = 'ok'")["n"][0]
    assert n_runs == len(cks)
    again = cli(db_path, *args)
    assert again.returncode == 0 and "0 run(s) added" in again.stderr
    assert db.sql("SELECT count(*) AS n FROM runs")["n"][0] == n_runs
    assert sorted(db.sql("SELECT step, key, value FROM training_metrics").rows()) == sorted(got)


def test_callback_fills_the_warehouse_during_training(tmp_path, base):
    db_path = tmp_path / "w.duckdb"
    callback = HeadDBCallback(
        db_path,
        lineage="live",
        regime="sft",
        base=base,
        wait=True,
        log_file=tmp_path / "ingest.log",
        args=["--bench", "synthetic-arithmetic:n=2", "--samples", "1", "--max-new-tokens", "4"],
    )

    seen: list[list[str]] = []

    class Watch(recipes_callback_base()):
        def on_save(self, args, state, control, **kw):
            # runs after HeadDBCallback (registered first) has ingested this save
            seen.append(
                headdb.connect(db_path, create=False)
                .sql("SELECT name FROM checkpoints ORDER BY checkpoint_id")["name"]
                .to_list()
            )

    recipes.train_sft(
        base, tmp_path / "sft", steps=4, save_steps=2, batch_size=4, seed=0, callbacks=[callback, Watch()]
    )
    assert callback.returncodes == [0, 0], (tmp_path / "ingest.log").read_text()[-2000:]
    assert seen == [["base", "live/checkpoint-2"], ["base", "live/checkpoint-2", "live/checkpoint-4"]]


def test_a_failing_ingest_never_breaks_training(tmp_path, base):
    callback = HeadDBCallback(tmp_path / "no-such-dir" / "w.duckdb", lineage="x", regime="sft", wait=True)
    recipes.train_sft(base, tmp_path / "sft", steps=2, save_steps=1, batch_size=4, seed=0, callbacks=[callback])
    assert callback.returncodes and all(code != 0 for code in callback.returncodes)
    assert (tmp_path / "sft" / "checkpoint-2").is_dir()


def recipes_callback_base():
    from transformers import TrainerCallback

    return TrainerCallback
