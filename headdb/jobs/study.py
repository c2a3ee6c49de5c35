"""`headdb study MANIFEST.toml`: a whole study, resumable; `--check` resolves it without models.

Order: models (bases first), then training runs (each with its base), then ablations, then the
reports. Every ingest step is idempotent, so a re-run does only what is missing.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Callable

from headdb.errors import UserError
from headdb.evals.generation import Sampling
from headdb.evals.interventions import Intervention, format_heads, parse_heads, random_control
from headdb.jobs.attribution import AttributionJob, AttributionSettings
from headdb.jobs.common import Placement, Progress, no_progress
from headdb.jobs.generations import Benchmark, GenerationSettings, ingest_generations
from headdb.jobs.plan import GenerationJob, Job
from headdb.jobs.training_run import Outcome, Target, ingest_training_run, process_checkpoint
from headdb.jobs.manifest import Manifest, ManifestError, Where
from headdb.warehouse.store import Warehouse

Say = Callable[[str], None]


def attribution_settings(m: Manifest) -> AttributionSettings:
    try:
        return AttributionSettings(**m.attribution)
    except TypeError as exc:
        raise ManifestError(f"{m.file}: attribution: {exc}") from None


def generation_settings(m: Manifest) -> GenerationSettings:
    g = dict(m.generation)
    ks = g.pop("k", [1])
    chat, mode = g.pop("chat", "auto"), g.pop("mode", "plain")
    g.pop("limit", None)
    g.setdefault("seed", m.seed)
    if not isinstance(ks, list) or not all(isinstance(k, int) for k in ks):
        raise ManifestError(f"{m.file}: generation.k: must be a list of integers such as [1, 4]")
    return GenerationSettings(sampling=Sampling(**g), chat=chat, mode=mode, ks=tuple(ks))


@dataclass
class Plan:
    manifest: Manifest
    jobs: list[Job]
    benches: dict[str, Benchmark]
    lines: list[str] = field(default_factory=list)


def plan(m: Manifest) -> Plan:
    """Load every task and benchmark, build every job; raises on anything unresolvable."""
    from headdb.attribution.tasks import load_task

    attribution = attribution_settings(m)
    generation = generation_settings(m)
    limit = m.generation.get("limit")
    benches = {b.name: replace(Benchmark.load(b.source, fields=b.fields, preset=b.preset, limit=b.limit or limit,
                                              seed=m.seed), name=b.name) for b in m.benchmarks}
    jobs: list[Job] = [AttributionJob(load_task(t.file, mode=t.mode, name=t.name), attribution) for t in m.tasks]
    jobs += [GenerationJob(b, generation) for b in benches.values()]
    return Plan(m, jobs, benches)


def check(m: Manifest) -> list[str]:
    """Resolve everything that can be resolved without loading a model; lines describing the study."""
    from headdb.checkpoints.discovery import discover
    from headdb.checkpoints.loading import read_config, shape_from_config
    from headdb.warehouse.queries import catalogue
    from headdb.reports import get_report

    where = Where(m.file)
    p = plan(m)
    lines = [f"study {m.name!r}: {len(m.tasks)} circuit task(s), {len(m.benchmarks)} benchmark(s)"]
    for i, model in enumerate(m.models):
        try:
            shape = shape_from_config(read_config(model.path)[1])
        except UserError as exc:
            raise where.fail(f"models[{i}].path", str(exc)) from None
        lines.append(f"  model {model.name} ({model.regime}, {shape.model_key}) at {model.path}")
    for i, run in enumerate(m.runs):
        try:
            found = discover(run.dir)
        except UserError as exc:
            raise where.fail(f"runs[{i}].dir", str(exc)) from None
        lines.append(f"  run {run.name} ({run.regime}): {len(found)} checkpoint(s), steps "
                     f"{', '.join(str(c.step) for c in found)}")
    cat = catalogue()
    for a in m.ablations:
        if a.heads is not None:
            parse_heads(a.heads)
        else:
            try:
                query = cat.get(a.heads_query["name"])
                query.bind(a.heads_query.get("params", {}))
            except UserError as exc:
                raise where.fail(f"{a.key}.heads_query", str(exc)) from None
        lines.append(f"  ablation ({a.kind}) on {a.checkpoint}: "
                     f"{a.heads or a.heads_query['name']} over {', '.join(a.benchmarks)}"
                     + (" + random control" if a.control else ""))
    for i, r in enumerate(m.reports):
        try:
            get_report(r.name)
        except UserError as exc:
            raise where.fail(f"reports[{i}].name", str(exc)) from None
    lines.append(f"  {len(p.jobs)} job(s) per checkpoint; reports: {', '.join(r.name for r in m.reports) or 'none'}")
    return lines


def jobs_for(p: Plan, tasks: tuple[str, ...] | None, benchmarks: tuple[str, ...] | None) -> list[Job]:
    """The jobs of one model or run: the named tasks and benchmarks (all when not given)."""
    def wanted(job) -> bool:
        names = tasks if job.kind == "attribution" else benchmarks
        name = job.task.name if job.kind == "attribution" else job.bench.name
        return names is None or name in names
    return [job for job in p.jobs if wanted(job)]


def run_study(db: Warehouse, m: Manifest, *, device: str | None = None, dtype: str = "auto", force: bool = False,
              progress: Progress = no_progress, say: Say = print) -> Outcome:
    p = plan(m)
    outcome = Outcome()
    for job in p.jobs:
        job.prepare(db)
    common = dict(device=device, dtype=dtype, force=force, progress=progress, say=say)
    ids: dict[str, int] = {}
    shapes = {}
    for model in _bases_first(m):
        placement = Placement(lineage=model.lineage, regime=model.regime, step=model.step,
                              parent_id=ids.get(model.base) if model.base else None, name=model.name)
        ids[model.name], shapes[model.name] = process_checkpoint(
            db, Target(model.path, placement), jobs_for(p, model.tasks, model.benchmarks), outcome, **common)
    by_name = {model.name: model for model in m.models}
    for run in m.runs:
        base = by_name.get(run.base) if run.base else None
        base_placement = None if base is None else Placement(lineage=base.lineage, regime=base.regime, step=base.step,
                                                            name=base.name)
        sub = ingest_training_run(db, run.dir, regime=run.regime, lineage=run.lineage,
                                  base=base.path if base else None, base_placement=base_placement,
                                  jobs=jobs_for(p, run.tasks, run.benchmarks), **common)
        _merge(outcome, sub)
    for a in m.ablations:
        _ablation(db, m, p, a, outcome, device=device, dtype=dtype, force=force, progress=progress, say=say)
    return outcome


def _bases_first(m: Manifest):
    done, ordered = set(), []
    pending = list(m.models)
    while pending:
        ready = [x for x in pending if x.base is None or x.base in done]
        if not ready:
            raise ManifestError(f"{m.file}: models: the base references form a cycle")
        for x in ready:
            ordered.append(x)
            done.add(x.name)
            pending.remove(x)
    return ordered


def _merge(into: Outcome, other: Outcome) -> None:
    into.done += other.done
    into.skipped += other.skipped
    into.failed += other.failed
    into.metrics_rows += other.metrics_rows


def resolve_checkpoint(db: Warehouse, ref: str) -> tuple[int, str]:
    """A checkpoint by name, `lineage@step` or `lineage@last` -> (checkpoint_id, path)."""
    cks = db.checkpoints()
    if "@" in ref:
        lineage, step = ref.rsplit("@", 1)
        rows = cks.filter(cks["lineage"] == lineage).sort("step")
        if step != "last":
            try:
                rows = rows.filter(rows["step"] == int(step))
            except ValueError:
                raise UserError(f"checkpoint {ref!r}: step must be a number or 'last'") from None
        rows = rows.tail(1)
    else:
        rows = cks.filter(cks["name"] == ref).tail(1)
    if rows.height == 0:
        raise UserError(f"no checkpoint {ref!r} in the warehouse (use a name, lineage@step or lineage@last)")
    return rows["id"][0], rows["path"][0]


def _ablation(db, m: Manifest, p: Plan, a, outcome: Outcome, *, device, dtype, force, progress, say) -> None:
    from headdb.jobs.common import resolve_device_dtype
    from headdb.checkpoints.loading import load_model

    checkpoint_id, path = resolve_checkpoint(db, a.checkpoint)
    label = None
    if a.heads is not None:
        heads = parse_heads(a.heads)
    else:
        heads = _query_heads(db, m, a, a.heads_query)
        if not heads and "fallback" in a.heads_query:
            fallback = a.heads_query["fallback"]
            say(f"{a.key}: the query {a.heads_query['name']} found no heads; using the fallback query "
                f"{fallback['name']} instead")
            heads = _query_heads(db, m, a, fallback)
            label = f"fallback: {fallback['name']}"  # shown by ablation_table, so no one mistakes it
        if not heads:
            say(f"{a.key}: the query found no heads; nothing to ablate")
            return
    device, dtype_str = resolve_device_dtype(device, dtype)
    loaded = load_model(path, dtype=dtype_str, device=device)
    heads = parse_heads(format_heads(heads), loaded.shape.n_layers, loaded.shape.n_heads)
    interventions = [Intervention(a.kind, heads, factor=a.factor, label=label)]
    if a.control:
        interventions.append(Intervention(a.kind, random_control(heads, loaded.shape.n_heads, a.control_seed),
                                          factor=a.factor, label="control"))
    say(f"{a.key}: {a.kind} on {a.checkpoint}: heads {format_heads(heads)}"
        + (f"; control {format_heads(interventions[1].heads)}" if a.control else ""))
    settings = generation_settings(m)
    for name in a.benchmarks:
        runs = ingest_generations(db, loaded, p.benches[name], settings, interventions=interventions, force=force,
                                  placement=_placement_of(db, checkpoint_id),
                                  progress=lambda s, d, t: progress(f"{a.key} {s}", d, t))
        for run in runs:
            (outcome.skipped if run.skipped else outcome.done).append(run.run_id)


def _query_heads(db, m: Manifest, a, q: dict) -> list[tuple[int, int]]:
    """The (layer, head) pairs a manifest's heads_query selects."""
    from headdb.evals.headsets import heads_from_query

    try:
        return heads_from_query(db, q["name"], q.get("params", {}), where=q.get("where"),
                                order_by=q.get("order_by"), limit=q.get("limit"))
    except UserError as exc:
        raise UserError(f"{m.file}: {a.key}.heads_query: {exc}") from None


def _placement_of(db: Warehouse, checkpoint_id: int) -> Placement:
    """The checkpoint's current labels, so re-registering it changes nothing."""
    row = db.sql("SELECT name, lineage, regime, step, parent_id FROM checkpoints WHERE checkpoint_id = ?",
                 [checkpoint_id]).row(0, named=True)
    return Placement(lineage=row["lineage"], regime=row["regime"], step=row["step"], parent_id=row["parent_id"],
                     name=row["name"])
