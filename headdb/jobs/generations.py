"""Generation runs: sample a benchmark, grade every sample, store pass@k; optionally under an
intervention. An ablation is a plain run plus intervened runs on the same settings, so every
delta has a matching baseline (same checkpoint, benchmark and sampling config)."""
from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from headdb.evals.benchmarks import items_digest, load_benchmark
from headdb.evals.generation import Sampling, chat_prompts, generate
from headdb.evals.grading import grade
from headdb.evals.interventions import Intervention, applied, head_means
from headdb.jobs.common import Placement, Progress, dtype_name, no_progress, register_loaded
from headdb.checkpoints.loading import LoadedModel
from headdb.evals.passk import eval_metrics_frame
from headdb.warehouse.runs import Run
from headdb.warehouse.store import Warehouse

TASK_COLUMNS = ("item_id", "problem", "answer", "level", "meta")


@dataclass(frozen=True)
class Benchmark:
    name: str
    items: pl.DataFrame
    digest: str
    source: str

    @classmethod
    def load(cls, source: str, *, fields=None, preset=None, limit=None, seed: int = 0) -> "Benchmark":
        items = load_benchmark(source, fields=fields, preset=preset, limit=limit, seed=seed)
        name = Path(source).stem if Path(source).exists() else source
        return cls(name=name, items=items, digest=items_digest(items), source=str(source))


@dataclass(frozen=True)
class GenerationSettings:
    sampling: Sampling = field(default_factory=Sampling)
    chat: str = "auto"
    mode: str = "plain"
    ks: tuple[int, ...] = (1,)

    def config(self) -> dict:
        return {"sampling": self.sampling.config(), "chat": self.chat, "mode": self.mode, "ks": list(self.ks)}


def generation_config(settings: GenerationSettings, dtype: str, intervention: Intervention | None = None) -> dict:
    """The config a generation run is keyed by (with the checkpoint and benchmark digests)."""
    return {**settings.config(), "dtype": dtype, "intervention": intervention.spec() if intervention else None}


def register_benchmark(db: Warehouse, bench: Benchmark, mode: str) -> int:
    items = bench.items.select([c for c in TASK_COLUMNS if c in bench.items.columns])
    return db.register_task(name=bench.name, kind="benchmark", digest=bench.digest, items=items,
                            source=bench.source, mode=mode)


def generation_run(db: Warehouse, loaded: LoadedModel, checkpoint_id: int, task_id: int, bench: Benchmark,
                   settings: GenerationSettings, *, intervention: Intervention | None = None,
                   force: bool = False, progress: Progress = no_progress) -> Run:
    """One generation run of `loaded` on `bench`, graded, with eval metrics; skipped if done."""
    config = generation_config(settings, dtype_name(loaded.dtype), intervention)
    run = db.start_run("generation", config=config, checkpoint_id=checkpoint_id, task_id=task_id,
                       device=loaded.device, dtype=dtype_name(loaded.dtype), seed=settings.sampling.seed,
                       force=force)
    if run.skipped:
        return run
    parts = Path(f"{db.location}.parts") / run.config_hash
    with run:
        prompts = chat_prompts(loaded.tokenizer, bench.items["prompt"].to_list(), chat=settings.chat,
                               mode=settings.mode)
        model = loaded.generation_model()
        with applied(model, intervention):
            samples = generate(model, loaded.tokenizer, prompts, settings.sampling, resume_dir=parts,
                               progress=lambda d, t: progress("generate", d, t))
        graded = grade_samples(bench.items, samples)
        run.add("generations", graded.drop("style"))
        run.add("eval_metrics", eval_metrics_frame(graded, settings.ks))
        if intervention is not None:
            run.add("interventions", intervention.table())
    shutil.rmtree(parts, ignore_errors=True)
    return run


def grade_samples(items: pl.DataFrame, samples: pl.DataFrame) -> pl.DataFrame:
    """Join samples to their items and grade each one (math-verify, gold first)."""
    meta = items.with_row_index("prompt_index").select(
        pl.col("prompt_index").cast(pl.Int64), "item_id", "answer", "style")
    joined = samples.join(meta, on="prompt_index", how="left")
    grades = [grade(gold, completion, style=style, finish_reason=finish)
              for gold, completion, style, finish in joined.select("answer", "completion", "style", "finish_reason").iter_rows()]
    return joined.select(
        "item_id", "sample_idx", "completion",
        pl.Series("extracted", [g.extracted for g in grades], pl.Utf8),
        pl.Series("correct", [g.correct for g in grades], pl.Boolean),
        "n_tokens", "finish_reason",
        pl.Series("failure_tag", [g.failure_tag for g in grades], pl.Utf8),
        "style")


def mean_reference(loaded: LoadedModel, bench: Benchmark, settings: GenerationSettings, batch_size: int = 16):
    """Per-head mean outputs over the benchmark's prompts (the reference for mean ablation)."""
    prompts = chat_prompts(loaded.tokenizer, bench.items["prompt"].to_list(), chat=settings.chat, mode=settings.mode)
    tok = loaded.tokenizer

    def batches():
        for k in range(0, len(prompts), batch_size):
            enc = tok(prompts[k:k + batch_size], return_tensors="pt", padding=True, add_special_tokens=False)
            yield {n: enc[n].to(loaded.device) for n in ("input_ids", "attention_mask")}

    return head_means(loaded.generation_model(), batches())


def ingest_generations(db: Warehouse, loaded: LoadedModel, bench: Benchmark, settings: GenerationSettings, *,
                       placement: Placement = Placement(), interventions: list[Intervention] = (),
                       force: bool = False, progress: Progress = no_progress) -> list[Run]:
    """The plain run, then one run per intervention, all on the same settings."""
    checkpoint_id = register_loaded(db, loaded, placement)
    task_id = register_benchmark(db, bench, settings.mode)
    runs = [generation_run(db, loaded, checkpoint_id, task_id, bench, settings, force=force, progress=progress)]
    for intervention in interventions:
        if intervention.kind == "mean" and not intervention.means:
            intervention.means = mean_reference(loaded, bench, settings)
            intervention.reference = intervention.reference or f"benchmark:{bench.digest[:16]}"
        runs.append(generation_run(db, loaded, checkpoint_id, task_id, bench, settings,
                                   intervention=intervention, force=force, progress=progress))
    return runs
