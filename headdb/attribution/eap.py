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

Efficiency: per batch, node outputs are captured once at clean and at corrupted, and their
differences are written in place (`delta_dtype`: float32, or a half-precision model's own dtype,
as hannamw/EAP-IG holds them). Each IG step is a dense forward (the q/k/v port gradients come from the
projections' gradients, see `PortWeights.port_gradients`, not from per-head copies of the
residual) and one backward, during which each layer's port gradients are formed as the backward
reaches it. The scores of a whole layer come from one matrix product (its q/k/v ports and its
MLP port together, see `add_layer_scores`), never a loop over edges: once per batch from the
gradients summed over the steps (scoring "summed"), or once per step without holding the sums
("per-step", when the sums would not fit; headdb.attribution.memory plans which). Every pass
computes logits only at each example's evaluated position (`Probe.run(..., last)`), not the
unembedding at all positions. Where the plan asks, the last layers' head differences are held
factored, dh wide instead of D, and expanded as they are read (headdb.attribution.factored).
"""

from __future__ import annotations

import numpy as np
import torch

from headdb.attribution.batches import Batch, make_batches, pad_id_of
from headdb.attribution.bootstrap import ExampleStats
from headdb.attribution.factored import FactoredHeads
from headdb.attribution.graph import GraphLayout
from headdb.attribution.metrics import metric_values
from headdb.attribution.result import AttributionResult, Ticker
from headdb.attribution.probe import EMBED, LOGITS_IN, Probe, attn_in, mlp_in, proj_out
from headdb.errors import UserError


SCORINGS = ("summed", "per-step")


def delta_dtype(model_dtype: torch.dtype) -> torch.dtype:
    """The dtype of the node-output differences: the model's own when it is half precision.

    The clean and corrupted outputs are already rounded to the model's dtype, so one more
    rounding of their difference adds an error no larger than theirs, and halves the largest
    buffer of a run (benchmarks/RESULTS.md, "Real shapes"). The scoring products then run in
    that dtype too (the gradients are cast to it; each product is accumulated in float32 by the
    matmul and added to float32 scores), which is also what keeps them fast on a GPU."""
    return model_dtype if model_dtype in (torch.bfloat16, torch.float16) else torch.float32


def alphas_for(method: str, steps: int, ig_rule: str = "midpoint") -> list[float]:
    """The interpolation points alpha of `method` (eap: the clean point only)."""
    if method == "eap":
        return [1.0]
    if ig_rule == "left":
        return [k / steps for k in range(steps)]
    if ig_rule == "right":
        return [k / steps for k in range(1, steps + 1)]
    return [(k + 0.5) / steps for k in range(steps)]


def passes(method: str, steps: int, n_batches: int, chunks: int = 1) -> int:
    """Forward passes `eap_scores` makes (for progress totals; the same for every ig_rule)."""
    return n_batches * chunks * (2 + len(alphas_for(method, steps)))


def _ig_steps(
    probe: Probe,
    batch: Batch,
    emb_clean,
    emb_corr,
    alphas,
    metric,
    clean_logprobs,
    delta,
    out,
    tick,
    scoring,
    first: int = 0,
    factored: FactoredHeads | None = None,
) -> None:
    """Add to `out` ([n_edges], or [B, n_edges] per example) the edge scores of every IG step,
    summed over the steps: delta . dL/d(port input) at each alpha.

    Each step is a dense forward (no per-head forks, see `PortWeights.port_gradients`) and one
    backward, during which every layer's port gradients are formed as soon as the backward
    reaches them: the MLP port's first, then its q/k/v projections', which become the per-head
    port gradients. `scoring` (SCORINGS) says what becomes of them:
        summed    added to a float32 sum per layer, scored once after the last step (one GEMM
                  per layer and batch; holds every layer's summed gradients)
        per-step  scored at once, then dropped (m GEMMs per layer and batch; a step never
                  holds more than one layer's gradients)
    The scores are the same up to float summation order. delta holds the differences of
    sources first, first + 1, ... (all of them, or one chunk: `source_chunks`); only their edges
    are scored; `factored` (when given) the last layers' (factored.FactoredHeads).
    """
    g = probe.layout
    P = g.n_ports
    B, S = batch.clean.shape
    weights = [probe.port_weights(L) for L in range(g.n_layers)]
    d_emb = emb_clean.float() - emb_corr.float()
    summed: dict = {}  # layer or "l" -> the float32 port gradients summed over the steps

    def score(key, rows):
        if key == "l":
            add_logits_scores(g, delta, rows, out, first)
            if factored is not None:
                factored.add_logits_scores(g, rows, out)
        else:
            add_layer_scores(g, delta, rows, key, out, first)
            if factored is not None:
                factored.add_layer_scores(g, rows, key, out)

    def sink(key, rows):
        if scoring == "per-step":
            score(key, rows)
        elif key in summed:
            summed[key] += rows
        else:  # a layer's rows are this engine's own tensor; the logits' gradient is autograd's
            summed[key] = rows.to(torch.float32, copy=key == "l")

    for alpha in alphas:
        if alpha == 1.0:
            x = emb_clean.detach().clone()
        else:
            x = (emb_corr.float() + alpha * d_emb).to(emb_clean.dtype)
        x.requires_grad_(True)
        resid: dict = {}  # layer -> the attention's pre-norm input, kept until the layer is scored
        pending: dict = {}  # layer -> {"q" | "k" | "v" | "m": gradient}

        def score_layer(L):
            got = pending.pop(L)
            rows = torch.empty((P + 1, B, S, emb_clean.shape[-1]), dtype=torch.float32, device=x.device)
            weights[L].port_gradients(resid.pop(L), got, rows[:P])
            rows[P] = got["m"]
            sink(L, rows)

        def on_grad(L, kind):
            def hook(grad):
                got = pending.setdefault(L, {})
                got[kind] = grad
                if len(got) == 4:
                    score_layer(L)

            return hook

        def tap(L, kind):
            def hook(t, hook):
                # A fresh view: gradients w.r.t. it count only this reader's use of the tensor.
                y = t.view_as(t)
                y.register_hook(on_grad(L, kind))
                return y

            return hook

        def keep(L):
            def hook(t, hook):
                resid[L] = t

            return hook

        def logits_tap(t, hook):
            y = t.view_as(t)
            y.register_hook(lambda grad: sink("l", grad))
            return y

        hooks = [(EMBED, lambda t, hook: x)]
        for L in range(g.n_layers):
            hooks += [
                (attn_in(L), keep(L)),
                (proj_out(L, "q"), tap(L, "q")),
                (proj_out(L, "k"), tap(L, "k")),
                (proj_out(L, "v"), tap(L, "v")),
                (mlp_in(L), tap(L, "m")),
            ]
        hooks.append((LOGITS_IN, logits_tap))
        with torch.enable_grad(), probe.without_port_forks():
            logits = probe.run(batch.clean, hooks, batch.last)  # [B, V] at the last tokens
            value = metric_values(metric, logits, clean_logprobs, batch.answer, batch.wrong).sum()
            torch.autograd.grad(value, [x])
        if resid:  # every layer's four ports feed the metric, so each layer must have been scored
            raise RuntimeError(f"layers {sorted(resid)} got no gradient at some of their ports")
        del logits, value
        x = None  # free this step's graph before the next one is built
        tick()
    for key, rows in summed.items():
        score(key, rows)


def add_layer_scores(
    layout: GraphLayout, delta: torch.Tensor, rows: torch.Tensor, layer: int, out: torch.Tensor, first: int = 0
):
    """out += the scores of layer's attention and MLP edges from the sources delta holds.

    delta [N, B, S, D]: the node-output differences (`delta_dtype`) of sources first ..
    first + N - 1 in node order (all N_src of them, or one chunk, see `source_chunks`); rows
    [P + 1, B, S, D]: the gradients at the layer's q, k, v ports (in edge order) and, last, its
    MLP port, cast to delta's dtype for the product. out: float32 [n_edges] (summed over the
    batch) or [B, n_edges].

    score(u -> port) = sum over b, s, d of delta[u] * grad[port]: with delta flattened to
    [N, B*S*D], a destination block is a plain GEMM. (einsum over these shapes was 5-18x
    slower on CPU than reshape + matmul.) The q/k/v ports and the MLP port share one GEMM
    against the MLP's sources (the attention ports read a prefix of them; the extra columns, the
    layer's own heads, are dropped), so delta is read once per layer. Per example the same FLOPs
    run as one batched product over the B rows, on strided views of the same buffers (no copies).
    """
    g, L = layout, layer
    P = g.n_ports
    n, nm = g.n_src_attn(L), g.n_src_mlp(L)
    top_m, top_a = min(first + delta.shape[0], nm), min(first + delta.shape[0], n)
    if top_m <= first:  # every source of this chunk lies downstream of the layer
        return
    attn, mlp = slice(g.attn_offset[L], g.attn_offset[L] + P * n), slice(g.mlp_offset[L], g.mlp_offset[L] + nm)
    k, ka = top_m - first, max(0, top_a - first)
    kg = gemm_columns(delta, k)
    rows = rows.to(delta.dtype)
    # Attention edges are laid out port-major: (port p, source u) at offset + p * n + u.
    if out.dim() == 1:
        blk = rows.reshape(P + 1, -1) @ delta.reshape(delta.shape[0], -1)[:kg].T  # [P + 1, kg]
        out[attn].view(P, n)[:, first : first + ka] += blk[:P, :ka]
        out[mlp][first:top_m] += blk[P, :k]
        return
    B = delta.shape[1]
    d3 = delta.reshape(delta.shape[0], B, -1)  # [N, B, S*D], a view
    blk = torch.bmm(rows.view(P + 1, B, -1).transpose(0, 1), d3[:kg].permute(1, 2, 0))  # [B, P + 1, kg]
    out[:, attn].view(B, P, n)[:, :, first : first + ka] += blk[:, :P, :ka]
    out[:, mlp][:, first:top_m] += blk[:, P, :k]


GEMM_ALIGN = 8  # output columns: 16 bytes of bf16


def gemm_columns(delta: torch.Tensor, k: int, align: int | None = None) -> int:
    """How many of delta's rows a layer's scoring product reads to score its first k: k rounded
    up to a multiple of `align` where delta holds that many (the extra columns, later sources,
    are computed and dropped); `align` is GEMM_ALIGN on CUDA, 1 (k itself, and a CPU's bits)
    elsewhere.

    On one H200, at Qwen3-8B's shape and 1024 tokens, [49, K] @ [K, k] in bf16 (K = S * D) ran at
    121 TFLOP/s for k = 594 and at 32-34 for k = 297 and 1189: an odd k leaves the output rows
    unaligned, and cuBLAS then takes slower kernels (benchmarks/bench_scoring_gemm.py;
    benchmarks/RESULTS.md, "One command for a GPU"). A multiple of 8 aligns them to 16 bytes."""
    if align is None:
        align = GEMM_ALIGN if delta.is_cuda else 1
    up = -(-k // align) * align
    return up if up <= delta.shape[0] else k


def add_logits_scores(layout: GraphLayout, delta: torch.Tensor, grad: torch.Tensor, out: torch.Tensor, first: int = 0):
    """out += the scores of the edges into logits from the sources delta holds, from the
    gradient at the final norm's input [B, S, D] (see `add_layer_scores` for delta, first, out)."""
    g = layout
    k = min(first + delta.shape[0], g.n_src_logits) - first
    at = slice(g.logits_offset + first, g.logits_offset + first + k)
    if out.dim() == 1:
        out[at] += delta.reshape(delta.shape[0], -1)[:k] @ grad.to(delta.dtype).reshape(-1)
        return
    B = delta.shape[1]
    d3 = delta.reshape(delta.shape[0], B, -1)
    out[:, at] += torch.bmm(grad.to(delta.dtype).reshape(B, 1, -1), d3[:k].permute(1, 2, 0))[:, 0]


def source_chunks(n_src: int, chunks: int) -> list[tuple[int, int]]:
    """`chunks` contiguous ranges [lo, hi) of the n_src source nodes, sizes differing by at most
    one (memory.estimate counts the largest, ceil(n_src / chunks))."""
    chunks = max(1, min(int(chunks), n_src))
    cuts = [n_src * i // chunks for i in range(chunks + 1)]
    return list(zip(cuts[:-1], cuts[1:]))


def block_scores(layout: GraphLayout, delta: torch.Tensor, grads: dict) -> torch.Tensor:
    """Edge scores [n_edges] (float32, summed over batch and positions) from node-output
    differences and a dict of port gradients: ("q"|"k"|"v", layer) [B, S, heads, D],
    ("m", layer) and "l" [B, S, D]. The engine scores a layer at a time during each backward
    (`add_layer_scores`); this is the same for gradients held all at once."""
    g = layout
    out = torch.zeros(g.n_edges, dtype=torch.float32, device=delta.device)
    for L in range(g.n_layers):
        q, k, v, m = (grads[(kind, L)] for kind in ("q", "k", "v", "m"))
        rows = torch.cat([q.permute(2, 0, 1, 3), k.permute(2, 0, 1, 3), v.permute(2, 0, 1, 3), m[None]], dim=0)
        add_layer_scores(g, delta, rows.float(), L, out)
    add_logits_scores(g, delta, grads["l"], out)
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
    scoring: str = "summed",
    chunks: int = 1,
    factored: int = 0,
) -> AttributionResult:
    """EAP (`method="eap"`) or EAP-IG (`"eap-ig"`, `steps` points placed by `ig_rule`, one of
    IG_RULES; eap ignores it) scores of every edge.

    loaded: headdb.checkpoints.loading.LoadedModel; pairs: headdb.attribution.tasks.EncodedPairs.
    progress: optional callable(done, total) in forward passes.
    rank / bootstrap / seed: with rank="mean-abs" or bootstrap > 0 the scores are kept per
    example inside each batch (`example_scores`) and the result also carries mean_abs and
    `bootstrap` replicate means (headdb.attribution.bootstrap); otherwise per-example scores
    are never formed. The mean is the same either way up to float summation order.
    scoring: "summed" or "per-step" (see `_ig_steps`; headdb.attribution.memory picks it).
    chunks: score the sources in this many contiguous chunks (`source_chunks`), each with its own
    captures and IG steps: chunks times the passes for 1 / chunks of the differences' memory
    (memory.choose takes more than one only when one pair would not fit otherwise).
    factored: hold the head differences of the last `factored` layers factored (FactoredHeads:
    dh / D of the memory, expanded again as each destination reads them; the whole graph's
    sources at once, so chunks must be 1). The scores are the same up to float rounding.
    """
    if len(pairs) == 0:
        raise UserError("the task has no items")
    if factored and chunks > 1:
        raise ValueError("factored head differences hold the whole graph's sources: chunks must be 1")
    alphas = alphas_for(method, steps, ig_rule)
    probe = Probe(loaded)
    g = probe.layout
    batches = make_batches(pairs, batch_size, pad_id_of(loaded.tokenizer), probe.device)
    tick = ticker or Ticker(progress, passes(method, steps, len(batches), chunks))
    total = np.zeros(g.n_edges, dtype=np.float64)
    m_clean = m_corr = 0.0
    stats = (
        ExampleStats(g.n_edges, pairs.item_ids, rank=rank, bootstrap=bootstrap, seed=seed, device=probe.device)
        if rank == "mean-abs" or bootstrap
        else None
    )
    with probe.graph_mode():
        for batch in batches:
            shape = (g.n_edges,) if stats is None else (batch.clean.shape[0], g.n_edges)
            scores = torch.zeros(shape, dtype=torch.float32, device=probe.device)
            # One pass over the sources, or several over chunks of them when their differences
            # would not fit at once (memory.choose): each chunk captures and steps again.
            for i, sources in enumerate(source_chunks(g.n_nodes - 1, chunks)):
                B, S = batch.clean.shape
                fact = FactoredHeads.empty(probe, factored, B, S, delta_dtype(probe.dtype)) if factored else None
                # logits_c / logits_k: [B, V] at each example's last real token.
                out, emb_c, logits_c = probe.capture(
                    batch.clean, last=batch.last, dtype=delta_dtype(probe.dtype), sources=sources, factored=fact
                )
                tick()
                # corrupted - clean, written over the clean outputs (one buffer, not two)
                delta, emb_k, logits_k = probe.capture(
                    batch.corrupted, last=batch.last, minus=out, sources=sources, factored=fact
                )
                tick()
                last_c = logits_c.float()
                clean_lp = torch.log_softmax(last_c, dim=-1)
                if i == 0:
                    m_clean += float(metric_values(metric, last_c, clean_lp, batch.answer, batch.wrong).sum())
                    m_corr += float(metric_values(metric, logits_k, clean_lp, batch.answer, batch.wrong).sum())
                del logits_c, logits_k
                delta.mul_(batch.mask[None, :, :, None])
                if fact is not None:
                    fact.mask_(batch.mask)
                del out
                _ig_steps(
                    probe, batch, emb_c, emb_k, alphas, metric, clean_lp, delta, scores, tick, scoring, sources[0], fact
                )
                del delta, fact
            scores.div_(len(alphas))
            if stats is None:
                total += scores.double().cpu().numpy()
            else:
                total += scores.sum(0).double().cpu().numpy()
                stats.add(scores, batch.item_ids)
            del scores
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
