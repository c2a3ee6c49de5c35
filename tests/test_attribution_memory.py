"""The attribution memory model (headdb.attribution.memory): its terms against what torch
actually holds, and the batch it picks for a budget.

The per-layer saved-activation term is checked exactly, in process, against the bytes autograd
saves during a real EAP-IG step (torch's saved-tensor hooks, unique storages, weights left
out). The whole-run peak against a measured peak RSS is benchmarks/bench_shapes.py's check
(RESULTS.md): peak RSS of a model small enough for a test is mostly the interpreter and noise.
"""

from __future__ import annotations

import ctypes

import numpy as np
import pytest
import torch
from torch.autograd.graph import saved_tensors_hooks
from torch.utils._python_dispatch import TorchDispatchMode

from headdb.attribution import eap_scores
from headdb.attribution.memory import MemoryEstimate, estimate, fit_batch, layer_saved_bytes, weight_bytes
from headdb.attribution.tasks import EncodedPairs
from headdb.checkpoints.loading import load_model
from headdb.errors import UserError


def pairs_of(n: int, seq: int, vocab: int) -> EncodedPairs:
    g = torch.Generator().manual_seed(0)
    clean = torch.randint(3, vocab, (n, seq), generator=g)
    corrupted = clean.clone()
    corrupted[:, seq // 2] = (clean[:, seq // 2] + 1) % vocab
    return EncodedPairs(
        item_ids=[str(i) for i in range(n)],
        clean=clean.tolist(),
        corrupted=corrupted.tolist(),
        answer=[5] * n,
        wrong=[-1] * n,
    )


def saved_bytes(loaded, pairs) -> int:
    """Bytes of the distinct storages autograd saves during one EAP-IG call (one step), weights
    excluded: the IG step's forward is the only graph the call builds."""
    weights = {p.untyped_storage().data_ptr() for p in loaded.hf_model.parameters()}
    seen: dict[int, int] = {}

    def pack(t):
        st = t.untyped_storage()
        if st.data_ptr() not in weights:
            seen[st.data_ptr()] = st.nbytes()
        return t

    with saved_tensors_hooks(pack, lambda t: t):
        eap_scores(loaded, pairs, steps=1, batch_size=len(pairs))
    return sum(seen.values())


@pytest.mark.parametrize("arch", ["qwen2", "qwen3"])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_saved_activations_per_layer_are_what_autograd_keeps(tiny_checkpoint, tmp_path, arch, dtype):
    # Two models that differ only in depth: the difference is one layer's saved tensors, which the
    # model states per token (and per S^2 for the attention probabilities).
    kw = dict(arch=arch, n_heads=4, n_kv_heads=2, d_model=64, seed=0)
    if arch == "qwen3":
        kw["d_head"] = 32  # H * dh != D: the q/k/v terms are not D in disguise
    one = load_model(tiny_checkpoint(n_layers=1, at=tmp_path / "one", **kw), dtype=dtype, device="cpu")
    two = load_model(tiny_checkpoint(n_layers=2, at=tmp_path / "two", **kw), dtype=dtype, device="cpu")
    B, S = 2, 24
    pairs = pairs_of(B, S, one.shape.vocab_size)
    measured = saved_bytes(two, pairs) - saved_bytes(one, pairs)
    w = torch.finfo(getattr(torch, dtype)).bits // 8
    predicted = B * S * layer_saved_bytes(two.shape, w, S)
    assert abs(predicted - measured) <= 0.02 * measured, (predicted, measured)


def test_weight_bytes_count_the_loaded_parameters(tiny_checkpoint, tmp_path):
    for arch in ("qwen2", "qwen3", "llama"):
        loaded = load_model(
            tiny_checkpoint(arch=arch, n_layers=2, n_heads=4, n_kv_heads=2, d_model=32, at=tmp_path / arch),
            dtype="float32",
            device="cpu",
        )
        actual = sum(p.numel() * p.element_size() for p in loaded.hf_model.parameters())
        assert weight_bytes(loaded.shape, 4) == actual, arch


def test_the_batch_that_fits_a_budget():
    est = MemoryEstimate(weights=1000, per_row=100, fixed=50, seq=8, phase="ig-steps", phases={})
    assert est.total(3) == 1350
    assert est.largest_batch(1349) == 2 and est.largest_batch(1350) == 3
    assert fit_batch(est, 10_000, 8, where="--max-memory") == 8  # the asked batch when it fits
    assert fit_batch(est, 1_500, 8, where="--max-memory") == 4  # else the largest that fits
    with pytest.raises(UserError, match=r"needs 1\.1KiB at batch 1 \(8 tokens.*more than --max-memory"):
        fit_batch(est, 1_149, 8, where="--max-memory")


def test_the_peak_grows_with_batch_and_length_as_the_terms_say():
    from headdb.checkpoints.loading import ModelShape

    # Qwen2.5-Math-1.5B: per row at 128 tokens, float32, the IG steps are the peak
    shape = ModelShape("Qwen2ForCausalLM", 28, 12, 2, 1536, 128, 8960, 151936, {"tie_word_embeddings": True})
    est = estimate(shape, dtype_bytes=4, seq=128)
    assert est.phase == "ig-steps"
    n_src, n_ports = 1 + 28 * 13, 28 * 17 + 1
    delta, saved = 4 * n_src * 1536 * 128, 28 * layer_saved_bytes(shape, 4, 128) * 128
    assert delta + saved < est.phases["ig-steps"] < 1.1 * (delta + saved)  # per step: little beside them
    summed = estimate(shape, dtype_bytes=4, seq=128, scoring="summed")
    assert summed.phases["ig-steps"] > delta + saved + 4 * n_ports * 1536 * 128
    assert est.weights == 4 * 1_543_714_304  # Qwen2.5-1.5B's parameter count
    longer = estimate(shape, dtype_bytes=4, seq=256)
    assert longer.per_row > 2 * est.per_row  # the attention probabilities grow with S^2
    half = estimate(shape, dtype_bytes=2, seq=128)
    assert half.weights * 2 == est.weights and half.per_row < est.per_row


class _LiveBytes(TorchDispatchMode):
    """The peak of glibc's bytes in use, read after every aten op: live tensor bytes, once every
    block at or above 16 KiB is its own mmap (M_MMAP_THRESHOLD), as freed blocks then go back."""

    def __init__(self):
        super().__init__()
        self.libc = ctypes.CDLL("libc.so.6")
        fields = ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks")
        self.libc.mallinfo2.restype = type(
            "MallInfo2", (ctypes.Structure,), {"_fields_": [(f, ctypes.c_size_t) for f in fields]}
        )
        self.libc.mallopt(-3, 16 * 1024)  # M_MMAP_THRESHOLD
        self.start = self.peak = self.now()

    def now(self) -> int:
        info = self.libc.mallinfo2()
        return int(info.hblkhd + info.uordblks)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        self.peak = max(self.peak, self.now())
        return out


@pytest.mark.parametrize("dtype", ["float32"])  # bf16 on a CPU adds its kernels' float32 copies
def test_the_circuits_phase_is_what_faithfulness_holds(tiny_checkpoint, tmp_path, dtype):
    """evaluate_circuits (discover's faithfulness) holds the corrupted outputs and the running
    differences of every source, one layer's patched q/k/v term at a time, and the per-head forks:
    the model's `circuits` phase, measured as live bytes over the whole patched evaluation. (Its
    q/k/v term was once kept for every layer of the pass: 29 GB of Qwen3-8B's at 1024 tokens.)"""
    from headdb.attribution import build_layout, evaluate_circuits

    loaded = load_model(
        tiny_checkpoint(arch="qwen2", n_layers=4, n_heads=8, n_kv_heads=2, d_model=128, seed=0, at=tmp_path / "m"),
        dtype=dtype,
        device="cpu",
    )
    B, S = 2, 96
    pairs = pairs_of(B, S, loaded.shape.vocab_size)
    mask = np.arange(build_layout(loaded.shape).n_edges) % 2 == 0  # half the edges patched
    evaluate_circuits(loaded, pairs_of(1, 8, loaded.shape.vocab_size), [mask], batch_size=1)  # warm-up
    w = torch.finfo(getattr(torch, dtype)).bits // 8
    with _LiveBytes() as live:
        evaluate_circuits(loaded, pairs, [mask], batch_size=B)
    measured = live.peak - live.start
    predicted = B * estimate(loaded.shape, dtype_bytes=w, seq=S, circuits=True).phases["circuits"]
    assert abs(predicted - measured) <= 0.1 * measured, (predicted, measured)


def test_factored_heads_hold_what_the_model_says(tiny_checkpoint, tmp_path):
    """An EAP-IG call with every layer's heads factored (factored.FactoredHeads) peaks, in live
    bytes, where the model's `ig-steps` phase says, as the same call with the differences held
    whole does, and saves at least what the model says (dh in place of D per head, less one
    layer's heads expanded: the model counts the expansion at the step's peak, where the call
    does not hold it): the term that takes Qwen3-8B at 1024 tokens from 1.40x to 1.30x of a plain
    pass."""
    loaded = load_model(
        tiny_checkpoint(arch="qwen3", n_layers=4, n_heads=8, n_kv_heads=2, d_model=256, seed=0, at=tmp_path / "m"),
        dtype="float32",
        device="cpu",
    )
    B, S, L = 2, 48, 4
    pairs = pairs_of(B, S, loaded.shape.vocab_size)
    kw = dict(method="eap-ig", metric="kl", steps=2, batch_size=B, scoring="per-step")
    eap_scores(loaded, pairs_of(1, 8, loaded.shape.vocab_size), **kw)  # warm-up
    measured, predicted = {}, {}
    for f in (0, L):
        with _LiveBytes() as live:
            eap_scores(loaded, pairs, factored=f, **kw)
        measured[f] = live.peak - live.start
        est = estimate(loaded.shape, dtype_bytes=4, seq=S, factored=f)
        assert est.phase == "ig-steps"
        predicted[f] = B * est.phases["ig-steps"]
        assert abs(predicted[f] - measured[f]) <= 0.1 * measured[f], (f, predicted[f], measured[f])
    saved, said = measured[0] - measured[L], predicted[0] - predicted[L]
    assert said == 4 * L * 8 * (256 - 32) * B * S - 4 * 8 * 256 * B * S
    assert said <= saved and saved > 0.2 * measured[0], (saved, said, measured)
