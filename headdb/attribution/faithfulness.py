"""Faithfulness of circuits by edge-level patching, and the MIB curves (CPR, CMD).

Patched run of a circuit C (a set of edges): the clean prompt is run, and at every destination
port v the input becomes
    x_v - sum over edges (u -> v) NOT in C of (z_u(current) - z_u(corrupted))
where x_v is the port's input in this run and z_u(current) is u's output in this same run.
So every edge in C carries its source's current activation, every other edge carries the
source's activation on the corrupted prompt (EAP-IG/MIB edge patching). With all edges in C
nothing changes (the clean run); with none, every port reads the corrupted residual (the
corrupted run). Then
    f(C) = (m(C) - m(corrupted)) / (m(clean) - m(corrupted)),
with m the metric's mean over examples (NaN when m(clean) == m(corrupted)).

MIB curve (hannamw/MIB-circuit-track `evaluate_area_under_curve`): for each fraction x in
MIB_PERCENTS / 100 (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1), C_x = the top
floor(x * n_edges) edges (possibly none: then f = 0) of a ranking, pruned (pruning does not
change f: a dropped edge either starts at a node whose inputs are all corrupted, so it carries
the corrupted value anyway, or ends at a node no kept path leaves). Over the ten points only
(no point at x = 0, no normalisation, linear x):
    area_under  = trapezoid area under f(x)          (a perfect curve gives 0.999)
    area_from_1 = trapezoid area under |1 - f(x)|    (a perfect curve gives 0)
MIB ranks edges two ways and reports
    CPR = area_under  of the SIGNED ranking  (higher is better)
    CMD = area_from_1 of the ABSOLUTE ranking (lower is better)
The signed ranking orders edges by HELPS_SIGN[metric] * score, largest first: MIB attributes a
loss (-logit-diff), so its "largest signed score" is the edge that most supports the clean
behaviour; for headdb's kl that is +score, for logit-diff / logprob -score. headdb stores both
curves and all four areas: cpr, cmd (MIB's), cpr_abs (area under f, absolute ranking: what
headdb called cpr before schema v2) and cmd_signed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import torch

from headdb.attribution.batches import make_batches, pad_id_of
from headdb.attribution.circuit import prune, topn_mask
from headdb.attribution.eap import delta_dtype
from headdb.attribution.factored import FactoredHeads
from headdb.attribution.graph import GraphLayout
from headdb.attribution.metrics import HELPS_SIGN, check_metric, metric_values
from headdb.attribution.probe import EMBED, LOGITS_IN, Probe, k_in, mlp_in, mlp_out, q_in, result, v_in

MIB_PERCENTS = (0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0)
RANKINGS = ("signed", "abs")  # MIB's CPR ranking, then its CMD ranking


@dataclass
class CircuitEval:
    metric_clean: float
    metric_corrupted: float
    metric_circuits: list[float]

    def faithfulness(self) -> list[float]:
        d = self.metric_clean - self.metric_corrupted
        return [(m - self.metric_corrupted) / d if d != 0 else float("nan") for m in self.metric_circuits]


@dataclass
class FaithfulnessCurve:
    """One MIB curve under one ranking (signed | abs). n_edges[i] is k_i, the number of
    top-ranked edges selected for percents[i] (before pruning); faithfulness[i] is f of that
    circuit; area_under / area_from_1 as in the module docstring."""

    ranking: str
    percents: list[float]
    n_edges: list[int]
    faithfulness: list[float]
    area_under: float
    area_from_1: float

    def table(self) -> pa.Table:
        """percent, n_edges, faithfulness, ranking: rows for `faithfulness_curve` (add run_id)."""
        return pa.table(
            {
                "percent": pa.array(self.percents, pa.float64()),
                "n_edges": pa.array(self.n_edges, pa.int32()),
                "faithfulness": pa.array(self.faithfulness, pa.float64()),
                "ranking": pa.array([self.ranking] * len(self.percents), pa.string()),
            }
        )


@dataclass
class MIBCurves:
    """Both MIB curves of a run, and its CPR and CMD as MIB defines them."""

    signed: FaithfulnessCurve
    absolute: FaithfulnessCurve

    @property
    def cpr(self) -> float:
        return self.signed.area_under

    @property
    def cmd(self) -> float:
        return self.absolute.area_from_1

    def metrics(self) -> dict[str, float]:
        """run_metrics keys: cpr, cmd (MIB's), cpr_abs and cmd_signed (the other rankings)."""
        return {
            "cpr": self.cpr,
            "cmd": self.cmd,
            "cpr_abs": self.absolute.area_under,
            "cmd_signed": self.signed.area_from_1,
        }

    def table(self) -> pa.Table:
        """Both curves' rows for `faithfulness_curve` (add run_id)."""
        return pa.concat_tables([self.signed.table(), self.absolute.table()])


def _patched_hooks(g: GraphLayout, mask: np.ndarray, embed: torch.Tensor, corrupt: FactoredHeads) -> list:
    """Hooks that run the clean prompt with every edge outside `mask` patched to corrupted:
    `embed` [B, S, D] and `corrupt` (every layer, FactoredHeads) hold the corrupted run's outputs,
    its heads as their attention outputs before o_proj, expanded one layer at a time here."""
    off = ~np.asarray(mask, dtype=bool)
    B, S, D = embed.shape
    # diff[n] = z_n(current) - z_n(corrupted), filled as the forward pass produces node n.
    diff = torch.zeros((g.n_nodes - 1, B, S, D), dtype=embed.dtype, device=embed.device)
    H = g.n_heads
    P, KV = g.n_ports, g.n_kv_heads
    layer_term: dict = {}

    def weights(lo, hi, rows):  # 0/1: exact in any dtype, so in the differences' own
        return torch.as_tensor(off[lo:hi].reshape(rows, -1), dtype=diff.dtype, device=embed.device)

    def rec_embed(t, hook):
        diff[0] = t.float() - embed

    def rec_heads(L):
        def hook(t, hook):
            a = g.head_node(L, 0)
            diff[a : a + H] = t.float().permute(2, 0, 1, 3) - corrupt.heads(L).view(H, B, S, D)

        return hook

    def rec_mlp(L):
        def hook(t, hook):
            diff[g.mlp_node(L)] = t.float() - corrupt.mlp[L]

        return hook

    def attn_port(L, kind):
        n, lo = g.n_src_attn(L), g.attn_offset[L]
        w = weights(lo, lo + P * n, P)  # [P, n]: 1 where the edge is patched
        if not bool(w.any()):
            return None
        sl = {"q": slice(0, H), "k": slice(H, H + KV), "v": slice(H + KV, P)}[kind]

        def hook(t, hook):
            # The sources are earlier layers, complete by now: one einsum serves q, k and v,
            # and is dropped after the third of them (held for every layer it was 29 GB of
            # Qwen3-8B's pass at 1024 tokens). Each hook list serves exactly one forward pass.
            if L not in layer_term:
                layer_term[L] = [torch.einsum("nbsd,pn->bspd", diff[:n], w), 3]
            term = layer_term[L]
            term[1] -= 1
            out = t - term[0][:, :, sl].to(t.dtype)
            if term[1] == 0:
                del layer_term[L]
            return out

        return hook

    def single_port(lo, n):
        w = weights(lo, lo + n, 1)[0]
        if not bool(w.any()):
            return None

        def hook(t, hook):
            return t - torch.einsum("nbsd,n->bsd", diff[:n], w).to(t.dtype)

        return hook

    hooks = [(EMBED, rec_embed)]
    for L in range(g.n_layers):
        for kind, name in (("q", q_in(L)), ("k", k_in(L)), ("v", v_in(L))):
            h = attn_port(L, kind)
            if h is not None:
                hooks.append((name, h))
        hooks.append((result(L), rec_heads(L)))
        h = single_port(g.mlp_offset[L], g.n_src_mlp(L))
        if h is not None:
            hooks.append((mlp_in(L), h))
        hooks.append((mlp_out(L), rec_mlp(L)))
    h = single_port(g.logits_offset, g.n_src_logits)
    if h is not None:
        hooks.append((LOGITS_IN, h))
    if len(hooks) == 1 + 2 * g.n_layers:
        return []  # nothing patched: the plain clean run
    return hooks


def evaluate_circuits(
    loaded, pairs, masks: list[np.ndarray], *, metric: str = "kl", batch_size: int = 8, progress=None, ticker=None
) -> CircuitEval:
    """Mean metric on clean, corrupted and with each edge mask patched as above."""
    from headdb.attribution.result import Ticker

    check_metric(metric, pairs.wrong)
    probe = Probe(loaded)
    g = probe.layout
    batches = make_batches(pairs, batch_size, pad_id_of(loaded.tokenizer), probe.device)
    tick = ticker or Ticker(progress, len(batches) * (2 + len(masks)))
    m_clean = m_corr = 0.0
    m_circ = [0.0] * len(masks)
    with probe.graph_mode(), torch.no_grad():
        for batch in batches:
            # Every run computes logits only at each example's last real token: [B, V].
            _, _, logits_c = probe.capture(batch.clean, last=batch.last, sources=(0, 0))  # logits only
            tick()
            # In a half model's own dtype (lossless: they are its outputs), as EAP-IG holds them;
            # the heads factored (dh numbers per head and token, not D: FactoredHeads).
            B, S = batch.corrupted.shape
            corrupt = FactoredHeads.empty(probe, g.n_layers, B, S, delta_dtype(probe.dtype))
            embed_k, _, logits_k = probe.capture(
                batch.corrupted, last=batch.last, dtype=delta_dtype(probe.dtype), factored=corrupt
            )
            tick()
            clean_lp = torch.log_softmax(logits_c.float(), dim=-1)

            def value(logits):
                return float(metric_values(metric, logits, clean_lp, batch.answer, batch.wrong).sum())

            m_clean += value(logits_c)
            m_corr += value(logits_k)
            for i, mask in enumerate(masks):
                hooks = _patched_hooks(g, mask, embed_k[0], corrupt)
                m_circ[i] += value(probe.run(batch.clean, hooks, batch.last)) if hooks else value(logits_c)
                tick()
            del embed_k, corrupt
    n = len(pairs)
    return CircuitEval(m_clean / n, m_corr / n, [m / n for m in m_circ])


def ranking_scores(scores: np.ndarray, metric: str, ranking: str) -> tuple[np.ndarray, bool]:
    """(values to rank, absolute?) of a ranking: abs -> |score|; signed -> HELPS_SIGN * score."""
    if ranking == "abs":
        return scores, True
    if ranking == "signed":
        return HELPS_SIGN[metric] * scores, False
    raise ValueError(f"unknown ranking {ranking!r}; one of {RANKINGS}")


def curve_masks(
    g: GraphLayout, scores: np.ndarray, percents=MIB_PERCENTS, *, metric: str = "kl", ranking: str = "abs"
) -> tuple[list[int], list[np.ndarray]]:
    """MIB's circuit sizes floor(p/100 * n_edges) and their pruned top-k edge masks."""
    values, absolute = ranking_scores(scores, metric, ranking)
    counts = [int(p / 100.0 * g.n_edges) for p in percents]
    return counts, [prune(g, topn_mask(values, k, absolute))[0] for k in counts]


def curve_from(percents, counts, faith, ranking: str = "abs") -> FaithfulnessCurve:
    x = np.asarray(percents, dtype=np.float64) / 100.0
    f = np.asarray(faith, dtype=np.float64)
    return FaithfulnessCurve(
        ranking=ranking,
        percents=[float(p) for p in percents],
        n_edges=list(counts),
        faithfulness=[float(v) for v in f],
        area_under=float(np.trapezoid(f, x)),
        area_from_1=float(np.trapezoid(np.abs(1.0 - f), x)),
    )


def faithfulness_curve(
    loaded,
    pairs,
    scores: np.ndarray,
    *,
    metric: str = "kl",
    ranking: str = "abs",
    percents=MIB_PERCENTS,
    batch_size: int = 8,
    progress=None,
) -> FaithfulnessCurve:
    """One MIB curve of `scores` under `ranking` (signed | abs)."""
    g = Probe(loaded).layout
    counts, masks = curve_masks(g, scores, percents, metric=metric, ranking=ranking)
    ev = evaluate_circuits(loaded, pairs, masks, metric=metric, batch_size=batch_size, progress=progress)
    return curve_from(percents, counts, ev.faithfulness(), ranking)
