"""Ingest as a Python API: build a plan, execute it. The CLI commands are thin skins over these.

    import headdb
    from headdb.jobs import execute, plan_attribution, plan_generations, plan_training_run, run_study
    from headdb.attribution.tasks import load_task
    from headdb.settings import AttributionSettings

    db = headdb.connect("headdb.duckdb")
    plan = plan_attribution("ckpt/", load_task("task.jsonl"), AttributionSettings(steps=8))
    outcome = execute(db, plan)          # outcome.done / .skipped / .failed / .loads
"""
from headdb.jobs.builders import plan_attribution, plan_generations
from headdb.jobs.executor import Executor, LocalExecutor, Outcome, execute
from headdb.jobs.generations import Benchmark
from headdb.jobs.job import Placement
from headdb.jobs.study import run_study
from headdb.jobs.training_run import plan_training_run
from headdb.settings import ExecutorSettings

__all__ = ["Benchmark", "LocalExecutor", "make_executor", "Outcome", "Placement", "execute", "plan_attribution", "plan_generations",
           "plan_training_run", "run_study"]


def make_executor(settings: ExecutorSettings) -> Executor:
    """The executor the settings name (Ray only when asked for: it is an optional extra)."""
    if settings.executor == "local":
        return LocalExecutor()
    from headdb.jobs.ray_executor import RayExecutor, _ray

    _ray()  # a missing extra is a user error, found before anything is written
    return RayExecutor(address=settings.address, gpus_per_job=settings.gpus_per_job,
                       cpus_per_job=settings.cpus_per_job)
