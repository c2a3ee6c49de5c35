"""Import jobs: EAP-IG JSON graphs made elsewhere, stored as runs of kind `import`; and the plan
of `headdb ingest graph-json`.

The file is read and checked against the checkpoint's graph layout when the job is built, so a
malformed file or a graph of another model is a UserError before anything is written; the job
needs no model, so its checkpoint is never loaded. The plan resolves every reference (checkpoint,
task, parent, model key) and registers nothing: a checkpoint known only through its graphs is a
`GraphOnly` target, registered by the executor like any other.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from headdb.errors import UserError
from headdb.interop.graph_json import file_layout, import_facts, read_graph_json, stored_layout
from headdb.jobs.job import GraphOnly, JobContext, Placement, Target
from headdb.jobs.plan import CheckpointWork, Plan, existing_target, target
from headdb.settings import MODES, Execution, check_choice
from headdb.warehouse.reads import checkpoint_model_key
from headdb.warehouse.refs import find_checkpoint, find_task, resolve_checkpoint
from headdb.warehouse.runs import Facts

if TYPE_CHECKING:
    from headdb.checkpoints.loading import LoadedModel
    from headdb.warehouse.store import Warehouse


@dataclass
class ImportJob:
    file: Path
    layout: object  # the checkpoint model's GraphLayout (verified against the warehouse)
    model_key: str
    task_id: int | None = None  # a registered task, or None to register `task_name` (no items)
    task_name: str = ""
    mode: str = "plain"
    selection: str = "threshold"
    param: float | None = None
    kind: str = "import"
    needs_model: bool = False
    _config: dict[str, Any] = field(default_factory=dict, repr=False)
    _facts: Facts | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        data, raw = read_graph_json(self.file)
        self._config, self._facts = import_facts(
            data, raw, Path(self.file).name, self.layout, self.model_key, selection=self.selection, param=self.param
        )

    @property
    def label(self) -> str:
        return f"import of {Path(self.file).name}"

    @property
    def seed(self) -> None:
        return None

    def validate(self, target: Target) -> None:
        pass  # checked against the layout when built

    def register_task(self, db: Warehouse) -> int:
        if self.task_id is None:
            from headdb.interop.graph_json import new_import_task

            self.task_id = new_import_task(db, name=self.task_name, mode=self.mode)
        return self.task_id

    def config(self, dtype: str) -> dict[str, Any]:
        return self._config

    def compute(self, loaded: LoadedModel | None, ctx: JobContext) -> Facts:
        assert self._facts is not None  # set by __post_init__
        return self._facts


def plan_graph_import(
    db: Warehouse | None,
    files: Sequence[str | Path],
    *,
    task: str,
    checkpoint: str | Path | None = None,
    ref: str | None = None,
    mode: str | None = None,
    selection: str = "threshold",
    param: float | None = None,
    new: bool = False,
    placement: Placement = Placement(),
    parent: str | None = None,
    model_key: str | None = None,
    execution: Execution = Execution(),
) -> Plan:
    """The plan of importing `files` (graphs of one checkpoint) onto `task`: the checkpoint is a
    directory (`checkpoint`) or a registered one (`ref`; with `new`, one known only through the
    graphs, registered when the plan runs). `db` is the warehouse when it exists, else None.
    Every file is read and checked here; nothing is written."""
    from headdb.attribution.graph import build_layout

    if (checkpoint is None) == (ref is None):
        raise UserError("give the checkpoint directory (--checkpoint DIR) or a registered checkpoint (--ref REF)")
    if mode is not None:
        check_choice("mode", mode, MODES)
    if parent is not None and db is None:
        raise UserError(f"no parent checkpoint {parent!r} (there is no warehouse yet)")
    # db is None with a parent was refused just above
    parent_id = resolve_checkpoint(db, parent) if parent is not None and db is not None else None
    notes = []
    if checkpoint is not None:
        t = target(checkpoint, placement)
        assert t.shape is not None  # target() reads it from config.json
        key, layout = t.shape.model_key, build_layout(t.shape)
    else:
        assert ref is not None  # exactly one of checkpoint and ref, checked above
        checkpoint_id = find_checkpoint(db, ref) if db is not None else None
        if checkpoint_id is None and not new:
            raise UserError(
                f"no checkpoint {ref!r} in the warehouse; give its directory with --checkpoint DIR, or "
                "register it from the graph with --new --lineage NAME --step N"
            )
        if checkpoint_id is not None:
            assert db is not None  # checkpoint_id was found in it
            stored_key = checkpoint_model_key(db, checkpoint_id)
            assert stored_key is not None  # checkpoints.model_key is NOT NULL, and the row was just found
            key = stored_key
            layout = stored_layout(db, key)
            t = existing_target(db, checkpoint_id)
        else:
            if placement.lineage is None:
                raise UserError("--new needs --lineage (and --step) to register the checkpoint")
            graph = read_graph_json(files[0])[0]
            if model_key is not None:
                if db is None:
                    raise UserError(f"model {model_key} is not registered (there is no warehouse yet)")
                key, layout = model_key, stored_layout(db, model_key)
            else:
                key, layout = file_layout(graph)
            at = replace(placement, name=ref, parent=parent_id)
            t = Target(Path(f"/imported/{at.lineage}/{ref}"), at, None, graph_only=GraphOnly(graph, model_key))
            notes.append(f"checkpoint {ref} ({at.lineage}@{at.step}) is registered from its graph (model {key})")
    task_id = find_task(db, task, mode) if db is not None else None
    if task_id is None and not new:
        raise UserError(f'no task {task!r}; register it with --new (see `headdb sql "select * from tasks"`)')
    jobs = [
        ImportJob(
            Path(f),
            layout,
            key,
            task_id=task_id,
            task_name=task,
            mode=mode or "plain",
            selection=selection,
            param=param,
        )
        for f in files
    ]
    return Plan([CheckpointWork(t, list(jobs))], execution, notes=notes).validate()
