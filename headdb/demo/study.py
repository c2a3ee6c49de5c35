"""`headdb demo`: the study in miniature, offline, on a CPU, built so its phenomena can be found.

The mechanisms it is built from (every number it prints is measured, none is set):

1. **A base without a skill.** A tiny Qwen2-architecture model (4 layers x 8 query heads on 2
   key/value heads, as grouped-query attention in Qwen2.5) is pretrained from scratch on
   addition only (`recipes.pretrain_base`), in the chat format the benchmarks use; half of its
   chat answers end in ``\\boxed{}``, the other half do not. It has never seen a minus sign.
2. **SFT teaches a new operation.** trl SFT on two-digit subtraction (plus addition, always
   boxed) must build circuitry the base lacks, so the circuit of the subtraction task should
   gain heads, and keep them as SFT goes on (`runs/sft`).
3. **GRPO at the edge of the base's ability.** trl GRPO on addition with a math-verify accuracy
   reward: the base answers correctly but boxes only about half its answers and slips on
   carries when sampling, so the reward has room to rise (`runs/grpo`); its circuit on the
   addition task is followed checkpoint by checkpoint beside the reward.
4. **The study** (`ingest/demo.toml`): attribution of the base and every checkpoint on both
   circuit tasks, generations on both benchmarks, and zero-ablation of each regime's emergent
   heads beside a random layer-matched control; then its reports, a closing summary of what
   was measured (`headdb.demo.summary`) and one HTML file with every report and figure.

Every stage is skipped when its output is complete, so an interrupted demo resumes. Library
logs and the trainers' log dicts go to `<out>/demo.log`; the terminal shows one progress bar
per stage. `--quick` uses smaller settings (and a separate folder).
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

from headdb.demo.stages import DONE, Stages, run_stage
from headdb.resources import package_dir

# Tiny models gain nothing from intra-op threads, and on a busy 2-core machine OpenMP's spinning
# threads slow each small matmul down many times over: one thread is faster and predictable
# (runs are also bit-identical only at a fixed thread count).
THREADS = 1
# The demo's prompts are the bare questions: the study's prompt suffix would triple every
# sequence, and a model this small does not read instructions anyway.
SUFFIX = ""
# The circuits the demo's reports and summary read (see ingest/demo.toml: top n edges, n = the
# study's share of the graph's edges).
SELECTION = "topn"


@dataclass(frozen=True)
class DemoSettings:
    # the model
    n_layers: int = 4
    n_heads: int = 8
    n_kv_heads: int = 2  # grouped-query attention, as in Qwen2.5
    d_model: int = 64
    d_head: int = 16  # 8 heads of 8 dimensions leave rotary embeddings too little room
    # pretraining: addition only, half the chat answers boxed
    pretrain_steps: int = 500
    pretrain_batch_size: int = 32
    pretrain_lr: float = 3e-3
    pretrain_levels: tuple[int, ...] = (1, 2)
    boxed_fraction: float = 0.5
    # SFT: subtraction (a new operation) and addition, always boxed
    sft_steps: int = 200
    sft_save_steps: int = 40
    sft_lr: float = 1e-3
    sft_batch_size: int = 32
    sft_levels: tuple[int, ...] = (5, 5, 1, 2)
    # GRPO: addition, accuracy reward
    grpo_steps: int = 80
    grpo_save_steps: int = 16
    grpo_lr: float = 5e-5
    grpo_warmup_steps: int = 10
    grpo_generations: int = 8
    grpo_prompts_per_step: int = 8
    grpo_temperature: float = 0.7
    grpo_max_completion_length: int = 32
    grpo_beta: float = 0.0
    grpo_levels: tuple[int, ...] = (1, 2)
    # the study's sizes
    task_items: int = 24
    bench_items: int = 48
    samples: int = 4
    max_new_tokens: int = 32
    # The study's checkpoints are computed two at a time, in two worker processes of one thread
    # each (as SFT and GRPO train side by side), so both cores of a 2-core machine work. Each job
    # is seeded on its own: what it computes does not depend on the process or the order.
    study_workers: int = 2


# Every training setting is pinned here (not left to the recipes' defaults), so the demo's numbers
# change only when this file does. Timings and the three-seed results: benchmarks/RESULTS.md, "Demo".
FULL = DemoSettings()
# --quick exercises every stage, job kind and report (what the tests check), not the findings.
QUICK = DemoSettings(
    pretrain_steps=100,
    sft_steps=40,
    sft_save_steps=20,
    grpo_steps=16,
    grpo_save_steps=8,
    grpo_warmup_steps=4,
    grpo_prompts_per_step=4,
    task_items=8,
    bench_items=12,
    samples=2,
    study_workers=1,  # 5 small checkpoints: starting two worker processes costs more than it saves
)


def demo_manifest() -> Path:
    return package_dir("manifests") / "demo.toml"


def circuit_task_items(n: int, seed: int = 0, op: str = "+") -> list[dict]:
    """Clean/corrupted pairs in the models' own chat format: the question, then the start of
    the answer "a op b = ", whose next token is the result's first digit.

    op "+": two-digit additions with a carry out of the ones and a two-digit sum (the first
    digit needs the carry: the problems GRPO trains on); the corrupted prompt changes both
    operands (same digit counts, so the same token length) and has another first digit.
    op "-": two-digit subtractions without a borrow, the skill SFT teaches; the corrupted prompt
    is the same problem with a plus ("73 + 25 = " against "73 - 25 = ", a sum below 100 with
    another first digit), so the circuit is what makes the model subtract rather than add: the
    operation the base never saw. (Changing the operands instead measures mostly the operand
    routing that addition already built, which left SFT only 1 or 2 new heads in some runs.)
    """
    from headdb.evals.benchmarks import build_prompt

    if op not in ("+", "-"):
        raise ValueError(f"op must be '+' or '-', got {op!r}")
    rng = random.Random(f"headdb-demo-task:{op}:{seed}")

    def pair(a: int, b: int, c: int, d: int, other: str) -> dict:
        x, y = (a + b, c + d) if op == "+" else (a - b, c + d)
        return {
            "clean": build_prompt(f"What is {a} {op} {b}?", suffix=SUFFIX),
            "clean_prefix": f"{a} {op} {b} = ",
            "corrupted": build_prompt(f"What is {c} {other} {d}?", suffix=SUFFIX),
            "corrupted_prefix": f"{c} {other} {d} = ",
            "answer": str(x)[0],
            "wrong_answer": str(y)[0],
        }

    def carry_sum() -> tuple[int, int]:
        while True:
            a, b = rng.randint(10, 89), rng.randint(10, 89)
            if a % 10 + b % 10 >= 10 and a + b < 100:
                return a, b

    items: list[dict] = []
    while len(items) < n:
        if op == "+":
            (a, b), (c, d) = carry_sum(), carry_sum()
            item = pair(a, b, c, d, "+")
        else:
            a, b = rng.randint(20, 99), rng.randint(10, 89)
            if not (a // 10 > b // 10 and a % 10 >= b % 10 and a + b < 100):
                continue
            item = pair(a, b, a, b, "+")
        if item["answer"] != item["wrong_answer"]:
            items.append({"id": f"t{len(items):03d}", **item})
    return items


# ------------------------------------------------------------------------------ building the models


def build_models(
    root: Path, settings: DemoSettings, *, seed: int = 0, stages: Stages | None = None, log_path: Path | None = None
) -> None:
    """The base, then SFT and GRPO from it, side by side in two processes (headdb.demo.parallel);
    `log_path`: the file the second process writes its library output to."""
    from headdb.demo.parallel import stage_beside

    s, stages = settings, stages or Stages()
    base, sft, grpo = root / "models" / "base", root / "runs" / "sft", root / "runs" / "grpo"
    run_stage(
        base,
        "pretraining",
        "pretrain_base",
        dict(
            out_dir=base,
            steps=s.pretrain_steps,
            n_layers=s.n_layers,
            n_heads=s.n_heads,
            n_kv_heads=s.n_kv_heads,
            d_model=s.d_model,
            d_head=s.d_head,
            batch_size=s.pretrain_batch_size,
            lr=s.pretrain_lr,
            levels=s.pretrain_levels,
            steps_fraction=0.0,
            boxed_fraction=s.boxed_fraction,
            lines_per_plain=2,
            suffix=SUFFIX,
            threads=THREADS,
            seed=seed,
        ),
        stages,
    )
    sft_args = dict(
        base_dir=base,
        out_dir=sft,
        steps=s.sft_steps,
        save_steps=s.sft_save_steps,
        lr=s.sft_lr,
        batch_size=s.sft_batch_size,
        levels=s.sft_levels,
        style="direct",
        suffix=SUFFIX,
        scheduler="cosine",
        warmup_steps=10,
        threads=THREADS,
        seed=seed,
    )
    grpo_args = dict(
        base_dir=base,
        out_dir=grpo,
        steps=s.grpo_steps,
        save_steps=s.grpo_save_steps,
        lr=s.grpo_lr,
        warmup_steps=s.grpo_warmup_steps,
        num_generations=s.grpo_generations,
        prompts_per_step=s.grpo_prompts_per_step,
        temperature=s.grpo_temperature,
        levels=s.grpo_levels,
        suffix=SUFFIX,
        max_completion_length=s.grpo_max_completion_length,
        beta=s.grpo_beta,
        threads=THREADS,
        seed=seed,
    )
    if (grpo / DONE).exists() or (sft / DONE).exists():  # resuming: at most one left to train
        run_stage(sft, "SFT (trl)", "train_sft", sft_args, stages)
        run_stage(grpo, "GRPO (trl)", "train_grpo", grpo_args, stages, show="reward")
    else:
        with stage_beside(grpo, "GRPO (trl)", "train_grpo", grpo_args, stages, "reward", THREADS, log_path):
            run_stage(sft, "SFT (trl)", "train_sft", sft_args, stages)
    tasks = root / "tasks"
    tasks.mkdir(parents=True, exist_ok=True)
    # The tasks and benchmarks do not depend on --seed: seeds change the training, and every
    # seed is measured with the same instruments.
    for name, op in (("add", "+"), ("sub", "-")):
        (tasks / f"{name}.jsonl").write_text(
            "".join(json.dumps(item) + "\n" for item in circuit_task_items(settings.task_items, 0, op))
        )


def demo_study(root: Path, settings: DemoSettings):
    """The demo manifest resolved against `root`, sized by `settings`."""
    from headdb.jobs.manifest import load_manifest

    m = load_manifest(demo_manifest(), root=root)
    g = m.generation.settings
    sampling = g.sampling.model_copy(update={"samples": settings.samples, "max_new_tokens": settings.max_new_tokens})
    generation = m.generation.model_copy(update={"settings": g.model_copy(update={"sampling": sampling})})
    return m.model_copy(
        update={
            "generation": generation,
            "benchmarks": [b.model_copy(update={"limit": settings.bench_items}) for b in m.benchmarks],
        }
    )
