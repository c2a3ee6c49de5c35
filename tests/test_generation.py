"""Batched generation and head interventions on a tiny local model."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from headdb.errors import UserError
from headdb.evals.generation import Sampling, chat_prompts, generate
from headdb.evals.interventions import Intervention, applied, head_means, parse_heads, random_control

PROMPTS = [f"{a}+{b}=" for a in range(5) for b in range(1, 5)] + ["12+345=", "7*8="]


@pytest.fixture(scope="module")
def tiny(tiny_checkpoint):
    path = tiny_checkpoint(arch="qwen2", n_layers=2, n_heads=4, n_kv_heads=2, d_model=64, init_std=0.2, seed=3)
    model = AutoModelForCausalLM.from_pretrained(path).eval()
    return model, AutoTokenizer.from_pretrained(path)


def test_batched_and_one_at_a_time_greedy_agree_token_for_token(tiny):
    model, tok = tiny
    batched = generate(model, tok, PROMPTS, Sampling(samples=1, temperature=0, max_new_tokens=16, batch_size=16))
    single = generate(model, tok, PROMPTS, Sampling(samples=1, temperature=0, max_new_tokens=16, batch_size=1))
    assert batched["completion"].to_list() == single["completion"].to_list()
    assert batched["n_tokens"].to_list() == single["n_tokens"].to_list()
    assert set(batched["finish_reason"]) <= {"stop", "length"}


def test_sampling_is_deterministic_under_seed_and_resumable(tiny, tmp_path):
    model, tok = tiny
    s = Sampling(samples=3, temperature=0.9, top_p=0.95, max_new_tokens=10, seed=5, batch_size=4)
    first = generate(model, tok, PROMPTS[:6], s)
    assert first.height == 18 and first["sample_idx"].to_list()[:3] == [0, 1, 2]
    assert generate(model, tok, PROMPTS[:6], s)["completion"].to_list() == first["completion"].to_list()
    other = generate(model, tok, PROMPTS[:6], Sampling(**{**s.config(), "seed": 6}))
    assert other["completion"].to_list() != first["completion"].to_list()
    # An interrupted run keeps its finished batches; the resumed run only fills in the rest.
    parts = tmp_path / "parts"
    generate(model, tok, PROMPTS[:6], s, resume_dir=parts)
    (parts / "batch-000002.parquet").unlink()
    calls = []
    resumed = generate(model, tok, PROMPTS[:6], s, resume_dir=parts, progress=lambda d, t: calls.append(d))
    assert resumed["completion"].to_list() == first["completion"].to_list()
    assert calls == [1, 2, 3, 4, 5]


def _logits(model, tok, intervention=None):
    enc = tok(PROMPTS[:4], return_tensors="pt", padding=True)
    with torch.no_grad(), applied(model, intervention):
        return model(**enc).logits


def test_no_heads_or_scale_one_is_bit_identical(tiny):
    model, tok = tiny
    base = _logits(model, tok)
    assert torch.equal(base, _logits(model, tok, None))
    assert torch.equal(base, _logits(model, tok, Intervention("scale", [(0, 1), (1, 2)], factor=1.0)))


def test_zero_ablating_every_head_changes_outputs(tiny):
    model, tok = tiny
    base = _logits(model, tok)
    every = [(l, h) for l in range(2) for h in range(4)]
    ablated = _logits(model, tok, Intervention("zero", every))
    assert (base - ablated).abs().max() > 1e-2
    # and equals the model with o_proj zeroed
    saved = [layer.self_attn.o_proj.weight.detach().clone() for layer in model.model.layers]
    try:
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.data.zero_()
        assert torch.allclose(_logits(model, tok), ablated, atol=1e-6)
    finally:
        for layer, w in zip(model.model.layers, saved):
            layer.self_attn.o_proj.weight.data.copy_(w)
    assert torch.equal(base, _logits(model, tok))  # hooks removed


def test_scale_and_mean_ablation(tiny):
    model, tok = tiny
    base = _logits(model, tok)
    up = _logits(model, tok, Intervention("scale", [(1, 0)], factor=1.3))
    assert not torch.equal(base, up)
    enc = tok(PROMPTS, return_tensors="pt", padding=True)
    means = head_means(model, [{"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}])
    assert set(means) == {0, 1} and means[0].shape == (4, 16)
    mean_ablated = _logits(model, tok, Intervention("mean", [(1, 0)], means=means))
    assert not torch.equal(base, mean_ablated)


def test_head_specs_and_matched_random_control():
    assert parse_heads("L5H1, L7H3,l5h1") == [(5, 1), (7, 3)]
    with pytest.raises(UserError, match="L<layer>H<head>"):
        parse_heads("5.1")
    with pytest.raises(UserError, match="out of range"):
        parse_heads("L9H0", n_layers=4, n_heads=8)
    heads = [(2, 0), (2, 1), (5, 3)]
    control = random_control(heads, n_heads=8, seed=0)
    assert sorted(l for l, _ in control) == [2, 2, 5]
    assert not set(control) & set(heads)
    assert control == random_control(heads, n_heads=8, seed=0)
    assert control != random_control(heads, n_heads=8, seed=1) or control != random_control(heads, 8, seed=2)


def test_a_control_is_drawn_outside_the_heads_it_avoids_while_a_layer_has_enough():
    heads = [(2, 0), (5, 3)]
    circuit = [(2, h) for h in range(1, 7)] + [(5, h) for h in range(0, 8) if h != 3]  # all but L2H7 / none in L5
    for seed in range(20):
        control = random_control(heads, n_heads=8, seed=seed, avoid=circuit)
        assert control[0] == (2, 7)  # the one head of layer 2 outside the circuit and the set
        assert control[1][0] == 5 and control[1] != (5, 3)  # layer 5 has no head outside: any other head
    assert random_control(heads, 8, seed=4, avoid=()) == random_control(heads, 8, seed=4)  # no avoid: as before


def test_chat_prompts_modes(tiny):
    _, tok = tiny
    on = chat_prompts(tok, ["1+1="], mode="think_on")[0]
    off = chat_prompts(tok, ["1+1="], mode="think_off")[0]
    assert "<|im_start|>user" in on and "</think>" in off and "</think>" not in on
    assert chat_prompts(tok, ["1+1="], chat="off") == ["1+1="]


def test_generation_never_runs_through_the_bridge(tiny_checkpoint):
    """A bridge-wrapped model generates wrongly with HF's KV cache; LoadedModel must avoid it."""
    from headdb.checkpoints.loading import load_model

    path = tiny_checkpoint(arch="qwen2", n_layers=2, n_heads=4, n_kv_heads=2, d_model=64, init_std=0.2, seed=4)
    plain = AutoModelForCausalLM.from_pretrained(path, attn_implementation="eager").eval()
    tok = AutoTokenizer.from_pretrained(path)
    s = Sampling(samples=1, temperature=0, max_new_tokens=12, batch_size=4)
    expected = generate(plain, tok, PROMPTS[:8], s)["completion"].to_list()
    loaded = load_model(path, dtype="float32", device="cpu")
    assert not loaded.bridged
    assert generate(loaded.generation_model(), loaded.tokenizer, PROMPTS[:8], s)["completion"].to_list() == expected
    loaded.bridge  # attribution wraps the model in place
    assert loaded.bridged and loaded.generation_model() is not loaded.hf_model
    assert generate(loaded.generation_model(), loaded.tokenizer, PROMPTS[:8], s)["completion"].to_list() == expected
