"""`headdb study MANIFEST.toml`: a whole study as plans; `--check` builds them without running.

Stage 1 is the models (bases first) and training runs; stage 2 the ablations, whose head sets
come from named queries over stage 1's results. Everything a user can get wrong in either
stage, references to checkpoints that stage 1 will register included, is checked before stage 1
writes anything. Every job is idempotent, so a re-run does only what is missing and loads no
model when nothing is.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Iterable, cast

from headdb.errors import UserError
from headdb.evals.interventions import format_heads, parse_heads
from headdb.jobs.attribution import AttributionJob
from headdb.jobs.builders import generation_jobs, with_control
from headdb.jobs.executor import Executor, Outcome, execute
from headdb.jobs.generations import Benchmark, GenerationJob
from headdb.jobs.job import Job, Placement, Progress, no_progress
from headdb.jobs.manifest import (
    AblationSpec,
    HeadsQuery,
    HeadsQueryWithFallback,
    Manifest,
    ManifestError,
    ModelSpec,
    Where,
)
from headdb.jobs.plan import CheckpointWork, Plan, existing_target, target
from headdb.jobs.training_run import plan_training_run
from headdb.settings import FALLBACK_LABEL, Execution, InterventionSettings

if TYPE_CHECKING:
    from pathlib import Path

    from headdb.checkpoints.loading import ModelShape
    from headdb.warehouse.queries import Catalogue
    from headdb.warehouse.store import Warehouse

Say = Callable[[str], None]


class StudyJobs:
    """Every task and benchmark of a manifest loaded once, and the jobs of each model or run."""

    def __init__(self, m: Manifest) -> None:
        from headdb.attribution.tasks import load_task

        self.m = m
        self.attribution = m.attribution  # the settings, whole, as the manifest holds them
        self.generation = m.generation.settings
        limit = m.generation.limit
        self.benches = {
            b.name: Benchmark.load(
                b.source, fields=b.fields, preset=b.preset, limit=b.limit or limit, seed=m.seed, name=b.name
            )
            for b in m.benchmarks
        }
        self.tasks = [AttributionJob(load_task(t.file, mode=t.mode, name=t.name), self.attribution) for t in m.tasks]
        self.gens = [GenerationJob(b, self.generation) for b in self.benches.values()]

    def jobs_for(self, tasks: tuple[str, ...] | None, benchmarks: tuple[str, ...] | None) -> list[Job]:
        """The jobs of one model or run: the named tasks and benchmarks (all when not given)."""
        return [j for j in self.tasks if tasks is None or j.task.name in tasks] + [
            j for j in self.gens if benchmarks is None or j.bench.name in benchmarks
        ]


def _bases_first(m: Manifest) -> list[ModelSpec]:
    done: set[str] = set()
    ordered: list[ModelSpec] = []
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


def plan_models_and_runs(m: Manifest, sj: StudyJobs, execution: Execution) -> Plan:
    where = Where(m.file)
    plan = Plan(execution=execution)
    paths: dict[str | None, Path] = {}  # model name -> directory (looked up by base, which may be None)
    for model in _bases_first(m):
        i = m.models.index(model)
        placement = Placement(
            lineage=model.lineage, regime=model.regime, step=model.step, parent=paths.get(model.base), name=model.name
        )
        try:
            t = target(model.path, placement)
        except UserError as exc:
            raise where.fail(f"models[{i}].path", str(exc)) from None
        paths[model.name] = t.path
        plan.work.append(CheckpointWork(t, sj.jobs_for(model.tasks, model.benchmarks)))
    by_name = {model.name: model for model in m.models}
    for i, run in enumerate(m.runs):
        base = by_name.get(run.base) if run.base else None
        base_placement = (
            None
            if base is None
            else Placement(lineage=base.lineage, regime=base.regime, step=base.step, name=base.name)
        )
        assert run.lineage is not None  # load_manifest defaults it to the run's name
        try:
            sub = plan_training_run(
                run.dir,
                regime=run.regime,
                lineage=run.lineage,
                jobs=sj.jobs_for(run.tasks, run.benchmarks),
                base=base.path if base else None,
                base_placement=base_placement,
                execution=execution,
            )
        except UserError as exc:
            raise where.fail(f"runs[{i}].dir", str(exc)) from None
        plan.extend(sub)
    return plan.validate()


def _query_heads(db: Warehouse, m: Manifest, a: AblationSpec, q: HeadsQuery) -> list[tuple[int, int]]:
    """The (layer, head) pairs a manifest's heads_query selects."""
    from headdb.jobs.headsets import heads_from_query

    try:
        return heads_from_query(
            db, q.name, q.params, where=q.where, order_by=q.order_by, limit=q.limit, extra_dirs=db.query_dirs
        )
    except UserError as exc:
        raise UserError(f"{m.file}: {a.key}.heads_query: {exc}") from None


