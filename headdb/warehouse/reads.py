"""Lookups that other packages need from the warehouse, as functions, so that no SQL lives
outside `headdb/warehouse/` (the statements are in `sql/reads.sql`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import polars as pl

from headdb.warehouse.statements import sql

if TYPE_CHECKING:
    from headdb.warehouse.store import Warehouse


def _one(db: Warehouse, name: str, params: list[Any]) -> pl.DataFrame:
    return db.sql(sql("reads", name), params)


def model_row(db: Warehouse, model_key: str) -> dict[str, Any] | None:
    """The `models` row of a model key, or None."""
    found = _one(db, "model_row", [model_key])
    return found.row(0, named=True) if found.height else None


def checkpoint_model_key(db: Warehouse, checkpoint_id: int) -> str | None:
    found = _one(db, "checkpoint_model_key", [checkpoint_id])
    return found["model_key"][0] if found.height else None


def checkpoint_path_name(db: Warehouse, checkpoint_id: int) -> tuple[str, str | None]:
    """(path, name) of a registered checkpoint (it must exist)."""
    row = _one(db, "checkpoint_path_name", [checkpoint_id]).row(0, named=True)
    return row["path"], row["name"]


def checkpoint_with_weights(db: Warehouse, path: str, weights_digest: str) -> int | None:
    """The checkpoint registered from directory `path` with these weights, or None."""
    found = _one(db, "checkpoint_with_weights", [path, weights_digest])
    return int(found["checkpoint_id"][0]) if found.height else None


def checkpoint_step(db: Warehouse, checkpoint_id: int) -> int:
    """The step of a registered checkpoint (it must exist)."""
    return int(_one(db, "checkpoint_step", [checkpoint_id])["step"][0])


def task_exists(db: Warehouse, task_id: int) -> bool:
    return bool(_one(db, "task_exists", [task_id])["n"][0])


def run_scores_header(db: Warehouse, run_id: int) -> dict[str, Any] | None:
    """run_id, score_sign, model_key and metric (NULL: not recorded, e.g. an import) of a run, or
    None when there is no such run."""
    found = _one(db, "run_scores_header", [run_id])
    return found.row(0, named=True) if found.height else None


def run_edge_scores(db: Warehouse, run_id: int) -> pl.DataFrame:
    """edge_id, score of a run, by edge id."""
    return _one(db, "run_edge_scores", [run_id])


def run_circuits(db: Warehouse, run_id: int) -> pl.DataFrame:
    """circuit_id, selection of a run's circuits."""
    return _one(db, "run_circuits", [run_id])


def circuit_edge_ids(db: Warehouse, circuit_id: int) -> pl.DataFrame:
    return _one(db, "circuit_edge_ids", [circuit_id])


def circuit_head_pairs(db: Warehouse, circuit_id: int) -> pl.DataFrame:
    return _one(db, "circuit_head_pairs", [circuit_id])
