"""Registering what a plan works on: model shapes with their graph layout, and checkpoints."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from headdb.attribution.graph import build_layout
from headdb.checkpoints.loading import ModelShape, weights_digest
from headdb.jobs.job import Target

if TYPE_CHECKING:
    from headdb.warehouse.store import Warehouse


def register_shape(db: Warehouse, shape: ModelShape) -> str:
    """Record an architecture shape with its graph layout (once per model_key)."""
    layout = build_layout(shape)
    return db.register_model({**shape.models_row(), "config": shape.config}, layout.nodes_table(), layout.edges_table())


def register_target(db: Warehouse, target: Target, parent_id: int | None = None) -> int:
    """Register a planned checkpoint directory (without loading its weights), or a checkpoint
    known only through graph files; its id."""
    p = target.placement
    if target.graph_only is not None:
        from headdb.interop.graph_json import new_import_checkpoint

        # plan_graph_import, which alone builds GraphOnly targets, names them and refuses no lineage
        assert p.name is not None and p.lineage is not None
        return new_import_checkpoint(
            db,
            name=p.name,
            lineage=p.lineage,
            step=p.step,
            regime=p.regime,
            parent_id=parent_id,
            model_key=target.graph_only.model_key,
            data=target.graph_only.graph,
        )
    # only a target of a registered checkpoint (checkpoint_id set, never registered again) or a
    # GraphOnly one has no shape
    assert target.shape is not None
    register_shape(db, target.shape)
    return db.register_checkpoint(
        model_key=target.shape.model_key,
        path=target.path,
        weights_digest=weights_digest(target.path),
        name=p.name,
        lineage=p.lineage,
        regime=p.regime,
        step=p.step,
        parent_id=parent_id,
    )


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def resolve_device_dtype(device: str | None, dtype: str | torch.dtype | None) -> tuple[str, str]:
    """The device and dtype a load will use, known before loading (they key runs)."""
    from headdb.checkpoints.loading import resolve_dtype  # the loader's own rule, so the two agree

    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return device, dtype_name(resolve_dtype(dtype, device))
