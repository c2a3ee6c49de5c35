"""`headdb ingest ...`: thin commands over headdb.jobs."""
from __future__ import annotations

from typing import Optional

import typer
from rich.console import Console

from headdb.errors import UserError

app = typer.Typer(help="Run models and write their results into the warehouse.", no_args_is_help=True)
err = Console(stderr=True)


def _ks(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(k) for k in text.split(",") if k.strip())
    except ValueError:
        raise UserError(f"--k {text!r} is not a comma-separated list of integers, e.g. 1,4,16") from None


def _report_runs(runs, what: str) -> None:
    for run in runs:
        if run.skipped:
            err.print(f"skipped: {what} run {run.run_id} with this configuration is already in the warehouse "
                      "(--force to recompute)")
        else:
            err.print(f"{what} run {run.run_id}: {run.status}")


def _generation_settings(samples, temperature, top_p, max_new_tokens, seed, batch_size, k, chat, mode, *,
                         top_k=None, min_p=None):
    from headdb.evals.generation import Sampling
    from headdb.jobs.generations import GenerationSettings

    return GenerationSettings(
        sampling=Sampling(samples=samples, temperature=temperature, top_p=top_p, top_k=top_k, min_p=min_p,
                          max_new_tokens=max_new_tokens, seed=seed, batch_size=batch_size),
        chat=chat, mode=mode, ks=_ks(k))


def _flag_intervention(ablate: Optional[str], scale: Optional[str], shape):
    """The intervention named by --ablate HEADS or --scale HEADS=FACTOR (at most one)."""
    from headdb.evals.interventions import Intervention, parse_heads

    if ablate and scale:
        raise UserError("give --ablate or --scale, not both")
    if ablate:
        return Intervention("zero", parse_heads(ablate, shape.n_layers, shape.n_heads))
    if scale:
        heads, factor = _scale_spec(scale)
        return Intervention("scale", parse_heads(heads, shape.n_layers, shape.n_heads), factor=factor)
    return None


def _generate_and_report(db, loaded, benchmark, settings, interventions, *, force, lineage, regime, step) -> None:
    from headdb.jobs.common import Placement
    from headdb.jobs.generations import ingest_generations
    from headdb.progress import progress_bar

    with progress_bar(loaded.path.name) as progress:
        runs = ingest_generations(db, loaded, benchmark, settings, interventions=interventions, force=force,
                                  placement=Placement(lineage=lineage, regime=regime, step=step), progress=progress)
    _report_runs(runs, "generation")


def _scale_spec(text: str) -> tuple[str, float]:
    heads, sep, factor = text.rpartition("=")
    try:
        return heads, float(factor)
    except ValueError:
        raise UserError(f"--scale {text!r} must look like L5H1,L7H3=1.3") from None


@app.command()
def generations(
    ctx: typer.Context,
    checkpoint: str = typer.Option(..., "--checkpoint", help="Local checkpoint directory."),
    bench: str = typer.Option(..., "--bench", help="Benchmark file (JSONL/Parquet/CSV) or built-in name."),
    fields: Optional[str] = typer.Option(None, "--fields", help="Column mapping, e.g. problem=q,answer=a."),
    preset: Optional[str] = typer.Option(None, "--preset", help="Benchmark layout (auto-detected)."),
    limit: Optional[int] = typer.Option(None, "--limit", help="Use the first N problems."),
    samples: int = typer.Option(4, "--samples"),
    temperature: float = typer.Option(0.6, "--temperature", help="0 means greedy."),
    top_p: float = typer.Option(0.95, "--top-p"),
    top_k: Optional[int] = typer.Option(None, "--top-k"),
    min_p: Optional[float] = typer.Option(None, "--min-p"),
    max_new_tokens: int = typer.Option(512, "--max-new-tokens"),
    seed: int = typer.Option(0, "--seed"),
    batch_size: int = typer.Option(16, "--batch-size"),
    k: str = typer.Option("1", "--k", help="pass@k / maj@k values, e.g. 1,4,16."),
    chat: str = typer.Option("auto", "--chat", help="auto | on | off: use the chat template."),
    mode: str = typer.Option("plain", "--mode", help="plain | think_on | think_off."),
    ablate: Optional[str] = typer.Option(None, "--ablate", help="Zero-ablate these heads, e.g. L5H1,L7H3."),
    scale: Optional[str] = typer.Option(None, "--scale", help="Scale heads, e.g. L5H1,L7H3=1.3."),
    lineage: Optional[str] = typer.Option(None, "--lineage"),
    regime: str = typer.Option("other", "--regime", help="base | sft | grpo | distill | other."),
    step: int = typer.Option(0, "--step"),
    device: Optional[str] = typer.Option(None, "--device"),
    dtype: str = typer.Option("auto", "--dtype"),
    force: bool = typer.Option(False, "--force", help="Recompute even if an ok run exists."),
) -> None:
    """Sample a benchmark, grade every sample, store generations and pass@k (a plain run; with
    --ablate/--scale also the intervened run)."""
    from headdb.jobs.generations import Benchmark
    from headdb.checkpoints.loading import load_model, read_config

    if ablate and scale:
        raise UserError("give --ablate or --scale, not both")
    settings = _generation_settings(samples, temperature, top_p, max_new_tokens, seed, batch_size, k, chat, mode,
                                    top_k=top_k, min_p=min_p)
    read_config(checkpoint)  # fail on a bad directory before anything else
    benchmark = Benchmark.load(bench, fields=fields, preset=preset, limit=limit, seed=seed)
    db = ctx.obj.connect(create=True)
    loaded = load_model(checkpoint, dtype=dtype, device=device)
    intervention = _flag_intervention(ablate, scale, loaded.shape)
    _generate_and_report(db, loaded, benchmark, settings, [intervention] if intervention else [], force=force,
                         lineage=lineage, regime=regime, step=step)


