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
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Protocol, cast

from headdb.jobs.job import Job, JobContext, Progress, no_progress
from headdb.jobs.plan import Plan
from headdb.warehouse.runs import Facts, Run

if TYPE_CHECKING:
    from headdb.checkpoints.loading import LoadedModel
    from headdb.warehouse.store import Warehouse

Say = Callable[[str], None]


@dataclass(frozen=True)
class JobResult:
    """What one job came to, wherever it ran (the value `compute_unit` reports per job)."""

    status: str  # "ok" | "failed"
    seconds: float
    facts: Facts | None = None  # when ok
    error_kind: str | None = None  # "load" (the checkpoint did not load), "compute" (the job raised),
    message: str | None = None  # "worker" (its process died), "interrupted" (Ctrl-C)


@dataclass(frozen=True)
class JobRecord:
    """One job's line in an Outcome: which checkpoint and job, its run, and how it ended."""

    checkpoint: str
    job: str
    run_id: int
    status: str
    seconds: float
    error_kind: str | None = None
    message: str | None = None

    @property
    def summary(self) -> str:
        first = (self.message or "").splitlines()[0] if self.message else self.error_kind or ""
        return f"{self.checkpoint}: {self.job}: {first}"


@dataclass
class Outcome:
    done: list[int] = field(default_factory=list)  # run ids that landed now
    skipped: list[int] = field(default_factory=list)  # run ids already in the warehouse
    records: list[JobRecord] = field(default_factory=list)  # every job computed now, ok or failed
    metrics_rows: int = 0
    loads: int = 0  # checkpoints loaded (0 when nothing was missing)

    @property
    def failed(self) -> list[str]:
        """ "checkpoint: job: first line of the error" for each failed job."""
        return [r.summary for r in self.records if r.status == "failed"]

    @property
    def ok(self) -> bool:
        return not self.failed

    def merge(self, other: "Outcome") -> "Outcome":
        self.done += other.done
        self.skipped += other.skipped
        self.records += other.records
        self.metrics_rows += other.metrics_rows
        self.loads += other.loads
        return self


@dataclass
class Pending:
    job: Job
    config: dict[str, Any]
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
    def run(
        self, db: Warehouse, units: list[Unit], outcome: Outcome, *, force: bool, progress: Progress, say: Say
    ) -> None: ...


def execute(
    db: Warehouse, plan: Plan, executor: Executor | None = None, *, progress: Progress = no_progress, say: Say = print
) -> Outcome:
    """Run a validated plan: only what the warehouse lacks, each checkpoint loaded at most once."""
    outcome = Outcome()
    for note in plan.notes:
        say(note)
    units = prepare(db, plan, outcome, say)
    (executor or LocalExecutor()).run(db, units, outcome, force=plan.execution.force, progress=progress, say=say)
    return outcome


# ------------------------------------------------------------------------------- the driver


def prepare(db: Warehouse, plan: Plan, outcome: Outcome, say: Say) -> list[Unit]:
    """Register tasks, checkpoints (in plan order, parents first) and training metrics; then, per
    checkpoint, the jobs whose ok run is not in the warehouse yet."""
    from headdb.checkpoints.discovery import training_metrics
    from headdb.jobs.registration import register_target, resolve_device_dtype

    device, dtype = resolve_device_dtype(plan.execution.device, plan.execution.dtype)
    task_ids: dict[int, int | None] = {}
    ids: dict[Path, int] = {}
    # a base shared by several runs of a study is planned once per run
    seen: set[tuple[int, str, int | None, str]] = set()  # (checkpoint, kind, task, config)
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
                done = (
                    None
                    if plan.execution.force
                    else db.completed_run(
                        job.kind, config=config, checkpoint_id=checkpoint_id, task_id=task_ids[id(job)]
                    )
                )
                if done is None:
                    pending.append(Pending(job, config, task_ids[id(job)]))
                else:
                    outcome.skipped.append(done)
            # Generation first: attribution wraps the model in the TransformerLens bridge, after
            # which generation would need a second, unwrapped copy of the weights.
            pending.sort(key=lambda p: p.job.kind != "generation")
            units.append(Unit(t.path, t.label, checkpoint_id, device, dtype, pending, len(work.jobs)))
    return units


def open_run(db: Warehouse, unit: Unit, p: Pending, force: bool) -> Run:
    return db.start_run(
        p.job.kind,
        config=p.config,
        checkpoint_id=unit.checkpoint_id,
        task_id=p.task_id,
        device=unit.device,
        dtype=unit.dtype,
        seed=p.job.seed,
        force=force,
    )


def open_unit(db: Warehouse, unit: Unit, outcome: Outcome, force: bool) -> list[tuple[Pending, Run]]:
    """A `running` row for each of the unit's missing jobs (one another process finished
    meanwhile is skipped): what an executor hands to `compute_unit`, in the same order."""
    opened = []
    for p in unit.pending:
        run = open_run(db, unit, p, force)
        if run.skipped:
            outcome.skipped.append(run.run_id)
        else:
            opened.append((p, run))
    return opened


def open_units(
    db: Warehouse, units: list[Unit], outcome: Outcome, force: bool, say: Say
) -> Iterator[tuple[Unit, list[tuple[Pending, Run]]]]:
    """For executors that send whole units away (Ray, worker processes): each unit with jobs left,
    with their `running` rows; a unit with nothing left is said and passed over."""
    for unit in units:
        if not unit.pending:
            say(f"{unit.label}: nothing to do ({unit.n_jobs} job(s) already in the warehouse)")
            continue
        opened = open_unit(db, unit, outcome, force)
        if opened:
            yield unit, opened


