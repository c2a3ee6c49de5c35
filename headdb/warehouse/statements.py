"""Named SQL statements kept in headdb/sql/*.sql.

A file holds several statements, each introduced by a `-- name: NAME` line, so the SQL stays in
.sql files and the Python refers to it by name.
"""

from __future__ import annotations

import re
from functools import cache

from headdb.resources import statements_file

_NAME = re.compile(r"^--\s*name:\s*(\S+)\s*$", re.MULTILINE)


@cache
def statements(file: str) -> dict[str, str]:
    text = statements_file(file).read_text()
    parts = _NAME.split(text)
    # parts = [preamble, name1, body1, name2, body2, ...]
    return {name: body.strip() for name, body in zip(parts[1::2], parts[2::2])}


def sql(file: str, name: str) -> str:
    try:
        return statements(file)[name]
    except KeyError:
        raise KeyError(f"no statement {name!r} in headdb/sql/{file}.sql") from None
