"""Demo training recipes: a tiny model pretrained from scratch on arithmetic, then real trl runs.

Everything here runs on CPU in seconds to minutes and is deterministic under ``seed``:

- `pretrain_base` builds a tiny Qwen2-architecture model with grouped-query attention
  (`headdb.demo.tiny`), trains it from scratch with `transformers.Trainer` on synthetic arithmetic
  rendered in the exact chat format that `headdb.evals.generation.chat_prompts` feeds a model (the
  benchmark prompt, with its "\\boxed{}" suffix, as the user turn), and saves a Hugging Face model
  directory. The pretraining corpus mixes raw arithmetic lines ("47 + 38 = 85"), chat examples
  answered directly ("47 + 38 = 85.\\n\\boxed{85}") and a small share of step-by-step answers, so
  the base solves some problems and leaves SFT (step-by-step solutions) and GRPO (accuracy
  reward) something to improve.
- `train_sft` runs `trl.SFTTrainer` on `sft_dataset` (conversational prompt/completion).
- `train_grpo` runs `trl.GRPOTrainer` on `grpo_dataset` (conversational prompt + ``answer``)
  with `accuracy_reward` (math-verify through `headdb.evals.grading.grade`).

Both trl recipes log every step and save ``out_dir/checkpoint-<step>/`` (model, tokenizer,
generation config, trainer_state.json) every ``save_steps`` steps, and the final model plus
``trainer_state.json`` at the top of ``out_dir``: the layout ``headdb ingest run`` reads. Every
function takes ``callbacks=`` (transformers ``TrainerCallback`` objects) for its trainer.

Training items come from `headdb.evals.benchmarks.synthetic_arithmetic` under seeds offset by
`TRAIN_SEED_OFFSET`, so a benchmark built with a small seed (0, 1, ...) is not the training
stream (level 1 has only 36 distinct problems, so those repeat anyway).
"""

from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path
from typing import Optional, Sequence

TRAIN_SEED_OFFSET = 1_000_003
PLACES = ("Ones", "Tens", "Hundreds", "Thousands", "Ten-thousands")

__all__ = [
    "TRAIN_SEED_OFFSET",
    "solution_text",
    "arithmetic_items",
    "sft_dataset",
    "grpo_dataset",
    "accuracy_reward",
    "pretraining_texts",
    "pretrain_base",
    "train_sft",
    "train_grpo",
    "evaluate_accuracy",
]


# --------------------------------------------------------------------------------------------
# Solutions


def _column_steps(a: int, b: int, op: str) -> list[str]:
    """Digit-by-digit addition or subtraction (a >= b for subtraction), one line per column."""
    da, db = str(a)[::-1], str(b)[::-1]
    lines = []
    carry = 0
    for i in range(max(len(da), len(db))):
        x = int(da[i]) if i < len(da) else 0
        y = int(db[i]) if i < len(db) else 0
        place = PLACES[min(i, len(PLACES) - 1)]
        if op == "+":
            total = x + y + carry
            lhs = f"{x} + {y}" + (f" + {carry}" if carry else "")
            digit, carry = total % 10, total // 10
            note = f", write {digit} carry {carry}" if carry else ""
            lines.append(f"{place}: {lhs} = {total}{note}.")
        else:
            top = x - carry
            lhs = f"{x} - {carry}" if carry else f"{x}"
            if top < y:
                big = f"{x + 10} - {carry}" if carry else f"{x + 10}"
                lines.append(f"{place}: {lhs} - {y} needs a borrow: {big} - {y} = {top + 10 - y}.")
                carry = 1
            else:
                lines.append(f"{place}: {lhs} - {y} = {top - y}.")
                carry = 0
    if op == "+" and carry:
        lines.append(f"{PLACES[min(len(lines), len(PLACES) - 1)]}: carry {carry}.")
    return lines


_BINARY = re.compile(r"^\s*(\d+)\s*([-+*])\s*(\d+)\s*$")


