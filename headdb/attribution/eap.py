"""Edge attribution patching: EAP and EAP-IG scores for every edge of the graph.

score(u->v) = (z_u(corrupted) - z_u(clean)) . mean over steps of dL/d(input of v's port),
summed over positions (pads masked) and averaged over examples: hannamw/EAP-IG's sign and
normalisation (with a metric summed, not averaged, over the batch). z_u is u's output (see
probe.py); the gradient is taken at the port tensor, which feeds v alone.

Methods:
    eap     one gradient, at the clean input (alpha = 1).
    eap-ig  integrated gradients over the token embeddings ("EAP-IG-inputs"): the embeddings are
            set to e(alpha) = e_corrupted + alpha * (e_clean - e_corrupted) at m = `steps` points
            and the port gradients are averaged over them. `ig_rule` places the points:
              midpoint  alpha_k = (k + 1/2) / m, k = 0..m-1   (default; second-order accurate)
              left      alpha_k = k / m,         k = 0..m-1   (EAP-IG and MIB; includes the
                                                              corrupted end, excludes clean)
              right     alpha_k = k / m,         k = 1..m     (the study's appendix; includes
                                                              the clean end)
Sign convention: a positive score means that moving u's output along this edge from clean to
corrupted raises L (to first order). Completeness: the edges leaving `input` sum to
(e_corrupted - e_clean) . mean_alpha dL/de(alpha), the IG approximation of
L(corrupted) - L(clean) (every port input contains the embeddings once, so dL/de is the sum of
the port gradients); `completeness_residual` reports the difference, which shrinks with m.

Efficiency: per batch, node outputs are captured once at clean and at corrupted, the port
gradients of the m steps are summed in float32 in place, and the scores of a whole layer come
from one matrix product (its q/k/v ports and its MLP port together, see `block_scores`), never
a loop over edges. Every pass computes logits only at each example's evaluated position
(`Probe.run(..., last)`), not the unembedding at all positions. Per batch it holds
n_nodes + n_ports float32 tensors of [B, S, d_model]; lower batch_size to fit.
"""

from __future__ import annotations

import numpy as np
import torch

from headdb.attribution.batches import Batch, make_batches, pad_id_of
from headdb.attribution.bootstrap import ExampleStats
from headdb.attribution.graph import GraphLayout
from headdb.attribution.metrics import metric_values
from headdb.attribution.result import AttributionResult, Ticker
from headdb.attribution.probe import EMBED, LOGITS_IN, Probe, k_in, mlp_in, q_in, v_in
from headdb.errors import UserError


def alphas_for(method: str, steps: int, ig_rule: str = "midpoint") -> list[float]:
    """The interpolation points alpha of `method` (eap: the clean point only)."""
    if method == "eap":
        return [1.0]
    if ig_rule == "left":
        return [k / steps for k in range(steps)]
    if ig_rule == "right":
        return [k / steps for k in range(1, steps + 1)]
    return [(k + 0.5) / steps for k in range(steps)]


def passes(method: str, steps: int, n_batches: int) -> int:
    """Forward passes `eap_scores` makes (for progress totals; the same for every ig_rule)."""
    return n_batches * (2 + len(alphas_for(method, steps)))


def _port_gradients(probe: Probe, batch: Batch, emb_clean, emb_corr, alphas, metric, clean_logprobs, tick) -> dict:
    """Sum over alphas of dL/d(port input), float32, keyed ("q"|"k"|"v"|"m", layer) and "l"."""
    g = probe.layout
    acc: dict = {}
    d_emb = emb_clean.float() - emb_corr.float()
    for alpha in alphas:
        if alpha == 1.0:
            x = emb_clean.detach().clone()
        else:
            x = (emb_corr.float() + alpha * d_emb).to(emb_clean.dtype)
        x.requires_grad_(True)
        taps: dict = {}

        def tap(key):
            def hook(t, hook):
                # A fresh view: gradients w.r.t. it count only this reader's use of the tensor.
                y = t.view_as(t)
                taps[key] = y
                return y

            return hook

        hooks = [(EMBED, lambda t, hook: x)]
        for L in range(g.n_layers):
            hooks += [
                (q_in(L), tap(("q", L))),
                (k_in(L), tap(("k", L))),
                (v_in(L), tap(("v", L))),
                (mlp_in(L), tap(("m", L))),
            ]
        hooks.append((LOGITS_IN, tap("l")))
        with torch.enable_grad():
            logits = probe.run(batch.clean, hooks, batch.last)  # [B, V] at the last tokens
            value = metric_values(metric, logits, clean_logprobs, batch.answer, batch.wrong).sum()
            keys = list(taps)
            grads = torch.autograd.grad(value, [taps[k] for k in keys], allow_unused=True)
        for key, grad in zip(keys, grads):
            if grad is None:
                continue
            if key in acc:
                acc[key] += grad.float()
            else:
                acc[key] = grad.float()
        del logits, value, grads
        taps, x = {}, None  # free this step's graph before the next one is built
        tick()
    return acc