def queried_heads(
    db: Warehouse, m: Manifest, a: AblationSpec, say: Say = print
) -> tuple[list[tuple[int, int]], str | None]:
    """The heads an ablation's heads_query selects over the warehouse now, or its fallback's when
    it selects none; the label marks a fallback (ablation_table shows it, so no one mistakes it)."""
    assert a.heads_query is not None  # load_manifest: exactly one of heads and heads_query
    found = _query_heads(db, m, a, a.heads_query)
    fallback = a.heads_query.fallback
    if found or fallback is None:
        return found, None
    say(f"{a.key}: the query {a.heads_query.name} found no heads; using the fallback query {fallback.name} instead")
    return _query_heads(db, m, a, fallback), FALLBACK_LABEL + fallback.name


def check_ablations(db: Warehouse | None, m: Manifest, stage1: Plan, query_dirs: Iterable[str | Path] = ()) -> None:
    """What stage 2 will need, checked before stage 1 writes: head lists, queries and their params,
    and that each ablation's checkpoint reference names exactly one checkpoint."""
    from headdb.warehouse.queries import catalogue
    from headdb.warehouse.refs import check_planned_references

    where = Where(m.file)
    cat = catalogue(query_dirs)
    try:
        paths = check_planned_references(db, [w.target for w in stage1.work], [a.checkpoint for a in m.ablations])
    except UserError as exc:
        raise ManifestError(f"{m.file}: ablations: {exc}") from None
    shapes = {str(w.target.path): w.target.shape for w in stage1.work}
    for a, path in zip(m.ablations, paths):
        try:  # every ablation runs its checkpoint's model: a directory gone or truncated fails now
            shape = shapes.get(path) or target(path).shape
        except UserError as exc:
            raise where.fail(f"{a.key}.checkpoint", str(exc)) from None
        assert shape is not None  # stage 1's targets and target() read it from config.json
        if a.heads is not None:
            try:
                parse_heads(a.heads, shape.n_layers, shape.n_heads)
            except UserError as exc:
                raise where.fail(f"{a.key}.heads", str(exc)) from None
        else:
            assert a.heads_query is not None  # load_manifest: exactly one of heads and heads_query
            for key, q in (
                (f"{a.key}.heads_query", a.heads_query),
                (f"{a.key}.heads_query.fallback", a.heads_query.fallback),
            ):
                _check_query(cat, where, key, q)
        _check_query(cat, where, f"{a.key}.control_avoid", a.control_avoid)


def _check_query(cat: Catalogue, where: Where, key: str, q: HeadsQuery | None) -> None:
    if q is None:
        return
    try:
        cat.get(q.name).bind(q.params)
    except UserError as exc:
        raise where.fail(key, str(exc)) from None


