"""References to checkpoints and tasks as users type them; the one resolver every command uses.

A checkpoint reference is its id ('12'), 'lineage@step' ('grpo@400'), 'lineage@last', its name
('checkpoint-400') or the directory it was registered from. The matching rule itself is the SQL
macro `hd_checkpoint` (queries/_macros.sql), so named queries and commands agree on what a
reference means; a reference that matches several checkpoints is an error naming them.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, cast

from headdb.errors import UserError
from headdb.resources import queries_dir

if TYPE_CHECKING:
    import duckdb

    from headdb.warehouse.store import Warehouse


def find_checkpoint(db: Warehouse, ref: str | int) -> int | None:
    """The checkpoint id `ref` names, or None when it names none."""
    text = str(ref)
    directory = Path(text).expanduser()
    if ("/" in text or text.startswith(".")) and directory.exists():
        rows = db.sql(
            "SELECT checkpoint_id FROM checkpoints WHERE path = ? ORDER BY checkpoint_id", [str(directory.resolve())]
        )
        if rows.height > 1:
            raise UserError(
                f"directory {text} was registered as {rows.height} checkpoints (ids "
                f"{', '.join(map(str, rows['checkpoint_id']))}); name one by id or lineage@step"
            )
        if rows.height:
            return int(rows["checkpoint_id"][0])
    with db.sink.read() as session:
        create_macros(session.con)
        found = session.con.execute("SELECT hd_checkpoint(?)", [text]).fetchone()[0]
    return None if found is None else int(found)


def create_macros(con: duckdb.DuckDBPyConnection) -> None:
    """The packaged query macros (queries/_macros.sql: hd_checkpoint, the rule of what a reference
    names) as TEMP macros on `con`."""
    for path in sorted(queries_dir().glob("_*.sql")):
        con.execute(path.read_text())


def resolve_checkpoint(db: Warehouse, ref: str | int) -> int:
    """Like find_checkpoint, but a reference that names nothing is a UserError."""
    found = find_checkpoint(db, ref)
    if found is None:
        raise UserError(
            f"no checkpoint {ref!r} in the warehouse; name it by id, lineage@step, lineage@last, "
            "name or directory (see `headdb checkpoints`)"
        )
    return found


def find_task(db: Warehouse, ref: str | int, mode: str | None = None) -> int | None:
    """A task id from its id or name (and mode, when the name covers several); None if unknown."""
    text = str(ref)
    rows = db.sql(
        "SELECT task_id, mode FROM tasks WHERE CAST(task_id AS VARCHAR) = ? "
        "OR (name = ? AND (? IS NULL OR mode = ?)) ORDER BY (CAST(task_id AS VARCHAR) = ?) DESC, task_id",
        [text, text, mode, mode, text],
    )
    if rows.height > 1 and str(rows["task_id"][0]) != text:
        modes = ", ".join(sorted(set(rows["mode"])))
        raise UserError(f"task {text} matches {rows.height} tasks (modes {modes}); give its id or --mode")
    return int(rows["task_id"][0]) if rows.height else None


def check_planned_references(db: Warehouse | None, planned: Iterable[Any], refs: list[str]) -> list[str]:
    """The directory each of `refs` names among the checkpoints registered and those a plan is
    about to register (`planned`: jobs.Target values), by the same macro; UserError unless each
    names exactly one."""
    import duckdb
    import polars as pl

    from headdb.warehouse.migrations import apply_pending
    from headdb.warehouse.sinks import Session

    if not refs:
        return []
    rows = db.sql("SELECT checkpoint_id, name, path, lineage, step FROM checkpoints") if db is not None else None
    known = (
        rows
        if rows is not None and rows.height
        else pl.DataFrame(
            schema={"checkpoint_id": pl.Int64, "name": pl.Utf8, "path": pl.Utf8, "lineage": pl.Utf8, "step": pl.Int64}
        )
    )
    first = cast(int, known["checkpoint_id"].max() or 0) + 1  # checkpoint_id is an integer column
    new = pl.DataFrame(
        [
            {
                "checkpoint_id": first + i,
                "name": t.placement.name or t.path.name,
                "path": str(t.path),
                "lineage": t.placement.lineage or t.placement.name or t.path.name,
                "step": t.placement.step,
            }
            for i, t in enumerate(planned)
        ],
        schema=known.schema,
    )
    table = pl.concat([known.filter(~pl.col("path").is_in(new["path"].implode())), new])
    con = duckdb.connect()
    try:
        apply_pending(Session(con))
        con.register("planned", table.to_arrow())
        con.execute(
            "INSERT INTO checkpoints (checkpoint_id, model_key, name, path, weights_digest, lineage, regime, "
            "step) SELECT checkpoint_id, '', name, path, '', lineage, 'other', step FROM planned"
        )
        create_macros(con)
        paths: list[str] = []
        for ref in refs:
            try:
                found = con.execute(
                    "SELECT path FROM checkpoints WHERE checkpoint_id = hd_checkpoint(?)", [ref]
                ).fetchone()
            except duckdb.Error as exc:
                message = str(exc)
                raise UserError(
                    message.split("headdb: ", 1)[1].splitlines()[0]
                    if "headdb: " in message
                    else message.splitlines()[0]
                ) from None
            if found is None:
                raise UserError(
                    f"checkpoint {ref!r} is neither registered nor planned by this study; name it by "
                    "a [[models]] name, lineage@step or lineage@last"
                )
            paths.append(found[0])
    finally:
        con.close()
    return paths


# ------------------------------------------------------------------ the params of named queries

# What a named query's param names, by its name: the same in every query (queries/*.sql). A value
# of one of these params is checked against the warehouse before the query runs, so a typo is an
# error naming the closest known values, never an empty answer; a checkpoint folder becomes its id.
REFERENCE_PARAMS = {
    "base": "checkpoint",
    "target": "checkpoint",
    "checkpoint": "checkpoint",
    "lineage": "lineage",
    "lineages": "lineage list",
    "task": "task",
    "run": "run",
    "runs": "run list",
    "selection": "selection",
}


def _closest(word: str, known: list[str], what: str) -> str:
    import difflib

    close = difflib.get_close_matches(word, known, n=3, cutoff=0.5)
    if close:
        return "did you mean " + " or ".join(close) + "?"
    shown = ", ".join(known[:12]) + (f" ... ({len(known)} in all)" if len(known) > 12 else "")
    return f"known {what}: {shown}" if known else f"the warehouse has no {what} yet"


def _column(con: duckdb.DuckDBPyConnection, sql: str) -> list[str]:
    return [str(row[0]) for row in con.execute(sql).fetchall()]


def _checkpoint_error(con: duckdb.DuckDBPyConnection, text: str) -> UserError:
    """Why `text` names no checkpoint, with the closest references that do."""
    rows = con.execute("SELECT lineage, step, name FROM checkpoints ORDER BY lineage, step").fetchall()
    steps: dict[str, list[int]] = {}
    for lineage, step, _ in rows:
        steps.setdefault(lineage, []).append(int(step))
    lineage, at, step = text.partition("@")
    if at and lineage in steps:
        have = steps[lineage]
        listed = ", ".join(map(str, have[:10])) + (" ..." if len(have) > 10 else "")
        guess = ""
        if step.lstrip("-").isdigit():
            nearest = min(have, key=lambda s: (abs(s - int(step)), s))
            guess = f"; did you mean {lineage}@{nearest} or {lineage}@last?"
        return UserError(f"no checkpoint {text!r}; {lineage} has steps {have[0]}..{have[-1]} ({listed}){guess}")
    if not at and text in steps:
        return UserError(
            f"{text!r} is a lineage, not a checkpoint; name one of its checkpoints: {text}@last, or "
            f"{text}@STEP with a step of {', '.join(map(str, steps[text][:10]))}"
        )
    known = sorted(
        {f"{lin}@last" for lin in steps}
        | {f"{lin}@{s}" for lin, ss in steps.items() for s in ss}
        | {str(name) for _, _, name in rows}
    )
    return UserError(
        f"no checkpoint {text!r} in the warehouse; {_closest(text, known, 'checkpoints')} "
        "(name one by id, lineage@step, lineage@last, name or folder; see `headdb checkpoints`)"
    )


def _checkpoint_param(con: duckdb.DuckDBPyConnection, value: str) -> str:
    directory = Path(value).expanduser()
    if ("/" in value or value.startswith(".")) and directory.exists():
        ids = [
            str(r[0])
            for r in con.execute(
                "SELECT checkpoint_id FROM checkpoints WHERE path = ? ORDER BY 1", [str(directory.resolve())]
            ).fetchall()
        ]
        if len(ids) > 1:
            raise UserError(
                f"folder {value} was registered as {len(ids)} checkpoints (ids {', '.join(ids)}); "
                "name one by id or lineage@step"
            )
        if ids:
            return ids[0]
        raise UserError(
            f"folder {value} is not a registered checkpoint; `headdb checkpoints` lists them "
            "(ingest it first, or name a checkpoint by lineage@step)"
        )
    row = con.execute("SELECT hd_checkpoint(?)", [value]).fetchone()
    assert row is not None  # a SELECT without FROM returns exactly one row
    if row[0] is None:
        raise _checkpoint_error(con, value)
    return value


# kind: (SQL of the values it accepts, SQL of the names to suggest, what "not found" says, their plural)
_NAMES = {
    "task": (
        "SELECT CAST(task_id AS VARCHAR) FROM tasks UNION SELECT name FROM tasks",
        "SELECT DISTINCT name FROM tasks ORDER BY 1",
        "no task {!r} in the warehouse",
        "tasks",
    ),
    "lineage": (
        "SELECT lineage FROM checkpoints UNION SELECT lineage FROM training_metrics",
        "SELECT lineage FROM checkpoints UNION SELECT lineage FROM training_metrics ORDER BY 1",
        "no lineage {!r} in the warehouse",
        "lineages",
    ),
    "selection": (
        "SELECT DISTINCT selection FROM circuits",
        "SELECT DISTINCT selection FROM circuits ORDER BY 1",
        "no circuit in the warehouse was selected by {!r}",
        "selections",
    ),
    "run": ("SELECT CAST(run_id AS VARCHAR) FROM runs", None, "no run {!r} in the warehouse", "runs"),
}


def _one(con: duckdb.DuckDBPyConnection, kind: str, value: str, param: str) -> str:
    if kind == "checkpoint":
        return _checkpoint_param(con, value)
    accepts, suggest, missing, plural = _NAMES[kind]
    if value not in set(_column(con, accepts)):
        hint = _closest(value, _column(con, suggest), plural) if suggest else "`headdb runs` lists the runs"
        raise UserError(f"{missing.format(value)} (param {param}); {hint}")
    return value


def resolve_params(con: duckdb.DuckDBPyConnection, values: dict[str, Any]) -> dict[str, Any]:
    """`values` (a named query's bound params) with every reference checked against the warehouse
    open on `con` (a session with the query macros): UserError naming the closest known values for
    a reference that names nothing; a checkpoint folder becomes its id. None (not given) passes."""
    out = dict(values)
    for param, value in values.items():
        kind = REFERENCE_PARAMS.get(param)
        if kind is None or value is None:
            continue
        if kind.endswith(" list"):
            parts = [p.strip() for p in str(value).split(",") if p.strip()]
            out[param] = ",".join(_one(con, kind.split()[0], p, param) for p in parts)
        else:
            found = _one(con, kind, str(value).strip(), param)
            out[param] = int(found) if kind == "run" else found
    return out
