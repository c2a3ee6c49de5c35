"""Answer extraction, grading, failure tags and the thread-safe timeout."""

import threading
import time

import pytest

from headdb.evals import grading
from headdb.errors import UserError
from headdb.evals.grading import (
    Grade,
    GradingTimeout,
    answers_equivalent,
    detect_repetition_loop,
    extract_answer,
    extract_boxed,
    extract_choice,
    extract_hash_answer,
    grade,
    normalize_text,
    run_with_deadline,
)


@pytest.mark.parametrize(
    "text, expected",
    [
        (r"so \boxed{\frac{1}{2}}", r"\frac{1}{2}"),
        (r"\boxed{\frac{\sqrt{3}}{2}} done", r"\frac{\sqrt{3}}{2}"),
        (r"first \boxed{2}, then \boxed{3}", "3"),
        (r"\fbox{7}", "7"),
        (r"\boxed{1} and \fbox{9}", "9"),
        (r"\boxed{\{1, 2\}}", r"\{1, 2\}"),
        (r"\boxed {42}", "42"),
        (r"\boxed 5.", "5"),
        (r"answer \boxed{4} then \boxed{\frac{1}{", "4"),  # unclosed last box is skipped
        (r"put it within \boxed{} ... \boxed{12} ... within \boxed{}", "12"),
        ("no box here", None),
        ("", None),
    ],
)
def test_extract_boxed(text, expected):
    assert extract_boxed(text) == expected


def test_extract_hash_answer():
    assert extract_hash_answer("Janet has 3.\n#### 1,000") == "1,000"
    assert extract_hash_answer("#### 5\nthen\n#### 7.") == "7"
    assert extract_hash_answer("none") is None


@pytest.mark.parametrize(
    "text, letter",
    [
        (r"\boxed{C}", "C"),
        (r"\boxed{(B)}", "B"),
        (r"\boxed{\text{D}}", "D"),
        (r"\boxed{A) 42}", "A"),
        ("Thus the answer is (C).", "C"),
        ("The correct answer is B", "B"),
        ("Answer: D", "D"),
        ("**Answer:** (A)", "A"),
        ("answer is **B**.", "B"),
        ("I think A fits. Final answer: C", "C"),
        ("Final Answer: $C$", "C"),
        ("Let us check answer A first.", None),
        ("the answer is a prime number", None),
        ("nothing here", None),
    ],
)
def test_extract_choice(text, letter):
    assert extract_choice(text) == letter


# (style, gold, completion, correct, extracted)
GRADE_TABLE = [
    ("math", r"\frac{1}{2}", r"so \boxed{0.5}", True, "0.5"),
    ("math", "0.5", r"so \boxed{\frac{1}{2}}", True, r"\frac{1}{2}"),
    ("math", "1/2", r"\boxed{\dfrac{1}{2}}", True, r"\dfrac{1}{2}"),
    ("math", r"\frac{1}{2}", r"\boxed{1/2}", True, "1/2"),
    ("math", r"\frac34", r"\boxed{\dfrac{3}{4}}", True, r"\dfrac{3}{4}"),
    ("math", "5", r"\boxed{5\text{ cm}}", True, r"5\text{ cm}"),
    ("math", r"5\text{ cm}", r"\boxed{5}", True, "5"),
    ("math", "3", r"\boxed{2} no wait, \boxed{3}", True, "3"),
    ("math", "2", r"\boxed{2} no wait, \boxed{3}", False, "3"),
    ("math", "-7", r"\boxed{-7}", True, "-7"),
    ("math", "-7", r"\boxed{7}", False, "7"),
    ("math", r"\frac{\sqrt{2}}{2}", r"\boxed{\frac{1}{\sqrt{2}}}", True, r"\frac{1}{\sqrt{2}}"),
    ("math", r"\left( 3, \frac{\pi}{2} \right)", r"\boxed{(3,\frac{\pi}{2})}", True, r"(3,\frac{\pi}{2})"),
    ("math", "x^2+1", r"\boxed{1+x^{2}}", True, "1+x^{2}"),
    ("math", r"\boxed{12}", r"\boxed{12}", True, "12"),  # gold given boxed
    ("math", "12", "The result is 12.", False, None),  # the study reads boxed answers only
    ("math", "12", "#### 12", True, "12"),
    ("gsm8k", "Half of 2000 is 1000.\n#### 1,000", "#### 1000", True, "1000"),
    ("gsm8k", "#### 72", r"She earns \boxed{\$72}.", True, r"\$72"),
    ("gsm8k", "72", r"\boxed{72.00}", True, "72.00"),
    ("gsm8k", "72", r"\boxed{27}", False, "27"),
    ("mc", "C", "The answer is (C).", True, "C"),
    ("mc", "C", r"\boxed{C}", True, "C"),
    ("mc", "(B)", "Answer: B", True, "B"),
    ("mc", "B", "Answer: C", False, "C"),
    ("text", "Paris", r"\boxed{The Paris}", True, "The Paris"),
    ("text", "Paris", "The answer is: paris.", True, "paris"),
    ("text", "Paris", "London", False, "London"),
]


@pytest.mark.parametrize("style, gold, completion, correct, extracted", GRADE_TABLE)
def test_grade_table(style, gold, completion, correct, extracted):
    g = grade(gold, completion, style=style)
    assert isinstance(g, Grade)
    assert g.extracted == extracted
    assert g.correct is correct
    if correct:
        assert g.failure_tag == "correct"
    elif extracted is None:
        assert g.failure_tag == "no_answer"
    else:
        assert g.failure_tag == "wrong_answer"
    assert not g.timed_out


