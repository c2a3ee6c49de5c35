"""What an attribution method returns, and the progress ticker every method shares."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from headdb.attribution.bootstrap import INTERVAL
from headdb.attribution.graph import GraphLayout


@dataclass
class AttributionResult:
    """Scores of one (model, task, method, metric) run; all arrays are float32 numpy.

    Sign (hannamw/EAP-IG's): every score estimates or measures a CHANGE of the metric L when
    something is moved from its clean to its corrupted value, so > 0 means corrupting it
    raises L.

    edge_scores[e]  mean over examples of the score of edge e (edge ids of `layout`)
    node_scores[n]  the node's attribution: for eap/eap-ig the sum of its outgoing edge scores
                    (= (z_corrupted - z_clean) . dL/dz_n, patching the node's whole output);
                    for exact, the measured effect of patching the node's output to corrupted,
                    L(node patched) - L(clean). NaN for logits.
    metric_clean / metric_corrupted  mean metric over examples on the clean / corrupted prompts
    ig_rule         eap-ig's integration rule (midpoint | left | right); None for eap / exact

    Per-example statistics (eap / eap-ig with rank="mean-abs" or bootstrap > 0; see
    headdb.attribution.bootstrap; None otherwise, and always for exact patching and imports):
    rank            abs-mean | mean-abs: what `ranking` (and so circuit selection and head
                    importance) is made of
    mean_abs[e]     mean over examples of |score|
    replicates      [R, n_edges] bootstrap replicate means of the score (replicate b resamples
                    the same prompts in every run with the same seed and item ids)
    replicates_abs  [R, n_edges] replicate means of |score| (rank="mean-abs" only)
    bootstrap_seed  the seed the replicate weights were drawn with
    """

    layout: GraphLayout
    method: str
    metric: str
    steps: int
    n_examples: int
    edge_scores: np.ndarray
    node_scores: np.ndarray
    metric_clean: float
    metric_corrupted: float
    ig_rule: str | None = None
    extra: dict = field(default_factory=dict)
    rank: str = "abs-mean"
    mean_abs: np.ndarray | None = None
    replicates: np.ndarray | None = None
    replicates_abs: np.ndarray | None = None
    bootstrap_seed: int | None = None

    @property
    def metric_delta(self) -> float:
        """L(corrupted) - L(clean): what the edges leaving `input` sum to (completeness)."""
        return self.metric_corrupted - self.metric_clean

    @property
    def input_sum(self) -> float:
        """Sum of the scores of edges leaving `input`."""
        return float(self.edge_scores[self.layout.edge_src == 0].astype(np.float64).sum())

    @property
    def completeness_residual(self) -> float:
        """input_sum - (metric_corrupted - metric_clean); ~0 for eap-ig with enough steps."""
        return self.input_sum - self.metric_delta

    @property
    def completeness_relative(self) -> float:
        """|completeness_residual| / |metric_delta| (sign-free)."""
        d = self.metric_delta
        return abs(self.completeness_residual) / abs(d) if d != 0 else float("nan")

    @property
    def head_scores(self) -> np.ndarray:
        """[n_layers, n_heads] node attribution of every head."""
        g = self.layout
        idx = [g.head_node(L, h) for L in range(g.n_layers) for h in range(g.n_heads)]
        return self.node_scores[idx].reshape(g.n_layers, g.n_heads)

    @property
    def head_importance(self) -> np.ndarray:
        """[n_layers, n_heads] I(l,h) = sum |edge score| over edges leaving the head, / total.
        |edge score| is the ranking magnitude: |mean| (abs-mean) or mean |score| (mean-abs)."""
        return _importance(self.layout, self.ranking)

    # ------------------------------------------------------- ranking and bootstrap
    @property
    def ranking(self) -> np.ndarray:
        """What circuits are selected by, per edge: |mean score| or mean |score| (`rank`)."""
        if self.rank == "mean-abs":
            if self.mean_abs is None:
                raise ValueError("rank 'mean-abs' needs per-example scores, which this result lacks")
            return self.mean_abs
        return np.abs(self.edge_scores)

    @property
    def n_replicates(self) -> int:
        return 0 if self.replicates is None else int(self.replicates.shape[0])

    def replicate_ranking(self, b: int) -> np.ndarray:
        """The ranking vector of bootstrap replicate b (the same rule as `ranking`)."""
        if self.rank == "mean-abs":
            return self.replicates_abs[b]
        return np.abs(self.replicates[b])

    @property
    def edge_se(self) -> np.ndarray | None:
        """Bootstrap standard error of each edge's mean score (sd over replicates); None
        without at least 2 replicates."""
        if self.n_replicates < 2:
            return None
        return self.replicates.astype(np.float64).std(axis=0, ddof=1).astype(np.float32)

    @property
    def replicate_importance(self) -> np.ndarray | None:
        """[R, n_layers, n_heads] head importance of every replicate; None without replicates."""
        if not self.n_replicates:
            return None
        return np.stack([_importance(self.layout, self.replicate_ranking(b)) for b in range(self.n_replicates)])

    @property
    def importance_bounds(self) -> tuple[np.ndarray, np.ndarray] | None:
        """(lo, hi) [n_layers, n_heads]: the INTERVAL percentiles of importance over replicates."""
        reps = self.replicate_importance
        if reps is None:
            return None
        lo, hi = np.percentile(reps.astype(np.float64), INTERVAL, axis=0)
        return lo.astype(np.float32), hi.astype(np.float32)

    def edges_table(self) -> pa.Table:
        """edge_id, score: rows for `edge_scores` (add run_id when storing)."""
        return pa.table(
            {
                "edge_id": pa.array(np.arange(self.layout.n_edges, dtype=np.int32)),
                "score": pa.array(self.edge_scores.astype(np.float32)),
            }
        )

    def se_table(self) -> pa.Table | None:
        """edge_id, se: rows for `edge_score_se` (add run_id); None without replicates."""
        se = self.edge_se
        if se is None:
            return None
        return pa.table(
            {"edge_id": pa.array(np.arange(self.layout.n_edges, dtype=np.int32)), "se": pa.array(se, pa.float32())}
        )

    def heads_table(self) -> pa.Table:
        """layer, head, score, importance: rows for `head_scores` (add run_id)."""
        g = self.layout
        layer, head = np.divmod(np.arange(g.n_layers * g.n_heads, dtype=np.int32), g.n_heads)
        return pa.table(
            {
                "layer": pa.array(layer.astype(np.int32)),
                "head": pa.array(head.astype(np.int32)),
                "score": pa.array(self.head_scores.reshape(-1).astype(np.float32)),
                "importance": pa.array(self.head_importance.reshape(-1)),
            }
        )

    def interval_table(self) -> pa.Table | None:
        """layer, head, importance_lo, importance_hi: rows for `head_importance_interval` (add
        run_id), the INTERVAL percentiles of importance over replicates; None without them."""
        bounds = self.importance_bounds
        if bounds is None:
            return None
        g = self.layout
        layer, head = np.divmod(np.arange(g.n_layers * g.n_heads, dtype=np.int32), g.n_heads)
        return pa.table(
            {
                "layer": pa.array(layer.astype(np.int32)),
                "head": pa.array(head.astype(np.int32)),
                "importance_lo": pa.array(bounds[0].reshape(-1), pa.float32()),
                "importance_hi": pa.array(bounds[1].reshape(-1), pa.float32()),
            }
        )

    def run_metrics(self) -> dict[str, float]:
        """Scalars for `run_metrics` (docs/attribution.md lists them with their signs):
        metric_clean, metric_corrupted, metric_delta = corrupted - clean, input_edge_sum (sum of
        the scores of the edges leaving input, ~ metric_delta), completeness_residual =
        input_edge_sum - metric_delta, completeness_relative = |residual| / |metric_delta|,
        n_examples."""
        out = {
            "metric_clean": self.metric_clean,
            "metric_corrupted": self.metric_corrupted,
            "metric_delta": self.metric_delta,
            "input_edge_sum": self.input_sum,
            "completeness_residual": self.completeness_residual,
            "completeness_relative": self.completeness_relative,
            "n_examples": float(self.n_examples),
        }
        if self.n_replicates:
            out["bootstrap_replicates"] = float(self.n_replicates)
        out.update({k: float(v) for k, v in self.extra.items()})
        return out


def _importance(g: GraphLayout, magnitudes: np.ndarray) -> np.ndarray:
    """[n_layers, n_heads]: per head, the sum of `magnitudes` over its outgoing edges, / total."""
    per_node = np.bincount(g.edge_src, weights=np.abs(magnitudes.astype(np.float64)), minlength=g.n_nodes)
    idx = [g.head_node(L, h) for L in range(g.n_layers) for h in range(g.n_heads)]
    heads = per_node[idx]
    total = heads.sum()
    heads = heads / total if total > 0 else heads
    return heads.reshape(g.n_layers, g.n_heads).astype(np.float32)


class Ticker:
    """Calls progress(done, total) after each forward/backward pass."""

    def __init__(self, progress, total: int):
        self.progress, self.total, self.done = progress, int(total), 0

    def __call__(self, n: int = 1) -> None:
        self.done += n
        if self.progress is not None:
            self.progress(min(self.done, self.total), self.total)
