"""An intervention written into a model's weights: the edited model computes, with no hooks,
what headdb's hooks (headdb.evals.interventions) compute on the original.

A layer's attention output is `o_proj(z) = W_O z + b = sum_h W_O[:, h] z_h + b`, where W_O[:, h]
is the slice of o_proj.weight that reads head h's output (its d_head input columns). So

- zero:  W_O[:, h] <- 0                                  (z_h <- 0)
- scale: W_O[:, h] <- factor * W_O[:, h]                 (z_h <- factor * z_h)
- mean:  b <- b + W_O[:, h] m_h, then W_O[:, h] <- 0      (z_h <- m_h at every position)

Zero and scale fit every architecture. Mean needs an o_proj bias that the saved checkpoint can
carry and that inference engines read: Llama's `attention_bias` gives q/k/v/o a bias in
transformers and in vLLM alike (the q/k/v biases are written as zeros when the source had none).
Qwen2 has no o_proj bias at all; Qwen3's `attention_bias` adds one in transformers but vLLM's
Qwen3 builds o_proj without a bias, so an exported Qwen3 would silently lose the means there.
"""

from __future__ import annotations

from typing import Any

import torch

from headdb.errors import UserError
from headdb.evals.interventions import Intervention, _head_dim, attention_modules

MEAN_BIAS_ARCHITECTURES = ("LlamaForCausalLM",)


def mean_refusal(architecture: str) -> str | None:
    """Why a checkpoint of `architecture` cannot carry a mean ablation in its weights (None: it can)."""
    if architecture in MEAN_BIAS_ARCHITECTURES:
        return None
    why = {
        "Qwen2ForCausalLM": "Qwen2's o_proj has no bias",
        "Qwen3ForCausalLM": "vLLM's Qwen3 builds o_proj without a bias (only transformers reads one)",
    }.get(architecture, f"{architecture} has no o_proj bias that inference engines read")
    return (
        f"mean ablation cannot be written into a {architecture} checkpoint: {why}, and the heads' mean "
        "output must go into one; export zero or scale, or run headdb's own mean ablation "
        "(`headdb ingest ablation --kind mean`)"
    )


@torch.no_grad()
def bake(model: Any, intervention: Intervention) -> dict[str, Any]:
    """Write `intervention` into `model`'s o_proj weights in place; returns the config.json keys
    the saved checkpoint needs changed (attention_bias, when a mean ablation added biases)."""
    if intervention.kind == "mean":
        refusal = mean_refusal(type(model).__name__)
        if refusal is not None:
            raise UserError(refusal)
    modules = attention_modules(model)
    updates: dict[str, Any] = {}
    if intervention.kind == "mean" and modules[0].o_proj.bias is None:
        for attn in modules:  # attention_bias is one flag for q, k, v and o of every layer
            for proj in (attn.q_proj, attn.k_proj, attn.v_proj, attn.o_proj):
                proj.bias = torch.nn.Parameter(
                    torch.zeros(proj.out_features, dtype=proj.weight.dtype, device=proj.weight.device)
                )
        updates["attention_bias"] = True
    for layer, head in intervention.heads:
        attn = modules[layer]
        d_head = _head_dim(attn)
        cols = slice(head * d_head, (head + 1) * d_head)
        weight = attn.o_proj.weight
        if intervention.kind == "zero":
            weight[:, cols] = 0
        elif intervention.kind == "scale":
            assert intervention.factor is not None  # Intervention refuses a scale without one
            weight[:, cols] *= intervention.factor
        else:
            mean = intervention.means[layer][head].to(device=weight.device, dtype=torch.float64)
            shift = weight[:, cols].double() @ mean  # in float64: one rounding, when stored
            attn.o_proj.bias += shift.to(attn.o_proj.bias.dtype)
            weight[:, cols] = 0
    return updates
