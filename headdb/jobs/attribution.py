"""Attribution runs: EAP / EAP-IG / exact edge scores, head scores, circuits and faithfulness
of one checkpoint on one circuit task, written as one run."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import pyarrow as pa

from headdb.attribution import discover
from headdb.evals.interventions import Intervention, applied
from headdb.jobs.common import Placement, Progress, dtype_name, no_progress, register_loaded
from headdb.checkpoints.loading import LoadedModel
from headdb.warehouse.runs import Run
from headdb.attribution.tasks import Task, encode_pairs
from headdb.warehouse.store import Warehouse


@dataclass(frozen=True)
class AttributionSettings:
    method: str = "eap-ig"
    steps: int = 5
    metric: str = "kl"
    topn: int = 5000
    threshold: float | None = 0.1
    greedy: int | None = None
    curve: bool = True
    align: str = "truncate"
    rank: str = "abs-mean"
    bootstrap: int = 0
    seed: int = 0
    batch_size: int = 8  # how the work is cut; not part of what a run means, so not hashed

    def config(self, dtype: str, intervention: Intervention | None = None) -> dict:
        cfg = {k: v for k, v in asdict(self).items() if k != "batch_size"}
        # rank / bootstrap / seed only when they change the run: older runs keep their config_hash
        if cfg["rank"] == "abs-mean":
            del cfg["rank"]
        if not cfg["bootstrap"]:
            del cfg["bootstrap"], cfg["seed"]
        return {**cfg, "dtype": dtype, "intervention": intervention.spec() if intervention else None}


def register_circuit_task(db: Warehouse, task: Task) -> int:
    return db.register_task(name=task.name, kind="circuit", digest=task.digest, items=task.task_items_frame(),
                            source=task.source, mode=task.mode)


def attribution_run(db: Warehouse, loaded: LoadedModel, checkpoint_id: int, task_id: int, task: Task,
                    settings: AttributionSettings, *, intervention: Intervention | None = None,
                    force: bool = False, progress: Progress = no_progress) -> Run:
    dtype = dtype_name(loaded.dtype)
    run = db.start_run("attribution", config=settings.config(dtype, intervention), checkpoint_id=checkpoint_id,
                       task_id=task_id, device=loaded.device, dtype=dtype, force=force)
    if run.skipped:
        return run
    with run:
        pairs = encode_pairs(task, loaded.tokenizer, align=settings.align)
        with applied(loaded.hf_model, intervention):
            found = discover(loaded, pairs, method=settings.method, metric=settings.metric, steps=settings.steps,
                             topn=settings.topn, threshold=settings.threshold, greedy=settings.greedy,
                             curve=settings.curve, batch_size=settings.batch_size,
                             progress=lambda d, t: progress("attribution", d, t),
                             rank=settings.rank, bootstrap=settings.bootstrap, seed=settings.seed)
        run.add("edge_scores", found.result.edges_table())
        run.add("head_scores", found.result.heads_table())
        for name, table in (("edge_score_se", found.result.se_table()),
                            ("head_importance_interval", found.result.interval_table())):
            if table is not None:
                run.add(name, table)
        for i, circuit in enumerate(found.circuits):
            run.add("circuits", pa.table({
                "circuit_id": pa.array([i], pa.int64()), "selection": [circuit.selection],
                "param": pa.array([float(circuit.param)]), "n_edges": pa.array([circuit.n_edges], pa.int32()),
                "n_nodes": pa.array([circuit.n_nodes], pa.int32()),
                "faithfulness": pa.array([circuit.faithfulness], pa.float64()), **circuit.confidence_columns()}))
            edges = circuit.edges_table()
            run.add("circuit_edges", edges.append_column("circuit_id", pa.array([i] * edges.num_rows, pa.int64())))
            heads = circuit.heads_table()
            run.add("circuit_heads", heads.append_column("circuit_id", pa.array([i] * heads.num_rows, pa.int64())))
            if circuit.membership is not None:
                reps = circuit.replicates_table()
                run.add("circuit_head_replicates", reps.append_column("circuit_id", pa.array([i] * reps.num_rows, pa.int64())))
        if found.curve is not None:
            run.add("faithfulness_curve", found.curve.table())
        for key, value in found.run_metrics().items():
            run.metric(key, value)
        run.metric("n_truncated_pairs", len(pairs.truncated))
        if intervention is not None:
            run.add("interventions", intervention.table())
    return run


@dataclass
class AttributionJob:
    """An attribution run per checkpoint, for `headdb ingest run` and study manifests."""

    task: Task
    settings: AttributionSettings = field(default_factory=AttributionSettings)
    intervention: Intervention | None = None
    kind: str = "attribution"
    task_id: int | None = None

    @property
    def label(self) -> str:
        return f"attribution on {self.task.name}"

    def prepare(self, db: Warehouse) -> None:
        self.task_id = register_circuit_task(db, self.task)

    def config(self, dtype: str) -> dict:
        return self.settings.config(dtype, self.intervention)

    def execute(self, db, loaded, checkpoint_id, *, force=False, progress: Progress = no_progress) -> Run:
        return attribution_run(db, loaded, checkpoint_id, self.task_id, self.task, self.settings,
                               intervention=self.intervention, force=force, progress=progress)


def ingest_attribution(db: Warehouse, loaded: LoadedModel, task: Task, settings: AttributionSettings, *,
                       placement: Placement = Placement(), intervention: Intervention | None = None,
                       force: bool = False, progress: Progress = no_progress) -> Run:
    checkpoint_id = register_loaded(db, loaded, placement)
    job = AttributionJob(task, settings, intervention)
    job.prepare(db)
    return job.execute(db, loaded, checkpoint_id, force=force, progress=progress)
