"""The head differences of the last layers held factored: dh numbers per head and token, not D.

A head's node output is its attention output z_h (dh wide, TransformerLens's `hook_z`) through
its own rows of o_proj, W_O^h [dh, D] (the bridge's `hook_result` leaves out an o_proj bias,
where a model has one, and so does this). Its difference
between two runs is therefore (z_h(corrupted) - z_h(clean)) W_O^h: holding the difference of z
costs dh / D of holding the difference itself (1/32 at Qwen3-8B), and the full difference is
made again, one layer's heads at a time, only while a destination's product reads it.

Which layers: the last F. Every destination downstream of a source reads it, so source layer l
is expanded once for each destination layer from l on and for the logits: the last layers are
the cheapest to factor (F + F (F + 1) / 2 expansions per IG step, each one batched product of
B S H dh D multiply-adds, against the (P + 1)(H + 1) B S D of scoring one source layer into one
destination layer: at F = L the expansions cost 2.5 times the scoring products' FLOPs at
Qwen3-8B's shape, 7 times at Qwen2.5-1.5B's). headdb.attribution.memory chooses F, the fewest
layers that bring the run within its peak target or its budget; eap.eap_scores holds the other
sources' differences as they are (`delta`). faithfulness.evaluate_circuits holds the corrupted
run's outputs with every layer factored: one expansion per layer and patched pass.
The MLP outputs of the factored layers are held as they are: they have no narrower factor.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from headdb.attribution.graph import GraphLayout


@dataclass
class FactoredHeads:
    """The node outputs (or their differences) of layers first_layer .. L - 1.

    z [F, H, B, S, dh]: each head's attention output before o_proj; mlp [F, B, S, D]: each MLP's
    output; w_out: per factored layer, [H, dh, D] views of o_proj's weight (head h's rows)."""

    first_layer: int
    z: torch.Tensor
    mlp: torch.Tensor
    w_out: list[torch.Tensor]

    @classmethod
    def empty(cls, probe, layers: int, batch: int, seq: int, dtype: torch.dtype) -> "FactoredHeads":
        """Buffers for the last `layers` layers of `probe`'s model, of `dtype` (eap.delta_dtype)."""
        g, shape = probe.layout, probe.loaded.shape
        first = g.n_layers - layers
        w_out = [probe.out_weights(L) for L in range(first, g.n_layers)]
        dh = w_out[0].shape[1]
        z = torch.empty((layers, g.n_heads, batch, seq, dh), dtype=dtype, device=probe.device)
        mlp = torch.empty((layers, batch, seq, shape.d_model), dtype=dtype, device=probe.device)
        return cls(first, z, mlp, w_out)

    def first_node(self, layout: GraphLayout) -> int:
        """The first node held here (the sources before it are held as they are)."""
        return layout.head_node(self.first_layer, 0)

    def mask_(self, mask: torch.Tensor) -> None:
        """Zero the pads ([B, S] mask of real tokens) in place."""
        self.z.mul_(mask[None, None, :, :, None])
        self.mlp.mul_(mask[None, :, :, None])

    def heads(self, layer: int) -> torch.Tensor:
        """Layer's head outputs, expanded: [H, B * S, D] in z's dtype (one batched product)."""
        z = self.z[layer - self.first_layer]
        H, B, S, dh = z.shape
        return torch.bmm(z.reshape(H, B * S, dh), self.w_out[layer - self.first_layer].to(z.dtype))

    def add_layer_scores(self, layout: GraphLayout, rows: torch.Tensor, layer: int, out: torch.Tensor) -> None:
        """out += the scores of layer's attention and MLP edges from the sources held here (see
        eap.add_layer_scores for rows and out): every factored node before the layer (all its
        ports), then the layer's own heads (its MLP port only)."""
        g, c = layout, self.first_layer
        if layer < c:
            return
        P, H = g.n_ports, g.n_heads
        n = g.n_src_attn(layer)
        attn = out[..., g.attn_offset[layer] : g.attn_offset[layer] + P * n].unflatten(-1, (P, n))
        mlp = out[..., g.mlp_offset[layer] : g.mlp_offset[layer] + g.n_src_mlp(layer)]
        rows = rows.to(self.z.dtype)
        for nodes, blk in self._blocks(g, rows, layer, out.dim()):  # blk [..., P + 1, nodes]
            attn[..., nodes] += blk[..., :P, :]
            mlp[..., nodes] += blk[..., P, :]
        a = g.head_node(layer, 0)
        mlp[..., a : a + H] += _products(rows[P:], self.heads(layer), out.dim())[..., 0, :]

    def add_logits_scores(self, layout: GraphLayout, grad: torch.Tensor, out: torch.Tensor) -> None:
        """out += the scores of the edges into logits from the sources held here, from the
        gradient at the final norm's input [B, S, D] (see eap.add_logits_scores)."""
        g = layout
        logits = out[..., g.logits_offset : g.logits_offset + g.n_src_logits]
        grad = grad.to(self.z.dtype)[None]  # one "port"
        for nodes, blk in self._blocks(g, grad, g.n_layers, out.dim()):
            logits[..., nodes] += blk[..., 0, :]

    def _blocks(self, g: GraphLayout, rows: torch.Tensor, before: int, dims: int):
        """(node slice, scores [..., R, nodes]) of rows [R, B, S, D] against the factored nodes of
        layers before `before`: each layer's heads (expanded one layer at a time), then all of
        their MLPs in one product (`_products` for dims)."""
        c, H = self.first_layer, g.n_heads
        for source in range(c, before):
            a = g.head_node(source, 0)
            yield slice(a, a + H), _products(rows, self.heads(source), dims)
        k = before - c
        if k > 0:
            mlps = self.mlp[:k].reshape(k, -1, self.mlp.shape[-1])
            yield slice(g.mlp_node(c), g.mlp_node(before - 1) + 1, H + 1), _products(rows, mlps, dims)


def _products(rows: torch.Tensor, sources: torch.Tensor, dims: int) -> torch.Tensor:
    """Sums over tokens and d of rows [R, B, S, D] times sources [N, B * S, D]: [R, N] summed
    over the batch (dims 1) or [B, R, N] per example (dims 2), in float32."""
    R, N, B = rows.shape[0], sources.shape[0], rows.shape[1]
    if dims == 1:
        return (rows.reshape(R, -1) @ sources.reshape(N, -1).T).float()
    r = rows.reshape(R, B, -1).transpose(0, 1)  # [B, R, S * D]
    s = sources.reshape(N, B, -1).permute(1, 2, 0)  # [B, S * D, N]
    return torch.bmm(r, s).float()