def _eval_steps(expr: str) -> tuple[list[str], int]:
    """Left-to-right, parentheses-first evaluation of a small integer expression, as lines."""
    lines: list[str] = []
    expr = expr.strip()
    # Resolve parentheses innermost first.
    while "(" in expr:
        m = re.search(r"\(([^()]*)\)", expr)
        inner_lines, value = _eval_steps(m.group(1))
        lines += inner_lines
        expr = expr[: m.start()] + str(value) + expr[m.end() :]
    tokens = re.findall(r"\d+|[-+*]", expr)
    # Multiplication before addition and subtraction.
    while "*" in tokens:
        i = tokens.index("*")
        a, b = int(tokens[i - 1]), int(tokens[i + 1])
        lines.append(f"{a} * {b} = {a * b}.")
        tokens[i - 1 : i + 2] = [str(a * b)]
    value = int(tokens[0])
    for i in range(1, len(tokens), 2):
        op, b = tokens[i], int(tokens[i + 1])
        new = value + b if op == "+" else value - b
        lines.append(f"{value} {op} {b} = {new}.")
        value = new
    return lines, value


def solution_text(expression: str, style: str = "steps") -> str:
    """The answer text for an arithmetic ``expression`` (as in "What is <expression>?").

    style "steps": a step-by-step solution; a single addition or subtraction goes column by
    column ("Ones: 7 + 8 = 15, write 5 carry 1."), anything else one operation per line, then
    ``\\boxed{<value>}`` on the last line. style "direct":
    "<expression> = <value>." and the box; style "unboxed": the same without the box (an answer
    the math grader cannot read, as a base model's unformatted replies).
    """
    m = _BINARY.match(expression)
    if m and m.group(2) in "+-":
        a, op, b = int(m.group(1)), m.group(2), int(m.group(3))
        value = a + b if op == "+" else a - b
        lines = _column_steps(a, b, op) if (op == "+" or a >= b) else _eval_steps(expression)[0]
    else:
        lines, value = _eval_steps(expression)
    if style == "direct":
        return f"{expression} = {value}.\n\\boxed{{{value}}}"
    if style == "unboxed":
        return f"{expression} = {value}."
    if style != "steps":
        raise ValueError(f"unknown solution style {style!r}; use 'steps', 'direct' or 'unboxed'")
    return "\n".join(lines + [f"\\boxed{{{value}}}"])


# --------------------------------------------------------------------------------------------
# Datasets


def arithmetic_items(n: int, seed: int, levels: Sequence[int] = (1, 2), *, suffix: Optional[str] = None) -> list[dict]:
    """``n`` training items (dicts: prompt, problem, answer, level, expression) from the
    synthetic arithmetic benchmark under seed ``TRAIN_SEED_OFFSET + seed``; the prompt is the
    benchmark's (problem + the "\\boxed{}" suffix, or ``suffix`` when given; "" for none)."""
    import json

    from headdb.evals.benchmarks import synthetic_arithmetic

    df = synthetic_arithmetic(n, levels=tuple(levels), seed=TRAIN_SEED_OFFSET + int(seed), suffix=suffix)
    out = []
    for row in df.iter_rows(named=True):
        out.append(
            {
                "prompt": row["prompt"],
                "problem": row["problem"],
                "answer": row["answer"],
                "level": int(row["level"]),
                "expression": json.loads(row["meta"])["expression"],
            }
        )
    return out


def sft_dataset(
    n: int, seed: int = 0, *, levels: Sequence[int] = (1, 2), style: str = "steps", suffix: Optional[str] = None
):
    """A `datasets.Dataset` for `trl.SFTTrainer` in conversational prompt/completion form:
    ``prompt`` = [user: benchmark prompt], ``completion`` = [assistant: `solution_text`], plus
    ``answer`` and ``level`` columns (ignored by SFT)."""
    from datasets import Dataset

    rows = arithmetic_items(n, seed, levels, suffix=suffix)
    return Dataset.from_dict(
        {
            "prompt": [[{"role": "user", "content": r["prompt"]}] for r in rows],
            "completion": [[{"role": "assistant", "content": solution_text(r["expression"], style)}] for r in rows],
            "answer": [r["answer"] for r in rows],
            "level": [r["level"] for r in rows],
        }
    )


