"""`headdb export checkpoint`: a head intervention written into a checkpoint's weights, for
engines that cannot run headdb's hooks (mounted under `headdb export` by headdb.cli.app)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from headdb.cli.ingest import ABLATE, DEVICE, MODE, SCALE, _existing, flag_intervention
from headdb.errors import UserError

err = Console(stderr=True, soft_wrap=True, highlight=False)


def export_checkpoint(
    ctx: typer.Context,
    checkpoint: str = typer.Option(
        ..., "--checkpoint", help="The source: a checkpoint folder, or a registered one (id, name, lineage@step)."
    ),
    out: Path = typer.Option(..., "--out", help="The new checkpoint folder (must not exist, or be empty)."),
    ablate: Optional[str] = ABLATE,
    scale: Optional[str] = SCALE,
    mean_task: Optional[Path] = typer.Option(
        None,
        "--mean-task",
        help="With --ablate: mean-ablate instead, the means taken over this circuit task's clean prompts.",
    ),
    mode: str = MODE,  # how the mean task's prompts are rendered, as attribution renders them
    name: Optional[str] = typer.Option(None, "--name", help="Name of the new checkpoint (default: the folder's)."),
    device: Optional[str] = DEVICE,
) -> None:
    """A standard HF checkpoint whose weights carry a head intervention (o_proj input columns
    zeroed or scaled; mean: an o_proj bias), for vLLM or lm-eval; registered with the source as
    its parent. Import its samples with `headdb ingest samples --checkpoint OUT`."""
    from headdb.evals.interventions import format_heads
    from headdb.jobs.exported import plan_export, run_export

    spec = flag_intervention(ablate, scale)
    if spec is None:
        raise UserError("give the heads: --ablate L5H1,L7H3 (with --mean-task FILE: mean) or --scale L5H1=1.3")
    task = None
    if mean_task is not None:
        from headdb.attribution.tasks import load_task

        if spec.kind == "scale":
            raise UserError("--mean-task is for mean ablation (--ablate HEADS --mean-task FILE), not with --scale")
        spec = spec.model_copy(update={"kind": "mean"})
        task = load_task(mean_task, mode=mode)
    plan = plan_export(_existing(ctx), checkpoint, spec, out, mean_task=task, name=name, device=device)
    checkpoint_id, seconds = run_export(ctx.obj.connect(create=True), plan)
    iv = plan.intervention
    err.print(
        f"wrote {plan.out}: {iv.kind} {format_heads(iv.heads)}"
        + (f" x{iv.factor:g}" if iv.kind == "scale" else "")
        + f" in its weights ({seconds:.1f} s); registered as checkpoint {checkpoint_id}, parent {plan.source.label}"
    )
