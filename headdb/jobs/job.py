"""A job: one unit of ingest work on one checkpoint, a value whose whole config is known before
any model loads.

Every job says which run kind it writes, which task it is about (registered once), the config
its run is keyed by, and what it checks before anything runs (`validate`, against the
checkpoint's shape and tokenizer); `compute` turns a loaded model into Facts, never touching
the warehouse. That split is what lets an executor skip done work without loading a model,
and run the compute part anywhere (in process, or as a Ray task) while the facts are committed
through the warehouse's sink.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Protocol, runtime_checkable

from headdb.checkpoints.loading import ModelShape
from headdb.warehouse.runs import Facts

if TYPE_CHECKING:
    from headdb.checkpoints.loading import LoadedModel
    from headdb.settings import Execution
    from headdb.warehouse.store import Warehouse

Progress = Callable[[str, int, int], None]


def no_progress(stage: str, done: int, total: int) -> None:
    pass


@dataclass
class JobContext:
    progress: Progress = no_progress
    scratch: Path | None = None  # a folder for resumable partial results of this one run


@dataclass(frozen=True)
class Placement:
    """Where a checkpoint sits in a study. `parent` is the directory of another target of the
    same plan (registered first) or the id of a registered checkpoint."""

    lineage: str | None = None
    regime: str = "other"
    step: int = 0
    parent: Path | int | None = None
    name: str | None = None


@dataclass(frozen=True)
class GraphOnly:
    """A checkpoint with no weights on this machine, known only through EAP-IG graph files: the
    executor registers it (under `model_key`, a model registered from a real checkpoint, or under
    the graph's own layout read from `graph`, the first file's data) like any other target."""

    graph: dict[str, Any] = field(repr=False)
    model_key: str | None = None


@dataclass
class Target:
    """A checkpoint a plan works on: a directory, or a checkpoint already registered (`checkpoint_id`)."""

    path: Path
    placement: Placement = field(default_factory=Placement)
    shape: ModelShape | None = None
    checkpoint_id: int | None = None
    broken: str | None = None  # why the directory cannot be read: its jobs are recorded as failed
    graph_only: "GraphOnly | None" = None  # a checkpoint known only through graph files (see GraphOnly)
    _tokenizer: Any = field(default=None, repr=False)

    @property
    def label(self) -> str:
        return self.placement.name or self.path.name

    def tokenizer(self) -> Any:
        """The checkpoint's tokenizer, loaded once and shared by every target with the same files."""
        if self._tokenizer is None:
            from headdb.checkpoints.loading import load_tokenizer

            key = tokenizer_key(self.path)
            if key not in _TOKENIZERS:
                _TOKENIZERS[key] = load_tokenizer(self.path)
            self._tokenizer = _TOKENIZERS[key]
        return self._tokenizer


_TOKENIZERS: dict[str, Any] = {}
TOKENIZER_FILES = (
    "tokenizer*",
    "vocab*",
    "merges*",
    "special_tokens_map*",
    "added_tokens*",
    "chat_template*",
    "*.model",
)


def tokenizer_key(directory: Path) -> str:
    """A digest of a directory's tokenizer files: checkpoints of one lineage share one tokenizer."""
    h = hashlib.sha256()
    for pattern in TOKENIZER_FILES:
        for f in sorted(directory.glob(pattern)):
            if f.is_file():
                h.update(f.name.encode())
                h.update(f.read_bytes())
    return h.hexdigest()


class Job(Protocol):
    kind: str  # the run kind it writes: attribution | generation | import
    needs_model: bool  # False for jobs that read files only (imports)

    @property
    def label(self) -> str: ...

    @property
    def seed(self) -> int | None: ...

    def validate(self, target: Target) -> None:
        """Raise UserError for anything this job cannot do on `target` (shape, tokenizer, task)."""

    def register_task(self, db: Warehouse) -> int | None:
        """Register the job's task (idempotent) and return its id."""

    def config(self, dtype: str) -> dict[str, Any]:
        """The run's config: what it means, the key of idempotency (with checkpoint and task)."""

    def compute(self, loaded: LoadedModel, ctx: JobContext) -> Facts:
        """The job's facts from a loaded checkpoint (None for jobs that need no model: they take
        `LoadedModel | None`)."""


@runtime_checkable
class MemoryBound(Protocol):
    """A job whose memory depends on where it runs: `Plan.validate` also calls `check_memory`."""

    def check_memory(self, target: Target, execution: Execution) -> None:
        """Raise UserError when the job cannot fit the execution's device or memory limit."""
