"""Sampling metrics over graded samples: accuracy, pass@k, maj@k, success@k.

- ``accuracy``: per problem, the fraction of its samples that are correct (pass@1 averaged
  over samples), then the mean over problems.
- ``pass@k``: the unbiased estimator of Chen et al. (2021), 1 - C(n-c, k) / C(n, k) for a
  problem with n samples of which c are correct, computed as a running product (no large
  binomials), then the mean over problems.
- ``maj@k``: majority vote over the extracted answers of the first k samples (by
  ``sample_idx``); the problem counts as solved when the winning answer is correct.
  Samples with no extracted answer abstain; if all abstain the vote fails.
  Grouping answers (``equivalence``):
    ``"math"`` (default): every correct sample votes for one answer (all of them equal the gold);
    incorrect answers are grouped by their normalised string (`grading.normalize_answer`) and
    two groups are merged when math-verify finds them equivalent.
    ``"string"``: groups are the normalised strings; a group is correct when its earliest
    sample was graded correct.
  Ties are broken deterministically: among the groups with the most votes, the one whose
  first vote came earliest (lowest ``sample_idx``) wins.
- ``success@k``: the fraction of problems with at least one correct sample among the first k
  (empirical, sample order dependent; pass@k is its unbiased, order-free counterpart).

`eval_metrics_frame` skips any k larger than the smallest number of samples a problem has, so
that every metric row covers every problem; ``n`` in its output is the number of problems.
"""

from __future__ import annotations

from typing import Iterable, Optional, Sequence

import polars as pl

from headdb.errors import UserError
from headdb.evals.grading import STYLES, answers_equivalent, normalize_answer

__all__ = [
    "pass_at_k",
    "majority_vote",
    "maj_at_k",
    "accuracy",
    "eval_metrics_frame",
    "METRICS_SCHEMA",
]