def error_text(exc: BaseException) -> str:
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted"
    return f"{exc.__class__.__name__}: {exc}\n" + "".join(traceback.format_tb(exc.__traceback__)[-3:])


def close_run(db: Warehouse, unit: Unit, p: Pending, run: Run, result: JobResult, outcome: Outcome, say: Say) -> None:
    """Commit a job's facts with its ok status in one transaction, or record its failure."""
    if result.status == "ok":
        run.commit(result.facts)
        shutil.rmtree(db.scratch_dir(run.config_hash), ignore_errors=True)
        outcome.done.append(run.run_id)
        say(f"{unit.label}: {p.job.label}: run {run.run_id} ok")
    else:
        run.fail(result.message or result.error_kind or "failed")
        say(f"{unit.label}: {p.job.label} FAILED ({(result.message or result.error_kind or '').splitlines()[0]})")
    outcome.records.append(
        JobRecord(unit.label, p.job.label, run.run_id, result.status, result.seconds, result.error_kind, result.message)
    )


def interrupt(db: Warehouse, unit_runs: list[tuple[Unit, Pending, Run]], outcome: Outcome, say: Say) -> None:
    """Ctrl-C: every run opened and not closed yet is recorded as interrupted (nothing left `running`)."""
    for unit, p, run in unit_runs:
        close_run(
            db, unit, p, run, JobResult("failed", 0.0, error_kind="interrupted", message="interrupted"), outcome, say
        )


def compute_unit(
    path: str | Path,
    device: str,
    dtype: str,
    jobs: list[Job],
    scratch: list[Path | None],
    on_result: Callable[[int, JobResult], None],
    progress: Progress = no_progress,
) -> bool:
    """The unit of work of every executor: load the checkpoint once (only if a job needs it),
    compute each job, catch per job; `on_result(i, result)` as each job ends. Returns whether a
    model was loaded. A checkpoint that does not load fails each job with error kind "load";
    KeyboardInterrupt is not caught (the executor records the unfinished runs as interrupted)."""
    from headdb.checkpoints import loading

    loaded: LoadedModel | None = None
    if any(j.needs_model for j in jobs):
        started = time.monotonic()
        try:
            loaded = loading.load_model(path, dtype=dtype, device=device)
        except Exception as exc:  # a checkpoint that changed since planning, out of memory, ...
            message = f"cannot load {path}: {error_text(exc)}"
            for i in range(len(jobs)):
                on_result(i, JobResult("failed", time.monotonic() - started, error_kind="load", message=message))
            return False
    try:
        for i, (job, folder) in enumerate(zip(jobs, scratch)):
            started = time.monotonic()
            try:
                # None only when no job needs the model: those (needs_model False) take LoadedModel | None
                facts = job.compute(cast("LoadedModel", loaded), JobContext(progress=progress, scratch=folder))
            except Exception as exc:  # recorded on its run; the other jobs go on
                on_result(
                    i, JobResult("failed", time.monotonic() - started, error_kind="compute", message=error_text(exc))
                )
            else:
                on_result(i, JobResult("ok", time.monotonic() - started, facts=facts))
    finally:
        if loaded is not None:  # free the weights before the next checkpoint loads
            del loaded
            gc.collect()
    return True


def unit_results(
    path: str, device: str, dtype: str, jobs: list[Job], scratch: list[Path | None], threads: int
) -> tuple[bool, list[JobResult | None]]:
    """`compute_unit` in a worker (a Ray task, a local worker process): its results (Facts are
    Arrow tables and pickle) go back to the driver, which commits them."""
    import torch

    torch.set_num_threads(max(1, threads))
    results: list[JobResult | None] = [None] * len(jobs)

    def keep(i: int, result: JobResult) -> None:
        results[i] = result

    loaded = compute_unit(path, device, dtype, jobs, scratch, keep)
    return loaded, results


# ---------------------------------------------------------------------------- in process


class LocalExecutor:
    """Runs every unit in this process, one after the other, committing each job as it ends."""

    def run(
        self, db: Warehouse, units: list[Unit], outcome: Outcome, *, force: bool, progress: Progress, say: Say
    ) -> None:
        total = sum(len(u.pending) for u in units)
        finished = 0
        for unit in units:
            if not unit.pending:
                say(f"{unit.label}: nothing to do ({unit.n_jobs} job(s) already in the warehouse)")
                continue
            opened = open_unit(db, unit, outcome, force)
            finished += len(unit.pending) - len(opened)
            open_left = {i: (unit, p, run) for i, (p, run) in enumerate(opened)}

            def landed(i: int, result: JobResult) -> None:
                nonlocal finished
                _, p, run = open_left.pop(i)
                close_run(db, unit, p, run, result, outcome, say)
                finished += 1
                progress(f"{unit.label} jobs", len(opened) - len(open_left), len(opened))
                progress("jobs done", finished, total)

            progress(f"{unit.label} jobs", 0, len(opened))
            try:
                outcome.loads += compute_unit(
                    unit.path,
                    unit.device,
                    unit.dtype,
                    [p.job for p, _ in opened],
                    [db.scratch_dir(run.config_hash) for _, run in opened],
                    landed,
                    progress=lambda s, d, t: progress(f"{unit.label} {s}", d, t),
                )
            except KeyboardInterrupt:
                interrupt(db, list(open_left.values()), outcome, say)
                raise
