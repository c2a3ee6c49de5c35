"""The plan of a whole training output directory (`headdb ingest run`, a manifest's [[runs]],
the training callback): its base, every checkpoint in step order, and the trainer's metrics.

A checkpoint that cannot be read (no config.json, a truncated weights file, a missing shard: an
interrupted save) is a plan error naming it, before anything is written; re-running after it is
fixed or moved aside does only what is missing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from headdb.checkpoints.discovery import FoundCheckpoint, discover, latest_trainer_state
from headdb.checkpoints.loading import weights_digest
from headdb.errors import UserError
from headdb.jobs.job import Job, Placement
from headdb.jobs.plan import CheckpointWork, Plan, target
from headdb.settings import POST_TRAINING, Execution, check_choice


def _distinct(found: list[FoundCheckpoint], notes: list[str]) -> list[FoundCheckpoint]:
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
            notes.append(f"{ck.path}: the final model has the weights of a saved checkpoint; not registered twice")
            continue
        kept.append(ck)
    return kept


def plan_training_run(
    run_dir: str | Path,
    *,
    regime: str,
    lineage: str,
    jobs: Sequence[Job] = (),
    base: str | Path | None = None,
    base_placement: Placement | None = None,
    execution: Execution = Execution(),
) -> Plan:
    try:
        check_choice("regime", regime, POST_TRAINING)
    except UserError as exc:
        raise UserError(f"{exc} (the base is registered as regime base by --base)") from None
    found = discover(run_dir)
    plan = Plan(execution=execution)
    state = latest_trainer_state(run_dir)
    if state is not None:
        plan.training_metrics.append((lineage, state))
    parent = None
    if base is not None:
        base_path = Path(base).expanduser()
        name = base_path.resolve().name
        base_target = target(base_path, base_placement or Placement(lineage=name, regime="base", step=0, name=name))
        parent = base_target.path
        plan.work.append(CheckpointWork(base_target, list(jobs)))
    for ck in _distinct(found, plan.notes):
        name = f"{lineage}/final" if ck.final else f"{lineage}/checkpoint-{ck.step}"
        placement = Placement(lineage=lineage, regime=regime, step=ck.step, parent=parent, name=name)
        t = target(ck.path, placement)
        plan.work.append(CheckpointWork(t, list(jobs)))
    return plan
