"""Versioned DDL: schemas/NNNN_name.sql applied in order, each recorded in schema_version."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from headdb.errors import UserError
from headdb.resources import schemas_dir

if TYPE_CHECKING:
    from headdb.warehouse.sinks import Session

_FILE = re.compile(r"^(\d{4})_[\w-]+\.sql$")


@dataclass(frozen=True)
class Migration:
    version: int
    path: Path


def migrations(directory: Path | None = None) -> list[Migration]:
    """All migrations, in order; their numbers must run 1, 2, 3, ... without gaps."""
    directory = directory or schemas_dir()
    found = sorted(
        (Migration(int(m.group(1)), p) for p in directory.iterdir() if (m := _FILE.match(p.name))),
        key=lambda m: m.version,
    )
    for expected, migration in enumerate(found, start=1):
        if migration.version != expected:
            raise RuntimeError(f"schema migrations are not contiguous at {migration.path.name}")
    return found


def code_version(directory: Path | None = None) -> int:
    return len(migrations(directory))


def current_version(session: Session) -> int | None:
    """The warehouse's schema version, or None when it has no schema_version table."""
    exists = session.scalar(
        "SELECT count(*) FROM information_schema.tables "
        "WHERE table_catalog = current_database() AND table_name = 'schema_version'"
    )
    if not exists:
        return None
    version: int = session.scalar("SELECT coalesce(max(version), 0) FROM schema_version")
    return version


def check_compatible(version: int | None, location: str | Path, directory: Path | None = None) -> None:
    """Refuse warehouses this code cannot read: newer schema, older schema, or not headdb's."""
    code = code_version(directory)
    path = str(location)
    if version is None:
        raise UserError(f"{path} holds a DuckDB database but not a headdb warehouse (no schema_version table)")
    if version > code:
        raise UserError(
            f"warehouse {path} has schema v{version}, newer than this headdb's v{code}; upgrade headdb to use it"
        )
    if version < code:
        raise UserError(
            f"warehouse {path} has schema v{version}, older than this headdb's v{code}; "
            f"back it up, then run `headdb --db {shlex.quote(path)} migrate`"
        )


def apply_pending(session: Session, directory: Path | None = None) -> list[int]:
    """Apply every migration above the current version inside the caller's transaction."""
    current = current_version(session) or 0
    applied: list[int] = []
    for migration in migrations(directory):
        if migration.version <= current:
            continue
        session.execute(migration.path.read_text())
        session.execute("INSERT INTO schema_version (version) VALUES (?)", [migration.version])
        applied.append(migration.version)
    return applied
