"""What every job does first: register the model shape, its graph layout and the checkpoint."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from headdb.attribution.graph import build_layout
from headdb.errors import UserError
from headdb.checkpoints.loading import LoadedModel, ModelShape, read_config, shape_from_config, weights_digest
from headdb.warehouse.store import Warehouse


@dataclass(frozen=True)
class Placement:
    """Where a checkpoint sits in a study: its lineage, regime, step and parent checkpoint."""

    lineage: str | None = None
    regime: str = "other"
    step: int = 0
    parent_id: int | None = None
    name: str | None = None


def register_shape(db: Warehouse, shape: ModelShape) -> str:
    """Record an architecture shape with its graph layout (once per model_key)."""
    layout = build_layout(shape)
    return db.register_model({**shape.models_row(), "config": shape.config}, layout.nodes_table(),
                             layout.edges_table())


def register_checkpoint_dir(db: Warehouse, path: str | Path, placement: Placement = Placement(), *,
                            fallback_shape: ModelShape | None = None) -> tuple[int, ModelShape]:
    """Register a checkpoint directory without loading its weights.

    With `fallback_shape`, a directory too broken to describe itself (no config.json, no
    weights) is still registered under that shape, so the failure of its jobs can be recorded.
    """
    try:
        directory, config = read_config(path)
        shape = shape_from_config(config)
    except UserError:
        if fallback_shape is None:
            raise
        directory, shape = Path(path).expanduser().resolve(), fallback_shape
    register_shape(db, shape)
    checkpoint_id = db.register_checkpoint(
        model_key=shape.model_key, path=directory, weights_digest=weights_digest(directory),
        name=placement.name, lineage=placement.lineage, regime=placement.regime, step=placement.step,
        parent_id=placement.parent_id)
    return checkpoint_id, shape


def register_loaded(db: Warehouse, loaded: LoadedModel, placement: Placement = Placement()) -> int:
    return register_checkpoint_dir(db, loaded.path, placement)[0]


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


Progress = Callable[[str, int, int], None]


def no_progress(stage: str, done: int, total: int) -> None:
    pass


def resolve_device_dtype(device: str | None, dtype) -> tuple[str, str]:
    """The device and dtype a load will use, known before loading (they key runs)."""
    from headdb.checkpoints.loading import resolve_dtype  # the loader's own rule, so the two never disagree

    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return device, dtype_name(resolve_dtype(dtype, device))
