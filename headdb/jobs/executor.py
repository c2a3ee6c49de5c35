"""Executing a plan: register, skip what is done, load each checkpoint at most once, commit each
job's facts in one transaction.

    outcome = execute(db, plan)                     # in process (the default)
    outcome = execute(db, plan, RayExecutor(...))   # per-checkpoint groups as Ray tasks

`prepare` (registration and the skip check) and the run lifecycle (`open_run`, `close_run`)
belong to the driver; an executor only decides where `compute_group` runs. So a distributed
executor plugs in without touching jobs, and every sink works with every executor.
"""
from __future__ import annotations

import gc
import json
import shutil
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Protocol

from headdb.jobs.job import Job, JobContext, Progress, no_progress
from headdb.jobs.plan import Plan
from headdb.warehouse.runs import Facts, Run

Say = Callable[[str], None]


@dataclass
class Outcome:
    done: list[int] = field(default_factory=list)      # run ids that landed now
    skipped: list[int] = field(default_factory=list)   # run ids already in the warehouse
    failed: list[str] = field(default_factory=list)    # "checkpoint: job: error"
    metrics_rows: int = 0
    loads: int = 0                                     # checkpoints loaded (0 when nothing was missing)

    @property
    def ok(self) -> bool:
        return not self.failed

    def merge(self, other: "Outcome") -> "Outcome":
        self.done += other.done
        self.skipped += other.skipped
        self.failed += other.failed
        self.metrics_rows += other.metrics_rows
        self.loads += other.loads
        return self


@dataclass
class Pending:
    job: Job
    config: dict
    task_id: int | None


@dataclass
class Unit:
    """One checkpoint's missing jobs: what an executor runs in one place, loading the model once."""

    path: Path
    label: str
    checkpoint_id: int
    device: str
    dtype: str
    pending: list[Pending]
    n_jobs: int

    @property
    def needs_model(self) -> bool:
        return any(p.job.needs_model for p in self.pending)


class Executor(Protocol):
    def run(self, db, units: list[Unit], outcome: Outcome, *, force: bool, progress: Progress, say: Say) -> None: ...


def execute(db, plan: Plan, executor: Executor | None = None, *, progress: Progress = no_progress,
            say: Say = print) -> Outcome:
    """Run a validated plan: only what the warehouse lacks, each checkpoint loaded at most once."""
    outcome = Outcome()
    for note in plan.notes:
        say(note)
    units = prepare(db, plan, outcome, say)
    (executor or LocalExecutor()).run(db, units, outcome, force=plan.execution.force, progress=progress, say=say)
    return outcome


# ------------------------------------------------------------------------------- the driver

def prepare(db, plan: Plan, outcome: Outcome, say: Say) -> list[Unit]:
    """Register tasks, checkpoints (in plan order, parents first) and training metrics; then, per
    checkpoint, the jobs whose ok run is not in the warehouse yet."""
    from headdb.checkpoints.discovery import training_metrics
    from headdb.jobs.registration import register_target, resolve_device_dtype

    device, dtype = resolve_device_dtype(plan.execution.device, plan.execution.dtype)
    task_ids: dict[int, int | None] = {}
    ids: dict[Path, int] = {}
    seen: set[tuple] = set()  # a base shared by several runs of a study is planned once per run
    units = []
    with db.batch():
        for lineage, state in plan.training_metrics:
            rows = db.add_training_metrics(lineage, training_metrics(state))
            outcome.metrics_rows += rows
            say(f"{lineage}: {rows} training metric rows from {state}")
        for work in plan.work:
            t = work.target
            parent = t.placement.parent
            parent_id = ids.get(parent) if isinstance(parent, Path) else parent
            checkpoint_id = t.checkpoint_id if t.checkpoint_id is not None else register_target(db, t, parent_id)
            ids[t.path] = checkpoint_id
            pending = []
            for job in work.jobs:
                if id(job) not in task_ids:
                    task_ids[id(job)] = job.register_task(db)
                config = job.config(dtype)
                key = (checkpoint_id, job.kind, task_ids[id(job)], json.dumps(config, sort_keys=True, default=str))
                if key in seen:
                    continue
                seen.add(key)
                done = None if plan.execution.force else db.completed_run(
                    job.kind, config=config, checkpoint_id=checkpoint_id, task_id=task_ids[id(job)])
                if done is None:
                    pending.append(Pending(job, config, task_ids[id(job)]))
                else:
                    outcome.skipped.append(done)
            # Generation first: attribution wraps the model in the TransformerLens bridge, after
            # which generation would need a second, unwrapped copy of the weights.
            pending.sort(key=lambda p: p.job.kind != "generation")
            units.append(Unit(t.path, t.label, checkpoint_id, device, dtype, pending, len(work.jobs)))
    return units


