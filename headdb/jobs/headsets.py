"""Head sets from named queries: "the emergent heads of B over A" as a list of (layer, head)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterable, Mapping

from headdb.errors import UserError

if TYPE_CHECKING:
    from pathlib import Path

    from headdb.warehouse.store import Warehouse


def heads_from_query(
    db: Warehouse,
    name: str,
    params: Mapping[str, Any] | None = None,
    *,
    where: Mapping[str, Any] | None = None,
    order_by: str | None = None,
    limit: int | None = None,
    extra_dirs: Iterable[str | Path] = (),
) -> list[tuple[int, int]]:
    """Run query `name`, keep rows matching `where` (column = value), order by `order_by`
    (descending: the strongest first), keep `limit` rows; return its (layer, head) pairs."""
    from headdb.warehouse.queries import run_query

    rows = run_query(db, name, dict(params or {}), extra_dirs)
    if not {"layer", "head"} <= set(rows.columns):
        raise UserError(f"query {name} returns no layer/head columns, so it cannot name a head set")
    for column, value in (where or {}).items():
        if column not in rows.columns:
            raise UserError(f"query {name} has no column {column!r} to filter on (columns: {', '.join(rows.columns)})")
        text = str(value).lower() if isinstance(value, bool) else str(value)  # TOML true = polars "true"
        rows = rows.filter(rows[column].cast(str) == text)
    if order_by is not None:
        if order_by not in rows.columns:
            raise UserError(f"query {name} has no column {order_by!r} to order by (columns: {', '.join(rows.columns)})")
        rows = rows.sort(order_by, descending=True, nulls_last=True, maintain_order=True)
    if limit is not None:
        rows = rows.head(int(limit))
    return sorted({(int(l), int(h)) for l, h in rows.select("layer", "head").iter_rows()})
