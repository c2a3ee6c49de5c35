"""headdb: a warehouse for attention-head circuits across training checkpoints."""

from headdb.errors import UserError
from headdb.warehouse.store import Warehouse, connect

__all__ = ["connect", "Warehouse", "UserError", "__version__"]


def _version() -> str:
    from importlib import metadata

    try:
        return metadata.version("headdb")
    except metadata.PackageNotFoundError:
        return "0+unknown"


__version__ = _version()
