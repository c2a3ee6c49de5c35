"""`headdb demo`: the study in miniature, offline, on a CPU.

1. pretrain a tiny Qwen2-architecture model with grouped-query attention from scratch on
   synthetic arithmetic (`recipes.pretrain_base`) into `models/base`;
2. post-train two lineages from it with real trl: SFT on step-by-step solutions
   (`runs/sft`) and GRPO with a math-verify accuracy reward (`runs/grpo`), saving checkpoints;
3. write the circuit task (`tasks/arith.jsonl`);
4. run the study manifest `ingest/demo.toml` over that folder: attribution of the base and every
   checkpoint, generations by difficulty level, and an ablation of GRPO's emergent heads beside
   a random layer-matched control; then print its reports.

Every stage is skipped when its output is complete, so an interrupted demo resumes; every
number is printed as measured. `--quick` uses smaller settings (and a separate folder).
"""
from __future__ import annotations

import contextlib
import json
import sys
import random
import shutil
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

from headdb.resources import package_dir

DONE = ".headdb-done"
# Tiny models gain nothing from intra-op threads, and on a busy 2-core machine OpenMP's spinning
# threads slow each small matmul down many times over: one thread is faster and predictable.
THREADS = 1


@dataclass(frozen=True)
class DemoSettings:
    n_layers: int = 4
    n_heads: int = 4
    n_kv_heads: int = 2          # grouped-query attention, as in Qwen2.5
    d_model: int = 64
    pretrain_steps: int = 600
    pretrain_batch_size: int = 32
    pretrain_lr: float = 3e-3
    sft_steps: int = 200
    sft_save_steps: int = 50
    sft_lr: float = 1e-3
    grpo_steps: int = 150
    grpo_save_steps: int = 50
    grpo_lr: float = 5e-5
    grpo_generations: int = 8
    grpo_prompts_per_step: int = 4
    grpo_temperature: float = 0.7
    grpo_max_completion_length: int = 64
    grpo_beta: float = 0.04
    sft_batch_size: int = 16
    levels: tuple[int, ...] = (1, 2, 3)
    task_items: int = 24
    bench_items: int = 48
    samples: int = 4
    max_new_tokens: int = 96


# Every training setting is pinned here (not left to the recipes' defaults), so the demo's numbers
# change only when this file does. Timings on a 2-core CPU: benchmarks/RESULTS.md, "Demo".
FULL = DemoSettings()
QUICK = DemoSettings(pretrain_steps=400, sft_steps=40, sft_save_steps=20, grpo_steps=30, grpo_save_steps=15,
                     grpo_lr=2e-4, grpo_generations=4, grpo_prompts_per_step=2, task_items=12, bench_items=48, samples=4,
                     max_new_tokens=64)


def demo_manifest() -> Path:
    return package_dir("manifests") / "demo.toml"


def circuit_task_items(n: int, seed: int) -> list[dict]:
    """Clean/corrupted pairs in the models' own chat format: the benchmark question, then the
    start of the answer "a + b = "; the corrupted pair changes both operands (same number of
    digits, so the same token length) and its sum has a different first digit."""
    from headdb.evals.benchmarks import build_prompt

    rng = random.Random(f"headdb-demo-task:{seed}")
    items = []
    while len(items) < n:
        digits = 1 if len(items) % 2 == 0 else 2
        lo, hi = (1, 4) if digits == 1 else (10, 49)
        a, b, c, d = (rng.randint(lo, hi) for _ in range(4))
        if str(a + b)[0] == str(c + d)[0] or len(str(a + b)) != len(str(c + d)):
            continue
        items.append({
            "id": f"t{len(items):03d}",
            "clean": build_prompt(f"What is {a} + {b}?"), "clean_prefix": f"{a} + {b} = ",
            "corrupted": build_prompt(f"What is {c} + {d}?"), "corrupted_prefix": f"{c} + {d} = ",
            "answer": str(a + b)[0], "wrong_answer": str(c + d)[0], "level": str(digits),
        })
    return items


def _stage(path: Path, say: Callable[[str], None], what: str, build: Callable[[], object]) -> None:
    """Run `build` unless `path` holds a finished result (a marker written after it succeeds)."""
    if (path / DONE).exists():
        say(f"{what}: already built in {path}")
        return
    if path.exists():
        shutil.rmtree(path)  # an interrupted stage starts over
    say(f"{what} ...")
    with contextlib.redirect_stdout(sys.stderr):  # trainer logs are progress, not results
        build()
    (path / DONE).write_text("ok\n")


def build_models(root: Path, settings: DemoSettings, *, seed: int = 0, say: Callable[[str], None] = print) -> None:
    from headdb.demo import recipes

    base, sft, grpo = root / "models" / "base", root / "runs" / "sft", root / "runs" / "grpo"
    _stage(base, say, "pretraining the base model from scratch",
           lambda: recipes.pretrain_base(base, steps=settings.pretrain_steps, n_layers=settings.n_layers,
                                         n_heads=settings.n_heads, n_kv_heads=settings.n_kv_heads,
                                         d_model=settings.d_model, batch_size=settings.pretrain_batch_size,
                                         lr=settings.pretrain_lr, threads=THREADS, seed=seed))
    _stage(sft, say, "SFT with trl (step-by-step solutions)",
           lambda: recipes.train_sft(base, sft, steps=settings.sft_steps, save_steps=settings.sft_save_steps,
                                     lr=settings.sft_lr, batch_size=settings.sft_batch_size, levels=settings.levels,
                                     threads=THREADS, seed=seed))
    _stage(grpo, say, "GRPO with trl (math-verify accuracy reward)",
           lambda: recipes.train_grpo(base, grpo, steps=settings.grpo_steps, save_steps=settings.grpo_save_steps,
                                      num_generations=settings.grpo_generations, lr=settings.grpo_lr,
                                      prompts_per_step=settings.grpo_prompts_per_step,
                                      temperature=settings.grpo_temperature, levels=settings.levels,
                                      max_completion_length=settings.grpo_max_completion_length,
                                      beta=settings.grpo_beta, threads=THREADS, seed=seed))
    tasks = root / "tasks"
    tasks.mkdir(parents=True, exist_ok=True)
    (tasks / "arith.jsonl").write_text(
        "".join(json.dumps(item) + "\n" for item in circuit_task_items(settings.task_items, seed)))


def demo_study(root: Path, settings: DemoSettings):
    """The demo manifest resolved against `root`, sized by `settings`."""
    from headdb.jobs.manifest import load_manifest

    m = load_manifest(demo_manifest(), root=root)
    m.generation = {**m.generation, "samples": settings.samples, "max_new_tokens": settings.max_new_tokens}
    m.benchmarks = [replace(b, limit=settings.bench_items) for b in m.benchmarks]
    return m
