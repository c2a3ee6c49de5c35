"""Import jobs: EAP-IG JSON graphs made elsewhere, stored as runs of kind `import`.

The file is read and checked against the checkpoint's graph layout when the job is built, so a
malformed file or a graph of another model is a UserError before anything is written; the job
needs no model, so its checkpoint is never loaded.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from headdb.interop.graph_json import import_facts, read_graph_json
from headdb.jobs.job import JobContext, Target
from headdb.warehouse.runs import Facts


@dataclass
class ImportJob:
    file: Path
    layout: object             # the checkpoint model's GraphLayout (verified against the warehouse)
    model_key: str
    task_id: int | None = None  # a registered task, or None to register `task_name` (no items)
    task_name: str = ""
    mode: str = "plain"
    selection: str = "threshold"
    param: float | None = None
    kind: str = "import"
    needs_model: bool = False
    _config: dict = field(default_factory=dict, repr=False)
    _facts: Facts | None = field(default=None, repr=False)

    def __post_init__(self):
        data, raw = read_graph_json(self.file)
        self._config, self._facts = import_facts(data, raw, Path(self.file).name, self.layout, self.model_key,
                                                 selection=self.selection, param=self.param)

    @property
    def label(self) -> str:
        return f"import of {Path(self.file).name}"

    @property
    def seed(self) -> None:
        return None

    def validate(self, target: Target) -> None:
        pass  # checked against the layout when built

    def register_task(self, db) -> int:
        if self.task_id is None:
            from headdb.interop.graph_json import new_import_task
            self.task_id = new_import_task(db, name=self.task_name, mode=self.mode)
        return self.task_id

    def config(self, dtype: str) -> dict:
        return self._config

    def compute(self, loaded, ctx: JobContext) -> Facts:
        return self._facts
