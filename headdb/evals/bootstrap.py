"""Bootstrap intervals over problems for differences of accuracy.

An ablation's delta is mean(rate with the heads ablated) - mean(rate without), both over the same
problems, where a problem's rate is the share of its samples graded correct (so the means are the
runs' accuracies). Resampling problems with replacement, and keeping each problem's pair of
rates together (a paired bootstrap), gives an interval for that delta that reflects how much it
depends on which problems the benchmark happened to draw; the same holds for the difference
between two head sets ablated on the same problems (emergent heads against their control).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

N_BOOT = 2000
SEED = 0  # fixed, so a report shows the same interval every time it is drawn


@dataclass(frozen=True)
class Interval:
    estimate: float
    low: float
    high: float
    n: int  # problems
    level: float

    def text(self, digits: int = 3) -> str:
        return f"[{self.low:+.{digits}f}, {self.high:+.{digits}f}]"


def paired_difference(treated, reference, *, n_boot: int = N_BOOT, level: float = 0.95, seed: int = SEED) -> Interval:
    """mean(treated - reference) over problems, with a percentile bootstrap interval; `treated`
    and `reference` are per-problem values in the same problem order."""
    a = np.asarray(treated, dtype=float)
    b = np.asarray(reference, dtype=float)
    if a.shape != b.shape or a.ndim != 1 or a.size == 0:
        raise ValueError(f"need two equal-length, non-empty 1-D arrays, got shapes {a.shape} and {b.shape}")
    diff = a - b
    rng = np.random.default_rng(seed)
    means = diff[rng.integers(0, diff.size, size=(n_boot, diff.size))].mean(axis=1)
    tail = (1.0 - level) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return Interval(float(diff.mean()), float(low), float(high), int(diff.size), level)