@app.command()
def ablation(
    ctx: typer.Context,
    checkpoint: str = typer.Option(..., "--checkpoint", help="Local checkpoint directory."),
    bench: str = typer.Option(..., "--bench", help="Benchmark file or built-in name."),
    heads: Optional[str] = typer.Option(None, "--heads", help="Head set, e.g. L5H1,L7H3."),
    heads_query: Optional[str] = typer.Option(None, "--heads-query",
                                              help="Take the head set from a named query, e.g. heads_gained."),
    param: list[str] = typer.Option([], "--param", help="A --heads-query param, NAME=VALUE (repeatable)."),
    where: list[str] = typer.Option([], "--where", help="Keep query rows with COLUMN=VALUE, e.g. change=gained."),
    order_by: Optional[str] = typer.Option(None, "--order-by", help="Order query rows by this column, largest first."),
    top: Optional[int] = typer.Option(None, "--top", help="Keep the first N query rows."),
    kind: str = typer.Option("zero", "--kind", help="zero | mean | scale."),
    factor: Optional[float] = typer.Option(None, "--factor", help="Scale factor (kind scale), e.g. 1.3 or 0.5."),
    control: bool = typer.Option(False, "--control", help="Also run a random head set matched by layer."),
    control_seed: int = typer.Option(0, "--control-seed"),
    fields: Optional[str] = typer.Option(None, "--fields"),
    preset: Optional[str] = typer.Option(None, "--preset"),
    limit: Optional[int] = typer.Option(None, "--limit"),
    samples: int = typer.Option(4, "--samples"),
    temperature: float = typer.Option(0.6, "--temperature"),
    top_p: float = typer.Option(0.95, "--top-p"),
    max_new_tokens: int = typer.Option(512, "--max-new-tokens"),
    seed: int = typer.Option(0, "--seed"),
    batch_size: int = typer.Option(16, "--batch-size"),
    k: str = typer.Option("1", "--k"),
    chat: str = typer.Option("auto", "--chat"),
    mode: str = typer.Option("plain", "--mode"),
    lineage: Optional[str] = typer.Option(None, "--lineage"),
    regime: str = typer.Option("other", "--regime"),
    step: int = typer.Option(0, "--step"),
    device: Optional[str] = typer.Option(None, "--device"),
    dtype: str = typer.Option("auto", "--dtype"),
    force: bool = typer.Option(False, "--force"),
) -> None:
    """Benchmark accuracy with a head set ablated or scaled, beside the plain run with the same
    sampling settings (run or reused) and, with --control, a random layer-matched head set."""
    from headdb.evals.interventions import Intervention, format_heads, parse_heads, random_control
    from headdb.jobs.generations import Benchmark
    from headdb.checkpoints.loading import load_model, read_config

    if (heads is None) == (heads_query is None):
        raise UserError("give --heads L5H1,L7H3 or --heads-query NAME (with --param k=v), not both or neither")
    settings = _generation_settings(samples, temperature, top_p, max_new_tokens, seed, batch_size, k, chat, mode)
    read_config(checkpoint)
    benchmark = Benchmark.load(bench, fields=fields, preset=preset, limit=limit, seed=seed)
    db = ctx.obj.connect(create=True)
    loaded = load_model(checkpoint, dtype=dtype, device=device)
    if heads_query is not None:
        from headdb.cli.analysis import parse_params
        from headdb.evals.headsets import heads_from_query

        found = heads_from_query(db, heads_query, parse_params(param), where=parse_params(where),
                                 order_by=order_by, limit=top, extra_dirs=db.query_dirs)
        if not found:
            raise UserError(f"the query {heads_query} returned no heads; check its params (`headdb query {heads_query}`)")
        heads = format_heads(found)
        err.print(f"head set from {heads_query}: {heads}")
    head_set = parse_heads(heads, loaded.shape.n_layers, loaded.shape.n_heads)
    interventions = [Intervention(kind, head_set, factor=factor, label=heads_query)]
    if control:
        control_set = random_control(head_set, loaded.shape.n_heads, control_seed)
        err.print(f"control set (seed {control_seed}): {format_heads(control_set)}")
        interventions.append(Intervention(kind, control_set, factor=factor, label="control"))
    _generate_and_report(db, loaded, benchmark, settings, interventions, force=force, lineage=lineage,
                         regime=regime, step=step)