def _port_rows(grads: dict, layer: int) -> torch.Tensor:
    """[P + 1, B*S*D]: the gradients of layer's q, k, v ports (in edge order) and, last, its
    MLP port, one row per port, so that a layer's scores are ONE matrix product."""
    q, k, v, m = (grads[(kind, layer)] for kind in ("q", "k", "v", "m"))
    # Port-major [P + 1, B, S, D]; cat copies once into contiguous memory.
    rows = torch.cat([q.permute(2, 0, 1, 3), k.permute(2, 0, 1, 3), v.permute(2, 0, 1, 3), m[None]], dim=0)
    return rows.reshape(rows.shape[0], -1)


def block_scores(layout: GraphLayout, delta: torch.Tensor, grads: dict) -> torch.Tensor:
    """Edge scores [n_edges] (float32, summed over batch and positions) from node-output
    differences delta [N_src, B, S, D] and port gradients.

    score(u -> port) = sum over b, s, d of delta[u] * grad[port]: with delta flattened to
    [N_src, B*S*D] and the ports to rows, a destination block is a plain GEMM. (einsum over
    these shapes was 5-18x slower on CPU than reshape + matmul.) Per layer the q/k/v ports and
    the MLP port share one GEMM against the MLP's sources delta[:n_src_mlp] (the attention
    ports read a prefix of them, delta[:n_src_attn]; the extra columns, the layer's own heads,
    are dropped), so delta is read once per layer.
    """
    g = layout
    d2 = delta.reshape(delta.shape[0], -1)  # [N_src, B*S*D], a view (delta is contiguous)
    out = torch.zeros(g.n_edges, dtype=torch.float32, device=delta.device)
    P = g.n_ports
    for L in range(g.n_layers):
        n, nm = g.n_src_attn(L), g.n_src_mlp(L)
        blk = _port_rows(grads, L) @ d2[:nm].T  # [P + 1, nm]
        # Attention edges are laid out port-major: (port p, source u) at offset + p * n + u.
        out[g.attn_offset[L] : g.attn_offset[L] + P * n] = blk[:P, :n].reshape(-1)
        out[g.mlp_offset[L] : g.mlp_offset[L] + nm] = blk[P]
    out[g.logits_offset :] = d2[: g.n_src_logits] @ grads["l"].reshape(-1)
    return out


def example_scores(layout: GraphLayout, delta: torch.Tensor, grads: dict) -> torch.Tensor:
    """Per-example edge scores [B, n_edges] float32 (summed over positions): `block_scores`
    with the batch kept apart. Each layer is one batched product over the B examples,
    [B, P + 1, S*D] @ [B, S*D, n_src_mlp], of the same FLOPs as block_scores' single GEMM; the
    operands are strided views of the same buffers (no copies)."""
    g = layout
    B = delta.shape[1]
    d3 = delta.reshape(delta.shape[0], B, -1)  # [N_src, B, S*D], a view
    out = torch.zeros((B, g.n_edges), dtype=torch.float32, device=delta.device)
    P = g.n_ports
    for L in range(g.n_layers):
        n, nm = g.n_src_attn(L), g.n_src_mlp(L)
        rows = _port_rows(grads, L).view(P + 1, B, -1)
        blk = torch.bmm(rows.transpose(0, 1), d3[:nm].permute(1, 2, 0))  # [B, P + 1, nm]
        out[:, g.attn_offset[L] : g.attn_offset[L] + P * n] = blk[:, :P, :n].reshape(B, -1)
        out[:, g.mlp_offset[L] : g.mlp_offset[L] + nm] = blk[:, P]
    gl = grads["l"].reshape(B, 1, -1)
    out[:, g.logits_offset :] = torch.bmm(gl, d3[: g.n_src_logits].permute(1, 2, 0))[:, 0]
    return out


