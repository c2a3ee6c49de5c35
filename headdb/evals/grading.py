"""Answer extraction and grading of generated completions.

One entry point, `grade(gold, completion, style=...)`, returns a `Grade` with the extracted
answer, whether it is correct, and a failure tag for the sample (analysis 9 of docs/science.md).

Styles
------
``math``   the last complete, non-empty ``\\boxed{...}`` / ``\\fbox{...}`` (nested braces and
           ``\\{ \\}`` escapes handled), else the last ``#### x`` line; compared with the gold
           answer symbolically by math-verify (``verify(gold, pred)``, gold first), with a
           normalised-string comparison as a fallback when math-verify cannot parse either side.
``gsm8k``  as ``math``; the gold may be a full GSM8K solution (the text after ``####`` is
           used) and thousands separators / ``$`` are removed before comparing.
``mc``     a choice letter A-J: ``\\boxed{C}`` (also ``\\boxed{(C)}``, ``\\boxed{\\text{C}}``,
           ``\\boxed{C) 42}``), else the last "answer is (C)" / "Answer: C" / "**Answer:** C"
           phrase, else ``#### C``. Compared with the gold letter.
``text``   boxed, else the last "answer is X" / "Answer: X" phrase (to the end of its line),
           else the last non-empty line (only when the output was not truncated). Correct when
           the SQuAD-style normalised string (lowercase, no punctuation, no articles a/an/the,
           single spaces) equals the normalised gold or any alias (TriviaQA).

`aliases` are extra acceptable golds for any style.

Failure tags (first rule that applies)
-------------------------------------
``correct``          the answer is correct;
``repetition_loop``  not correct and the completion's tail is a loop (`detect_repetition_loop`);
``truncated``        nothing extractable and ``finish_reason == "length"``;
``no_answer``        nothing extractable;
``wrong_answer``     an answer was extracted and it is wrong (also when comparing timed out;
                     then ``Grade.timed_out`` is True).

Repetition loop rule
--------------------
On characters: the completion (trailing whitespace kept) ends in a periodic stretch of at least
``LOOP_MIN_REPEATS`` (4) consecutive copies of one unit of ``1..LOOP_MAX_PERIOD`` (1000)
characters, and that stretch is at least ``LOOP_MIN_CHARS`` (200) characters long. The last
copy may be cut off (truncated generation). Computed in linear time with the Z-function of the
reversed tail. Loops whose unit changes each time (counting up) are not detected.

Timeouts
--------
math-verify's own timeouts use ``signal.alarm`` and fail outside the main thread, so they are
disabled (``parsing_timeout=None``, ``timeout_seconds=None``) and every math-verify call made by
one `grade` runs under `run_with_deadline`: a watchdog timer raises an exception asynchronously
in the calling thread (``PyThreadState_SetAsyncExc``) when the deadline passes. This works in
the main thread and in worker threads alike. It interrupts Python code (all of sympy's parsing
and simplification) between bytecodes; a single long C call (e.g. a huge big-integer power) is
interrupted only when it returns.
"""

from __future__ import annotations

import ctypes
import logging
import re
import string
import threading
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable, Iterable, Optional, Sequence, TypeVar

from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify

__all__ = [
    "STYLES",
    "FAILURE_TAGS",
    "Grade",
    "GradingTimeout",
    "grade",
    "extract_answer",
    "extract_boxed",
    "extract_hash_answer",
    "extract_choice",
    "normalize_text",
    "normalize_answer",
    "answers_equivalent",
    "detect_repetition_loop",
    "run_with_deadline",
    "DEFAULT_TIMEOUT_S",
]

STYLES = ("math", "gsm8k", "mc", "text")
FAILURE_TAGS = ("correct", "wrong_answer", "no_answer", "truncated", "repetition_loop")
DEFAULT_TIMEOUT_S = 5.0

LOOP_MIN_REPEATS = 4
LOOP_MIN_CHARS = 200
LOOP_MAX_PERIOD = 1000

