"""Checkpoints with an intervention written into their weights, for engines that cannot run
headdb's hooks (vLLM, lm-evaluation-harness, any plain transformers script).

`plan_export` checks everything a user can get wrong (the source reference, the heads, the
output folder, a mean ablation the architecture cannot hold, the mean task file) before anything
is written; `run_export` loads the source, writes the edit (headdb.evals.weight_edits), saves a
standard HF checkpoint folder (weights in the source's dtype, its config.json with the changed keys
and a `headdb_export` block, its generation config and tokenizer files), and registers it in the
warehouse as a checkpoint whose parent is the source.

Samples of an exported checkpoint imported later (`headdb ingest samples --checkpoint DST`) are
stored against the SOURCE as an intervened generation run (`exported_source`): the same
checkpoint, the intervention in the run's config and in `interventions`, so `ablation_table`,
`item_rates` and the reports pair them with the source's plain runs exactly like native ablations.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from headdb.checkpoints.loading import resolve_dtype, weights_digest
from headdb.errors import UserError
from headdb.evals.interventions import Intervention, head_means, parse_heads
from headdb.evals.weight_edits import bake, mean_refusal
from headdb.jobs.builders import intervention as resolve_intervention
from headdb.jobs.job import TOKENIZER_FILES, Placement, Target
from headdb.jobs.plan import existing_target, target
from headdb.provenance import headdb_version
from headdb.settings import InterventionSettings

if TYPE_CHECKING:
    import torch

    from headdb.attribution.tasks import Task
    from headdb.checkpoints.loading import LoadedModel
    from headdb.warehouse.store import Warehouse

BLOCK = "headdb_export"  # the key of config.json that records what was written into the weights


@dataclass
class ExportPlan:
    source: Target  # checkpoint_id set when the source is registered already
    intervention: Intervention
    out: Path
    name: str
    mean_task: Task | None = None
    device: str | None = None


def source_target(db: Warehouse | None, checkpoint: str | Path) -> Target:
    """The source of an export: a checkpoint directory (its registration found, if any), else a
    registered checkpoint's reference (id, name, lineage@step); UserError if it names neither."""
    from headdb.warehouse.reads import checkpoint_with_weights
    from headdb.warehouse.refs import resolve_checkpoint

    directory = Path(checkpoint).expanduser()
    if directory.exists() or db is None:
        t = target(directory if directory.exists() else checkpoint)  # a missing one: read_config's message
        if db is not None:  # registered with these very weights (else registered by the export)
            t.checkpoint_id = checkpoint_with_weights(db, str(t.path), weights_digest(t.path))
        return t
    t = existing_target(db, resolve_checkpoint(db, str(checkpoint)))
    if t.broken:
        raise UserError(t.broken)
    return t


def plan_export(
    db: Warehouse | None,
    checkpoint: str | Path,
    spec: InterventionSettings,
    out: str | Path,
    *,
    mean_task: Task | None = None,
    name: str | None = None,
    device: str | None = None,
) -> ExportPlan:
    """Check an export (`db`: the warehouse when it exists, else None); nothing is written."""
    source = source_target(db, checkpoint)
    assert source.shape is not None  # a target read from its directory has its shape
    if spec.kind == "mean" and mean_task is None:
        raise UserError("mean ablation needs the task whose clean prompts the means are taken over (--mean-task FILE)")
    if spec.kind != "mean" and mean_task is not None:
        raise UserError("--mean-task is for mean ablation (--ablate HEADS --mean-task FILE), not with --scale")
    if spec.kind == "mean":
        refusal = mean_refusal(source.shape.architecture)
        if refusal is not None:
            raise UserError(refusal)
    iv = resolve_intervention(spec, source.shape)  # a head outside the model: one line
    if mean_task is not None:
        iv.reference = f"task:{mean_task.digest[:16]}"
    dst = Path(out).expanduser()
    if dst.exists() and (not dst.is_dir() or any(dst.iterdir())):
        raise UserError(f"--out {dst} exists and is not an empty folder; give a new folder for the exported checkpoint")
    if dst.resolve() == source.path:
        raise UserError("--out is the source checkpoint itself; give a new folder")
    return ExportPlan(source, iv, dst, name or dst.name, mean_task, device)


def task_means(loaded: LoadedModel, task: Task, batch_size: int = 16) -> dict[int, torch.Tensor]:
    """Each head's mean output over the clean prompts of a circuit task, rendered and tokenised
    as attribution does (headdb.attribution.tasks), by headdb's own head_means."""
    from headdb.attribution.tasks import render_prompts

    tok = loaded.tokenizer
    clean, _ = render_prompts(task, tok)
    size = batch_size if tok.pad_token is not None else 1  # unpadded when the tokenizer cannot pad

    def batches() -> Iterator[dict[str, Any]]:
        for k in range(0, len(clean), size):
            enc = tok(
                clean[k : k + size],
                return_tensors="pt",
                padding=True,
                padding_side="right",  # real tokens keep positions 0..n-1
                add_special_tokens=task.mode == "plain",
            )
            yield {n: enc[n].to(loaded.device) for n in ("input_ids", "attention_mask")}

    means: dict[int, torch.Tensor] = head_means(loaded.hf_model, batches())
    return means


