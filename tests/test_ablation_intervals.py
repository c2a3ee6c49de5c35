"""Bootstrap intervals over problems for ablation deltas and for a head set against its control."""

from __future__ import annotations

import numpy as np
import pytest
from rich.console import Console

import headdb
from headdb.evals.bootstrap import paired_difference
from headdb.reports import run_report
from headdb.reports.ablation import control_contrasts, delta_intervals
from headdb.warehouse.queries import run_query
from warehouse_builders import MODEL_KEY, generation_run, register_tiny_model, _items

SAMPLING = {"samples": 4, "temperature": 0.6, "top_p": 0.95, "seed": 0}
N = 40
# Per problem, how many of 4 samples are correct: plain run, two head sets, and each set's control.
PLAIN = [4] * 30 + [2] * 10
SET_A = [0] * 30 + [2] * 10  # layers 1, 2: hurts on every problem the plain run solves
CONTROL_A = [4] * 30 + [1] * 10  # layers 1, 2 as well
SET_B = [4] * 40  # layers 0, 0: helps a little
CONTROL_B = [3] * 40


def test_constant_difference_has_a_point_interval():
    iv = paired_difference([1.0, 0.5, 0.25], [0.75, 0.25, 0.0])
    assert iv.estimate == pytest.approx(0.25) and iv.low == pytest.approx(0.25) and iv.high == pytest.approx(0.25)


def test_interval_agrees_with_the_normal_approximation_for_many_problems():
    rng = np.random.default_rng(1)
    a, b = rng.random(2000), rng.random(2000) * 0.8
    iv = paired_difference(a, b, n_boot=4000)
    diff = a - b
    half = 1.96 * diff.std(ddof=1) / np.sqrt(diff.size)
    assert iv.estimate == pytest.approx(diff.mean())
    assert iv.low == pytest.approx(diff.mean() - half, abs=0.2 * half)
    assert iv.high == pytest.approx(diff.mean() + half, abs=0.2 * half)
    assert paired_difference(a, b, n_boot=4000) == iv  # the same interval every time (fixed seed)


def test_unequal_inputs_are_refused():
    with pytest.raises(ValueError):
        paired_difference([1.0, 2.0], [1.0])


def _study(folder, sets):
    """A warehouse with a plain run and, in this order, one zero-ablation run per (name, correct
    counts, heads, label) of `sets` on the same checkpoint and benchmark: name -> run_id."""
    db = headdb.connect(folder / "a.duckdb")
    register_tiny_model(db)
    ck = db.register_checkpoint(
        model_key=MODEL_KEY,
        path="/ckpt/sft/checkpoint-9",
        weights_digest="d9",
        name="checkpoint-9",
        lineage="sft",
        regime="sft",
        step=9,
    )
    task = db.register_task(name="bench", kind="benchmark", digest="b", items=_items(N, "p"))

    def gens(correct_counts):
        return {
            f"p{i + 1}": [(s < c, None if s < c else "wrong_answer") for s in range(4)]
            for i, c in enumerate(correct_counts)
        }

    def acc(counts):
        return [("accuracy", None, sum(counts) / (4 * N), N)]

    runs = {"plain": generation_run(db, ck, task, sampling=SAMPLING, gens=gens(PLAIN), metrics=acc(PLAIN))}
    for name, counts, kind_heads, label in sets:
        runs[name] = generation_run(
            db,
            ck,
            task,
            sampling=SAMPLING,
            intervention=("zero", 0.0, kind_heads),
            gens=gens(counts),
            metrics=acc(counts),
            label=label,
        )
    return db, runs


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    return _study(
        tmp_path_factory.mktemp("abl"),
        [
            ("A", SET_A, [(1, 0), (2, 1)], None),
            ("control A", CONTROL_A, [(1, 2), (2, 0)], "control"),
            ("B", SET_B, [(0, 0), (0, 1)], None),
            ("control B", CONTROL_B, [(0, 2), (0, 1)], "control"),
        ],
    )


def test_item_rates_are_the_share_of_correct_samples(study):
    db, runs = study
    rates = run_query(db, "item_rates", {"runs": f"{runs['plain']}, {runs['A']}"})
    plain = rates.filter(rates["run_id"] == runs["plain"]).sort("item_id")
    assert plain.height == N and plain["samples"].unique().to_list() == [4]
    assert plain["rate"].mean() == pytest.approx(sum(PLAIN) / (4 * N))
    assert sorted(plain["correct"].to_list()) == sorted(PLAIN)


def test_each_set_meets_its_own_control(study):
    db, runs = study
    table = run_query(db, "ablation_table", {"metric": "accuracy"})
    intervals = delta_intervals(lambda name, p: run_query(db, name, p), table)
    a = intervals[runs["A"]]
    assert a.n == N and a.estimate == pytest.approx((sum(SET_A) - sum(PLAIN)) / (4 * N)) and a.high < 0
    contrasts = control_contrasts(lambda name, p: run_query(db, name, p), table).sort("heads")
    assert contrasts["heads"].to_list() == ["L0H0,L0H1", "L1H0,L2H1"]
    assert contrasts["control_heads"].to_list() == ["L0H1,L0H2", "L1H2,L2H0"]
    b, a = contrasts.row(0, named=True), contrasts.row(1, named=True)
    assert a["difference"] == pytest.approx((sum(SET_A) - sum(CONTROL_A)) / (4 * N)) and a["high"] < 0
    assert b["difference"] == pytest.approx(0.25) and b["low"] == pytest.approx(0.25)  # the same on every problem


def test_ablation_report_shows_intervals_and_the_contrast(study):
    db, _ = study
    console = Console(record=True, width=80, color_system=None)
    run_report(db, "ablation_table", {}, console)
    text = console.export_text()
    assert max(len(line) for line in text.splitlines()) <= 80
    flat = " ".join(text.split())  # lines wrap at 80 columns
    # the interval column under its SQL-style name (the table policy), n in the title
    assert "delta_ci95" in flat and "n = 40 problems" in flat
    assert "heads L1H0 L2H1 vs control L1H2 L2H0: -0.688 accuracy" in flat
    assert "hurts more than the control" in flat and "hurts less than the control" in flat


def test_a_set_whose_control_had_already_run_meets_that_control(tmp_path):
    """Two sets of the same layers drew the same control heads: the control's job ran once, after
    the first set, so the second set (started later) is set against that run."""
    db, runs = _study(
        tmp_path,
        [
            ("A", SET_A, [(1, 0), (2, 1)], None),
            ("control A", CONTROL_A, [(1, 2), (2, 0)], "control"),
            ("C", SET_B, [(1, 1), (2, 2)], "strongest heads"),
        ],
    )
    table = run_query(db, "ablation_table", {"metric": "accuracy"})
    contrasts = control_contrasts(lambda name, p: run_query(db, name, p), table).sort("heads")
    assert contrasts["head_set"].to_list() == ["zero L1H0,L2H1", "strongest heads"]
    assert contrasts["control_heads"].to_list() == ["L1H2,L2H0", "L1H2,L2H0"]
    c = contrasts.row(1, named=True)
    assert c["difference"] == pytest.approx((sum(SET_B) - sum(CONTROL_A)) / (4 * N))
