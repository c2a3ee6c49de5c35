"""Where the package's SQL lives.

schemas/ and queries/ sit at the top of the repository (docs/architecture.md) and are linked into the
package as headdb/schemas and headdb/queries, so a checkout and an installed wheel resolve them
through the same importlib.resources lookup.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path


def package_dir(name: str) -> Path:
    """The on-disk folder of package data `name` (schemas, queries or sql)."""
    return Path(str(files("headdb") / name))


def schemas_dir() -> Path:
    return package_dir("schemas")


def queries_dir() -> Path:
    return package_dir("queries")


def statements_file(name: str) -> Path:
    return package_dir("warehouse/sql") / f"{name}.sql"