@app.command()
def attribution(
    ctx: typer.Context,
    checkpoint: str = typer.Option(..., "--checkpoint", help="Local checkpoint directory."),
    task: str = typer.Option(..., "--task", help="Circuit task file (JSONL or Parquet: clean, corrupted, answer)."),
    method: str = typer.Option("eap-ig", "--method", help="eap-ig | eap | exact."),
    steps: int = typer.Option(5, "--steps", help="Integrated-gradient steps (eap-ig)."),
    metric: str = typer.Option("kl", "--metric", help="kl | logit-diff | logprob."),
    topn: int = typer.Option(5000, "--topn", help="Edges kept in the top-n circuit."),
    threshold: Optional[float] = typer.Option(0.1, "--threshold", help="tau of the simplified circuit."),
    greedy: Optional[int] = typer.Option(None, "--greedy", help="Also a greedy circuit of this many edges."),
    curve: bool = typer.Option(True, "--curve/--no-curve", help="Measure the MIB faithfulness curve."),
    mode: str = typer.Option("plain", "--mode", help="plain | think_on | think_off (chat template)."),
    align: str = typer.Option("truncate", "--align", help="truncate | strict: unequal clean/corrupted lengths."),
    batch_size: int = typer.Option(8, "--batch-size"),
    ablate: Optional[str] = typer.Option(None, "--ablate", help="Attribute with these heads zero-ablated."),
    scale: Optional[str] = typer.Option(None, "--scale", help="Attribute with heads scaled, e.g. L5H1=1.3."),
    lineage: Optional[str] = typer.Option(None, "--lineage"),
    regime: str = typer.Option("other", "--regime"),
    step: int = typer.Option(0, "--step"),
    device: Optional[str] = typer.Option(None, "--device"),
    dtype: str = typer.Option("auto", "--dtype"),
    force: bool = typer.Option(False, "--force"),
) -> None:
    """Edge and head attributions, circuits and their faithfulness for one checkpoint and task."""
    from headdb.jobs.attribution import ingest_attribution
    from headdb.jobs.common import Placement
    from headdb.checkpoints.loading import load_model, read_config
    from headdb.progress import progress_bar
    from headdb.attribution.tasks import load_task

    settings = _attribution_settings(method, steps, metric, topn, threshold, greedy, curve, align, batch_size)
    if ablate and scale:
        raise UserError("give --ablate or --scale, not both")
    read_config(checkpoint)
    circuit_task = load_task(task, mode=mode)
    db = ctx.obj.connect(create=True)
    loaded = load_model(checkpoint, dtype=dtype, device=device)
    intervention = _flag_intervention(ablate, scale, loaded.shape)
    with progress_bar(loaded.path.name) as progress:
        run = ingest_attribution(db, loaded, circuit_task, settings, intervention=intervention, force=force,
                                 placement=Placement(lineage=lineage, regime=regime, step=step), progress=progress)
    _report_runs([run], "attribution")


