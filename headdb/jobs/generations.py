"""Generation jobs: sample a benchmark, grade every sample, store pass@k; optionally under an
intervention. An ablation is a plain job plus intervened jobs on the same settings, so every
delta has a matching baseline (same checkpoint, benchmark and sampling config)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

import polars as pl

from headdb.evals.benchmarks import items_digest, load_benchmark
from headdb.evals.generation import chat_prompts, generate
from headdb.evals.grading import grade
from headdb.evals.interventions import Intervention, applied, head_means
from headdb.evals.passk import eval_metrics_frame
from headdb.evals.prompts import uses_chat
from headdb.jobs.job import JobContext, Target
from headdb.settings import GenerationSettings
from headdb.warehouse.runs import Facts

if TYPE_CHECKING:
    import torch

    from headdb.checkpoints.loading import LoadedModel
    from headdb.warehouse.store import Warehouse

TASK_COLUMNS = ("item_id", "problem", "answer", "level", "meta")


@dataclass(frozen=True)
class Benchmark:
    name: str
    items: pl.DataFrame
    digest: str
    source: str

    @classmethod
    def load(
        cls,
        source: str,
        *,
        fields: dict[str, Any] | str | None = None,
        preset: str | None = None,
        limit: int | None = None,
        seed: int = 0,
        name: str | None = None,
    ) -> "Benchmark":
        items = load_benchmark(source, fields=fields, preset=preset, limit=limit, seed=seed)
        name = name or (Path(source).stem if Path(source).exists() else source)
        return cls(name=name, items=items, digest=items_digest(items), source=str(source))


def register_benchmark(db: Warehouse, bench: Benchmark, mode: str) -> int:
    items = bench.items.select([c for c in TASK_COLUMNS if c in bench.items.columns])
    return db.register_task(
        name=bench.name, kind="benchmark", digest=bench.digest, items=items, source=bench.source, mode=mode
    )


def mean_reference_label(bench: Benchmark) -> str:
    """What mean ablation averages over: recorded in the run config, so known before any load."""
    return f"benchmark:{bench.digest[:16]}"


@dataclass
class GenerationJob:
    bench: Benchmark
    settings: GenerationSettings = field(default_factory=GenerationSettings)
    intervention: Intervention | None = None
    kind: str = "generation"
    needs_model: bool = True

    def __post_init__(self) -> None:
        if self.intervention is not None and self.intervention.kind == "mean":
            self.intervention.reference = self.intervention.reference or mean_reference_label(self.bench)

    @property
    def label(self) -> str:
        what = f"generations on {self.bench.name}"
        if self.intervention is not None:
            what += f" ({self.intervention.label or self.intervention.kind})"
        return what

    @property
    def seed(self) -> int:
        return self.settings.sampling.seed

    def validate(self, target: Target) -> None:
        if target.broken:
            return  # its jobs are recorded as failed when it does not load
        if self.intervention is not None:
            self.intervention.check_shape(target.shape)
        uses_chat(target.tokenizer(), self.settings.chat, self.settings.mode)

    def register_task(self, db: Warehouse) -> int:
        return register_benchmark(db, self.bench, self.settings.mode)

    def config(self, dtype: str) -> dict[str, Any]:
        return self.settings.config(dtype, self.intervention.spec() if self.intervention else None)

    def compute(self, loaded: LoadedModel, ctx: JobContext) -> Facts:
        s = self.settings
        intervention = self.intervention
        if intervention is not None and intervention.kind == "mean" and not intervention.means:
            intervention.means = mean_reference(loaded, self.bench, s)  # only now: the run is not done yet
        prompts = chat_prompts(loaded.tokenizer, self.bench.items["prompt"].to_list(), chat=s.chat, mode=s.mode)
        model = loaded.generation_model()
        with applied(model, intervention):
            samples = generate(
                model,
                loaded.tokenizer,
                prompts,
                s.sampling,
                resume_dir=ctx.scratch,
                progress=lambda d, t: ctx.progress("generate", d, t),
            )
        graded = grade_samples(self.bench.items, samples)
        facts = Facts()
        facts.add("generations", graded.drop("style"))
        facts.add("eval_metrics", eval_metrics_frame(graded, s.ks))
        if intervention is not None:
            facts.add("interventions", intervention.table())
        return facts


def grade_samples(items: pl.DataFrame, samples: pl.DataFrame) -> pl.DataFrame:
    """Join samples to their items and grade each one (math-verify, gold first)."""
    meta = items.with_row_index("prompt_index").select(
        pl.col("prompt_index").cast(pl.Int64), "item_id", "answer", "style"
    )
    joined = samples.join(meta, on="prompt_index", how="left")
    grades = [
        grade(gold, completion, style=style, finish_reason=finish)
        for gold, completion, style, finish in joined.select(
            "answer", "completion", "style", "finish_reason"
        ).iter_rows()
    ]
    return joined.select(
        "item_id",
        "sample_idx",
        "completion",
        pl.Series("extracted", [g.extracted for g in grades], pl.Utf8),
        pl.Series("correct", [g.correct for g in grades], pl.Boolean),
        "n_tokens",
        "finish_reason",
        pl.Series("failure_tag", [g.failure_tag for g in grades], pl.Utf8),
        "style",
    )


def mean_reference(
    loaded: LoadedModel, bench: Benchmark, settings: GenerationSettings, batch_size: int = 16
) -> dict[int, torch.Tensor]:
    """Per-head mean outputs over the benchmark's prompts (the reference for mean ablation)."""
    prompts = chat_prompts(loaded.tokenizer, bench.items["prompt"].to_list(), chat=settings.chat, mode=settings.mode)
    tok = loaded.tokenizer

    def batches() -> Iterator[dict[str, Any]]:
        for k in range(0, len(prompts), batch_size):
            enc = tok(prompts[k : k + batch_size], return_tensors="pt", padding=True, add_special_tokens=False)
            yield {n: enc[n].to(loaded.device) for n in ("input_ids", "attention_mask")}

    means: dict[int, torch.Tensor] = head_means(loaded.generation_model(), batches())
    return means