def plan_ablations(db: Warehouse, m: Manifest, sj: StudyJobs, execution: Execution, say: Say) -> Plan:
    """Stage 2: the head set of every ablation (queries run now, over stage 1's results)."""
    from headdb.warehouse.refs import resolve_checkpoint

    plan = Plan(execution=execution)
    for a in m.ablations:
        t = existing_target(db, resolve_checkpoint(db, a.checkpoint))
        label = a.label
        if a.heads is not None:
            heads = a.heads
        else:
            found, fallback = queried_heads(db, m, a, say)
            label = fallback or label  # a fallback's heads are never shown under the entry's own name
            if not found:
                say(f"{a.key}: the query found no heads; nothing to ablate")
                continue
            heads = format_heads(found)
        spec = InterventionSettings(kind=a.kind, heads=heads, factor=a.factor, label=label)
        avoid = _query_heads(db, m, a, a.control_avoid) if a.control and a.control_avoid else ()
        shape = cast("ModelShape", t.shape)  # check_ablations read it before stage 1
        specs = with_control(spec, shape, a.control_seed, avoid) if a.control else [spec]
        say(
            f"{a.key}: {a.kind} on {a.checkpoint}: heads {specs[0].heads}"
            + (f"; control {specs[1].heads}" if a.control else "")
        )
        assert a.benchmarks is not None  # load_manifest defaults it to every benchmark
        jobs = [job for name in a.benchmarks for job in generation_jobs(sj.benches[name], sj.generation, specs, shape)]
        same = next((w for w in plan.work if w.target.path == t.path), None)
        if same is not None:  # one model load and one progress line per checkpoint, however many entries
            same.jobs.extend(jobs)
        else:
            plan.work.append(CheckpointWork(t, jobs))
    return plan.validate()


def run_study(
    db: Warehouse,
    m: Manifest,
    *,
    executor: Executor | None = None,
    execution: Execution = Execution(),
    progress: Progress = no_progress,
    say: Say = print,
) -> Outcome:
    check_reports(m, db.query_dirs)  # a misspelt report or param fails before anything is computed
    sj = StudyJobs(m)
    stage1 = plan_models_and_runs(m, sj, execution)
    check_ablations(db, m, stage1, db.query_dirs)
    outcome = execute(db, stage1, executor, progress=progress, say=say)
    if m.ablations:
        outcome.merge(execute(db, plan_ablations(db, m, sj, execution, say), executor, progress=progress, say=say))
    return outcome


def check_reports(m: Manifest, query_dirs: Iterable[str | Path] = ()) -> None:
    """Each [[reports]] entry names a report, and only params that its queries declare."""
    from headdb.reports import get_report
    from headdb.warehouse.queries import catalogue

    where, cat = Where(m.file), catalogue(query_dirs)
    for i, r in enumerate(m.reports):
        try:
            report = get_report(r.name)
        except UserError as exc:
            raise where.fail(f"reports[{i}].name", str(exc)) from None
        known = {p.name for q in report.queries for p in cat.get(q).params}
        unknown = sorted(set(r.params or {}) - known)
        if unknown:
            raise where.fail(
                f"reports[{i}].params",
                f"report {r.name} has no param {unknown[0]!r}; its params are {', '.join(sorted(known))}",
            )


def check(m: Manifest, query_dirs: Iterable[str | Path] = ()) -> list[str]:
    """Build every plan without a warehouse or a model; lines describing the study."""
    sj = StudyJobs(m)
    stage1 = plan_models_and_runs(m, sj, Execution())
    check_ablations(None, m, stage1, query_dirs)
    lines = [f"study {m.name!r}: {len(m.tasks)} circuit task(s), {len(m.benchmarks)} benchmark(s)"]
    for model in m.models:
        lines.append(f"  model {model.name} ({model.regime}) at {model.path}")
    for run in m.runs:
        steps = [w.target.placement.step for w in stage1.work if w.target.placement.lineage == run.lineage]
        lines.append(f"  run {run.name} ({run.regime}): {len(steps)} checkpoint(s), steps {', '.join(map(str, steps))}")
    for a in m.ablations:
        # load_manifest: exactly one of heads and heads_query (an empty heads failed check_ablations),
        # and the benchmarks default to all of them
        assert a.benchmarks is not None
        lines.append(
            f"  ablation ({a.kind}) on {a.checkpoint}: "
            f"{a.heads or cast(HeadsQueryWithFallback, a.heads_query).name} over {', '.join(a.benchmarks)}"
            + (" + random control" if a.control else "")
        )
    check_reports(m, query_dirs)
    lines.append(
        f"  {stage1.n_jobs} job(s) over {len(stage1.work)} checkpoint(s); "
        f"reports: {', '.join(r.name for r in m.reports) or 'none'}"
    )
    return lines
