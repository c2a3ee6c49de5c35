"""Per-example statistics of edge scores: mean |score| and Poisson-bootstrap replicate means.

Ranking rules (`RANK_RULES`), what circuit selection ranks edges by:
    abs-mean  |mean over examples of the score|  (EAP-IG's and MIB's choice; the default)
    mean-abs  mean over examples of |score|      (the study's choice: an edge that matters a lot
              in opposite directions on different prompts still ranks high)

Bootstrap. Replicate b (b = 0..R-1) weights example i by w_bi ~ Poisson(1), a deterministic
function of (seed, b, item id): the item id is hashed once (blake2b, 64 bits), mixed with a
per-replicate stream key derived from (seed, b) by the splitmix64 finaliser, turned into a
uniform u in [0, 1) and into a Poisson(1) draw by its inverse CDF. Nothing depends on the
model, the batch size or the order of the items, so replicate b resamples THE SAME PROMPTS in
every run on a task (base and target checkpoints, think on and off variants with the same item
ids): runs can be paired replicate by replicate. A replicate whose weights are all zero (chance
e^-n for n items) is redrawn from the next stream (attempt 1, 2, ...) of the same b.

The replicate mean of edge e is sum_i w_bi s_ie / sum_i w_bi. Its spread over b estimates the
sampling error of the mean over prompts (Poisson bootstrap: Hanley & MacGibbon 2006; the weights
approximate multinomial resampling for n >> 1 and, unlike it, are independent across items).

Memory: R x n_edges float32 replicate sums (2x for mean-abs, which also resamples |score|) on the
engine's device, plus the [R, n_items] weights.
"""

from __future__ import annotations

import hashlib
import math

import numpy as np
import torch

# Percentiles of the replicate distribution reported as an interval (a 95% percentile interval).
INTERVAL = (2.5, 97.5)

_MASK = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15
# Inverse-CDF table of Poisson(1): P(K <= k) for k = 0..19 (P(K > 19) < 2^-53).
_POISSON1_CDF = np.cumsum([math.exp(-1.0) / math.factorial(k) for k in range(20)])


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser on uint64 arrays (wrapping arithmetic)."""
    with np.errstate(over="ignore"):
        x = x ^ (x >> np.uint64(30))
        x = x * np.uint64(0xBF58476D1CE4E5B9)
        x = x ^ (x >> np.uint64(27))
        x = x * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


def item_keys(item_ids) -> np.ndarray:
    """64-bit keys of item ids (blake2b of the UTF-8 id), uint64 [n]."""
    return np.array(
        [int.from_bytes(hashlib.blake2b(str(i).encode("utf-8"), digest_size=8).digest(), "little") for i in item_ids],
        dtype=np.uint64,
    )


def _stream(seed: int, b: int, attempt: int) -> np.uint64:
    x = (int(seed) * _GOLDEN + (int(b) + 1) * 0xD1B54A32D192ED03 + int(attempt) * 0x8CB92BA72F3D8DD7) & _MASK
    return _mix(np.array([x], dtype=np.uint64))[0]


def _poisson1(keys: np.ndarray, stream: np.uint64) -> np.ndarray:
    u = (_mix(keys ^ stream) >> np.uint64(11)).astype(np.float64) * 2.0**-53
    return np.searchsorted(_POISSON1_CDF, u, side="right").astype(np.float32)


def replicate_weights(item_ids, n_replicates: int, seed: int = 0) -> np.ndarray:
    """Poisson(1) weights [n_replicates, n_items] float32 (see the module docstring)."""
    keys = item_keys(item_ids)
    out = np.zeros((int(n_replicates), len(keys)), dtype=np.float32)
    if len(keys) == 0:
        return out
    for b in range(int(n_replicates)):
        attempt = 0
        while True:
            w = _poisson1(keys, _stream(seed, b, attempt))
            if w.sum() > 0:
                break
            attempt += 1
        out[b] = w
    return out


class ExampleStats:
    """Accumulates per-example edge scores batch by batch: sum of |score| and the replicate sums.

    add(scores [B, n_edges] float32 on the engine device, item ids of the B examples).
    """

    def __init__(self, n_edges: int, item_ids, *, rank: str, bootstrap: int, seed: int, device):
        self.abs_total = np.zeros(n_edges, dtype=np.float64)
        self.rank, self.seed, self.n_replicates = rank, int(seed), int(bootstrap)
        self.rep = self.rep_abs = self.weights = None
        if self.n_replicates:
            w = replicate_weights(item_ids, self.n_replicates, seed)
            self.weight_totals = w.astype(np.float64).sum(axis=1)
            self.column = {item: i for i, item in enumerate(item_ids)}
            self.weights = torch.from_numpy(w).to(device)
            self.rep = torch.zeros((self.n_replicates, n_edges), dtype=torch.float32, device=device)
            if rank == "mean-abs":
                self.rep_abs = torch.zeros_like(self.rep)

    def add(self, scores: torch.Tensor, item_ids) -> None:
        mags = scores.abs()
        self.abs_total += mags.sum(0).double().cpu().numpy()
        if self.rep is not None:
            cols = torch.tensor([self.column[i] for i in item_ids], device=scores.device)
            w = self.weights.index_select(1, cols)  # [R, B]
            self.rep.addmm_(w, scores)
            if self.rep_abs is not None:
                self.rep_abs.addmm_(w, mags)

    def fields(self, n_examples: int) -> dict:
        """AttributionResult fields: rank, mean_abs and (with replicates) their means."""
        out = {"rank": self.rank, "mean_abs": (self.abs_total / n_examples).astype(np.float32)}
        if self.rep is not None:
            totals = self.weight_totals.astype(np.float32)[:, None]  # float32: no R x n_edges doubles
            out["replicates"] = self.rep.cpu().numpy() / totals
            if self.rep_abs is not None:
                out["replicates_abs"] = self.rep_abs.cpu().numpy() / totals
            out["bootstrap_seed"] = self.seed
        return out
