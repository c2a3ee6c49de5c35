"""headdb: a warehouse for attention-head circuits across training checkpoints."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

from headdb.errors import UserError

if TYPE_CHECKING:
    from headdb.warehouse.store import Warehouse, connect

__all__ = ["connect", "Warehouse", "UserError", "__version__"]


def __getattr__(name: str):
    # The warehouse (DuckDB, polars, settings) loads on first use, so a worker that only scores or
    # samples (headdb.attribution, headdb.evals) imports neither: a GPU image needs fewer packages.
    if name in ("connect", "Warehouse"):
        from headdb.warehouse import store

        return getattr(store, name)
    if name == "__version__":
        return _version()
    raise AttributeError(f"module 'headdb' has no attribute {name!r}")


@functools.cache  # one metadata lookup, as when it was a module constant
def _version() -> str:
    from importlib import metadata

    try:
        return metadata.version("headdb")
    except metadata.PackageNotFoundError:
        return "0+unknown"
