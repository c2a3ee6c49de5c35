"""Where graph nodes and ports live in a TransformerBridge, and runs that read or write them.

Node outputs (what a node writes into the residual stream):
    input     `hook_embed`                      token embeddings            [B, S, D]
    a{L}.h{h} `blocks.L.attn.hook_result`[..,h] the head's o_proj write      [B, S, H, D]
    m{L}      `blocks.L.mlp.hook_out`           the MLP output              [B, S, D]
The residual stream is exactly their sum (Qwen2/Qwen3/Llama have no o_proj or MLP bias), so
a destination's input is the sum of its in-edges' sources.

Destination ports (the residual as ONE reader sees it, before its norm):
    a{L} q/k/v  `blocks.L.attn.hook_{q,k,v}_input`  the bridge's per-head forks of the pre-LN
                residual, [B, S, H, D] for q and [B, S, KV, D] for k and v (GQA: one per kv
                head); each fork is then normed and projected for that head only
    m{L}        `blocks.L.ln2.hook_in`              the input of the MLP's pre-norm only (the
                residual skip around it reads the tensor before this hook)
    logits      `ln_final.hook_in`                  the input of the final norm
Because each port tensor feeds exactly one reader, the gradient at it is dL/d(that reader's
input) and editing it patches only that reader. `use_attn_result` and `use_split_qkv_input`
make the bridge fire these hooks; `graph_mode()` switches them on for the run (and freezes the
parameters so no weight gradients are built) and restores the previous state afterwards.

Patching (faithfulness, exact scores) edits the forks. Gradients do not need them: the IG steps
run the dense attention (`without_port_forks`) and form each q/k/v port's gradient from its
head's projection gradient (`PortWeights`), which holds one residual per layer for the backward
where the forks held H + 2 KV normed copies.
"""

from __future__ import annotations

import functools
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from headdb.attribution.graph import GraphLayout, build_layout

if TYPE_CHECKING:
    from headdb.attribution.factored import FactoredHeads

EMBED = "hook_embed"
LOGITS_IN = "ln_final.hook_in"


def q_in(layer: int) -> str:
    return f"blocks.{layer}.attn.hook_q_input"


def k_in(layer: int) -> str:
    return f"blocks.{layer}.attn.hook_k_input"


def v_in(layer: int) -> str:
    return f"blocks.{layer}.attn.hook_v_input"


def result(layer: int) -> str:
    return f"blocks.{layer}.attn.hook_result"


def z_out(layer: int) -> str:
    """Every head's attention output before o_proj, [B, S, H, dh] (factored.FactoredHeads)."""
    return f"blocks.{layer}.attn.hook_z"


def mlp_in(layer: int) -> str:
    return f"blocks.{layer}.ln2.hook_in"


def attn_in(layer: int) -> str:
    """The residual as the attention block's pre-norm reads it (all q/k/v readers at once)."""
    return f"blocks.{layer}.ln1.hook_in"


def proj_out(layer: int, kind: str) -> str:
    """The q, k or v projection's output, [B, S, heads, dh] (before Qwen3's q/k norms)."""
    return f"blocks.{layer}.attn.{kind}.hook_out"


def mlp_out(layer: int) -> str:
    return f"blocks.{layer}.mlp.hook_out"


@dataclass(frozen=True)
class PortWeights:
    """One attention layer's pre-norm (RMSNorm: weight, eps) and q/k/v projections, per head
    [heads, dh, D]."""

    norm_weight: torch.Tensor
    eps: float
    q: torch.Tensor
    k: torch.Tensor
    v: torch.Tensor

    @torch.no_grad()  # x is part of the step's graph; what is made from it here is not
    def port_gradients(self, x: torch.Tensor, grads: dict, out: torch.Tensor) -> torch.Tensor:
        """Write into out [H + 2 KV, B, S, D] (float32) the gradient at every q/k/v port of the
        layer: what dL/d(port input) would be if each head read its own copy of the residual x
        [B, S, D] (the attention's pre-norm input). grads: "q"/"k"/"v" -> dL/d(projection
        output), [B, S, heads, dh].

        The bridge's per-head forks (`use_split_qkv_input`) compute the same through autograd,
        but their forward keeps H + 2 KV normed copies of the residual per layer for the
        backward. Here each head's projection gradient goes back through its own rows of
        W_q/W_k/W_v (one batched product per kind) and then through the RMSNorm, whose input
        the dense forward keeps anyway:
            y = w * x * r, r = rsqrt(mean(x^2) + eps), u = dL/dy
            dL/dx = r * (w u - x r * mean(w u * x r))
        """
        B, S, D = x.shape
        start = 0
        for kind in ("q", "k", "v"):
            w = getattr(self, kind)
            n, dh = w.shape[0], w.shape[1]
            g = grads[kind].reshape(B * S, n, dh).transpose(0, 1)  # [n, B*S, dh]
            rows = out[start : start + n].view(n, B * S, D)
            if w.dtype == torch.float32:
                torch.bmm(g, w, out=rows)
            else:  # in the model's dtype, as the backward of its own projection would run
                rows.copy_(torch.bmm(g.to(w.dtype), w))
            start += n
        xf = x.float()
        r = torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        xhat = xf * r  # a new tensor: x itself is still needed by the norm's own backward
        out.mul_(self.norm_weight.float())
        # einsum runs this as one batched product over the tokens: (out * xhat).sum(-1) held a
        # [H + 2 KV, B, S, D] product, the largest transient of the IG step at 8B widths
        dot = torch.einsum("pbsd,bsd->pbs", out, xhat).unsqueeze(-1).div_(D)
        return out.addcmul_(xhat, dot, value=-1.0).mul_(r)


