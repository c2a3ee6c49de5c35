"""Jobs to run on every checkpoint of a study, described before any model is loaded.

A job knows its run kind, registers its task once (`prepare`), builds the config it will be
keyed by, and runs on a loaded model. Knowing the config up front lets the orchestrator ask
the warehouse which jobs are already done and skip loading a checkpoint whose jobs all are.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from headdb.jobs.common import Progress, no_progress
from headdb.jobs.generations import Benchmark, GenerationSettings, generation_config, generation_run, register_benchmark
from headdb.checkpoints.loading import LoadedModel
from headdb.warehouse.runs import Run
from headdb.warehouse.store import Warehouse


class Job(Protocol):
    kind: str
    label: str
    task_id: int | None

    def prepare(self, db: Warehouse) -> None: ...

    def config(self, dtype: str) -> dict: ...

    def execute(self, db: Warehouse, loaded: LoadedModel, checkpoint_id: int, *, force: bool,
                progress: Progress) -> Run: ...


@dataclass
class GenerationJob:
    bench: Benchmark
    settings: GenerationSettings = field(default_factory=GenerationSettings)
    kind: str = "generation"
    task_id: int | None = None

    @property
    def label(self) -> str:
        return f"generations on {self.bench.name}"

    def prepare(self, db: Warehouse) -> None:
        self.task_id = register_benchmark(db, self.bench, self.settings.mode)

    def config(self, dtype: str) -> dict:
        return generation_config(self.settings, dtype)

    def execute(self, db, loaded, checkpoint_id, *, force=False, progress: Progress = no_progress) -> Run:
        return generation_run(db, loaded, checkpoint_id, self.task_id, self.bench, self.settings, force=force,
                              progress=progress)
