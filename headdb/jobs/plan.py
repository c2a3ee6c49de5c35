"""A plan: the jobs of a command or a study, grouped per checkpoint, checked before anything runs.

Building a plan reads files and configs only (task files, benchmark files, config.json,
tokenizers): every mistake a user can make is found here, as one UserError line, before the
executor writes anything to the warehouse.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from headdb.checkpoints.loading import read_config, shape_from_config
from headdb.errors import UserError
from headdb.jobs.job import Job, MemoryBound, Placement, Target
from headdb.settings import Execution
from headdb.warehouse.reads import checkpoint_path_name

if TYPE_CHECKING:
    from headdb.warehouse.store import Warehouse


@dataclass
class CheckpointWork:
    target: Target
    jobs: list[Job] = field(default_factory=list)


@dataclass
class Plan:
    work: list[CheckpointWork] = field(default_factory=list)
    execution: Execution = field(default_factory=Execution)
    training_metrics: list[tuple[str, Path]] = field(default_factory=list)  # (lineage, trainer_state.json)
    notes: list[str] = field(default_factory=list)  # said before running

    @property
    def n_jobs(self) -> int:
        return sum(len(w.jobs) for w in self.work)

    def validate(self) -> "Plan":
        """Every job checked against its checkpoint's shape and tokenizer (and, where its memory
        depends on it, against the execution's device); raises UserError."""
        for w in self.work:
            for job in w.jobs:
                job.validate(w.target)
                if isinstance(job, MemoryBound):
                    job.check_memory(w.target, self.execution)
        return self

    def extend(self, other: "Plan") -> "Plan":
        self.work += other.work
        self.training_metrics += other.training_metrics
        self.notes += other.notes
        return self


def target(path: str | Path, placement: Placement = Placement()) -> Target:
    """A checkpoint directory as a plan target, its shape read from config.json and its weight
    files checked to be whole (headers and sizes, nothing loaded): an unreadable or truncated
    checkpoint is a UserError here, before anything is registered or computed."""
    directory, config = read_config(path)
    return Target(directory, placement, shape_from_config(config))


def existing_target(db: Warehouse, checkpoint_id: int) -> Target:
    """A registered checkpoint as a plan target (registration is skipped; its labels stay). One
    known only through imported graphs has no directory: jobs that need its model fail to load."""
    path, name = checkpoint_path_name(db, checkpoint_id)
    try:
        found = target(path, Placement(name=name))
    except UserError as exc:
        found = Target(Path(path), Placement(name=name), None, broken=str(exc))
    found.checkpoint_id = checkpoint_id
    return found
