"""`headdb ingest ...`: each command builds settings and a plan, then executes it.

Options with one meaning have one name and one declaration, shared by every command below.
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console

from headdb.errors import UserError
from headdb.settings import AttributionSettings, Execution, ExecutorSettings, GenerationSettings, Sampling

app = typer.Typer(help="Run models and write their results into the warehouse.", no_args_is_help=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)

# -------------------------------------------------------------------- shared option declarations
CHECKPOINT = typer.Option(..., "--checkpoint", help="Local checkpoint directory.")
BENCH = typer.Option(..., "--bench", help="Benchmark file (JSONL/Parquet/CSV) or built-in name.")
FIELDS = typer.Option(None, "--fields", help="Column mapping, e.g. problem=q,answer=a.")
PRESET = typer.Option(None, "--preset", help="Benchmark layout (auto-detected).")
LIMIT = typer.Option(None, "--limit", help="Use the first N benchmark problems.")


def option(model, field: str, name: str | None = None, **extra):
    """The option of a settings field: its default and help are the field's (one declaration);
    `name` when the option is not --<field> (e.g. --bootstrap-seed for the attribution seed)."""
    from headdb.settings import as_option

    f = model.model_fields[field]
    default = f.get_default(call_default_factory=True)
    if isinstance(default, tuple):  # a list option given as text, e.g. --k 1,4,16
        default = ",".join(map(str, default))
    return typer.Option(default, name or as_option(field), help=f.description, **extra)


SAMPLES, TEMPERATURE, TOP_P, TOP_K, MIN_P, MAX_NEW_TOKENS, SEED, BATCH_SIZE = (
    option(Sampling, f)
    for f in ("samples", "temperature", "top_p", "top_k", "min_p", "max_new_tokens", "seed", "batch_size")
)
K = option(GenerationSettings, "ks", "--k")
CHAT, MODE = option(GenerationSettings, "chat"), option(GenerationSettings, "mode")
METHOD, STEPS, RANK, BOOTSTRAP, IG_RULE, METRIC, TOPN, THRESHOLD, GREEDY, ALIGN = (
    option(AttributionSettings, f)
    for f in ("method", "steps", "rank", "bootstrap", "ig_rule", "metric", "topn", "threshold", "greedy", "align")
)
BOOTSTRAP_SEED = option(AttributionSettings, "seed", "--bootstrap-seed")
CURVE = option(AttributionSettings, "curve", "--curve/--no-curve")
PREPEND_BOS = option(AttributionSettings, "prepend_bos", "--prepend-bos/--no-prepend-bos")
ATTRIBUTION_BATCH = option(AttributionSettings, "batch_size", "--attribution-batch-size")
MAX_MEMORY = option(AttributionSettings, "max_memory")
ABLATE = typer.Option(None, "--ablate", help="Zero-ablate these heads, e.g. L5H1,L7H3.")
SCALE = typer.Option(None, "--scale", help="Scale these heads, e.g. L5H1,L7H3=1.3.")
LINEAGE = typer.Option(None, "--lineage", help="The training run the checkpoint belongs to.")
REGIME = typer.Option("other", "--regime", help="base | sft | grpo | distill | other.")
STEP = typer.Option(0, "--step", help="The checkpoint's training step.")
DEVICE, DTYPE, FORCE = (option(Execution, f) for f in ("device", "dtype", "force"))
EXECUTOR, ADDRESS, GPUS_PER_JOB, CPUS_PER_JOB, WORKERS = (
    option(ExecutorSettings, f) for f in ("executor", "address", "gpus_per_job", "cpus_per_job", "workers")
)

# -------------------------------------------------------------------- settings from options


def _ks(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(k) for k in text.split(",") if k.strip())
    except ValueError:
        raise UserError(f"--k {text!r} is not a comma-separated list of integers, e.g. 1,4,16") from None


def generation_settings(
    *, samples, temperature, top_p, max_new_tokens, seed, batch_size, k, chat, mode, top_k=None, min_p=None
):
    from headdb.settings import GenerationSettings, Sampling, build

    sampling = build(
        Sampling,
        dict(
            samples=samples,
            temperature=temperature,
            top_p=top_p,
            top_k=top_k,
            min_p=min_p,
            max_new_tokens=max_new_tokens,
            seed=seed,
            batch_size=batch_size,
        ),
    )
    return build(
        GenerationSettings,
        dict(sampling=sampling, chat=chat, mode=mode, ks=_ks(k)),
        label=lambda f: "--k" if f == "ks" else f"--{f.replace('_', '-')}",
    )


def attribution_settings(
    *,
    method,
    steps,
    ig_rule,
    metric,
    topn,
    threshold,
    greedy,
    curve,
    align,
    batch_size,
    rank,
    bootstrap,
    seed,
    prepend_bos=False,
    max_memory=None,
):
    from headdb.settings import AttributionSettings, build

    names = {"batch_size": "--attribution-batch-size", "seed": "--bootstrap-seed"}
    return build(
        AttributionSettings,
        dict(
            method=method,
            steps=steps,
            ig_rule=ig_rule,
            metric=metric,
            topn=topn,
            threshold=threshold,
            greedy=greedy,
            curve=curve,
            align=align,
            prepend_bos=prepend_bos,
            batch_size=batch_size,
            rank=rank,
            bootstrap=bootstrap,
            seed=seed,
            max_memory=max_memory,
        ),
        label=lambda f: names.get(f, f"--{f.replace('_', '-')}"),
    )


def flag_intervention(ablate: Optional[str], scale: Optional[str]):
    """The head set of --ablate HEADS or --scale HEADS=FACTOR (at most one), unresolved."""
    from headdb.settings import InterventionSettings

    if ablate and scale:
        raise UserError("give --ablate or --scale, not both")
    if ablate:
        return InterventionSettings(kind="zero", heads=ablate)
    if scale:
        heads, _, factor = scale.rpartition("=")
        try:
            return InterventionSettings(kind="scale", heads=heads, factor=float(factor))
        except ValueError:
            raise UserError(f"--scale {scale!r} must look like L5H1,L7H3=1.3") from None
    return None


def placement(lineage, regime, step):
    from headdb.jobs.job import Placement
    from headdb.settings import REGIMES, check_choice

    check_choice("regime", regime, REGIMES)
    return Placement(lineage=lineage, regime=regime, step=step)


def execution(device, dtype, force):
    from headdb.checkpoints.loading import resolve_dtype
    from headdb.settings import Execution

    resolve_dtype(dtype, device or "cpu")  # an unknown dtype fails here, before anything is written
    return Execution(device=device, dtype=dtype, force=force)


def executor(name: str, address: Optional[str], gpus_per_job: float, cpus_per_job: float, workers: int = 1):
    from headdb.jobs import make_executor
    from headdb.settings import ExecutorSettings, build

    given = dict(executor=name, address=address, gpus_per_job=gpus_per_job, cpus_per_job=cpus_per_job, workers=workers)
    return make_executor(build(ExecutorSettings, given))


def run_plan(ctx: typer.Context, plan, label: str, runner, *, report_skips: bool = True):
    """Execute a validated plan with the executor `runner`; exit 1 when a job failed."""
    from headdb.jobs.executor import execute
    from headdb.progress import progress_bar

    db = ctx.obj.connect(create=True)
    with progress_bar(label) as progress:
        outcome = execute(db, plan, runner, progress=progress, say=err.print)
    if report_skips:
        for run_id in outcome.skipped:
            err.print(
                f"skipped: run {run_id} with this configuration is already in the warehouse (--force to recompute)"
            )
    err.print(
        f"{label}: {len(outcome.done)} run(s) added, {len(outcome.skipped)} already there, {len(outcome.failed)} failed"
    )
    for failure in outcome.failed:
        err.print(f"  failed: {failure}")
    if not outcome.ok:
        raise typer.Exit(1)
    return outcome


# -------------------------------------------------------------------------------- commands


@app.command()
def generations(
    ctx: typer.Context,
    checkpoint: str = CHECKPOINT,
    bench: str = BENCH,
    fields: Optional[str] = FIELDS,
    preset: Optional[str] = PRESET,
    limit: Optional[int] = LIMIT,
    samples: int = SAMPLES,
    temperature: float = TEMPERATURE,
    top_p: float = TOP_P,
    top_k: Optional[int] = TOP_K,
    min_p: Optional[float] = MIN_P,
    max_new_tokens: int = MAX_NEW_TOKENS,
    seed: int = SEED,
    batch_size: int = BATCH_SIZE,
    k: str = K,
    chat: str = CHAT,
    mode: str = MODE,
    ablate: Optional[str] = ABLATE,
    scale: Optional[str] = SCALE,
    lineage: Optional[str] = LINEAGE,
    regime: str = REGIME,
    step: int = STEP,
    device: Optional[str] = DEVICE,
    dtype: str = DTYPE,
    force: bool = FORCE,
    executor_name: str = EXECUTOR,
    address: Optional[str] = ADDRESS,
    gpus_per_job: float = GPUS_PER_JOB,
    cpus_per_job: float = CPUS_PER_JOB,
    workers: int = WORKERS,
) -> None:
    """Sample a benchmark, grade every sample, store generations and pass@k (a plain run; with
    --ablate/--scale also the intervened run)."""
    from headdb.jobs.builders import plan_generations
    from headdb.jobs.generations import Benchmark

    settings = generation_settings(
        samples=samples,
        temperature=temperature,
        top_p=top_p,
        top_k=top_k,
        min_p=min_p,
        max_new_tokens=max_new_tokens,
        seed=seed,
        batch_size=batch_size,
        k=k,
        chat=chat,
        mode=mode,
    )
    spec = flag_intervention(ablate, scale)
    at, how = placement(lineage, regime, step), execution(device, dtype, force)
    runner = executor(executor_name, address, gpus_per_job, cpus_per_job, workers)
    benchmark = Benchmark.load(bench, fields=fields, preset=preset, limit=limit, seed=seed)
    plan = plan_generations(checkpoint, benchmark, settings, specs=[spec] if spec else [], placement=at, execution=how)
    run_plan(ctx, plan, Path(checkpoint).name, runner)


@app.command()
def samples(
    ctx: typer.Context,
    file: Path = typer.Argument(
        ...,
        help="JSONL of samples made elsewhere (e.g. by vLLM): one line per problem "
        "with its id (or problem text) and its outputs (docs/generations.md).",
    ),
    bench: str = BENCH,
    fields: Optional[str] = FIELDS,
    preset: Optional[str] = PRESET,
    limit: Optional[int] = LIMIT,
    checkpoint: Optional[str] = typer.Option(
        None,
        "--checkpoint",
        help="The checkpoint directory the samples came from (registered like every ingest command).",
    ),
    ref: Optional[str] = typer.Option(None, "--ref", help="Or a registered checkpoint: id, name, lineage@step."),
    k: str = K,
    mode: str = MODE,
    seed: int = SEED,
    lineage: Optional[str] = LINEAGE,
    regime: str = REGIME,
    step: int = STEP,
    force: bool = FORCE,
) -> None:
    """Import generations sampled by another engine (vLLM, ...): matched to a benchmark's items,
    graded by headdb's grader, stored as a generation run with the file's provenance."""
    from headdb.jobs.generations import Benchmark
    from headdb.jobs.imported_generations import plan_imported_generations
    from headdb.settings import Execution

    benchmark = Benchmark.load(bench, fields=fields, preset=preset, limit=limit, seed=seed)
    plan = plan_imported_generations(
        _existing(ctx),
        file,
        benchmark,
        checkpoint=checkpoint,
        ref=ref,
        ks=_ks(k),
        mode=mode,
        placement=placement(lineage, regime, step),
        execution=Execution(force=force),
    )
    run_plan(ctx, plan, plan.work[0].target.label, None)


@app.command()
def ablation(
    ctx: typer.Context,
    checkpoint: str = CHECKPOINT,
    bench: str = BENCH,
    heads: Optional[str] = typer.Option(None, "--heads", help="Head set, e.g. L5H1,L7H3."),
    heads_query: Optional[str] = typer.Option(
        None, "--heads-query", help="Take the head set from a named query, e.g. heads_gained."
    ),
    param: List[str] = typer.Option([], "--param", help="A --heads-query param, NAME=VALUE (repeatable)."),
    where_rows: List[str] = typer.Option([], "--where", help="Keep query rows with COLUMN=VALUE, e.g. change=gained."),
    order_by: Optional[str] = typer.Option(None, "--order-by", help="Order query rows by this column, largest first."),
    heads_limit: Optional[int] = typer.Option(None, "--heads-limit", "--top", help="Keep the first N query rows."),
    kind: str = typer.Option("zero", "--kind", help="zero | mean | scale."),
    factor: Optional[float] = typer.Option(None, "--factor", help="Scale factor (kind scale), e.g. 1.3 or 0.5."),
    control: bool = typer.Option(False, "--control", help="Also run a random head set matched by layer."),
    control_seed: int = typer.Option(0, "--control-seed"),
    fields: Optional[str] = FIELDS,
    preset: Optional[str] = PRESET,
    limit: Optional[int] = LIMIT,
    samples: int = SAMPLES,
    temperature: float = TEMPERATURE,
    top_p: float = TOP_P,
    top_k: Optional[int] = TOP_K,
    min_p: Optional[float] = MIN_P,
    max_new_tokens: int = MAX_NEW_TOKENS,
    seed: int = SEED,
    batch_size: int = BATCH_SIZE,
    k: str = K,
    chat: str = CHAT,
    mode: str = MODE,
    lineage: Optional[str] = LINEAGE,
    regime: str = REGIME,
    step: int = STEP,
    device: Optional[str] = DEVICE,
    dtype: str = DTYPE,
    force: bool = FORCE,
    executor_name: str = EXECUTOR,
    address: Optional[str] = ADDRESS,
    gpus_per_job: float = GPUS_PER_JOB,
    cpus_per_job: float = CPUS_PER_JOB,
    workers: int = WORKERS,
) -> None:
    """Benchmark accuracy with a head set ablated or scaled, beside the plain run with the same
    sampling settings (run or reused) and, with --control, a random layer-matched head set."""
    from headdb.cli.analysis import parse_params
    from headdb.jobs.builders import heads_from_query, plan_generations
    from headdb.jobs.generations import Benchmark
    from headdb.settings import InterventionSettings, build

    if (heads is None) == (heads_query is None):
        raise UserError("give --heads L5H1,L7H3 or --heads-query NAME (with --param k=v), not both or neither")
    settings = generation_settings(
        samples=samples,
        temperature=temperature,
        top_p=top_p,
        top_k=top_k,
        min_p=min_p,
        max_new_tokens=max_new_tokens,
        seed=seed,
        batch_size=batch_size,
        k=k,
        chat=chat,
        mode=mode,
    )
    at, how = placement(lineage, regime, step), execution(device, dtype, force)
    runner = executor(executor_name, address, gpus_per_job, cpus_per_job, workers)
    benchmark = Benchmark.load(bench, fields=fields, preset=preset, limit=limit, seed=seed)
    if heads_query is not None:  # a read of the warehouse; nothing is written before the plan is checked
        heads = heads_from_query(
            ctx.obj.connect(),
            heads_query,
            parse_params(param),
            where=parse_params(where_rows),
            order_by=order_by,
            limit=heads_limit,
        )
        err.print(f"head set from {heads_query}: {heads}")
    spec = build(InterventionSettings, dict(kind=kind, heads=heads, factor=factor, label=heads_query))
    plan = plan_generations(
        checkpoint,
        benchmark,
        settings,
        specs=[spec],
        control_seed=control_seed if control else None,
        placement=at,
        execution=how,
    )
    if control:
        err.print(f"control set (seed {control_seed}): {plan.work[0].jobs[2].intervention.spec()['heads']}")
    run_plan(ctx, plan, Path(checkpoint).name, runner)


@app.command()
def attribution(
    ctx: typer.Context,
    checkpoint: str = CHECKPOINT,
    task: str = typer.Option(..., "--task", help="Circuit task file (JSONL or Parquet: clean, corrupted, answer)."),
    method: str = METHOD,
    steps: int = STEPS,
    ig_rule: str = IG_RULE,
    metric: str = METRIC,
    topn: int = TOPN,
    threshold: Optional[float] = THRESHOLD,
    greedy: Optional[int] = GREEDY,
    curve: bool = CURVE,
    mode: str = MODE,
    rank: str = RANK,
    bootstrap: int = BOOTSTRAP,
    bootstrap_seed: int = BOOTSTRAP_SEED,
    align: str = ALIGN,
    prepend_bos: bool = PREPEND_BOS,
    attribution_batch_size: int = ATTRIBUTION_BATCH,
    max_memory: Optional[str] = MAX_MEMORY,
    ablate: Optional[str] = ABLATE,
    scale: Optional[str] = SCALE,
    lineage: Optional[str] = LINEAGE,
    regime: str = REGIME,
    step: int = STEP,
    device: Optional[str] = DEVICE,
    dtype: str = DTYPE,
    force: bool = FORCE,
    executor_name: str = EXECUTOR,
    address: Optional[str] = ADDRESS,
    gpus_per_job: float = GPUS_PER_JOB,
    cpus_per_job: float = CPUS_PER_JOB,
    workers: int = WORKERS,
) -> None:
    """Edge and head attributions, circuits and their faithfulness for one checkpoint and task."""
    from headdb.attribution.tasks import load_task
    from headdb.jobs.builders import plan_attribution

    settings = attribution_settings(
        method=method,
        steps=steps,
        ig_rule=ig_rule,
        metric=metric,
        topn=topn,
        threshold=threshold,
        greedy=greedy,
        curve=curve,
        align=align,
        prepend_bos=prepend_bos,
        batch_size=attribution_batch_size,
        rank=rank,
        bootstrap=bootstrap,
        seed=bootstrap_seed,
        max_memory=max_memory,
    )
    spec = flag_intervention(ablate, scale)
    at, how = placement(lineage, regime, step), execution(device, dtype, force)
    runner = executor(executor_name, address, gpus_per_job, cpus_per_job, workers)
    plan = plan_attribution(checkpoint, load_task(task, mode=mode), settings, spec=spec, placement=at, execution=how)
    run_plan(ctx, plan, Path(checkpoint).name, runner)


@app.command("run")
def training_run(
    ctx: typer.Context,
    run_dir: str = typer.Argument(..., help="A trainer's output_dir: checkpoint-<step>/ folders + trainer_state.json."),
    regime: str = typer.Option(..., "--regime", help="sft | grpo | distill | other."),
    lineage: str = typer.Option(..., "--lineage", help="Name of this training run."),
    base: Optional[str] = typer.Option(
        None, "--base", help="The model training started from (registered as regime base, step 0)."
    ),
    task: List[str] = typer.Option([], "--task", help="Circuit task file to attribute on (repeatable)."),
    bench: List[str] = typer.Option([], "--bench", help="Benchmark file or name to generate on (repeatable)."),
    method: str = METHOD,
    steps: int = STEPS,
    ig_rule: str = IG_RULE,
    metric: str = METRIC,
    topn: int = TOPN,
    threshold: Optional[float] = THRESHOLD,
    align: str = ALIGN,
    prepend_bos: bool = PREPEND_BOS,
    attribution_batch_size: int = ATTRIBUTION_BATCH,
    max_memory: Optional[str] = MAX_MEMORY,
    rank: str = RANK,
    bootstrap: int = BOOTSTRAP,
    bootstrap_seed: int = BOOTSTRAP_SEED,
    samples: int = SAMPLES,
    temperature: float = TEMPERATURE,
    top_p: float = TOP_P,
    top_k: Optional[int] = TOP_K,
    min_p: Optional[float] = MIN_P,
    max_new_tokens: int = MAX_NEW_TOKENS,
    seed: int = SEED,
    batch_size: int = BATCH_SIZE,
    k: str = K,
    chat: str = CHAT,
    mode: str = MODE,
    limit: Optional[int] = LIMIT,
    device: Optional[str] = DEVICE,
    dtype: str = DTYPE,
    force: bool = FORCE,
    executor_name: str = EXECUTOR,
    address: Optional[str] = ADDRESS,
    gpus_per_job: float = GPUS_PER_JOB,
    cpus_per_job: float = CPUS_PER_JOB,
    workers: int = WORKERS,
) -> None:
    """Ingest every checkpoint of a training run (and its base) with its trainer logs; resumable:
    a re-run does only the missing work. Exit code 1 when some checkpoint failed."""
    from headdb.attribution.tasks import load_task
    from headdb.jobs.attribution import AttributionJob
    from headdb.jobs.generations import Benchmark, GenerationJob
    from headdb.jobs.training_run import plan_training_run

    gen = generation_settings(
        samples=samples,
        temperature=temperature,
        top_p=top_p,
        top_k=top_k,
        min_p=min_p,
        max_new_tokens=max_new_tokens,
        seed=seed,
        batch_size=batch_size,
        k=k,
        chat=chat,
        mode=mode,
    )
    att = attribution_settings(
        method=method,
        steps=steps,
        ig_rule=ig_rule,
        metric=metric,
        topn=topn,
        threshold=threshold,
        greedy=None,
        rank=rank,
        bootstrap=bootstrap,
        seed=bootstrap_seed,
        curve=True,
        align=align,
        prepend_bos=prepend_bos,
        batch_size=attribution_batch_size,
        max_memory=max_memory,
    )
    how = execution(device, dtype, force)
    runner = executor(executor_name, address, gpus_per_job, cpus_per_job, workers)
    jobs = [AttributionJob(load_task(t, mode=mode), att) for t in task]
    jobs += [GenerationJob(Benchmark.load(b, limit=limit, seed=seed), gen) for b in bench]
    plan = plan_training_run(run_dir, regime=regime, lineage=lineage, jobs=jobs, base=base, execution=how).validate()
    if not jobs:
        err.print("no --task or --bench given: registering checkpoints and training metrics only")
    run_plan(ctx, plan, lineage, runner, report_skips=False)


@app.command("graph-json")
def graph_json(
    ctx: typer.Context,
    files: List[Path] = typer.Argument(..., help="EAP-IG JSON graph file(s) of one checkpoint."),
    checkpoint: Optional[str] = typer.Option(
        None,
        "--checkpoint",
        help="The checkpoint directory the graphs are of "
        "(registered like every ingest command; its config fixes the layout).",
    ),
    ref: Optional[str] = typer.Option(
        None, "--ref", help="Or a registered checkpoint: id, name, lineage@step, lineage@last."
    ),
    task: str = typer.Option(..., "--task", help="Task id or name."),
    mode: Optional[str] = typer.Option(
        None, "--mode", help="Task mode when the name has several; for --new, the new task's mode."
    ),
    selection: str = typer.Option(
        "threshold", "--selection", help="Selection the file's in_graph circuit is stored under."
    ),
    selection_param: Optional[float] = typer.Option(
        None, "--selection-param", help="The selection's parameter (tau or n)."
    ),
    new: bool = typer.Option(
        False, "--new", help="Register the task, and with --ref a checkpoint known only through graphs, when unknown."
    ),
    lineage: Optional[str] = LINEAGE,
    regime: str = REGIME,
    step: int = STEP,
    parent: Optional[str] = typer.Option(None, "--parent", help="With --ref --new: the parent checkpoint."),
    model_key: Optional[str] = typer.Option(
        None,
        "--model-key",
        help="With --ref --new: a model registered from a real checkpoint (default: the graph's own EAP-IG layout).",
    ),
    force: bool = FORCE,
) -> None:
    """Import EAP-IG JSON graphs made elsewhere as runs of kind `import` (signs and GQA ports converted)."""
    from headdb.jobs.graph_import import plan_graph_import
    from headdb.settings import Execution

    plan = plan_graph_import(
        _existing(ctx),
        files,
        task=task,
        checkpoint=checkpoint,
        ref=ref,
        mode=mode,
        selection=selection,
        param=selection_param,
        new=new,
        placement=placement(lineage, regime, step),
        parent=parent,
        model_key=model_key,
        execution=Execution(force=force),
    )
    run_plan(ctx, plan, plan.work[0].target.label, None)


def _existing(ctx: typer.Context):
    """The warehouse when it exists (lookups only), else None."""
    try:
        return ctx.obj.connect(create=False)
    except UserError:
        return None
