"""Real (tiny, CPU) transformers / trl training runs: pretraining, SFT and GRPO recipes."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

pytest.importorskip("trl")

from transformers import TrainerCallback  # noqa: E402

from headdb.demo import recipes  # noqa: E402

TINY = dict(n_layers=1, n_heads=2, n_kv_heads=1, d_model=32)


class SaveRecorder(TrainerCallback):
    def __init__(self):
        self.saves: list[int] = []
        self.logs: list[dict] = []

    def on_save(self, args, state, control, **kwargs):
        self.saves.append(state.global_step)

    def on_log(self, args, state, control, logs=None, **kwargs):
        self.logs.append(dict(logs or {}))


def _weights_digest(model_dir: Path) -> str:
    from safetensors.torch import load_file

    tensors = load_file(str(model_dir / "model.safetensors"))
    h = hashlib.sha256()
    for name in sorted(tensors):
        h.update(name.encode())
        h.update(tensors[name].contiguous().numpy().tobytes())
    return h.hexdigest()


def _history(path: Path) -> list[dict]:
    return json.loads((path / "trainer_state.json").read_text())["log_history"]


def _checkpoints(out: Path) -> list[int]:
    return sorted(int(p.name.split("-")[1]) for p in out.glob("checkpoint-*"))


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    out = tmp_path_factory.mktemp("base")
    return recipes.pretrain_base(out, steps=3, batch_size=4, seed=0, **TINY)


def test_solution_text_is_correct_arithmetic():
    from headdb.evals.benchmarks import synthetic_arithmetic

    df = synthetic_arithmetic(40, levels=(1, 2, 3, 4), seed=5)
    for row in df.iter_rows(named=True):
        expr = json.loads(row["meta"])["expression"]
        for style in ("steps", "direct"):
            text = recipes.solution_text(expr, style)
            assert text.endswith("\\boxed{" + row["answer"] + "}")
            # every equation written in a line is true arithmetic
            for line in text.splitlines()[:-1]:
                claim = line.split(":")[-1].split(",")[0].strip().rstrip(".").removeprefix("So ")
                if " = " in claim:
                    lhs, rhs = claim.rsplit(" = ", 1)
                    assert eval(lhs) == int(rhs), line
    assert recipes.solution_text("47 + 38").splitlines()[:2] == [
        "Ones: 7 + 8 = 15, write 5 carry 1.",
        "Tens: 4 + 3 + 1 = 8.",
    ]


def test_accuracy_reward_grades_boxed_answers():
    completions = [
        "So 3 + 4 = 7.\n\\boxed{7}",
        [{"role": "assistant", "content": "Tens ... \\boxed{85}"}],
        "\\boxed{8}",
        "no box at all 7",
        "\\boxed{7.0}",
    ]
    rewards = recipes.accuracy_reward(completions, answer=["7", "85", "7", "7", "7"], trainer_state=None)
    assert rewards == [1.0, 1.0, 0.0, 0.0, 1.0]


def test_datasets_are_in_trl_formats():
    sft = recipes.sft_dataset(6, seed=1)
    row = sft[0]
    assert row["prompt"][0]["role"] == "user" and row["prompt"][0]["content"].endswith("\\boxed{}.")
    assert row["completion"][0]["role"] == "assistant"
    assert row["completion"][0]["content"].endswith("\\boxed{" + row["answer"] + "}")
    grpo = recipes.grpo_dataset(6, seed=1)
    assert set(grpo.column_names) >= {"prompt", "answer"}
    assert grpo["answer"] == sft["answer"]  # same items under the same seed
    assert recipes.sft_dataset(6, seed=2)["answer"] != sft["answer"]


def test_pretrained_base_is_a_loadable_model_dir(base):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(base)
    tok = AutoTokenizer.from_pretrained(base)
    assert model.config.model_type == "qwen2"
    assert model.config.num_key_value_heads < model.config.num_attention_heads
    assert tok.convert_tokens_to_ids("<|im_end|>") in model.generation_config.eos_token_id
    assert any("loss" in h for h in _history(base))


def test_sft_run_writes_checkpoints_and_logs(base, tmp_path):
    rec = SaveRecorder()
    out = recipes.train_sft(base, tmp_path / "sft", steps=4, save_steps=2, batch_size=4, seed=0, callbacks=[rec])
    assert _checkpoints(out) == [2, 4]
    assert rec.saves == [2, 4]
    for ckpt in ("checkpoint-2", "checkpoint-4"):
        d = out / ckpt
        assert (d / "model.safetensors").exists() and (d / "tokenizer.json").exists()
        assert any("loss" in h for h in _history(d))
    hist = _history(out)
    steps = [h["step"] for h in hist if "loss" in h]
    assert steps == [1, 2, 3, 4]
    assert (out / "model.safetensors").exists()
    assert _weights_digest(out) == _weights_digest(out / "checkpoint-4")
    assert any("loss" in log for log in rec.logs)


def test_sft_is_deterministic_under_seed(base, tmp_path):
    a = recipes.train_sft(base, tmp_path / "a", steps=2, save_steps=2, batch_size=4, seed=3)
    b = recipes.train_sft(base, tmp_path / "b", steps=2, save_steps=2, batch_size=4, seed=3)
    assert _weights_digest(a) == _weights_digest(b)
    assert _weights_digest(a) != _weights_digest(base)


def test_grpo_run_writes_checkpoints_and_trl_metrics(base, tmp_path):
    rec = SaveRecorder()
    out = recipes.train_grpo(
        base,
        tmp_path / "grpo",
        steps=4,
        save_steps=2,
        seed=0,
        num_generations=4,
        prompts_per_step=1,
        max_completion_length=12,
        callbacks=[rec],
    )
    assert _checkpoints(out) == [2, 4]
    assert rec.saves == [2, 4]
    hist = _history(out)
    logged = [h for h in hist if "reward" in h]
    assert [h["step"] for h in logged] == [1, 2, 3, 4]
    keys = set().union(*logged)
    for key in (
        "loss",
        "reward",
        "reward_std",
        "rewards/accuracy_reward/mean",
        "completions/mean_length",
        "kl",
        "entropy",
    ):
        assert key in keys, key
    assert all(0.0 <= h["reward"] <= 1.0 for h in logged)
    assert any("reward" in h for h in _history(out / "checkpoint-2"))
    assert (out / "checkpoint-4" / "tokenizer.json").exists()


def test_grpo_is_deterministic_under_seed(base, tmp_path):
    kw = dict(
        steps=2,
        save_steps=2,
        seed=5,
        num_generations=4,
        prompts_per_step=1,
        max_completion_length=12,
        temperature=1.0,
        lr=1e-3,
    )
    a = recipes.train_grpo(base, tmp_path / "a", **kw)
    b = recipes.train_grpo(base, tmp_path / "b", **kw)
    assert _weights_digest(a) == _weights_digest(b)
    rewards = [[h.get("reward"), h.get("completions/mean_length")] for h in _history(a) if "reward" in h]
    assert rewards == [[h.get("reward"), h.get("completions/mean_length")] for h in _history(b) if "reward" in h]
