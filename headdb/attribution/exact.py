"""Exact activation patching: the ground truth EAP/EAP-IG approximate (small models only).

Node patching: run the clean prompt with one node's output (a head's `hook_result` slice or
an MLP's output) replaced by its output on the corrupted prompt; the node's effect is
L(patched) - L(clean). `input`'s effect is L(corrupted) - L(clean).

Edge patching: run the clean prompt with ONE destination port's input changed to
clean_input + (z_u(corrupted) - z_u(clean)), i.e. the destination receives u's corrupted
output along this edge while every other path stays clean; the edge's score is
L(patched) - L(clean). Same sign convention as EAP/EAP-IG (hannamw/EAP-IG's `exact` method
too), so the scores are directly comparable: EAP is this effect to first order.

Cost: one forward pass per node (node patching) and per edge (edge patching) per batch, so
use it to validate on small models; `exact_scores` refuses graphs with more than
`max_edges` edges.
"""

from __future__ import annotations

import numpy as np
import torch

from headdb.attribution.batches import make_batches, pad_id_of
from headdb.attribution.metrics import metric_values
from headdb.attribution.result import AttributionResult, Ticker
from headdb.attribution.probe import LOGITS_IN, Probe, k_in, mlp_in, mlp_out, q_in, result, v_in
from headdb.errors import UserError


def _port_hook(layout, edge: int):
    """(hook name, slot index or None) of the destination port of `edge`."""
    g = layout
    port = g.edge_port[edge]
    dst = int(g.edge_dst[edge])
    if g.node_kind[dst] == "logits":
        return LOGITS_IN, None
    layer = int(g.node_layer[dst])
    if port == "":
        return mlp_in(layer), None
    slot = int(g.node_head[dst])
    return {"q": q_in, "k": k_in, "v": v_in}[port](layer), slot


def _node_hook(layout, node: int, corrupt_out: torch.Tensor, dtype):
    g = layout
    layer = int(g.node_layer[node])
    value = corrupt_out[node].to(dtype)
    if g.node_kind[node] == "mlp":
        return mlp_out(layer), (lambda t, hook: value)
    head = int(g.node_head[node])

    def patch(t, hook):
        t = t.clone()
        t[:, :, head] = value
        return t

    return result(layer), patch


def _edge_hook(layout, edge: int, delta: torch.Tensor, dtype):
    """delta: z(corrupted) - z(clean) per source node."""
    name, slot = _port_hook(layout, edge)
    d = delta[int(layout.edge_src[edge])].to(dtype)
    if slot is None:
        return name, (lambda t, hook: t + d)

    def patch(t, hook):
        t = t.clone()
        t[:, :, slot] = t[:, :, slot] + d
        return t

    return name, patch


def exact_passes(n_batches: int, n_edges: int, n_nodes: int) -> int:
    """Forward passes `exact_scores` makes (for progress totals)."""
    return n_batches * (2 + n_edges + n_nodes)


def exact_scores(
    loaded,
    pairs,
    *,
    metric: str = "logit-diff",
    batch_size: int = 8,
    edges: bool = True,
    max_edges: int = 20000,
    progress=None,
    ticker=None,
):
    """Exact node (and, with edges=True, edge) patching effects as an AttributionResult.

    node_scores hold node-patching effects; edge_scores hold edge-patching effects (zeros
    when edges=False). Means over examples of L(patched) - L(clean), EAP-IG's sign.
    """
    probe = Probe(loaded)
    g = probe.layout
    if edges and g.n_edges > max_edges:
        raise UserError(
            f"exact edge patching needs one forward pass per edge ({g.n_edges} here, "
            f"limit {max_edges}); use --method eap-ig for a model this size"
        )
    batches = make_batches(pairs, batch_size, pad_id_of(loaded.tokenizer), probe.device)
    nodes = [n for n in range(1, g.n_nodes - 1)]
    edge_list = range(g.n_edges) if edges else range(0)
    tick = ticker or Ticker(progress, exact_passes(len(batches), len(edge_list), len(nodes)))
    node_sum = np.zeros(g.n_nodes, dtype=np.float64)
    edge_sum = np.zeros(g.n_edges, dtype=np.float64)
    m_clean = m_corr = 0.0

    def measure(batch, hook, clean_lp, base):
        with torch.no_grad():
            logits = probe.run(batch.clean, [hook], batch.last)  # [B, V] at the last tokens
        tick()
        m = metric_values(metric, logits, clean_lp, batch.answer, batch.wrong)
        return float((m - base).sum())

    with probe.graph_mode():
        for batch in batches:
            # Logits only at each example's last real token: [B, V].
            out_c, _, logits_c = probe.capture(batch.clean, last=batch.last)
            tick()
            out_k, _, logits_k = probe.capture(batch.corrupted, last=batch.last)
            tick()
            last_c = logits_c.float()
            clean_lp = torch.log_softmax(last_c, dim=-1)
            base = metric_values(metric, last_c, clean_lp, batch.answer, batch.wrong)
            corr = metric_values(metric, logits_k, clean_lp, batch.answer, batch.wrong)
            m_clean += float(base.sum())
            m_corr += float(corr.sum())
            node_sum[0] += float((corr - base).sum())
            for node in nodes:
                node_sum[node] += measure(batch, _node_hook(g, node, out_k, probe.dtype), clean_lp, base)
            delta = out_k - out_c
            for edge in edge_list:
                edge_sum[edge] += measure(batch, _edge_hook(g, edge, delta, probe.dtype), clean_lp, base)
            del out_c, out_k, delta
    n = len(pairs)
    node = (node_sum / n).astype(np.float32)
    node[g.logits_node] = np.nan
    return AttributionResult(
        layout=g,
        method="exact",
        metric=metric,
        steps=0,
        n_examples=n,
        edge_scores=(edge_sum / n).astype(np.float32),
        node_scores=node,
        metric_clean=m_clean / n,
        metric_corrupted=m_corr / n,
    )
