"""pass@k against brute force, maj@k by hand, and the eval_metrics frame."""

import itertools
from fractions import Fraction

import polars as pl
import pytest

from headdb.errors import UserError
from headdb.evals.passk import (
    METRICS_SCHEMA,
    accuracy,
    eval_metrics_frame,
    maj_at_k,
    majority_vote,
    pass_at_k,
)


def brute_pass_at_k(n: int, c: int, k: int) -> Fraction:
    samples = [True] * c + [False] * (n - c)
    subsets = list(itertools.combinations(range(n), k))
    hit = sum(any(samples[i] for i in s) for s in subsets)
    return Fraction(hit, len(subsets))


@pytest.mark.parametrize(
    "n, c, k",
    [
        (1, 0, 1),
        (1, 1, 1),
        (4, 1, 1),
        (4, 1, 2),
        (4, 2, 3),
        (5, 0, 3),
        (6, 3, 2),
        (8, 1, 4),
        (10, 3, 5),
        (10, 7, 4),
        (12, 2, 12),
        (13, 5, 6),
        (16, 4, 8),
    ],
)
def test_pass_at_k_matches_enumeration(n, c, k):
    assert pass_at_k(n, c, k) == pytest.approx(float(brute_pass_at_k(n, c, k)), abs=1e-12)


def test_pass_at_k_edges_and_stability():
    assert pass_at_k(64, 0, 64) == 0.0
    assert pass_at_k(64, 1, 64) == 1.0
    assert pass_at_k(64, 10, 1) == pytest.approx(10 / 64)
    # large n: no overflow, matches the exact rational
    n, c, k = 1000, 3, 500
    from math import comb

    exact = 1 - Fraction(comb(n - c, k), comb(n, k))
    assert pass_at_k(n, c, k) == pytest.approx(float(exact), rel=1e-12)
    with pytest.raises(ValueError):
        pass_at_k(4, 1, 5)
    with pytest.raises(ValueError):
        pass_at_k(4, 5, 1)


def test_majority_vote_hand_example():
    # sample:   0      1       2     3     4     5
    answers = ["3", "1/2", "0.5", "3", None, "\\frac{1}{2}"]
    corrects = [False, True, True, False, False, True]
    # k=1: "3" alone wins -> wrong
    assert majority_vote(answers, corrects, 1) == ("3", False)
    # k=2: "3" (1 vote, first at 0) ties the correct group (1 vote, first at 1) -> "3"
    assert majority_vote(answers, corrects, 2) == ("3", False)
    # k=3: correct group {1/2, 0.5} has 2 votes -> correct, represented by its first answer
    assert majority_vote(answers, corrects, 3) == ("1/2", True)
    # k=4: 2 vs 2, the "3" group voted first -> wrong
    assert not maj_at_k(answers, corrects, 4)
    # k=5: sample 4 abstains; still 2 vs 2
    assert not maj_at_k(answers, corrects, 5)
    # k=6: 3 vs 2 -> correct
    assert maj_at_k(answers, corrects, 6)
    # string equivalence: "1/2", "0.5", "\frac{1}{2}" are three different answers; "3" wins
    assert majority_vote(answers, corrects, 6, equivalence="string") == ("3", False)


def test_majority_vote_merges_equivalent_wrong_answers():
    # two spellings of the same wrong answer outvote one correct answer
    answers = ["7", "\\frac{1}{4}", "0.25"]
    corrects = [True, False, False]
    assert majority_vote(answers, corrects, 3) == ("\\frac{1}{4}", False)
    assert majority_vote(answers, corrects, 3, equivalence="string") == ("7", True)
    assert majority_vote([None, None], [False, False], 2) == (None, False)
    assert majority_vote(["c", "(B)", "B"], [False, True, True], 3, style="mc") == ("(B)", True)


def test_accuracy():
    assert accuracy([True, False, False, True]) == 0.5
    assert accuracy([None, True]) == 0.5


def graded_frame():
    rows = []
    # item a: 4 samples, 2 correct (0.5 spelled two ways), two wrong "3"
    for i, (x, ok) in enumerate([("3", False), ("1/2", True), ("0.5", True), ("3", False)]):
        rows.append(("a", i, x, ok))
    # item b: 4 samples, 1 correct
    for i, (x, ok) in enumerate([("8", False), ("7", True), ("8", False), (None, False)]):
        rows.append(("b", i, x, ok))
    # item c: 4 samples, all correct; listed out of order on purpose
    for i in (3, 1, 0, 2):
        rows.append(("c", i, "10", True))
    return pl.DataFrame(rows, schema=["item_id", "sample_idx", "extracted", "correct"], orient="row")


def test_eval_metrics_frame():
    out = eval_metrics_frame(graded_frame(), [1, 2, 4, 8])
    assert out.schema == pl.Schema(METRICS_SCHEMA)
    got = {(r["metric"], r["k"]): r["value"] for r in out.iter_rows(named=True)}
    assert set(out["n"].to_list()) == {3}
    assert got[("accuracy", None)] == pytest.approx((0.5 + 0.25 + 1.0) / 3)
    assert got[("pass@k", 1)] == pytest.approx((0.5 + 0.25 + 1.0) / 3)
    assert got[("pass@k", 2)] == pytest.approx((pass_at_k(4, 2, 2) + pass_at_k(4, 1, 2) + 1.0) / 3)
    assert got[("pass@k", 4)] == pytest.approx(1.0)
    # maj@1: a "3" wrong, b "8" wrong, c right; maj@2: a tie -> "3" first, b tie -> "8" first
    assert got[("maj@k", 1)] == pytest.approx(1 / 3)
    assert got[("maj@k", 2)] == pytest.approx(1 / 3)
    # maj@4: a 2 vs 2 -> "3" first -> wrong; b "8" x2 -> wrong; c right
    assert got[("maj@k", 4)] == pytest.approx(1 / 3)
    assert got[("success@k", 1)] == pytest.approx(1 / 3)
    assert got[("success@k", 2)] == pytest.approx(1.0)
    # k=8 > 4 samples per item: skipped
    assert not any(k == 8 for k in out["k"].to_list() if k is not None)


def test_eval_metrics_frame_errors_and_empty():
    empty = graded_frame().head(0)
    assert eval_metrics_frame(empty, [1]).height == 0
    with pytest.raises(UserError, match="lack column"):
        eval_metrics_frame(graded_frame().drop("correct"), [1])
    dup = pl.concat([graded_frame(), graded_frame().head(1)])
    with pytest.raises(UserError, match="repeat item"):
        eval_metrics_frame(dup, [1])
    with pytest.raises(UserError, match="positive integer"):
        eval_metrics_frame(graded_frame(), [0])