class Probe:
    """A loaded model seen as a graph: runs with hooks, captures node outputs."""

    def __init__(self, loaded):
        self.loaded = loaded
        self.bridge = loaded.bridge
        self.layout: GraphLayout = build_layout(loaded.shape)
        self.device = torch.device(loaded.device)
        self.dtype = loaded.dtype

    def port_weights(self, layer: int) -> "PortWeights":
        """What turns a layer's q/k/v projection gradients into its per-port input gradients."""
        block = self.loaded.hf_model.model.layers[layer]
        attn, norm = block.self_attn, block.input_layernorm
        H, KV = self.layout.n_heads, self.layout.n_kv_heads
        return PortWeights(
            norm_weight=norm.weight,
            eps=float(norm.variance_epsilon),
            q=attn.q_proj.weight.view(H, -1, attn.q_proj.weight.shape[-1]),
            k=attn.k_proj.weight.view(KV, -1, attn.k_proj.weight.shape[-1]),
            v=attn.v_proj.weight.view(KV, -1, attn.v_proj.weight.shape[-1]),
        )

    def out_weights(self, layer: int) -> torch.Tensor:
        """A layer's o_proj weight as each head's rows, [H, dh, D] (a view, no copy)."""
        w = self.loaded.hf_model.model.layers[layer].self_attn.o_proj.weight  # [D, H * dh]
        return w.T.unflatten(0, (self.layout.n_heads, -1))

    @contextmanager
    def graph_mode(self):
        cfg = self.bridge.cfg
        before = (bool(getattr(cfg, "use_attn_result", False)), bool(getattr(cfg, "use_split_qkv_input", False)))
        params = list(self.bridge.parameters())
        grads = [p.requires_grad for p in params]
        try:
            self.bridge.set_use_attn_result(True)
            self.bridge.set_use_split_qkv_input(True)
            for p in params:
                p.requires_grad_(False)
            yield self
        finally:
            for p, g in zip(params, grads):
                p.requires_grad_(g)
            self.bridge.set_use_split_qkv_input(before[1])
            self.bridge.set_use_attn_result(before[0])

    def run(self, ids: torch.Tensor, hooks: list, last: torch.Tensor | None = None) -> torch.Tensor:
        """Logits of a forward pass with `hooks` [(hook name, fn(tensor, hook))].

        Without `last`: [B, S, V], every position. With `last` ([B], each row's evaluated
        position, `Batch.last`): [B, V], each row's logits at its own position only.
        """
        # Token ids as a tensor and no attention mask: batches are right-padded, and under
        # causal attention real tokens never see the pads after them (see batches.py).
        kept = None if last is None else keep_positions(last)
        with self.bridge.hooks(fwd_hooks=hooks):
            logits = self.bridge(ids) if kept is None else self.bridge(ids, logits_to_keep=kept)
        return logits if kept is None else logits_at(logits, last, kept)

    def capture(
        self,
        ids: torch.Tensor,
        embed: torch.Tensor | None = None,
        last: torch.Tensor | None = None,
        minus: torch.Tensor | None = None,
        dtype: torch.dtype = torch.float32,
        sources: tuple[int, int] | None = None,
        factored: FactoredHeads | None = None,
    ):
        """(node outputs [N_src, B, S, D] in node order, embeddings, logits).

        N_src = every node but logits; with `sources` (lo, hi), only nodes lo .. hi - 1, as
        [hi - lo, B, S, D] (the embeddings are returned whatever they hold). `embed`, when given,
        replaces the token embeddings.
        The outputs are written straight into one preallocated buffer of `dtype` (no second
        copy). With `minus` (another capture's outputs) they are written over it as this run's
        outputs minus its: the differences without a second buffer, in its dtype.
        logits: [B, S, V], or [B, V] at each row's position `last` (see `run`).
        With `factored` (buffers for the last layers, the whole graph's sources only), those
        layers' heads and MLPs go there instead (the heads as their attention outputs before
        o_proj), written or subtracted as `minus` says, and the buffer holds the nodes before them.
        """
        g = self.layout
        B, S = ids.shape
        first, end = sources if sources is not None else (0, g.n_nodes - 1)
        if factored is not None:
            end = min(end, factored.first_node(g))
        shape = (end - first, B, S, self.loaded.shape.d_model)
        out = minus if minus is not None else torch.empty(shape, dtype=dtype, device=ids.device)
        store: dict = {}

        def write(dst: torch.Tensor, part: torch.Tensor) -> None:
            if minus is None:
                dst.copy_(part)
            else:
                dst.sub_(part).neg_()

        def put(lo: int, hi: int, x: torch.Tensor) -> None:  # x: the outputs of nodes lo .. hi - 1
            a, b = max(lo, first), min(hi, end)
            if a < b:
                write(out[a - first : b - first], x[a - lo : b - lo])

        def set_embed(x, hook):
            store["embed"] = (embed if embed is not None else x).detach()
            put(0, 1, store["embed"][None])
            return embed

        def heads(L):
            def hook(x, hook):
                a = g.head_node(L, 0)
                put(a, a + g.n_heads, x.detach().permute(2, 0, 1, 3))

            return hook

        def mlp(L):
            def hook(x, hook):
                put(g.mlp_node(L), g.mlp_node(L) + 1, x.detach()[None])

            return hook

        def factored_heads(L):
            def hook(x, hook):
                write(factored.z[L - factored.first_layer], x.detach().permute(2, 0, 1, 3))

            return hook

        def factored_mlp(L):
            def hook(x, hook):
                write(factored.mlp[L - factored.first_layer], x.detach())

            return hook

        hooks = [(EMBED, set_embed)]
        for L in range(g.n_layers):
            if factored is not None and L >= factored.first_layer:
                hooks += [(z_out(L), factored_heads(L)), (mlp_out(L), factored_mlp(L))]
            else:
                hooks += [(result(L), heads(L)), (mlp_out(L), mlp(L))]
        with torch.no_grad(), self.without_port_forks():
            logits = self.run(ids, hooks, last)
        return out, store["embed"], logits

    @contextmanager
    def without_port_forks(self):
        """Switch `use_split_qkv_input` off for a run that reads or patches no q/k/v port tensor.

        A capture only reads node outputs (embeddings, per-head results, MLP outputs). The
        per-head forks repeat, normalise and project the residual once per head (n_heads +
        2 * n_kv_heads copies per layer) and cost a few percent of a forward pass, so a capture
        runs the dense q/k/v path instead; its head results equal the forked ones up to float
        rounding. `use_attn_result` stays on (the capture needs it). The IG steps run dense too
        (their port gradients: `PortWeights`).
        """
        bridge = self.bridge
        forked = bool(getattr(bridge.cfg, "use_split_qkv_input", False))
        if forked:
            bridge.set_use_split_qkv_input(False)
        try:
            yield
        finally:
            if forked:
                bridge.set_use_split_qkv_input(True)