def test_triviaqa_aliases():
    aliases = ["City of Light", "Paris, France", "Lutetia"]
    assert grade("Paris", r"\boxed{the City of Light!}", style="text", aliases=aliases).correct
    assert grade("Paris", "Answer: Paris France", style="text", aliases=aliases).correct
    assert grade("Paris", "  lutetia ", style="text", aliases=aliases).correct
    assert not grade("Paris", "Answer: Rome", style="text", aliases=aliases).correct
    assert not grade("Paris", "Answer: Paris is nice", style="text", aliases=aliases).correct
    assert normalize_text("  The  Eiffel-Tower, an icon. ") == "eiffel tower icon"


def test_no_answer_and_truncated_tags():
    assert grade("5", "I am not sure.", finish_reason="stop").failure_tag == "no_answer"
    g = grade("5", "Let me compute 2 + 3 step by step and", finish_reason="length")
    assert g.failure_tag == "truncated" and g.extracted is None
    # an answer given before the cut is still graded
    g = grade("5", r"So \boxed{5}. Let me double check", finish_reason="length")
    assert g.failure_tag == "correct"
    g = grade("5", r"So \boxed{4}. Let me double check", finish_reason="length")
    assert g.failure_tag == "wrong_answer"
    # text style falls back to the last line only when not truncated
    assert grade("Paris", "Paris", style="text", finish_reason="length").failure_tag == "truncated"


def test_repetition_loop_detector():
    loop = "We need x. " + "Wait, let me recompute the sum. " * 12
    assert detect_repetition_loop(loop)
    assert detect_repetition_loop(loop[:-7])  # last copy cut mid-way
    assert detect_repetition_loop("The answer is " + "0" * 300)
    # a long unit repeated 4 times
    unit = "".join(f"step {i}: carry the digit and add again; " for i in range(8))
    assert detect_repetition_loop("start " + unit * 4)
    assert not detect_repetition_loop("start " + unit * 2)
    # ordinary prose and short repeats are not loops
    prose = (
        "To add 27 and 45 we add the ones, 7 + 5 = 12, write 2 and carry 1. Then the tens, "
        "2 + 4 + 1 = 7. So the sum is 72, and we check it by subtracting: 72 - 45 = 27. "
    )
    assert not detect_repetition_loop(prose * 1)
    assert not detect_repetition_loop("ha" * 50)  # 100 chars < 200
    assert not detect_repetition_loop("")


def test_repetition_loop_tag():
    looping = "Let me try. " + "1 + 1 = 2. " * 60
    g = grade("7", looping, finish_reason="length")
    assert g.failure_tag == "repetition_loop" and g.extracted is None
    # a loop that repeats a wrong boxed answer
    g = grade("7", r"So \boxed{6}. " * 40, finish_reason="length")
    assert g.failure_tag == "repetition_loop" and g.extracted == "6"
    # ... but a correct answer is correct even if it then loops
    assert grade("7", r"So \boxed{7}. " * 40, finish_reason="length").failure_tag == "correct"


def test_extract_answer_styles_and_bad_style():
    assert extract_answer(r"\boxed{C}", "mc") == "C"
    assert extract_answer("Answer: Paris\n", "text") == "Paris"
    assert extract_answer("The answer depends on it.\nParis", "text") == "Paris"
    with pytest.raises(UserError, match="grading style"):
        grade("1", "1", style="latex")


def test_answers_equivalent():
    assert answers_equivalent("0.5", r"\frac{1}{2}")
    assert not answers_equivalent("0.5", "2")
    assert answers_equivalent("(B)", "B", style="mc")
    assert answers_equivalent("The Paris", "paris", style="text")


def test_grading_in_worker_thread():
    results = []
    errors = []

    def work():
        try:
            results.append(grade(r"\frac{1}{2}", r"\boxed{0.5}"))
            results.append(grade("3", r"\boxed{4}"))
        except BaseException as e:  # noqa: BLE001 - surfaced below
            errors.append(e)

    threads = [threading.Thread(target=work) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors
    assert [r.correct for r in results].count(True) == 3
    assert [r.correct for r in results].count(False) == 3


def test_timeout_in_worker_thread(monkeypatch):
    def spin(gold, pred):
        while True:
            pass

    monkeypatch.setattr(grading, "_math_equal", spin)
    out = {}

    def work():
        t0 = time.monotonic()
        try:
            out["grade"] = grade("1", r"\boxed{1}", timeout=0.2)
        except BaseException as e:  # noqa: BLE001
            out["error"] = e
        out["elapsed"] = time.monotonic() - t0

    t = threading.Thread(target=work)
    t.start()
    t.join(10)
    assert not t.is_alive()
    assert "error" not in out
    g = out["grade"]
    assert g.timed_out and not g.correct and g.failure_tag == "wrong_answer"
    assert g.extracted == "1"
    assert out["elapsed"] < 3


def test_timeout_in_main_thread_and_no_stray_exception(monkeypatch):
    def spin(gold, pred):
        while True:
            pass

    with pytest.raises(GradingTimeout):
        run_with_deadline(lambda: spin(1, 2), 0.1)
    # a fast call leaves nothing pending behind it
    assert run_with_deadline(lambda: 41 + 1, 0.05) == 42
    time.sleep(0.1)
    assert sum(range(100000)) > 0  # no stray async exception arrives here

    # a function that swallows Exception still times out
    def swallow():
        try:
            spin(1, 2)
        except Exception:  # noqa: BLE001
            return "swallowed"

    with pytest.raises(GradingTimeout):
        run_with_deadline(swallow, 0.1)
    monkeypatch.setattr(grading, "_math_equal", spin)
    assert grade("1", r"\boxed{1}", timeout=0.1).timed_out