def open_run(db, unit: Unit, p: Pending, force: bool) -> Run:
    return db.start_run(p.job.kind, config=p.config, checkpoint_id=unit.checkpoint_id, task_id=p.task_id,
                        device=unit.device, dtype=unit.dtype, seed=p.job.seed, force=force)


def error_text(exc: BaseException) -> str:
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted"
    return f"{exc.__class__.__name__}: {exc}\n" + "".join(traceback.format_tb(exc.__traceback__)[-3:])


def close_run(db, unit: Unit, p: Pending, run: Run, result: Facts | BaseException, outcome: Outcome,
              say: Say) -> None:
    """Commit a job's facts with its ok status in one transaction, or record its failure."""
    if isinstance(result, BaseException):
        run.fail(error_text(result))
        first = (str(result).splitlines() or [result.__class__.__name__])[0]
        outcome.failed.append(f"{unit.label}: {p.job.label}: {first}")
        say(f"{unit.label}: {p.job.label} FAILED ({first})")
        return
    run.commit(result)
    shutil.rmtree(db.scratch_dir(run.config_hash), ignore_errors=True)
    outcome.done.append(run.run_id)
    say(f"{unit.label}: {p.job.label}: run {run.run_id} ok")


def fail_unit(db, unit: Unit, exc: BaseException, outcome: Outcome, force: bool, say: Say) -> None:
    """A checkpoint that cannot be loaded: a failed run for each of its missing jobs."""
    error = f"cannot load {unit.path}: {exc}"
    for p in unit.pending:
        run = open_run(db, unit, p, force)
        if not run.skipped:
            run.fail(error)
            outcome.failed.append(f"{unit.label}: {p.job.label}: {exc}")
    say(f"{unit.label}: FAILED to load ({exc})")


# ---------------------------------------------------------------------------- in process

class LocalExecutor:
    """Runs every unit in this process, one after the other."""

    def run(self, db, units: list[Unit], outcome: Outcome, *, force: bool, progress: Progress, say: Say) -> None:
        from headdb.checkpoints import loading

        total = sum(len(u.pending) for u in units)
        finished = 0
        for unit in units:
            if not unit.pending:
                say(f"{unit.label}: nothing to do ({unit.n_jobs} job(s) already in the warehouse)")
                continue
            loaded = None
            if unit.needs_model:
                try:
                    loaded = loading.load_model(unit.path, dtype=unit.dtype, device=unit.device)
                    outcome.loads += 1
                except Exception as exc:  # a corrupt or incomplete checkpoint: record it, go on
                    fail_unit(db, unit, exc, outcome, force, say)
                    finished += len(unit.pending)
                    continue
            progress(f"{unit.label} jobs", 0, len(unit.pending))
            try:
                for i, p in enumerate(unit.pending, start=1):
                    run = open_run(db, unit, p, force)
                    if run.skipped:  # another process finished it meanwhile
                        outcome.skipped.append(run.run_id)
                    else:
                        ctx = JobContext(progress=lambda s, d, t: progress(f"{unit.label} {s}", d, t),
                                         scratch=db.scratch_dir(run.config_hash))
                        try:
                            result: Facts | BaseException = p.job.compute(loaded, ctx)
                        except KeyboardInterrupt:
                            run.fail("interrupted")
                            raise
                        except Exception as exc:
                            result = exc
                        close_run(db, unit, p, run, result, outcome, say)
                    finished += 1
                    progress(f"{unit.label} jobs", i, len(unit.pending))
                    progress("jobs done", finished, total)
            finally:
                if loaded is not None:  # free the weights before the next checkpoint loads
                    del loaded
                    gc.collect()
