"""Plans of the single ingest commands: one checkpoint, its jobs, checked before anything runs."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping, Sequence, cast

from headdb.checkpoints.loading import ModelShape
from headdb.errors import UserError
from headdb.evals.interventions import Intervention, format_heads, parse_heads, random_control
from headdb.jobs.attribution import AttributionJob
from headdb.jobs.generations import Benchmark, GenerationJob
from headdb.jobs.job import Job, Placement
from headdb.jobs.plan import CheckpointWork, Plan, target
from headdb.settings import (
    CONTROL_LABEL,
    AttributionSettings,
    Execution,
    GenerationSettings,
    InterventionSettings,
)

if TYPE_CHECKING:
    from headdb.attribution.tasks import Task
    from headdb.warehouse.store import Warehouse


def intervention(spec: InterventionSettings, shape: ModelShape) -> Intervention:
    """A head set resolved against the model's shape (a head outside it is a UserError)."""
    return Intervention(
        spec.kind, parse_heads(spec.heads, shape.n_layers, shape.n_heads), factor=spec.factor, label=spec.label
    )


def with_control(
    spec: InterventionSettings, shape: ModelShape, seed: int, avoid: Sequence[tuple[int, int]] = ()
) -> list[InterventionSettings]:
    """The head set and a random head set matched to it by layer (seed `seed`), drawn outside
    `avoid` (e.g. the circuit's heads) where the layer has enough other heads."""
    heads = parse_heads(spec.heads, shape.n_layers, shape.n_heads)
    control = random_control(heads, shape.n_heads, seed, avoid)
    return [spec, spec.model_copy(update={"heads": format_heads(control), "label": CONTROL_LABEL})]


def single(
    checkpoint: str | Path,
    jobs_for_shape: Callable[[ModelShape], Iterable[Job]],
    *,
    placement: Placement,
    execution: Execution,
) -> Plan:
    """A plan of one checkpoint directory; `jobs_for_shape(shape)` builds its jobs."""
    t = target(checkpoint, placement)
    assert t.shape is not None  # target() reads it from config.json
    return Plan([CheckpointWork(t, list(jobs_for_shape(t.shape)))], execution).validate()


def plan_attribution(
    checkpoint: str | Path,
    task: Task,
    settings: AttributionSettings,
    *,
    spec: InterventionSettings | None = None,
    placement: Placement = Placement(),
    execution: Execution = Execution(),
) -> Plan:
    # `spec and ...` is None or an Intervention: a settings model is always true
    return single(
        checkpoint,
        lambda shape: [AttributionJob(task, settings, cast("Intervention | None", spec and intervention(spec, shape)))],
        placement=placement,
        execution=execution,
    )


def generation_jobs(
    bench: Benchmark, settings: GenerationSettings, specs: Sequence[InterventionSettings], shape: ModelShape
) -> list[Job]:
    """The plain run, then one run per head set, all on the same settings."""
    plain: list[Job] = [GenerationJob(bench, settings)]
    return plain + [GenerationJob(bench, settings, intervention(s, shape)) for s in specs]


def plan_generations(
    checkpoint: str | Path,
    bench: Benchmark,
    settings: GenerationSettings,
    *,
    specs: Sequence[InterventionSettings] = (),
    control_seed: int | None = None,
    placement: Placement = Placement(),
    execution: Execution = Execution(),
) -> Plan:
    """Generations of one checkpoint: plain, under each head set, and (with control_seed) under a
    random layer-matched control of the first head set."""

    def jobs(shape: ModelShape) -> list[Job]:
        sets = list(specs)
        if control_seed is not None and sets:
            sets = with_control(sets[0], shape, control_seed) + sets[1:]
        return generation_jobs(bench, settings, sets, shape)

    return single(checkpoint, jobs, placement=placement, execution=execution)


def heads_from_query(
    db: Warehouse,
    name: str,
    params: Mapping[str, Any] | None = None,
    *,
    where: Mapping[str, Any] | None = None,
    order_by: str | None = None,
    limit: int | None = None,
) -> str:
    """The head set (text form) a named query selects; a query that selects none is a UserError."""
    from headdb.jobs.headsets import heads_from_query as select

    found = select(db, name, params, where=where, order_by=order_by, limit=limit, extra_dirs=db.query_dirs)
    if not found:
        raise UserError(f"the query {name} returned no heads; check its params (`headdb query {name}`)")
    return format_heads(found)
