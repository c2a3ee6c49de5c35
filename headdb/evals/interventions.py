"""Interventions on attention heads: zero, mean and scale ablation of a head's write.

A head's write into the residual stream is its slice of the attention output projection's
input: `o_proj(concat_h z_h) = sum_h W_O[:, h] z_h`. Qwen2/Qwen3/Llama have no o_proj bias by
default, so changing the slice of head h changes exactly that head's contribution:

- zero:  z_h <- 0                     (the head writes nothing)
- mean:  z_h <- mean of z_h over every non-pad position of a reference task
- scale: z_h <- factor * z_h          (the study uses 1.3 up and 0.5 down)

The hooks are plain PyTorch forward pre-hooks on each layer's `self_attn.o_proj`, so they act
the same in generation (HF generate, KV cache), in attribution runs and under a
TransformerBridge wrapping the same modules. With no heads, or scale 1.0, the model's output
is bit-identical (the hook returns its input untouched).
"""

from __future__ import annotations

import random
import re
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterable, Iterator

import pyarrow as pa
import torch

from headdb.errors import UserError

from headdb.settings import INTERVENTION_KINDS as KINDS

_HEAD = re.compile(r"^L(\d+)H(\d+)$", re.IGNORECASE)


def parse_heads(spec: str, n_layers: int | None = None, n_heads: int | None = None) -> list[tuple[int, int]]:
    """'L5H1,L7H3' -> [(5, 1), (7, 3)], checked against the model's shape when given."""
    heads = []
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        m = _HEAD.match(part)
        if not m:
            raise UserError(f"head {part!r} is not of the form L<layer>H<head>, e.g. L5H1")
        layer, head = int(m.group(1)), int(m.group(2))
        if n_layers is not None and not 0 <= layer < n_layers:
            raise UserError(f"head {part}: layer {layer} is out of range (the model has {n_layers} layers)")
        if n_heads is not None and not 0 <= head < n_heads:
            raise UserError(f"head {part}: head {head} is out of range (the model has {n_heads} heads per layer)")
        heads.append((layer, head))
    if not heads:
        raise UserError("no heads given; use a list such as L5H1,L7H3")
    return sorted(set(heads))


def format_heads(heads: Iterable[tuple[int, int]]) -> str:
    return ",".join(f"L{l}H{h}" for l, h in sorted(heads))


def heads_per_layer(heads: Iterable[tuple[int, int]]) -> dict[int, int]:
    """layer -> how many of the (distinct) heads are in it: what a layer-matched control matches."""
    counts: dict[int, int] = {}
    for layer, _ in set(heads):
        counts[layer] = counts.get(layer, 0) + 1
    return counts


def random_control(
    heads: Iterable[tuple[int, int]], n_heads: int, seed: int, avoid: Iterable[tuple[int, int]] = ()
) -> list[tuple[int, int]]:
    """A random head set matched by layer: as many heads in each layer, none of the given ones
    (nor of `avoid`, e.g. the circuit's other heads) where the layer has enough others, drawn
    deterministically under `seed`."""
    rng = random.Random(seed)
    outside = set(avoid)
    taken = set(heads)
    by_layer = heads_per_layer(taken)
    control = []
    for layer in sorted(by_layer):
        others = [h for h in range(n_heads) if (layer, h) not in taken]
        away = [h for h in others if (layer, h) not in outside]
        pool = (
            away if len(away) >= by_layer[layer] else others if len(others) >= by_layer[layer] else list(range(n_heads))
        )
        control += [(layer, h) for h in sorted(rng.sample(pool, by_layer[layer]))]
    return control


