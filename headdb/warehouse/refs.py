"""References to checkpoints and tasks as users type them; the one resolver every command uses.

A checkpoint reference is its id ('12'), 'lineage@step' ('grpo@400'), 'lineage@last', its name
('checkpoint-400') or the directory it was registered from. The matching rule itself is the SQL
macro `hd_checkpoint` (queries/_macros.sql), so named queries and commands agree on what a
reference means; a reference that matches several checkpoints is an error naming them.
"""
from __future__ import annotations

from pathlib import Path

from headdb.errors import UserError
from headdb.warehouse.queries import query_session


def find_checkpoint(db, ref: str | int) -> int | None:
    """The checkpoint id `ref` names, or None when it names none."""
    text = str(ref)
    directory = Path(text).expanduser()
    if ("/" in text or text.startswith(".")) and directory.exists():
        rows = db.sql("SELECT checkpoint_id FROM checkpoints WHERE path = ? ORDER BY checkpoint_id",
                      [str(directory.resolve())])
        if rows.height > 1:
            raise UserError(f"directory {text} was registered as {rows.height} checkpoints (ids "
                            f"{', '.join(map(str, rows['checkpoint_id']))}); name one by id or lineage@step")
        if rows.height:
            return int(rows["checkpoint_id"][0])
    with query_session(db, db.query_dirs) as q:
        found = q.value("SELECT hd_checkpoint(?)", [text])
    return None if found is None else int(found)


def resolve_checkpoint(db, ref: str | int) -> int:
    """Like find_checkpoint, but a reference that names nothing is a UserError."""
    found = find_checkpoint(db, ref)
    if found is None:
        raise UserError(f"no checkpoint {ref!r} in the warehouse; name it by id, lineage@step, lineage@last, "
                        "name or directory (see `headdb checkpoints`)")
    return found


def find_task(db, ref: str | int, mode: str | None = None) -> int | None:
    """A task id from its id or name (and mode, when the name covers several); None if unknown."""
    text = str(ref)
    rows = db.sql("SELECT task_id, mode FROM tasks WHERE CAST(task_id AS VARCHAR) = ? "
                  "OR (name = ? AND (? IS NULL OR mode = ?)) ORDER BY (CAST(task_id AS VARCHAR) = ?) DESC, task_id",
                  [text, text, mode, mode, text])
    if rows.height > 1 and str(rows["task_id"][0]) != text:
        modes = ", ".join(sorted(set(rows["mode"])))
        raise UserError(f"task {text} matches {rows.height} tasks (modes {modes}); give its id or --mode")
    return int(rows["task_id"][0]) if rows.height else None


def check_planned_references(db, planned, refs: list[str]) -> list[str]:
    """The directory each of `refs` names among the checkpoints registered and those a plan is
    about to register (`planned`: jobs.Target values), by the same macro; UserError unless each
    names exactly one."""
    import duckdb
    import polars as pl

    from headdb.warehouse.migrations import apply_pending
    from headdb.warehouse.queries import catalogue
    from headdb.warehouse.sinks import Session

    if not refs:
        return []
    rows = db.sql("SELECT checkpoint_id, name, path, lineage, step FROM checkpoints") if db is not None else None
    known = rows if rows is not None and rows.height else pl.DataFrame(
        schema={"checkpoint_id": pl.Int64, "name": pl.Utf8, "path": pl.Utf8, "lineage": pl.Utf8, "step": pl.Int64})
    first = (known["checkpoint_id"].max() or 0) + 1
    new = pl.DataFrame([{"checkpoint_id": first + i, "name": t.placement.name or t.path.name, "path": str(t.path),
                         "lineage": t.placement.lineage or t.placement.name or t.path.name,
                         "step": t.placement.step} for i, t in enumerate(planned)], schema=known.schema)
    table = pl.concat([known.filter(~pl.col("path").is_in(new["path"].implode())), new])
    con = duckdb.connect()
    try:
        apply_pending(Session(con))
        con.register("planned", table.to_arrow())
        con.execute("INSERT INTO checkpoints (checkpoint_id, model_key, name, path, weights_digest, lineage, regime, "
                    "step) SELECT checkpoint_id, '', name, path, '', lineage, 'other', step FROM planned")
        for _, text in catalogue().macros:
            con.execute(text)
        paths = []
        for ref in refs:
            try:
                found = con.execute("SELECT path FROM checkpoints WHERE checkpoint_id = hd_checkpoint(?)",
                                    [ref]).fetchone()
            except duckdb.Error as exc:
                message = str(exc)
                raise UserError(message.split("headdb: ", 1)[1].splitlines()[0] if "headdb: " in message
                                else message.splitlines()[0]) from None
            if found is None:
                raise UserError(f"checkpoint {ref!r} is neither registered nor planned by this study; name it by "
                                "a [[models]] name, lineage@step or lineage@last")
            paths.append(found[0])
    finally:
        con.close()
    return paths