def _attribution_settings(method, steps, metric, topn, threshold, greedy, curve, align, batch_size):
    from headdb.attribution import METHODS, METRICS
    from headdb.jobs.attribution import AttributionSettings

    if method not in METHODS:
        raise UserError(f"--method {method!r} is not one of {', '.join(METHODS)}")
    if metric not in METRICS:
        raise UserError(f"--metric {metric!r} is not one of {', '.join(METRICS)}")
    if steps < 1 or topn < 1 or batch_size < 1:
        raise UserError("--steps, --topn and --batch-size must be at least 1")
    if threshold is not None and not 0 <= threshold <= 1:
        raise UserError("--threshold must be between 0 and 1 (a fraction of the largest |edge score|)")
    if align not in ("truncate", "strict"):
        raise UserError(f"--align {align!r} is not one of truncate, strict")
    return AttributionSettings(method=method, steps=steps, metric=metric, topn=topn, threshold=threshold,
                               greedy=greedy, curve=curve, align=align, batch_size=batch_size)


@app.command("run")
def training_run(
    ctx: typer.Context,
    run_dir: str = typer.Argument(..., help="A trainer's output_dir: checkpoint-<step>/ folders + trainer_state.json."),
    regime: str = typer.Option(..., "--regime", help="sft | grpo | distill | other."),
    lineage: str = typer.Option(..., "--lineage", help="Name of this training run."),
    base: Optional[str] = typer.Option(None, "--base", help="The model training started from (registered as regime base, step 0)."),
    task: list[str] = typer.Option([], "--task", help="Circuit task file to attribute on (repeatable)."),
    bench: list[str] = typer.Option([], "--bench", help="Benchmark file or name to generate on (repeatable)."),
    method: str = typer.Option("eap-ig", "--method"),
    steps: int = typer.Option(5, "--steps"),
    metric: str = typer.Option("kl", "--metric"),
    topn: int = typer.Option(5000, "--topn"),
    threshold: Optional[float] = typer.Option(0.1, "--threshold"),
    task_mode: str = typer.Option("plain", "--task-mode", help="plain | think_on | think_off for --task."),
    attribution_batch_size: int = typer.Option(8, "--attribution-batch-size"),
    samples: int = typer.Option(4, "--samples"),
    temperature: float = typer.Option(0.6, "--temperature"),
    top_p: float = typer.Option(0.95, "--top-p"),
    max_new_tokens: int = typer.Option(512, "--max-new-tokens"),
    seed: int = typer.Option(0, "--seed"),
    batch_size: int = typer.Option(16, "--batch-size"),
    k: str = typer.Option("1", "--k"),
    chat: str = typer.Option("auto", "--chat"),
    mode: str = typer.Option("plain", "--mode"),
    limit: Optional[int] = typer.Option(None, "--limit", help="Use the first N benchmark problems."),
    device: Optional[str] = typer.Option(None, "--device"),
    dtype: str = typer.Option("auto", "--dtype"),
    force: bool = typer.Option(False, "--force"),
) -> None:
    """Ingest every checkpoint of a training run (and its base) with its trainer logs; resumable:
    a re-run does only the missing work. Exit code 1 when some checkpoint failed."""
    from headdb.jobs.generations import Benchmark
    from headdb.jobs.plan import GenerationJob
    from headdb.jobs.training_run import ingest_training_run
    from headdb.progress import progress_bar

    settings = _generation_settings(samples, temperature, top_p, max_new_tokens, seed, batch_size, k, chat, mode)
    from headdb.jobs.attribution import AttributionJob
    from headdb.attribution.tasks import load_task

    attribution_settings = _attribution_settings(method, steps, metric, topn, threshold, None, True, "truncate",
                                                 attribution_batch_size)
    jobs = [AttributionJob(load_task(t, mode=task_mode), attribution_settings) for t in task]
    jobs += [GenerationJob(Benchmark.load(b, limit=limit, seed=seed), settings) for b in bench]
    if not jobs:
        err.print("no --task or --bench given: registering checkpoints and training metrics only")
    db = ctx.obj.connect(create=True)
    with progress_bar(lineage) as progress:
        outcome = ingest_training_run(db, run_dir, regime=regime, lineage=lineage, base=base, jobs=jobs,
                                      device=device, dtype=dtype, force=force, progress=progress, say=err.print)
    err.print(f"{lineage}: {len(outcome.done)} run(s) added, {len(outcome.skipped)} already there, "
              f"{len(outcome.failed)} failed")
    for failure in outcome.failed:
        err.print(f"  failed: {failure}", highlight=False)
    if not outcome.ok:
        raise typer.Exit(1)
