"""`headdb ingest run`: a whole training output directory, resumably.

Order: register every checkpoint (base first, then by step) and the trainer's metrics; then, per
checkpoint, ask the warehouse which requested jobs are not yet done, load the model once only
if some are, and run them. A checkpoint that cannot be loaded gets a failed run for each of its
pending jobs, with the error; the others go on. Re-running does only what is missing.
"""
from __future__ import annotations

import gc
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from headdb.checkpoints.discovery import FoundCheckpoint, discover, latest_trainer_state, training_metrics
from headdb.errors import UserError
from headdb.jobs.common import Placement, Progress, no_progress, register_checkpoint_dir, resolve_device_dtype
from headdb.jobs.plan import Job
from headdb.checkpoints.loading import ModelShape, load_model, weights_digest
from headdb.warehouse.store import Warehouse

RUN_REGIMES = ("sft", "grpo", "distill", "other")


@dataclass
class Outcome:
    done: list[int] = field(default_factory=list)      # run ids that landed now
    skipped: list[int] = field(default_factory=list)   # run ids already in the warehouse
    failed: list[str] = field(default_factory=list)    # "checkpoint: job: error"
    metrics_rows: int = 0

    @property
    def ok(self) -> bool:
        return not self.failed


@dataclass(frozen=True)
class Target:
    path: Path
    placement: Placement


def _say(message: str) -> None:
    print(message)


def process_checkpoint(db: Warehouse, target: Target, jobs: Sequence[Job], outcome: Outcome, *,
                       device: str | None, dtype: str, force: bool, progress: Progress,
                       fallback_shape: ModelShape | None = None,
                       say: Callable[[str], None] = _say) -> tuple[int, ModelShape]:
    """Register one checkpoint and run its pending jobs (loading the model at most once)."""
    checkpoint_id, shape = register_checkpoint_dir(db, target.path, target.placement, fallback_shape=fallback_shape)
    device, dtype_str = resolve_device_dtype(device, dtype)
    label = target.placement.name or target.path.name
    pending = []
    for job in jobs:
        done = None if force else db.completed_run(job.kind, config=job.config(dtype_str),
                                                   checkpoint_id=checkpoint_id, task_id=job.task_id)
        if done is None:
            pending.append(job)
        else:
            outcome.skipped.append(done)
    # Generation before attribution: attribution wraps the model in the TransformerLens bridge,
    # after which generation would need a second, unwrapped copy of the weights.
    pending.sort(key=lambda job: job.kind != "generation")
    if not pending:
        say(f"{label}: nothing to do ({len(jobs)} job(s) already in the warehouse)")
        return checkpoint_id, shape
    try:
        loaded = load_model(target.path, dtype=dtype_str, device=device)
    except Exception as exc:  # a corrupt or incomplete checkpoint: record it, go on with the others
        error = f"cannot load {target.path}: {exc}"
        for job in pending:
            run = db.start_run(job.kind, config=job.config(dtype_str), checkpoint_id=checkpoint_id,
                               task_id=job.task_id, device=device, dtype=dtype_str, force=force)
            run.fail(error)
            outcome.failed.append(f"{label}: {job.label}: {exc}")
        say(f"{label}: FAILED to load ({exc})")
        return checkpoint_id, shape
    try:
        for job in pending:
            try:
                run = job.execute(db, loaded, checkpoint_id, force=force,
                                  progress=lambda stage, d, t: progress(f"{label} {stage}", d, t))
            except UserError:
                raise
            except Exception as exc:  # the run is already recorded as failed with its traceback
                outcome.failed.append(f"{label}: {job.label}: {exc}")
                say(f"{label}: {job.label} FAILED ({exc})")
                continue
            (outcome.skipped if run.skipped else outcome.done).append(run.run_id)
            say(f"{label}: {job.label}: run {run.run_id} {'already there' if run.skipped else 'ok'}")
    finally:
        del loaded
        gc.collect()
    return checkpoint_id, shape


def _distinct(found: list[FoundCheckpoint], say: Callable[[str], None]) -> list[FoundCheckpoint]:
    """Drop the top-level final model when its weights are those of a checkpoint-<step>/ (the
    usual case when save_steps divides max_steps): it is that checkpoint, not another one."""
    def digest(path: Path) -> str | None:
        try:
            return weights_digest(path)
        except UserError:
            return None

    steps = {digest(c.path) for c in found if not c.final} - {None}
    kept = []
    for ck in found:
        if ck.final and digest(ck.path) in steps:
            say(f"{ck.path}: the final model has the weights of a saved checkpoint; not registered twice")
            continue
        kept.append(ck)
    return kept


def ingest_training_run(db: Warehouse, run_dir: str | Path, *, regime: str, lineage: str,
                        base: str | Path | None = None, base_placement: Placement | None = None,
                        jobs: Sequence[Job] = (), device: str | None = None,
                        dtype: str = "auto", force: bool = False, progress: Progress = no_progress,
                        say: Callable[[str], None] = _say) -> Outcome:
    if regime not in RUN_REGIMES:
        raise UserError(f"--regime {regime!r} is not one of {', '.join(RUN_REGIMES)} "
                        "(the base is registered as regime base by --base)")
    found: list[FoundCheckpoint] = discover(run_dir)
    outcome = Outcome()
    state = latest_trainer_state(run_dir)
    if state is not None:
        outcome.metrics_rows = db.add_training_metrics(lineage, training_metrics(state))
        say(f"{lineage}: {outcome.metrics_rows} training metric rows from {state}")
    for job in jobs:
        job.prepare(db)
    common = dict(device=device, dtype=dtype, force=force, progress=progress, say=say)
    base_id, shape = None, None
    if base is not None:
        base_path = Path(base).expanduser()
        base_name = base_path.resolve().name
        placement = base_placement or Placement(lineage=base_name, regime="base", step=0, name=base_name)
        base_id, shape = process_checkpoint(db, Target(base_path, placement), jobs, outcome, **common)
    for ck in _distinct(found, say):
        name = f"{lineage}/final" if ck.final else f"{lineage}/checkpoint-{ck.step}"
        placement = Placement(lineage=lineage, regime=regime, step=ck.step, parent_id=base_id, name=name)
        _, shape = process_checkpoint(db, Target(ck.path, placement), jobs, outcome, fallback_shape=shape, **common)
    return outcome
