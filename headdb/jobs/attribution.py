"""Attribution jobs: EAP / EAP-IG / exact edge scores, head scores, circuits and their
faithfulness for one checkpoint on one circuit task."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from headdb.attribution.tasks import Task, encode_pairs
from headdb.errors import UserError
from headdb.evals.interventions import Intervention, applied
from headdb.jobs.job import JobContext, Target
from headdb.settings import AttributionSettings, Execution
from headdb.warehouse.runs import Facts

if TYPE_CHECKING:
    from headdb.checkpoints.loading import LoadedModel
    from headdb.warehouse.store import Warehouse

EXACT_EDGE_LIMIT = 20000  # exact edge patching costs one forward pass per edge


def register_circuit_task(db: Warehouse, task: Task) -> int:
    return db.register_task(
        name=task.name,
        kind="circuit",
        digest=task.digest,
        items=task.task_items_frame(),
        source=task.source,
        mode=task.mode,
    )


@dataclass
class AttributionJob:
    task: Task
    settings: AttributionSettings = field(default_factory=AttributionSettings)
    intervention: Intervention | None = None
    kind: str = "attribution"
    needs_model: bool = True

    @property
    def label(self) -> str:
        return f"attribution on {self.task.name}" + (f" ({self.intervention.kind})" if self.intervention else "")

    @property
    def seed(self) -> int | None:
        return self.settings.seed if self.settings.bootstrap else None  # the replicates' weights

    def validate(self, target: Target) -> None:
        from headdb.attribution.graph import build_layout
        from headdb.attribution.metrics import check_metric

        if target.broken:
            return  # its jobs are recorded as failed when it does not load
        if self.intervention is not None:
            self.intervention.check_shape(target.shape)
        if self.settings.method == "exact" and build_layout(target.shape).n_edges > EXACT_EDGE_LIMIT:
            raise UserError(
                f"--method exact patches one edge per forward pass; {target.label} has "
                f"{build_layout(target.shape).n_edges} edges (limit {EXACT_EDGE_LIMIT}); use eap-ig"
            )
        try:
            pairs = encode_pairs(
                self.task, target.tokenizer(), align=self.settings.align, prepend_bos=self.settings.prepend_bos
            )
        except UserError as exc:
            raise UserError(f"task {self.task.name} on {target.label}: {exc}") from None
        try:
            check_metric(self.settings.metric, pairs.wrong)
        except UserError as exc:
            raise UserError(f"task {self.task.name}: {exc}") from None

    def check_memory(self, target: Target, execution: Execution) -> None:
        """Refuse, before anything is written, a run that cannot fit one prompt pair in memory
        (--max-memory, or what the device has free here); headdb.attribution.memory."""
        from headdb.attribution.memory import check_plan
        from headdb.checkpoints.loading import resolve_dtype
        from headdb.jobs.registration import resolve_device_dtype

        if target.broken or target.shape is None:
            return
        pairs = encode_pairs(self.task, target.tokenizer(), align=self.settings.align)
        if len(pairs) == 0:
            return
        device, dtype = resolve_device_dtype(execution.device, execution.dtype)
        seq = max(len(ids) for ids in pairs.clean)
        try:
            check_plan(
                target.shape, self.settings, dtype_bytes=resolve_dtype(dtype, device).itemsize, seq=seq, device=device
            )
        except UserError as exc:
            raise UserError(f"task {self.task.name} on {target.label}: {exc}") from None

    def register_task(self, db: Warehouse) -> int:
        return register_circuit_task(db, self.task)

    def config(self, dtype: str) -> dict[str, Any]:
        return self.settings.config(dtype, self.intervention.spec() if self.intervention else None)

    def compute(self, loaded: LoadedModel, ctx: JobContext) -> Facts:
        from headdb.attribution import discover

        s = self.settings
        facts = Facts()
        pairs = encode_pairs(self.task, loaded.tokenizer, align=s.align, prepend_bos=s.prepend_bos)
        with applied(loaded.hf_model, self.intervention):
            found = discover(loaded, pairs, s, progress=lambda d, t: ctx.progress("attribution", d, t))
        facts.add("edge_scores", found.result.edges_table())
        facts.add("head_scores", found.result.heads_table())
        for name, table in (
            ("edge_score_se", found.result.se_table()),
            ("head_importance_interval", found.result.interval_table()),
        ):
            if table is not None:
                facts.add(name, table)
        for i, circuit in enumerate(found.circuits):
            facts.add(
                "circuits",
                pa.table(
                    {
                        "circuit_id": pa.array([i], pa.int64()),
                        "selection": [circuit.selection],
                        "param": pa.array([float(circuit.param)]),
                        "n_edges": pa.array([circuit.n_edges], pa.int32()),
                        "n_nodes": pa.array([circuit.n_nodes], pa.int32()),
                        "faithfulness": pa.array([circuit.faithfulness], pa.float64()),
                        **circuit.confidence_columns(),
                    }
                ),
            )
            edges = circuit.edges_table()
            facts.add("circuit_edges", edges.append_column("circuit_id", pa.array([i] * edges.num_rows, pa.int64())))
            heads = circuit.heads_table()
            facts.add("circuit_heads", heads.append_column("circuit_id", pa.array([i] * heads.num_rows, pa.int64())))
            if circuit.membership is not None:
                reps = circuit.replicates_table()
                facts.add(
                    "circuit_head_replicates",
                    reps.append_column("circuit_id", pa.array([i] * reps.num_rows, pa.int64())),
                )
        if found.curve is not None:
            facts.add("faithfulness_curve", found.curve.table())
        for key, value in found.run_metrics().items():
            facts.metric(key, value)
        facts.metric("n_truncated_pairs", len(pairs.truncated))
        if self.intervention is not None:
            facts.add("interventions", self.intervention.table())
        return facts
