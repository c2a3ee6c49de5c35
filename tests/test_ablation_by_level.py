"""The trade-off report: an ablation's effect per problem level, with paired bootstrap intervals,
on a warehouse built here with known per-level answers."""

from __future__ import annotations

import pytest
from rich.console import Console

import headdb
from headdb.errors import UserError
from headdb.evals.bootstrap import paired_difference
from headdb.reports import run_report
from headdb.reports.ablation import level_intervals
from headdb.warehouse.queries import run_query
from warehouse_builders import MODEL_KEY, _items, generation_run, register_tiny_model

SAMPLING = {"samples": 4, "temperature": 0.6, "top_p": 0.95, "seed": 0}
LEVELS = ["1"] * 4 + ["2"] * 4 + ["10"] * 4  # "10" sorts after "2": levels are ordered by their number
# correct samples of 4, per problem, in LEVELS order
PLAIN = [4, 4, 4, 4, 2, 2, 3, 1, 0, 1, 0, 1]
ABLATED = [2, 2, 2, 2, 2, 3, 3, 1, 2, 2, 1, 3]
# by hand: level -> (without, with)
EXPECTED = {"1": (16 / 16, 8 / 16), "2": (8 / 16, 9 / 16), "10": (2 / 16, 8 / 16)}


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    db = headdb.connect(tmp_path_factory.mktemp("levels") / "l.duckdb")
    register_tiny_model(db)
    ck = db.register_checkpoint(
        model_key=MODEL_KEY, path="/ckpt/grpo/checkpoint-4", weights_digest="d4", name="checkpoint-4",
        lineage="grpo", regime="grpo", step=4,
    )  # fmt: skip
    task = db.register_task(name="bench", kind="benchmark", digest="b", items=_items(len(LEVELS), "p", LEVELS))

    def gens(counts):
        return {
            f"p{i + 1}": [(s < c, None if s < c else "wrong_answer") for s in range(4)] for i, c in enumerate(counts)
        }

    def acc(counts):
        return [("accuracy", None, sum(counts) / (4 * len(counts)), len(counts))]

    plain = generation_run(db, ck, task, sampling=SAMPLING, gens=gens(PLAIN), metrics=acc(PLAIN))
    ablated = generation_run(
        db, ck, task, sampling=SAMPLING, intervention=("zero", 0.0, [(1, 0), (2, 1)]), gens=gens(ABLATED),
        metrics=acc(ABLATED),
    )  # fmt: skip
    # another sampling setting: no plain run to pair with, so not in the table
    generation_run(
        db, ck, task, sampling={**SAMPLING, "temperature": 1.0}, intervention=("zero", 0.0, [(0, 0)]),
        gens=gens(ABLATED), metrics=acc(ABLATED),
    )  # fmt: skip
    return db, plain, ablated


def test_per_level_accuracies_and_deltas_equal_a_hand_computation(study):
    db, plain, ablated = study
    df = run_query(db, "ablation_by_level", {"checkpoint": "grpo@4"})
    assert df["level"].to_list() == ["1", "2", "10"]
    assert set(df["run_id"]) == {ablated} and set(df["baseline_run"]) == {plain}
    for row in df.iter_rows(named=True):
        without, with_ = EXPECTED[row["level"]]
        assert row["n"] == 4 and row["heads"] == "L1H0,L2H1"
        assert row["baseline"] == pytest.approx(without) and row["value"] == pytest.approx(with_)
        assert row["delta"] == pytest.approx(with_ - without)


def test_each_level_has_the_paired_bootstrap_interval_of_its_own_problems(study):
    db, _, ablated = study
    df = run_query(db, "ablation_by_level", {})
    intervals = level_intervals(lambda name, p: run_query(db, name, p), df)
    for level in ("1", "2", "10"):
        idx = [i for i, lv in enumerate(LEVELS) if lv == level]
        expected = paired_difference([ABLATED[i] / 4 for i in idx], [PLAIN[i] / 4 for i in idx])
        assert intervals[(ablated, level)] == expected
    assert intervals[(ablated, "1")].high == pytest.approx(-0.5)  # the same on every problem: a point
    assert intervals[(ablated, "10")].low > 0


def test_the_report_names_the_trade_off(study):
    db, _, _ = study
    console = Console(record=True, width=80, color_system=None)
    run_report(db, "ablation_by_level", {"task": "bench"}, console)
    text = console.export_text()
    assert max(len(line) for line in text.splitlines()) <= 80
    flat = " ".join(text.split())
    assert "a trade-off: helps on level 10 and hurts on level 1" in flat
    assert "+0.375" in flat and "-0.500" in flat


def test_unknown_references_are_refused(study):
    db, _, _ = study
    with pytest.raises(UserError, match="no checkpoint 'grpo@5'"):
        run_query(db, "ablation_by_level", {"checkpoint": "grpo@5"})
    with pytest.raises(UserError, match="no task 'bnch'"):
        run_query(db, "ablation_by_level", {"task": "bnch"})