def eap_scores(
    loaded,
    pairs,
    *,
    method: str = "eap-ig",
    metric: str = "kl",
    steps: int = 5,
    ig_rule: str = "midpoint",
    batch_size: int = 8,
    progress=None,
    ticker: Ticker | None = None,
    rank: str = "abs-mean",
    bootstrap: int = 0,
    seed: int = 0,
) -> AttributionResult:
    """EAP (`method="eap"`) or EAP-IG (`"eap-ig"`, `steps` points placed by `ig_rule`, one of
    IG_RULES; eap ignores it) scores of every edge.

    loaded: headdb.checkpoints.loading.LoadedModel; pairs: headdb.attribution.tasks.EncodedPairs.
    progress: optional callable(done, total) in forward passes.
    rank / bootstrap / seed: with rank="mean-abs" or bootstrap > 0 the scores are kept per
    example inside each batch (`example_scores`) and the result also carries mean_abs and
    `bootstrap` replicate means (headdb.attribution.bootstrap); otherwise per-example scores
    are never formed. The mean is the same either way up to float summation order.
    """
    if len(pairs) == 0:
        raise UserError("the task has no items")
    alphas = alphas_for(method, steps, ig_rule)
    probe = Probe(loaded)
    g = probe.layout
    batches = make_batches(pairs, batch_size, pad_id_of(loaded.tokenizer), probe.device)
    tick = ticker or Ticker(progress, passes(method, steps, len(batches)))
    total = np.zeros(g.n_edges, dtype=np.float64)
    m_clean = m_corr = 0.0
    stats = (
        ExampleStats(g.n_edges, pairs.item_ids, rank=rank, bootstrap=bootstrap, seed=seed, device=probe.device)
        if rank == "mean-abs" or bootstrap
        else None
    )
    with probe.graph_mode():
        for batch in batches:
            # logits_c / logits_k: [B, V] at each example's last real token.
            out_c, emb_c, logits_c = probe.capture(batch.clean, last=batch.last)
            tick()
            out_k, emb_k, logits_k = probe.capture(batch.corrupted, last=batch.last)
            tick()
            last_c = logits_c.float()
            clean_lp = torch.log_softmax(last_c, dim=-1)
            m_clean += float(metric_values(metric, last_c, clean_lp, batch.answer, batch.wrong).sum())
            m_corr += float(metric_values(metric, logits_k, clean_lp, batch.answer, batch.wrong).sum())
            del logits_c, logits_k
            # corrupted - clean, in place (frees memory)
            delta = out_k.sub_(out_c).mul_(batch.mask[None, :, :, None])
            del out_c
            grads = _port_gradients(probe, batch, emb_c, emb_k, alphas, metric, clean_lp, tick)
            if stats is None:
                total += (block_scores(g, delta, grads) / len(alphas)).double().cpu().numpy()
            else:
                per_example = example_scores(g, delta, grads).div_(len(alphas))
                total += per_example.sum(0).double().cpu().numpy()
                stats.add(per_example, batch.item_ids)
                del per_example
            del delta, grads
    n = len(pairs)
    edge = (total / n).astype(np.float32)
    node = np.bincount(g.edge_src, weights=total / n, minlength=g.n_nodes).astype(np.float32)
    node[g.logits_node] = np.nan
    return AttributionResult(
        layout=g,
        method=method,
        metric=metric,
        steps=len(alphas),
        n_examples=n,
        edge_scores=edge,
        node_scores=node,
        metric_clean=m_clean / n,
        metric_corrupted=m_corr / n,
        ig_rule=ig_rule if method == "eap-ig" else None,
        **(stats.fields(n) if stats is not None else {}),
    )
