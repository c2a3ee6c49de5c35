"""Batches of (clean, corrupted) token pairs, right-padded.

Padding rule: RIGHT padding with the tokenizer's pad id (eos if it has none), no attention
mask. Under causal attention a real token only attends to positions at or before it, so the
pads after an example's last real token cannot change any real position; positions keep
their unpadded ids (0..n-1, so RoPE sees exactly the unpadded sequence); the metric reads the
logits at the last real token (`last`). Pad positions are masked out (`mask` = 0) of every
score sum, and their gradients are exactly zero anyway (nothing reads them).
Clean and corrupted prompts of an item have equal length (headdb.attribution.tasks.encode_pairs), so one
mask serves both. Items keep their task order; batch composition does not change the
per-example numbers, only float summation order.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Batch:
    clean: torch.Tensor  # [B, S] long
    corrupted: torch.Tensor  # [B, S] long
    last: torch.Tensor  # [B] index of each example's last real token
    mask: torch.Tensor  # [B, S] float32, 1 on real tokens
    answer: torch.Tensor  # [B] long
    wrong: torch.Tensor  # [B] long (0 where absent; only logit-diff reads it)
    item_ids: tuple = ()  # the B examples' task item ids (bootstrap weights are keyed by them)

    @property
    def size(self) -> int:
        return self.clean.shape[0]


def pad_id_of(tokenizer) -> int:
    pid = getattr(tokenizer, "pad_token_id", None)
    if pid is None:
        pid = getattr(tokenizer, "eos_token_id", None)
    return int(pid) if pid is not None else 0


def make_batches(pairs, batch_size: int, pad_id: int, device) -> list[Batch]:
    out = []
    for start in range(0, len(pairs), max(1, int(batch_size))):
        idx = range(start, min(start + batch_size, len(pairs)))
        lengths = [len(pairs.clean[i]) for i in idx]
        width = max(lengths)
        clean = torch.full((len(idx), width), pad_id, dtype=torch.long)
        corrupted = torch.full_like(clean, pad_id)
        mask = torch.zeros((len(idx), width), dtype=torch.float32)
        for row, i in enumerate(idx):
            n = lengths[row]
            clean[row, :n] = torch.tensor(pairs.clean[i])
            corrupted[row, :n] = torch.tensor(pairs.corrupted[i])
            mask[row, :n] = 1.0
        out.append(
            Batch(
                clean=clean.to(device),
                corrupted=corrupted.to(device),
                last=torch.tensor([n - 1 for n in lengths], device=device),
                mask=mask.to(device),
                answer=torch.tensor([pairs.answer[i] for i in idx], device=device),
                wrong=torch.tensor([max(pairs.wrong[i], 0) for i in idx], device=device),
                item_ids=tuple(pairs.item_ids[i] for i in idx),
            )
        )
    return out


def at_last(logits: torch.Tensor, batch: Batch) -> torch.Tensor:
    """Logits [B, V] at each example's evaluated position."""
    return logits[torch.arange(logits.shape[0], device=logits.device), batch.last]