def run_export(db: Warehouse, plan: ExportPlan) -> tuple[int, float]:
    """Write the exported checkpoint and register it (and its source when new); returns the new
    checkpoint's id and the seconds the export took (load, edit, save)."""
    from headdb.checkpoints.loading import load_model, read_config
    from headdb.jobs.registration import register_target
    from headdb.warehouse.reads import checkpoint_step

    started = time.perf_counter()
    src = plan.source
    _, config = read_config(src.path)
    stored = resolve_dtype(str(config.get("dtype") or config.get("torch_dtype") or "float32"), "cpu")
    loaded = load_model(src.path, dtype="float32", device=plan.device)  # edits and means in float32
    iv = plan.intervention
    if plan.mean_task is not None:
        iv.means = task_means(loaded, plan.mean_task)
    updates = bake(loaded.hf_model, iv)
    block: dict[str, Any] = {
        "intervention": iv.spec(),
        "source": {"path": str(src.path), "weights_digest": weights_digest(src.path), "name": src.label},
        "headdb_version": headdb_version(),
    }
    if plan.mean_task is not None:
        t = plan.mean_task
        block["mean_task"] = {
            "name": t.name,
            "digest": t.digest,
            "mode": t.mode,
            "source": str(Path(t.source).resolve()),
        }
    partial = plan.out.parent / f".{plan.out.name}.partial-{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    plan.out.parent.mkdir(parents=True, exist_ok=True)
    loaded.hf_model.to(stored).save_pretrained(partial)
    # the source's own config (not transformers' re-serialisation), with the edit recorded
    (partial / "config.json").write_text(json.dumps({**config, **updates, BLOCK: block}, indent=2) + "\n")
    (partial / "generation_config.json").unlink(missing_ok=True)
    for pattern in ("generation_config.json", *TOKENIZER_FILES):
        for f in sorted(src.path.glob(pattern)):
            if f.is_file() and f.name != "config.json":
                shutil.copy2(f, partial / f.name)
    if plan.out.exists():
        plan.out.rmdir()  # empty (checked by the plan)
    os.replace(partial, plan.out)
    seconds = time.perf_counter() - started
    source_id = src.checkpoint_id if src.checkpoint_id is not None else register_target(db, src)
    dst = target(plan.out, Placement(name=plan.name, regime="other", step=checkpoint_step(db, source_id)))
    return register_target(db, dst, source_id), seconds


def exported_from(directory: Path) -> dict[str, Any] | None:
    """The `headdb_export` block of a checkpoint folder's config.json (None: not exported by headdb)."""
    try:
        config = json.loads((directory / "config.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    block = config.get(BLOCK) if isinstance(config, dict) else None
    return block if isinstance(block, dict) else None


def exported_source(db: Warehouse | None, exported: Target) -> tuple[Target, Intervention, dict[str, Any]] | None:
    """For a checkpoint folder that headdb exported: its source (registered, or its folder when
    still on disk with the same weights), the intervention its weights carry, and what names the
    exported checkpoint (its folder and weights digest). None for any other checkpoint."""
    from headdb.warehouse.reads import checkpoint_with_weights

    block = exported_from(exported.path)
    if block is None:
        return None
    try:
        src, spec = block["source"], block["intervention"]
        path, digest = str(src["path"]), str(src["weights_digest"])
        kind, heads = spec["kind"], spec["heads"]
    except (KeyError, TypeError):
        raise UserError(f"{exported.path}/config.json: its {BLOCK} block lacks source or intervention") from None
    found = checkpoint_with_weights(db, path, digest) if db is not None else None
    if found is not None:
        assert db is not None
        source = existing_target(db, found)
    elif Path(path).is_dir() and weights_digest(path) == digest:
        source = target(path)
    else:
        raise UserError(
            f"{exported.path} was exported from {path}, which is neither registered in this warehouse "
            "nor on disk with the weights it was exported from; register or restore the source first"
        )
    shape = source.shape
    iv = Intervention(
        kind,
        parse_heads(heads, shape.n_layers if shape else None, shape.n_heads if shape else None),
        factor=spec.get("factor"),
        reference=spec.get("reference"),
        label=spec.get("label"),
    )
    return source, iv, {"path": str(exported.path), "weights_digest": weights_digest(exported.path)}
