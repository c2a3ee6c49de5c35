"""Loading local checkpoints offline: clear errors, shapes, digests, tiny builders."""

from __future__ import annotations

import json
import re
import shutil
import time

import pytest
import torch

from headdb.errors import UserError
from headdb.checkpoints.loading import load_model, read_config, weights_digest
from headdb.demo.tiny import build_tiny_model, build_tokenizer


def test_missing_path(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_model(tmp_path / "nope")


def test_hub_name_is_refused_quickly_without_network():
    t = time.monotonic()
    with pytest.raises(UserError, match="not a local directory") as err:
        load_model("Qwen/Qwen2.5-1.5B")
    assert "never downloads" in str(err.value) and "--local-dir" in str(err.value)
    assert time.monotonic() - t < 2.0


def test_file_and_non_model_directories(tmp_path):
    f = tmp_path / "weights.bin"
    f.write_bytes(b"x")
    with pytest.raises(UserError, match="not a model directory"):
        load_model(f)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UserError, match=r"not a model directory \(no config.json\)"):
        load_model(empty)
    only_config = tmp_path / "cfg"
    only_config.mkdir()
    (only_config / "config.json").write_text(json.dumps({"architectures": ["Qwen2ForCausalLM"]}))
    with pytest.raises(UserError, match="no weights"):
        load_model(only_config)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "config.json").write_text("{not json")
    (bad / "model.safetensors").write_bytes(b"")
    with pytest.raises(UserError, match="not valid JSON"):
        read_config(bad)


def test_unsupported_architecture_names_the_supported_ones(tmp_path):
    d = tmp_path / "gpt2"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({"architectures": ["GPT2LMHeadModel"]}))
    (d / "model.safetensors").write_bytes(b"\0" * 16)
    with pytest.raises(UserError, match="unsupported architecture 'GPT2LMHeadModel'") as err:
        load_model(d)
    for name in ("LlamaForCausalLM", "Qwen2ForCausalLM", "Qwen3ForCausalLM"):
        assert name in str(err.value)


def test_truncated_weights_are_refused_from_their_header(qwen2_gqa_dir, tmp_path):
    """A cut safetensors file is found from its header and size, without loading a tensor."""
    broken = tmp_path / "broken"
    shutil.copytree(qwen2_gqa_dir, broken)
    weights = broken / "model.safetensors"
    data = weights.read_bytes()
    for cut, says in (
        (len(data) - 1, "truncated (its header describes"),
        (1000, "truncated"),
        (4, "shorter than a safetensors header"),
    ):
        weights.write_bytes(data[:cut])
        with pytest.raises(UserError, match=re.escape(says)) as err:
            read_config(broken)
        assert str(weights) in str(err.value) and "\n" not in str(err.value)
    weights.write_bytes(data + b"\0")
    with pytest.raises(UserError, match="longer than its header says"):
        load_model(broken, device="cpu")
    weights.write_bytes(data)
    assert read_config(broken)[0] == broken.resolve()


def test_sharded_checkpoint_with_a_missing_or_cut_shard_is_refused(qwen2_gqa_dir, tmp_path):
    from safetensors.torch import load_file, save_file

    sharded = tmp_path / "sharded"
    shutil.copytree(qwen2_gqa_dir, sharded)
    tensors = load_file(sharded / "model.safetensors")
    (sharded / "model.safetensors").unlink()
    names = sorted(tensors)
    shards = {
        "model-00001-of-00002.safetensors": names[: len(names) // 2],
        "model-00002-of-00002.safetensors": names[len(names) // 2 :],
    }
    for shard, keys in shards.items():
        save_file({k: tensors[k] for k in keys}, sharded / shard, metadata={"format": "pt"})
    (sharded / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {}, "weight_map": {k: shard for shard, keys in shards.items() for k in keys}})
    )
    loaded = load_model(sharded, device="cpu")  # whole: loads
    assert loaded.shape.n_layers == 2
    second = sharded / "model-00002-of-00002.safetensors"
    data = second.read_bytes()
    second.write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match="00002-of-00002.safetensors: truncated"):
        read_config(sharded)
    second.unlink()
    with pytest.raises(UserError, match="shard model-00002-of-00002.safetensors of 2 is missing"):
        read_config(sharded)


def test_load_tiny_model_shape_and_key(qwen2_gqa_dir):
    loaded = load_model(qwen2_gqa_dir, device="cpu")
    s = loaded.shape
    assert (s.architecture, s.n_layers, s.n_heads, s.n_kv_heads, s.d_model, s.d_head) == (
        "Qwen2ForCausalLM",
        2,
        8,
        2,
        64,
        8,
    )
    assert s.vocab_size == len(loaded.tokenizer)
    assert loaded.model_key == f"qwen2-L2-H8-KV2-D64-DH8-F256-V{s.vocab_size}"
    assert loaded.device == "cpu" and loaded.dtype == torch.float32
    assert s.models_row()["model_key"] == loaded.model_key
    ids = loaded.tokenizer("12+35=47", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        logits = loaded.bridge(ids)
    assert logits.shape == (1, ids.shape[1], s.vocab_size)
    assert loaded.tokenizer.decode(ids[0]) == "12+35=47"


def test_weights_digest_is_stable_cached_and_content_sensitive(tmp_path, monkeypatch):
    monkeypatch.setenv("HEADDB_CACHE", str(tmp_path / "cache"))
    a = build_tiny_model(tmp_path / "a", "llama", n_layers=1, seed=0)
    b = build_tiny_model(tmp_path / "b", "llama", n_layers=1, seed=0)
    c = build_tiny_model(tmp_path / "c", "llama", n_layers=1, seed=1)
    da = weights_digest(a)
    assert len(da) == 64 and (tmp_path / "cache" / "weights-digests.json").is_file()
    assert weights_digest(a) == da  # cached path gives the same answer
    assert weights_digest(b) == da  # same seed, same bytes, another directory
    assert weights_digest(c) != da  # different weights
    shutil.copy(a / "config.json", tmp_path / "cfg.bak")
    cfg = json.loads((a / "config.json").read_text())
    cfg["rope_theta"] = 1234.0
    (a / "config.json").write_text(json.dumps(cfg))
    assert weights_digest(a) != da  # config.json is covered in full


def test_tiny_tokenizer_covers_arithmetic_text():
    tok = build_tokenizer()
    text = "Step 1: 12+35=47, so \\boxed{47}.\n"
    ids = tok(text)["input_ids"]
    assert tok.unk_token_id not in ids and tok.decode(ids) == text
    assert len(tok("<think>")["input_ids"]) == 1
    assert tok.pad_token == "<pad>" and tok.eos_token == "<|endoftext|>"