@dataclass
class Intervention:
    kind: str
    heads: list[tuple[int, int]]
    factor: float | None = None
    # mean ablation: layer -> tensor [n_heads, d_head] of mean z over the reference task
    means: dict[int, torch.Tensor] = field(default_factory=dict, repr=False)
    reference: str | None = None  # what the means were taken over (recorded in the run config)
    label: str | None = None  # e.g. "control" for a random matched set; shown by ablation_table

    def __post_init__(self):
        if self.kind not in KINDS:
            raise UserError(f"intervention kind {self.kind!r} is not one of {', '.join(KINDS)}")
        if self.kind == "scale" and self.factor is None:
            raise UserError("a scale intervention needs a factor, e.g. --factor 1.3")
        if self.kind != "scale":
            self.factor = 0.0 if self.kind == "zero" else None

    def spec(self) -> dict:
        """The part of a run's config that names this intervention."""
        spec = {
            "kind": self.kind,
            "heads": format_heads(self.heads),
            "factor": self.factor,
            "reference": self.reference,
        }
        if self.label is not None:
            spec["label"] = self.label
        return spec

    def check_shape(self, shape) -> None:
        """A head outside the model (layer or head index too large) is a UserError."""
        parse_heads(format_heads(self.heads), shape.n_layers, shape.n_heads)

    def table(self) -> pa.Table:
        """Rows for the `interventions` table (run_id is added when the run commits)."""
        return pa.table(
            {
                "layer": pa.array([l for l, _ in self.heads], pa.int32()),
                "head": pa.array([h for _, h in self.heads], pa.int32()),
                "kind": [self.kind] * len(self.heads),
                "factor": pa.array([self.factor] * len(self.heads), pa.float64()),
            }
        )


def attention_modules(model) -> list:
    """Each decoder layer's attention module (Qwen2/Qwen3/Llama layout)."""
    try:
        return [layer.self_attn for layer in model.model.layers]
    except AttributeError:
        raise UserError(
            f"{type(model).__name__} has no model.layers[*].self_attn; "
            "interventions support Qwen2, Qwen3 and Llama architectures"
        ) from None


def _head_dim(attn) -> int:
    return attn.head_dim if hasattr(attn, "head_dim") else attn.o_proj.in_features // attn.config.num_attention_heads


@contextmanager
def applied(model, intervention: Intervention | None) -> Iterator[None]:
    """Apply `intervention` to `model` for the duration of the block."""
    if intervention is None or not intervention.heads:
        yield
        return
    if intervention.kind == "scale" and intervention.factor == 1.0:
        yield  # identity by definition; keeps outputs bit-identical
        return
    modules = attention_modules(model)
    per_layer: dict[int, list[int]] = {}
    for layer, head in intervention.heads:
        per_layer.setdefault(layer, []).append(head)
    handles = []
    try:
        for layer, heads in per_layer.items():
            attn = modules[layer]
            handles.append(
                attn.o_proj.register_forward_pre_hook(_make_hook(intervention, layer, heads, _head_dim(attn)))
            )
        yield
    finally:
        for handle in handles:
            handle.remove()


def _make_hook(intervention: Intervention, layer: int, heads: list[int], d_head: int):
    index = torch.tensor(heads)

    def hook(module, args):
        (z,) = args[:1]
        shaped = z.view(*z.shape[:-1], -1, d_head).clone()
        if intervention.kind == "zero":
            shaped[..., index, :] = 0
        elif intervention.kind == "scale":
            shaped[..., index, :] = shaped[..., index, :] * intervention.factor
        else:
            mean = intervention.means[layer].to(device=z.device, dtype=z.dtype)
            shaped[..., index, :] = mean[index]
        return (shaped.view_as(z), *args[1:])

    return hook


@torch.no_grad()
def head_means(model, batches: Iterable[dict]) -> dict[int, torch.Tensor]:
    """Mean z of every head over the non-pad positions of `batches` (input_ids, attention_mask)."""
    modules = attention_modules(model)
    sums: dict[int, torch.Tensor] = {}
    count = 0
    current_mask: list[torch.Tensor] = []

    def recorder(layer: int, d_head: int):
        def hook(module, args):
            z = args[0].float()
            mask = current_mask[0].to(z.device).unsqueeze(-1).float()
            total = (z * mask).sum(dim=(0, 1)).view(-1, d_head)
            sums[layer] = sums.get(layer, 0) + total

        return hook

    handles = [attn.o_proj.register_forward_pre_hook(recorder(i, _head_dim(attn))) for i, attn in enumerate(modules)]
    try:
        for batch in batches:
            current_mask[:] = [batch["attention_mask"]]
            model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
            count += int(batch["attention_mask"].sum())
    finally:
        for handle in handles:
            handle.remove()
    if count == 0:
        raise UserError("the reference task for mean ablation has no tokens")
    return {layer: total / count for layer, total in sums.items()}