METRICS_SCHEMA = {"metric": pl.Utf8, "k": pl.Int32, "value": pl.Float64, "n": pl.Int32}


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k for one problem: 1 - C(n-c, k)/C(n, k), numerically stable.

    Uses C(n-c, k)/C(n, k) = prod_{i=n-c+1..n} (1 - k/i).
    """
    if not (isinstance(n, int) and isinstance(c, int) and isinstance(k, int)):
        n, c, k = int(n), int(c), int(k)
    if n < 1 or k < 1 or k > n or c < 0 or c > n:
        raise ValueError(f"pass@k needs 1 <= k <= n and 0 <= c <= n, got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    miss = 1.0
    for i in range(n - c + 1, n + 1):
        miss *= 1.0 - k / i
    return 1.0 - miss


def majority_vote(
    answers: Sequence[Optional[str]],
    corrects: Sequence[Optional[bool]],
    k: Optional[int] = None,
    *,
    style: str = "math",
    equivalence: str = "math",
) -> tuple[Optional[str], bool]:
    """The winning answer among the first ``k`` samples and whether it is correct.

    ``answers`` and ``corrects`` are in sample order. See the module docstring for grouping and
    the tie-break. Returns ``(None, False)`` when no sample gave an answer.
    """
    if equivalence not in ("math", "string"):
        raise UserError(f"unknown answer equivalence {equivalence!r}; use 'math' or 'string'")
    if style not in STYLES:
        raise UserError(f"unknown grading style {style!r}; use one of {', '.join(STYLES)}")
    if len(answers) != len(corrects):
        raise ValueError("answers and corrects must have the same length")
    k = len(answers) if k is None else k
    # each group: [votes, first_index, representative, correct]
    groups: dict[str, list] = {}
    correct_key = "\x00correct"
    for idx in range(min(k, len(answers))):
        ans = answers[idx]
        if ans is None or not str(ans).strip():
            continue
        ok = bool(corrects[idx])
        if equivalence == "math" and ok:
            key = correct_key
        else:
            key = normalize_answer(str(ans), style)
            if equivalence == "math" and key not in groups:
                for other_key, g in groups.items():
                    if other_key != correct_key and not g[3] and answers_equivalent(g[2], str(ans), style=style):
                        key = other_key
                        break
        if key in groups:
            groups[key][0] += 1
        else:
            groups[key] = [1, idx, str(ans), ok]
    if not groups:
        return None, False
    votes, _first, rep, ok = min(groups.values(), key=lambda g: (-g[0], g[1]))
    return rep, ok


def maj_at_k(
    answers: Sequence[Optional[str]],
    corrects: Sequence[Optional[bool]],
    k: int,
    *,
    style: str = "math",
    equivalence: str = "math",
) -> bool:
    """Whether the majority answer among the first ``k`` samples is correct."""
    return majority_vote(answers, corrects, k, style=style, equivalence=equivalence)[1]


def accuracy(corrects: Iterable[Optional[bool]]) -> float:
    """Fraction of samples that are correct (None counts as wrong); pass@1 for one problem."""
    vals = [bool(c) for c in corrects]
    if not vals:
        raise ValueError("accuracy of no samples")
    return sum(vals) / len(vals)


def eval_metrics_frame(
    graded: pl.DataFrame,
    ks: Iterable[int] = (1,),
    *,
    style: Optional[str] = None,
    equivalence: str = "math",
    metrics: Sequence[str] = ("accuracy", "pass@k", "maj@k", "success@k"),
) -> pl.DataFrame:
    """Metrics in the ``eval_metrics`` shape (metric, k, value, n) from graded samples.

    ``graded`` has columns item_id, sample_idx, extracted, correct (and optionally ``style``
    per row; else ``style`` is used, default "math"). Rows: ``accuracy`` (k null), then for
    each requested k in increasing order ``pass@k``, ``maj@k``, ``success@k`` with that k.
    A k larger than the smallest per-problem sample count is skipped. ``n`` is the number of
    problems. An empty input gives an empty frame.
    """
    required = ["item_id", "sample_idx", "extracted", "correct"]
    missing = [c for c in required if c not in graded.columns]
    if missing:
        raise UserError(f"graded samples lack column(s) {', '.join(missing)}; expected {', '.join(required)}")
    ks = sorted({_check_k(k) for k in ks})
    unknown = [m for m in metrics if m not in ("accuracy", "pass@k", "maj@k", "success@k")]
    if unknown:
        raise UserError(f"unknown metric(s) {', '.join(unknown)}; use accuracy, pass@k, maj@k, success@k")
    if graded.height == 0:
        return pl.DataFrame(schema=METRICS_SCHEMA)

    cols = required + (["style"] if "style" in graded.columns else [])
    df = graded.select(cols).with_columns(
        pl.col("item_id").cast(pl.Utf8), pl.col("correct").fill_null(False).cast(pl.Boolean)
    )
    dup = df.group_by("item_id", "sample_idx").len().filter(pl.col("len") > 1)
    if dup.height:
        row = dup.row(0, named=True)
        raise UserError(
            f"graded samples repeat item {row['item_id']!r} sample {row['sample_idx']}; "
            "give each (item_id, sample_idx) once"
        )
    df = df.sort("item_id", "sample_idx")
    agg = [pl.col("extracted"), pl.col("correct")]
    if "style" in df.columns:
        agg.append(pl.col("style").first())
    per_item = df.group_by("item_id", maintain_order=True).agg(agg)

    items = []
    for row in per_item.iter_rows(named=True):
        item_style = row.get("style") or style or "math"
        items.append((row["extracted"], [bool(c) for c in row["correct"]], item_style))
    n_items = len(items)
    min_samples = min(len(c) for _, c, _ in items)

    out: list[tuple[str, Optional[int], float, int]] = []
    if "accuracy" in metrics:
        out.append(("accuracy", None, _mean(accuracy(c) for _, c, _ in items), n_items))
    for k in ks:
        if k > min_samples:
            continue
        if "pass@k" in metrics:
            val = _mean(pass_at_k(len(c), sum(c), k) for _, c, _ in items)
            out.append(("pass@k", k, val, n_items))
        if "maj@k" in metrics:
            val = _mean(float(maj_at_k(a, c, k, style=s, equivalence=equivalence)) for a, c, s in items)
            out.append(("maj@k", k, val, n_items))
        if "success@k" in metrics:
            val = _mean(float(any(c[:k])) for _, c, _ in items)
            out.append(("success@k", k, val, n_items))
    return pl.DataFrame(out, schema=METRICS_SCHEMA, orient="row")


def _check_k(k) -> int:
    bad = UserError(f"k must be a positive integer, got {k!r}; e.g. --k 1,4,16")
    if isinstance(k, bool):
        raise bad
    try:
        ki = int(k.strip()) if isinstance(k, str) else int(k)
    except (TypeError, ValueError):
        raise bad from None
    if ki < 1 or (not isinstance(k, str) and ki != k):
        raise bad
    return ki


def _mean(values: Iterable[float]) -> float:
    vals = list(values)
    return sum(vals) / len(vals)
