"""Ingest as a Python API: build a plan, execute it. The CLI commands are thin skins over these.

import headdb
from headdb.jobs import execute, plan_attribution, plan_generations, plan_training_run, run_study
from headdb.attribution.tasks import load_task
from headdb.settings import AttributionSettings

db = headdb.connect("headdb.duckdb")
plan = plan_attribution("ckpt/", load_task("task.jsonl"), AttributionSettings(steps=8))
outcome = execute(db, plan)          # outcome.done / .skipped / .failed / .loads
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from headdb.jobs.executor import Executor
    from headdb.settings import ExecutorSettings

# The API's names, imported on first use (PEP 562): `import headdb.jobs.manifest` (a manifest
# check, an error message) does not pay for torch and transformers.
_EXPORTS = {
    "plan_attribution": "headdb.jobs.builders",
    "plan_generations": "headdb.jobs.builders",
    "Executor": "headdb.jobs.executor",
    "LocalExecutor": "headdb.jobs.executor",
    "Outcome": "headdb.jobs.executor",
    "execute": "headdb.jobs.executor",
    "Benchmark": "headdb.jobs.generations",
    "Placement": "headdb.jobs.job",
    "run_study": "headdb.jobs.study",
    "plan_training_run": "headdb.jobs.training_run",
    "plan_graph_import": "headdb.jobs.graph_import",
}

__all__ = sorted([*_EXPORTS, "make_executor"])


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'headdb.jobs' has no attribute {name!r}")


def make_executor(settings: ExecutorSettings) -> Executor:
    """The executor the settings name (Ray only when asked for: it is an optional extra)."""
    from headdb.jobs.executor import LocalExecutor

    if settings.executor == "local":
        if settings.workers > 1:
            from headdb.jobs.process_executor import ProcessExecutor

            return ProcessExecutor(workers=settings.workers)
        return LocalExecutor()
    from headdb.jobs.ray_executor import RayExecutor, _ray

    _ray()  # a missing extra is a user error, found before anything is written
    return RayExecutor(address=settings.address, gpus_per_job=settings.gpus_per_job, cpus_per_job=settings.cpus_per_job)
