"""Batched sampling from a Hugging Face causal LM.

Prompts are expanded into (prompt, sample) pairs in a fixed order and cut into batches; each
batch is left-padded (so every sequence ends at the same position and the KV cache is shared)
and sampled with its own seed derived from (seed, batch index). The result therefore depends
only on the inputs, the sampling settings and the batch size, never on what ran before.

Long benchmark runs are resumable without breaking run atomicity: with `resume_dir`, each
finished batch is kept as a Parquet file there; a restarted run reads those back and only
samples the missing batches. The warehouse still receives the whole run in one transaction.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Callable, Sequence

import polars as pl
import torch

from headdb.errors import UserError
from headdb.evals.prompts import render
from headdb.settings import Sampling


def chat_prompts(tokenizer, problems: Sequence[str], *, chat: str = "auto", mode: str = "plain") -> list[str]:
    """The text fed to the model for each problem (headdb.evals.prompts.render)."""
    return [render(tokenizer, p, chat=chat, mode=mode) for p in problems]


def _batch_seed(seed: int, index: int) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}:{index}".encode()).digest()[:4], "little")


def generate(
    model,
    tokenizer,
    prompts: Sequence[str],
    sampling: Sampling,
    *,
    progress: Callable[[int, int], None] | None = None,
    resume_dir: Path | None = None,
) -> pl.DataFrame:
    """Sample `sampling.samples` completions per prompt.

    Returns one row per (prompt_index, sample_idx): completion, n_tokens (generated tokens up to
    and including the end-of-sequence token), finish_reason ('stop' or 'length').
    """
    pairs = [(i, j) for i in range(len(prompts)) for j in range(sampling.samples)]
    batches = [pairs[k : k + sampling.batch_size] for k in range(0, len(pairs), sampling.batch_size)]
    stops = eos_ids(model, tokenizer)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stops[0]
    device = next(model.parameters()).device
    frames = []
    if resume_dir is not None:
        resume_dir.mkdir(parents=True, exist_ok=True)
    for index, batch in enumerate(batches):
        part = resume_dir / f"batch-{index:06d}.parquet" if resume_dir is not None else None
        if part is not None and part.exists():
            frames.append(pl.read_parquet(part))
        else:
            frame = _generate_batch(
                model, tokenizer, prompts, batch, sampling, _batch_seed(sampling.seed, index), stops, pad_id, device
            )
            if part is not None:
                tmp = part.with_suffix(".tmp")
                frame.write_parquet(tmp)
                tmp.replace(part)  # a batch file is either whole or absent
            frames.append(frame)
        if progress:
            progress(index + 1, len(batches))
    if not frames:
        return pl.DataFrame(
            schema={
                "prompt_index": pl.Int64,
                "sample_idx": pl.Int32,
                "completion": pl.Utf8,
                "n_tokens": pl.Int32,
                "finish_reason": pl.Utf8,
            }
        )
    return pl.concat(frames)


def eos_ids(model, tokenizer) -> list[int]:
    """The token ids that end a sample: the generation config's and the tokenizer's."""
    ids = model.generation_config.eos_token_id if model.generation_config is not None else None
    ids = [ids] if isinstance(ids, int) else list(ids or [])
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in ids:
        ids.append(tokenizer.eos_token_id)
    if not ids:
        raise UserError("the tokenizer and generation config define no end-of-sequence token")
    return ids


@torch.no_grad()
def _generate_batch(model, tokenizer, prompts, batch, sampling: Sampling, seed: int, stops, pad_id, device):
    texts = [prompts[i] for i, _ in batch]
    old_side = tokenizer.padding_side
    tokenizer.padding_side = "left"  # all prompts end at the last column: generation starts in step
    try:
        enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    finally:
        tokenizer.padding_side = old_side
    enc = {k: v.to(device) for k, v in enc.items() if k in ("input_ids", "attention_mask")}
    kwargs = dict(max_new_tokens=sampling.max_new_tokens, pad_token_id=pad_id, eos_token_id=stops, use_cache=True)
    if sampling.greedy:
        kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
    else:
        kwargs.update(
            do_sample=True,
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            top_k=sampling.top_k if sampling.top_k is not None else 0,
        )
        if sampling.min_p is not None:
            kwargs["min_p"] = sampling.min_p
    torch.manual_seed(seed)
    out = model.generate(**enc, **kwargs)
    new = out[:, enc["input_ids"].shape[1] :].tolist()
    rows = {"prompt_index": [], "sample_idx": [], "completion": [], "n_tokens": [], "finish_reason": []}
    eos = set(stops)
    for (i, j), tokens in zip(batch, new):
        stop = next((k for k, t in enumerate(tokens) if t in eos), None)
        kept = tokens if stop is None else tokens[:stop]
        rows["prompt_index"].append(i)
        rows["sample_idx"].append(j)
        rows["completion"].append(tokenizer.decode(kept, skip_special_tokens=True))
        rows["n_tokens"].append(len(kept) + (stop is not None))
        rows["finish_reason"].append("stop" if stop is not None else "length")
    return pl.DataFrame(rows, schema_overrides={"sample_idx": pl.Int32, "n_tokens": pl.Int32})