def grpo_dataset(n: int, seed: int = 0, *, levels: Sequence[int] = (1, 2), suffix: Optional[str] = None):
    """A `datasets.Dataset` for `trl.GRPOTrainer`: conversational ``prompt`` = [user: benchmark
    prompt] and the gold ``answer`` (passed to `accuracy_reward`), plus ``level``."""
    from datasets import Dataset

    rows = arithmetic_items(n, seed, levels, suffix=suffix)
    return Dataset.from_dict(
        {
            "prompt": [[{"role": "user", "content": r["prompt"]}] for r in rows],
            "answer": [r["answer"] for r in rows],
            "level": [r["level"] for r in rows],
        }
    )


def _completion_text(completion) -> str:
    if isinstance(completion, str):
        return completion
    if isinstance(completion, dict):
        return str(completion.get("content") or "")
    if isinstance(completion, (list, tuple)):  # conversational: a list of messages
        return "".join(
            _completion_text(m)
            for m in completion
            if not isinstance(m, dict) or m.get("role", "assistant") == "assistant"
        )
    return str(completion)


def accuracy_reward(completions, answer, **kwargs) -> list[float]:
    """trl reward function: 1.0 when a completion's last ``\\boxed{}`` equals the gold
    ``answer`` under math-verify (`headdb.evals.grading.grade`, style "math"), else 0.0.

    ``completions`` are strings or conversational message lists; ``answer`` is the dataset's
    column of the same length. Other keyword arguments from trl are ignored.
    """
    from headdb.evals.grading import grade

    return [
        1.0 if grade(str(gold), _completion_text(c), style="math").correct else 0.0
        for c, gold in zip(completions, answer)
    ]


# --------------------------------------------------------------------------------------------
# Shared trainer settings


def _quiet_env() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("WANDB_DISABLED", "true")
    os.environ.setdefault("WANDB_MODE", "disabled")


def _cpu_args(
    out_dir: Path,
    *,
    steps: int,
    save_steps: Optional[int],
    seed: int,
    lr: float,
    batch_size: int,
    scheduler: str,
    warmup_steps: int,
    weight_decay: float,
) -> dict:
    """TrainingArguments fields shared by every recipe: CPU, fp32, seeded, every step logged."""
    saving = dict(save_strategy="steps", save_steps=save_steps) if save_steps else dict(save_strategy="no")
    return dict(
        output_dir=str(out_dir),
        max_steps=int(steps),
        per_device_train_batch_size=int(batch_size),
        gradient_accumulation_steps=1,
        learning_rate=float(lr),
        lr_scheduler_type=scheduler,
        warmup_steps=int(warmup_steps),
        weight_decay=float(weight_decay),
        logging_steps=1,
        logging_first_step=True,
        save_only_model=True,
        report_to="none",
        use_cpu=True,
        bf16=False,
        fp16=False,
        seed=int(seed),
        data_seed=int(seed),
        dataloader_num_workers=0,
        disable_tqdm=True,
        eval_strategy="no",
        **_no_checkpointing(),
        **saving,
    )


def _no_checkpointing() -> dict:
    """Activation (gradient) checkpointing off, under the argument name this transformers
    version uses (trl's configs default it to on; it only slows tiny CPU models)."""
    import dataclasses

    from transformers import TrainingArguments

    names = {f.name for f in dataclasses.fields(TrainingArguments)}
    if "activation_checkpointing" in names:
        return {"activation_checkpointing": False}
    return {"gradient_checkpointing": False}


@contextlib.contextmanager
def _threads(threads: Optional[int]):
    """Run with ``torch.set_num_threads(threads)`` (None: leave torch's setting), restored after."""
    import torch

    old = torch.get_num_threads()
    if threads:
        torch.set_num_threads(int(threads))
    try:
        yield
    finally:
        torch.set_num_threads(old)