# Logits only where the metric reads them. The unembedding (d_model x vocab, e.g. 896 x 151936
# for Qwen2.5-0.5B) is about a quarter of a small model's FLOPs, and the metric reads one
# position per example, so computing it at every position (and its backward in the IG steps)
# is wasted work. HF causal LMs take `logits_to_keep` and the bridge passes it through; a 2-D
# integer tensor [B, 1] keeps each row's OWN position (take_along_dim) in a transformers that
# has it, which is what ragged, right-padded batches need (an older one keeps the batch's
# distinct last positions in every row: `keep_positions`). Nothing upstream changes: the final
# norm is per position and its input (the `logits` port) is hooked before the slice, so node
# outputs and port gradients are those of the full run (the gradient at unread positions was
# zero before too).


def keep_positions(last: torch.Tensor) -> torch.Tensor:
    """`logits_to_keep` value that keeps position last[b] of row b.

    A transformers that slices with `modeling_utils.slice_logits_to_keep` (5.25) reads a 2-D
    integer tensor as per-row positions: [B, 1], one logit row each. Older ones (5.17, the GPU
    image's) index the sequence dimension with it as it stands, so they get a 1-D tensor, the
    positions every row keeps: the sorted distinct `last`, at most B of them."""
    if per_row_keep():
        return last.reshape(-1, 1).long()
    return torch.unique(last).long()


def logits_at(logits: torch.Tensor, last: torch.Tensor, kept: torch.Tensor) -> torch.Tensor:
    """[B, V] logits at each row's position `last` from a run given `kept` = keep_positions(last):
    [B, 1, V] per row, or [B, K, V] for the K distinct positions; a model that ignored it returns
    all positions [B, S, V], indexed by `last` itself."""
    rows = torch.arange(logits.shape[0], device=logits.device)
    if logits.shape[1] != kept.shape[-1]:  # ignored: every position
        return logits[rows, last]
    if kept.ndim == 2:
        return logits[:, 0]
    # The distinct positions, sorted: row b's column is where last[b] sits among them. When the
    # model ignored them and S == K, kept is arange(S) and this is last itself.
    return logits[rows, torch.searchsorted(kept, last)]


@functools.cache
def per_row_keep() -> bool:
    from transformers import modeling_utils

    return hasattr(modeling_utils, "slice_logits_to_keep")