T = TypeVar("T")


# --------------------------------------------------------------------------------------------
# math-verify's "timeout is disabled" warning is expected here: we supply our own deadline.


class _DropDisabledTimeoutWarning(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Timeout is disabled")


for _name in ("math_verify.parser", "math_verify.grader"):
    logging.getLogger(_name).addFilter(_DropDisabledTimeoutWarning())


# --------------------------------------------------------------------------------------------
# Deadline that works in any thread


class GradingTimeout(Exception):
    """A grading step ran past its deadline."""


class _DeadlinePassed(BaseException):
    """Raised asynchronously in the guarded thread. A BaseException so that the broad
    ``except Exception`` handlers inside math-verify and sympy do not swallow it."""


_raise_in = ctypes.PYFUNCTYPE(ctypes.c_int, ctypes.c_ulong, ctypes.py_object)(
    ("PyThreadState_SetAsyncExc", ctypes.pythonapi)
)
_clear_in = ctypes.PYFUNCTYPE(ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p)(
    ("PyThreadState_SetAsyncExc", ctypes.pythonapi)
)


def run_with_deadline(fn: Callable[[], T], seconds: Optional[float]) -> T:
    """Run ``fn()`` in the calling thread; raise `GradingTimeout` if it runs past ``seconds``.

    ``seconds=None`` (or <= 0) runs without a deadline. Safe in the main thread and in worker
    threads: a watchdog timer raises an exception asynchronously in this thread when the
    deadline passes; a pending one that arrives after ``fn`` returned is cleared.
    """
    if seconds is None or seconds <= 0:
        return fn()
    tid = threading.get_ident()
    lock = threading.Lock()
    state = {"phase": "running"}  # running -> done | fired

    def fire() -> None:
        with lock:
            if state["phase"] == "running":
                state["phase"] = "fired"
                _raise_in(tid, _DeadlinePassed)

    timer = threading.Timer(seconds, fire)
    timer.daemon = True
    fired = False
    try:
        timer.start()
        try:
            result = fn()
        finally:
            with lock:
                fired = state["phase"] == "fired"
                state["phase"] = "done"
            timer.cancel()
            if fired:
                _clear_in(tid, None)  # drop the exception if it has not been delivered yet
    except _DeadlinePassed:
        raise GradingTimeout(f"grading took longer than {seconds:g} s") from None
    if fired:  # fn swallowed the exception or finished just as the deadline passed
        raise GradingTimeout(f"grading took longer than {seconds:g} s")
    return result


# --------------------------------------------------------------------------------------------
# Extraction

_BOX_RE = re.compile(r"\\(?:boxed|fbox)\s*\{")
_BOX_BARE_RE = re.compile(r"\\boxed +([^\s{$\\][^\s$]*)")


def _match_brace(text: str, open_idx: int) -> Optional[int]:
    """Index of the ``}`` closing the ``{`` at ``open_idx``; escaped braces do not count."""
    depth = 0
    i = open_idx
    n = len(text)
    while i < n:
        ch = text[i]
        if ch == "\\":
            i += 2
            continue
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    return None


def extract_boxed(text: str) -> Optional[str]:
    """Content of the last complete, non-empty ``\\boxed{...}`` or ``\\fbox{...}``.

    Nested braces are matched (``\\boxed{\\frac{1}{2}}`` gives ``\\frac{1}{2}``). An unclosed
    box (a truncated output) and an empty ``\\boxed{}`` (the instruction echoed back) are
    skipped in favour of the previous one. ``\\boxed 5`` (no braces) is also read.
    """
    if not text:
        return None
    found: list[tuple[int, str]] = []
    for m in reversed(list(_BOX_RE.finditer(text))):
        close = _match_brace(text, m.end() - 1)
        if close is None:
            continue
        content = text[m.end() : close].strip()
        if content:
            found.append((m.start(), content))
            break
    for m in reversed(list(_BOX_BARE_RE.finditer(text))):
        if not found or m.start() > found[0][0]:
            found = [(m.start(), m.group(1).rstrip(".,;"))]
        break
    return found[0][1] if found else None


_HASH_RE = re.compile(r"####\s*([^\n]*)")


def extract_hash_answer(text: str) -> Optional[str]:
    """The text after the last ``####`` (GSM8K gold format), to the end of its line."""
    if not text:
        return None
    matches = [m.group(1).strip() for m in _HASH_RE.finditer(text)]
    matches = [m for m in matches if m]
    if not matches:
        return None
    ans = matches[-1].strip()
    ans = re.sub(r"^\*\*|\*\*$", "", ans).strip()
    ans = ans.rstrip(".").strip()
    return ans or None


_LATEX_WRAPPERS = re.compile(r"\\(?:text|textbf|textit|mathrm|mathbf|mbox|operatorname)\s*\{([^{}]*)\}")


def _unwrap_latex_text(s: str) -> str:
    prev = None
    while prev != s:
        prev = s
        s = _LATEX_WRAPPERS.sub(r"\1", s)
    return s


_LETTERS = "ABCDEFGHIJ"
_CHOICE_IN_BOX = re.compile(r"^\(?\s*([A-J])\s*\)?(?:[\s.:)\]]|$)")
_CHOICE_PHRASE = re.compile(
    r"(?i:answer)(?:\s+(?i:is)\s*:?|\s*:|\s*\*\*\s*:)\s*(?:\*\*)?\s*:?\s*(?:(?i:option|choice)\s*)?"
    r"[\(\[$]?\s*(?:\\text(?:bf)?\{)?\s*(?:\*\*)?([A-J])(?![A-Za-z0-9])"
)


def extract_choice(text: str, letters: str = _LETTERS) -> Optional[str]:
    """A multiple-choice letter: from the last box, else the last "answer is (C)" /
    "Answer: C" phrase, else ``#### C``. Only upper-case letters in ``letters`` count."""
    if not text:
        return None
    boxed = extract_boxed(text)
    if boxed is not None:
        got = _letter_of(boxed, letters)
        if got:
            return got
    for m in reversed(list(_CHOICE_PHRASE.finditer(text))):
        if m.group(1) in letters:
            return m.group(1)
    hashed = extract_hash_answer(text)
    if hashed is not None:
        got = _letter_of(hashed, letters)
        if got:
            return got
    return None


def _letter_of(s: str, letters: str = _LETTERS) -> Optional[str]:
    s = _unwrap_latex_text(s).strip().strip("$*").strip()
    s = re.sub(r"^(?i:option|choice)\s*", "", s)
    m = _CHOICE_IN_BOX.match(s)
    if m and m.group(1) in letters:
        return m.group(1)
    return None


_TEXT_PHRASE = re.compile(r"(?i:answer)(?:\s+(?i:is)\s*:?|\s*:|\s*\*\*\s*:)\s*(?:\*\*)?\s*:?\s*([^\n]+)")


def _extract_text(text: str, finish_reason: Optional[str]) -> Optional[str]:
    boxed = extract_boxed(text)
    if boxed is not None:
        return _unwrap_latex_text(boxed).strip()
    for m in reversed(list(_TEXT_PHRASE.finditer(text))):
        ans = m.group(1).strip().strip("*").strip().rstrip(".").strip()
        if ans:
            return ans
    if finish_reason == "length":
        return None
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[-1] if lines else None


def extract_answer(completion: str, style: str = "math", *, finish_reason: Optional[str] = None) -> Optional[str]:
    """The answer a completion gives under ``style`` (see the module docstring), or None."""
    _check_style(style)
    if completion is None:
        return None
    if style == "mc":
        return extract_choice(completion)
    if style == "text":
        return _extract_text(completion, finish_reason)
    boxed = extract_boxed(completion)
    if boxed is not None:
        return boxed
    return extract_hash_answer(completion)


def _check_style(style: str) -> None:
    if style not in STYLES:
        from headdb.errors import UserError

        raise UserError(f"unknown grading style {style!r}; use one of {', '.join(STYLES)}")


# --------------------------------------------------------------------------------------------
# Normalisation and comparison

_PUNCT = set(string.punctuation) | {"‘", "’", "“", "”", "–", "—"}
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize_text(s: str) -> str:
    """SQuAD/TriviaQA normalisation: lowercase, drop punctuation and the articles a/an/the,
    collapse whitespace."""
    s = _unwrap_latex_text(str(s)).lower()
    s = "".join(" " if ch in _PUNCT else ch for ch in s)
    s = _ARTICLES.sub(" ", s)
    return " ".join(s.split())


def _normalize_math_string(s: str) -> str:
    """A light canonical form for comparing answers as strings."""
    s = str(s).strip().strip("$").strip()
    s = _unwrap_latex_text(s)
    for a, b in (
        ("\\dfrac", "\\frac"),
        ("\\tfrac", "\\frac"),
        ("\\left", ""),
        ("\\right", ""),
        ("\\!", ""),
        ("\\,", ""),
        ("\\;", ""),
        ("\\$", ""),
        ("^\\circ", ""),
        ("^{\\circ}", ""),
    ):
        s = s.replace(a, b)
    s = re.sub(r"(?<=\d),(?=\d{3}(?!\d))", "", s)
    s = re.sub(r"\s+", "", s)
    return s.rstrip(".").lower()


def _gsm8k_clean(s: str) -> str:
    s = s.strip()
    s = s.replace("\\$", "").replace("$", "")
    s = re.sub(r"(?<=\d),(?=\d{3}(?!\d))", "", s)
    return s.strip().rstrip(".").strip()


_MV_CONFIG = (LatexExtractionConfig(boxed_match_priority=0), ExprExtractionConfig())


@lru_cache(maxsize=65536)
def _mv_parse(expr: str) -> tuple:
    """math-verify parse of one answer expression (wrapped in a box so it is read whole)."""
    return tuple(parse("\\boxed{" + expr + "}", extraction_config=_MV_CONFIG, parsing_timeout=None))


def _math_equal(gold: str, pred: str) -> bool:
    if _normalize_math_string(gold) == _normalize_math_string(pred):
        return True
    g = _mv_parse(gold)
    p = _mv_parse(pred)
    if not g or not p:
        return False
    return bool(verify(list(g), list(p), timeout_seconds=None))


def _gold_candidates(gold: str, aliases: Optional[Iterable[str]], style: str) -> list[str]:
    golds = [] if gold is None else [str(gold)]
    if aliases:
        golds += [str(a) for a in aliases if a is not None]
    out = []
    for g in golds:
        g = g.strip()
        if style in ("math", "gsm8k"):
            if "####" in g:
                g = extract_hash_answer(g) or g
            elif "\\boxed" in g or "\\fbox" in g:
                g = extract_boxed(g) or g
            if style == "gsm8k":
                g = _gsm8k_clean(g)
        elif style == "mc":
            g = _letter_of(g) or g.strip().strip("()").upper()
        if g and g not in out:
            out.append(g)
    return out


def normalize_answer(answer: str, style: str = "math") -> str:
    """A canonical string for an extracted answer: the choice letter (mc), the SQuAD-style
    normalised text (text), or a light LaTeX/number normal form (math, gsm8k). Equal
    strings mean the same answer; different strings may still be equivalent mathematically."""
    _check_style(style)
    if answer is None:
        return ""
    if style == "mc":
        return _letter_of(answer) or answer.strip().upper()
    if style == "text":
        return normalize_text(answer)
    if style == "gsm8k":
        answer = _gsm8k_clean(answer)
    return _normalize_math_string(answer)


def answers_equivalent(a: str, b: str, *, style: str = "math", timeout: Optional[float] = DEFAULT_TIMEOUT_S) -> bool:
    """Whether two extracted answers are the same answer (``a`` plays the gold's role).

    math / gsm8k: math-verify equivalence (string fallback); mc: same letter; text: same
    normalised string. A comparison that times out counts as not equivalent.
    """
    _check_style(style)
    if a is None or b is None:
        return False
    if style == "mc":
        return (_letter_of(a) or a.strip().upper()) == (_letter_of(b) or b.strip().upper())
    if style == "text":
        return normalize_text(a) == normalize_text(b)
    if style == "gsm8k":
        a, b = _gsm8k_clean(a), _gsm8k_clean(b)
    try:
        return run_with_deadline(lambda: _math_equal(a, b), timeout)
    except GradingTimeout:
        return False


# --------------------------------------------------------------------------------------------
# Repetition loops


def _z_function(s: str) -> list[int]:
    n = len(s)
    z = [0] * n
    if n:
        z[0] = n
    left = right = 0
    for i in range(1, n):
        if i < right:
            z[i] = min(right - i, z[i - left])
        while i + z[i] < n and s[z[i]] == s[i + z[i]]:
            z[i] += 1
        if i + z[i] > right:
            left, right = i, i + z[i]
    return z


def detect_repetition_loop(
    text: str,
    *,
    min_repeats: int = LOOP_MIN_REPEATS,
    min_chars: int = LOOP_MIN_CHARS,
    max_period: int = LOOP_MAX_PERIOD,
) -> bool:
    """True when ``text`` ends in >= ``min_repeats`` copies of one unit of 1..``max_period``
    characters, spanning >= ``min_chars`` characters (the last copy may be partial)."""
    if not text or len(text) < min_chars:
        return False
    window = max(min_chars, min_repeats * max_period)
    rev = text[-window:][::-1]
    z = _z_function(rev)
    n = len(rev)
    for p in range(1, min(max_period, n - 1) + 1):
        span = p + z[p]  # length of the periodic suffix with period p
        if span >= min_repeats * p and span >= min_chars:
            return True
    return False


# --------------------------------------------------------------------------------------------
# Grading


@dataclass(frozen=True)
class Grade:
    """The outcome of grading one completion."""

    extracted: Optional[str]
    correct: bool
    failure_tag: str
    style: str
    timed_out: bool = False


def grade(
    gold: str,
    completion: str,
    *,
    style: str = "math",
    aliases: Optional[Sequence[str]] = None,
    finish_reason: Optional[str] = None,
    timeout: Optional[float] = DEFAULT_TIMEOUT_S,
) -> Grade:
    """Grade one completion against the gold answer (and ``aliases``).

    ``finish_reason`` is the generation's ("stop", "length", ...): "length" with nothing
    extractable tags the sample ``truncated``. ``timeout`` bounds the math-verify work of this
    call in seconds (None: no bound); a timed-out comparison counts as wrong.
    """
    _check_style(style)
    completion = completion or ""
    extracted = extract_answer(completion, style, finish_reason=finish_reason)
    golds = _gold_candidates(gold, aliases, style)
    correct = False
    timed_out = False
    if extracted is not None and golds:
        if style == "mc":
            correct = extracted in golds
        elif style == "text":
            pred = normalize_text(extracted)
            correct = bool(pred) and any(pred == normalize_text(g) for g in golds)
        else:
            pred = _gsm8k_clean(extracted) if style == "gsm8k" else extracted

            def compare() -> bool:
                return any(_math_equal(g, pred) for g in golds)

            try:
                correct = run_with_deadline(compare, timeout)
            except GradingTimeout:
                timed_out = True
                correct = False
    if correct:
        tag = "correct"
    elif detect_repetition_loop(completion):
        tag = "repetition_loop"
    elif extracted is None:
        tag = "truncated" if finish_reason == "length" else "no_answer"
    else:
        tag = "wrong_answer"
    return Grade(extracted=extracted, correct=correct, failure_tag=tag, style=style, timed_out=timed_out)