def _load(model_dir: Path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(model_dir)
    return model, tok


def _end_of_turn_eos(model, tok) -> None:
    """Make the chat template's end-of-turn token stop generation, as Qwen instruct models do:
    the generation config lists ``<|im_end|>`` and the tokenizer's eos."""
    ids = [tok.convert_tokens_to_ids("<|im_end|>"), tok.eos_token_id]
    ids = [i for i in dict.fromkeys(ids) if i is not None and i >= 0]
    model.generation_config.eos_token_id = ids
    model.generation_config.pad_token_id = tok.pad_token_id


@contextlib.contextmanager
def _keep_global_rng():
    """Restore Python's, NumPy's and torch's global RNG states afterwards (`Trainer` reseeds
    them all from ``args.seed``)."""
    import random

    import numpy as np
    import torch

    py, npy = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        try:
            yield
        finally:
            random.setstate(py)
            np.random.set_state(npy)


def _finish(trainer, out_dir: Path) -> Path:
    trainer.save_model(str(out_dir))  # model, tokenizer and generation config at the top
    trainer.save_state()  # out_dir/trainer_state.json with the whole log_history
    return out_dir


# --------------------------------------------------------------------------------------------
# Pretraining


def _chat_renderer(tok):
    """A fast ``(user, assistant) -> text`` equal to the tokenizer's chat template applied to
    one user and one assistant message (rendered once with placeholders, then filled in)."""
    u, a = "\x00USER\x00", "\x00ASSISTANT\x00"
    shape = tok.apply_chat_template(
        [{"role": "user", "content": u}, {"role": "assistant", "content": a}], tokenize=False
    )
    head, rest = shape.split(u)
    mid, tail = rest.split(a)
    return lambda user, assistant: f"{head}{user}{mid}{assistant}{tail}"


def pretraining_texts(
    tok,
    n: int,
    seed: int,
    *,
    levels: Sequence[int] = (1, 2),
    plain_fraction: float = 0.3,
    steps_fraction: float = 0.1,
    boxed_fraction: float = 1.0,
    lines_per_plain: int = 4,
    suffix: Optional[str] = None,
) -> list[str]:
    """The pretraining corpus: ``n`` documents, deterministic under ``seed``.

    A share ``plain_fraction`` are raw question/answer lines ("What is 47 + 38? 47 + 38 = 85.",
    ``lines_per_plain`` per document); the rest are chat-formatted question/answer pairs (the benchmark prompt as
    the user turn), answered step by step with probability ``steps_fraction`` and directly
    otherwise; a direct answer carries its ``\\boxed{}`` with probability ``boxed_fraction``.
    Every document ends with the tokenizer's eos.
    """
    import random

    rng = random.Random(f"headdb-pretrain:{seed}")
    render = _chat_renderer(tok)
    n_plain = int(round(n * plain_fraction))
    items = arithmetic_items(max(1, n - n_plain + n_plain * lines_per_plain), seed, levels, suffix=suffix)
    rng.shuffle(items)
    docs: list[str] = []
    pos = 0
    for _ in range(n - n_plain):
        it = items[pos]
        pos += 1
        style = (
            "steps"
            if rng.random() < steps_fraction
            else "direct"
            if boxed_fraction >= 1.0 or rng.random() < boxed_fraction
            else "unboxed"
        )
        docs.append(render(it["prompt"], solution_text(it["expression"], style)) + tok.eos_token)
    for _ in range(n_plain):
        chunk = items[pos : pos + lines_per_plain]
        pos += lines_per_plain
        docs.append("\n".join(f"{it['problem']} {it['expression']} = {it['answer']}." for it in chunk) + tok.eos_token)
    rng.shuffle(docs)
    return docs


def pretrain_base(
    out_dir,
    *,
    n_layers: int = 2,
    n_heads: int = 4,
    n_kv_heads: int = 2,
    d_model: int = 64,
    d_mlp: Optional[int] = None,
    d_head: Optional[int] = None,
    arch: str = "qwen2",
    steps: int = 1000,
    batch_size: int = 16,
    lr: float = 3e-3,
    warmup_steps: int = 30,
    weight_decay: float = 0.01,
    levels: Sequence[int] = (1, 2),
    plain_fraction: float = 0.3,
    steps_fraction: float = 0.1,
    boxed_fraction: float = 1.0,
    lines_per_plain: int = 4,
    suffix: Optional[str] = None,
    seed: int = 0,
    save_steps: Optional[int] = None,
    threads: Optional[int] = None,
    callbacks: Optional[list] = None,
) -> Path:
    """Build a tiny model (`headdb.demo.tiny.build_tiny_model`) and pretrain it from scratch on
    arithmetic (`pretraining_texts`) with `transformers.Trainer`; return ``out_dir``.

    ``out_dir`` ends up a Hugging Face model directory (config, weights, tokenizer with the
    chat template, a generation config that stops at ``<|im_end|>``) plus trainer_state.json;
    ``save_steps`` also keeps checkpoint-<step>/ dirs. Cosine schedule with warmup, loss on
    every token, one padded document per sequence (no packing: a document cut across blocks
    would lose its question). Deterministic under ``seed`` (weights, data order and corpus).
    """
    from datasets import Dataset
    from transformers import DataCollatorForLanguageModeling, Trainer, TrainingArguments

    from headdb.demo.tiny import build_tiny_model

    _quiet_env()
    out = Path(out_dir)
    build_tiny_model(
        out,
        arch=arch,
        n_layers=n_layers,
        n_heads=n_heads,
        n_kv_heads=n_kv_heads,
        d_model=d_model,
        d_mlp=d_mlp,
        d_head=d_head,
        seed=seed,
    )
    model, tok = _load(out)
    _end_of_turn_eos(model, tok)
    texts = pretraining_texts(
        tok,
        steps * batch_size,
        seed,
        levels=levels,
        plain_fraction=plain_fraction,
        steps_fraction=steps_fraction,
        boxed_fraction=boxed_fraction,
        lines_per_plain=lines_per_plain,
        suffix=suffix,
    )
    ids = tok(texts, add_special_tokens=False)["input_ids"]
    ds = Dataset.from_dict({"input_ids": ids})
    args = TrainingArguments(
        **_cpu_args(
            out,
            steps=steps,
            save_steps=save_steps,
            seed=seed,
            lr=lr,
            batch_size=batch_size,
            scheduler="cosine",
            warmup_steps=warmup_steps,
            weight_decay=weight_decay,
        )
    )
    collator = DataCollatorForLanguageModeling(tok, mlm=False)
    with _keep_global_rng(), _threads(threads):  # Trainer reseeds the global RNGs
        trainer = Trainer(
            model=model,
            args=args,
            train_dataset=ds,
            data_collator=collator,
            processing_class=tok,
            callbacks=list(callbacks or []),
        )
        trainer.train()
    return _finish(trainer, out)


# --------------------------------------------------------------------------------------------
# trl recipes


def train_sft(
    base_dir,
    out_dir,
    *,
    steps: int = 40,
    save_steps: int = 20,
    seed: int = 0,
    lr: float = 1e-3,
    batch_size: int = 16,
    n_examples: Optional[int] = None,
    levels: Sequence[int] = (1, 2),
    style: str = "steps",
    suffix: Optional[str] = None,
    scheduler: str = "constant",
    warmup_steps: int = 0,
    max_length: int = 384,
    threads: Optional[int] = None,
    callbacks: Optional[list] = None,
) -> Path:
    """Supervised fine-tuning of ``base_dir`` on step-by-step solutions with `trl.SFTTrainer`.

    Data: `sft_dataset` (``n_examples``, default steps * batch_size, seed ``seed``, solution
    ``style`` "steps" or "direct"); loss on the completion only (trl's default for
    prompt/completion data). Saves checkpoint-<step>/
    every ``save_steps`` and the final model + trainer_state.json in ``out_dir``; returns it.
    """
    from trl import SFTConfig, SFTTrainer

    _quiet_env()
    out = Path(out_dir)
    model, tok = _load(Path(base_dir))
    _end_of_turn_eos(model, tok)
    ds = sft_dataset(n_examples or steps * batch_size, seed, levels=levels, style=style, suffix=suffix)
    config = SFTConfig(
        **_cpu_args(
            out,
            steps=steps,
            save_steps=save_steps,
            seed=seed,
            lr=lr,
            batch_size=batch_size,
            scheduler=scheduler,
            warmup_steps=warmup_steps,
            weight_decay=0.0,
        ),
        max_length=max_length,
        packing=False,
        dataset_num_proc=None,
    )
    with _keep_global_rng(), _threads(threads):
        trainer = SFTTrainer(
            model=model, args=config, train_dataset=ds, processing_class=tok, callbacks=list(callbacks or [])
        )
        trainer.train()
    return _finish(trainer, out)


def train_grpo(
    base_dir,
    out_dir,
    *,
    steps: int = 40,
    save_steps: int = 20,
    seed: int = 0,
    num_generations: int = 8,
    prompts_per_step: int = 4,
    max_completion_length: int = 96,
    lr: float = 3e-5,
    beta: float = 0.04,
    temperature: float = 0.7,
    n_prompts: Optional[int] = None,
    levels: Sequence[int] = (1, 2),
    suffix: Optional[str] = None,
    scheduler: str = "constant_with_warmup",
    warmup_steps: int = 10,
    reward_funcs: Optional[list] = None,
    threads: Optional[int] = None,
    callbacks: Optional[list] = None,
) -> Path:
    """GRPO on ``base_dir`` with `trl.GRPOTrainer` and `accuracy_reward`.

    Each step samples ``num_generations`` completions (at most ``max_completion_length``
    tokens, ``temperature``) for each of ``prompts_per_step`` prompts from `grpo_dataset`
    (``n_prompts``, default steps * prompts_per_step), one optimiser step per generation
    batch. ``beta`` > 0 keeps a reference model, so trl logs ``kl``. ``reward_funcs`` replaces
    the reward (trl logs each as ``rewards/<function name>/mean``). Saves checkpoint-<step>/
    every ``save_steps`` and the final model + trainer_state.json in ``out_dir``; returns it.
    """
    from trl import GRPOConfig, GRPOTrainer

    _quiet_env()
    out = Path(out_dir)
    model, tok = _load(Path(base_dir))
    _end_of_turn_eos(model, tok)
    ds = grpo_dataset(n_prompts or steps * prompts_per_step, seed, levels=levels, suffix=suffix)
    config = GRPOConfig(
        **_cpu_args(
            out,
            steps=steps,
            save_steps=save_steps,
            seed=seed,
            lr=lr,
            batch_size=num_generations * prompts_per_step,
            scheduler=scheduler,
            warmup_steps=warmup_steps,
            weight_decay=0.0,
        ),
        num_generations=num_generations,
        max_completion_length=max_completion_length,
        temperature=temperature,
        beta=beta,
        log_completions=False,
    )
    with _keep_global_rng(), _threads(threads):
        trainer = GRPOTrainer(
            model=model,
            reward_funcs=list(reward_funcs or [accuracy_reward]),
            args=config,
            train_dataset=ds,
            processing_class=tok,
            callbacks=list(callbacks or []),
        )
        trainer.train()
    return _finish(trainer, out)


# --------------------------------------------------------------------------------------------
# Measuring


def evaluate_accuracy(
    model_dir,
    *,
    n: int = 64,
    levels: Sequence[int] = (1, 2),
    seed: int = 0,
    max_new_tokens: int = 96,
    batch_size: int = 64,
    temperature: float = 0.0,
    samples: int = 1,
    top_p: float = 1.0,
    suffix: Optional[str] = None,
) -> dict[str, float]:
    """Accuracy of ``model_dir`` on ``synthetic_arithmetic(n, levels, seed)`` through the chat
    template (`headdb.evals.generation`), graded by `headdb.evals.grading.grade`: {"all": ..., "level1":
    ...}. Greedy by default; ``temperature`` > 0 samples ``samples`` completions per problem
    (mean accuracy over samples, i.e. pass@1)."""
    import torch

    from headdb.evals.benchmarks import synthetic_arithmetic
    from headdb.evals.generation import Sampling, chat_prompts, generate
    from headdb.evals.grading import grade

    model, tok = _load(Path(model_dir))
    model.eval()
    df = synthetic_arithmetic(n, levels=tuple(levels), seed=seed, suffix=suffix)
    prompts = chat_prompts(tok, df["prompt"].to_list())
    sampling = Sampling(
        samples=samples if temperature > 0 else 1,
        temperature=temperature,
        top_p=top_p,
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
        seed=seed,
    )
    with torch.random.fork_rng(devices=[]):
        out = generate(model, tok, prompts, sampling)
    answers, lvls = df["answer"].to_list(), df["level"].to_list()
    idx = out["prompt_index"].to_list()
    correct = [grade(answers[i], c).correct for i, c in zip(idx, out["completion"].to_list())]
    res = {"all": sum(correct) / len(correct)}
    for lv in sorted(set(lvls)):
        ks = [c for c, i in zip(correct, idx) if lvls[i] == lv]
        res[f"level{lv}"] = sum(ks) / len(ks)
    return res
