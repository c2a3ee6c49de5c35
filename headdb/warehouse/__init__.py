"""The warehouse: schema and migrations, sinks, the run lifecycle, checkpoint references and the
query catalogue."""

from headdb.warehouse.store import Warehouse, connect

__all__ = ["Warehouse", "connect"]
