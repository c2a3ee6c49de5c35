"""Where warehouse reads and writes go.

Job code never talks to a sink: it hands Arrow tables to the Warehouse, which writes them through
`Sink.transaction(body)`: `body(session)` runs inside one transaction, and a sink that takes many
writers (DuckLake, headdb/warehouse/lake.py) runs it again when a concurrent writer got there
first, so a body must do all its reads and writes through the session it is given and change
nothing outside it. The default sink is a local DuckDB file.

DuckDB lets one process open a file for writing at a time. Connections are therefore opened per
operation and closed at once, so a long ingest holds the lock only while it commits; a process
that finds the lock held waits and retries until `lock_timeout` runs out, and says it is waiting.
"""

from __future__ import annotations

import random
import re
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Protocol, TypeVar

import duckdb
import pyarrow as pa

from headdb.errors import UserError, WarehouseLocked

_LOCK_MESSAGE = "Could not set lock on file"
_PID = re.compile(r"PID (\d+)")
T = TypeVar("T")


class TransactionAborted(RuntimeError):
    """A statement failed inside a write transaction and the transaction was rolled back."""


class Session:
    """One open DuckDB connection: statements with bound parameters and Arrow in and out."""

    def __init__(self, con: duckdb.DuckDBPyConnection):
        self.con = con
        self.error: duckdb.Error | None = None  # the first statement that failed, if any

    def execute(self, sql: str, params: Any = None) -> duckdb.DuckDBPyConnection:
        try:
            return self.con.execute(sql, params) if params is not None else self.con.execute(sql)
        except duckdb.Error as exc:
            self.error = self.error or exc
            raise

    def fetch(self, sql: str, params: Any = None) -> pa.Table:
        return self.execute(sql, params).to_arrow_table()

    def rows(self, sql: str, params: Any = None) -> list[tuple[Any, ...]]:
        return self.execute(sql, params).fetchall()

    def scalar(self, sql: str, params: Any = None) -> Any:
        row = self.execute(sql, params).fetchone()
        return None if row is None else row[0]

    def insert(self, table: str, data: pa.Table) -> int:
        """Append an Arrow table to `table`, matching columns by name (one bulk insert)."""
        if not table.isidentifier():
            raise ValueError(f"bad table name {table!r}")
        view = f"__headdb_insert_{table}"
        self.con.register(view, data)
        try:
            self.execute(f"INSERT INTO {table} BY NAME SELECT * FROM {view}")
        finally:
            self.con.unregister(view)
        rows: int = data.num_rows
        return rows


class Sink(Protocol):
    location: str
    many_writers: bool  # True: processes on other machines may write at the same time (a lake)

    def exists(self) -> bool: ...

    def read(self) -> Any: ...  # context manager yielding a read-only Session

    def write(self) -> Any: ...  # context manager yielding a Session inside one transaction

    def transaction(self, body: Callable[[Session], T]) -> T: ...  # body in one transaction, re-run on conflict

    def held(self) -> Any: ...  # context manager: reuse one connection for many operations

    def scratch_dir(self) -> Path: ...  # a local folder for a job's resumable partial results


def rollback_quietly(con: duckdb.DuckDBPyConnection) -> None:
    """ROLLBACK if a transaction is open (a failed COMMIT has already ended it)."""
    try:
        con.execute("ROLLBACK")
    except duckdb.Error:
        pass


def commit_checked(session: Session, last: Callable[[Session], Any] | None = None) -> Any:
    """COMMIT, and never let a transaction that hit an error pass for committed.

    After a statement fails at run time, DuckDB marks the transaction aborted and a later COMMIT
    returns without error but rolls everything back. A caller that caught the error would then
    believe its writes landed. A trivial statement raises in an aborted transaction, so it is run
    first; errors at bind time (an unknown table) do not abort and need no check. `last(session)`
    runs after that check, just before COMMIT; its result is returned.
    """
    con = session.con
    try:
        con.execute("SELECT 1")
    except duckdb.TransactionException as exc:
        rollback_quietly(con)
        cause = session.error or exc
        raise TransactionAborted(
            f"a statement failed inside the transaction, which was rolled back: {str(cause).splitlines()[0]}"
        ) from cause
    result = last(session) if last is not None else None
    con.execute("COMMIT")
    return result


def _say_waiting(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class DuckDBSink:
    """A local DuckDB file."""

    many_writers = False  # one process writes at a time; others wait for the file lock

    def __init__(self, path: str | Path, *, lock_timeout: float = 300.0, on_wait: Callable[[str], None] = _say_waiting):
        self.path = Path(path)
        self.location = str(self.path)
        self.lock_timeout = lock_timeout
        self.on_wait = on_wait
        self._held: duckdb.DuckDBPyConnection | None = None

    def exists(self) -> bool:
        return self.path.is_file()

    def scratch_dir(self) -> Path:
        return Path(f"{self.path}.parts")

    def check_path(self, *, create: bool) -> None:
        """Turn an unusable --db path into one clear line before DuckDB sees it."""
        if self.path.is_dir():
            raise UserError(f"--db {self.path} is a directory; give a file path such as {self.path / 'headdb.duckdb'}")
        if not self.path.exists():
            if not create:
                raise UserError(f"no warehouse at {self.path}; create one with `headdb --db {self.path} init`")
            if not self.path.parent.is_dir():
                raise UserError(f"cannot create warehouse {self.path}: folder {self.path.parent} does not exist")

    def _connect(self, read_only: bool) -> duckdb.DuckDBPyConnection:
        deadline = time.monotonic() + self.lock_timeout
        delay, told = 0.05, False
        while True:
            try:
                return duckdb.connect(str(self.path), read_only=read_only)
            except duckdb.IOException as exc:
                message = str(exc)
                if _LOCK_MESSAGE not in message:
                    raise UserError(f"cannot open warehouse {self.path}: {message.splitlines()[0]}") from None
                holder = _PID.search(message)
                holder_text = f"process {holder.group(1)}" if holder else "another process"
                if time.monotonic() >= deadline:
                    raise WarehouseLocked(
                        f"warehouse {self.path} stayed locked by {holder_text} for {self.lock_timeout:g} s; "
                        "wait for it to finish or raise --lock-timeout / HEADDB_LOCK_TIMEOUT"
                    ) from None
                if not told:
                    self.on_wait(f"headdb: waiting for the warehouse lock on {self.path} (held by {holder_text}) ...")
                    told = True
                time.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 1.5, 1.0)
            except duckdb.Error as exc:
                raise UserError(f"cannot open warehouse {self.path}: {str(exc).splitlines()[0]}") from None

    @contextmanager
    def held(self) -> Iterator[None]:
        """Keep one read-write connection open for the block: reads and transactions reuse it.

        Opening and closing (which checkpoints) the file costs tens of milliseconds per
        operation; bulk ingest of many runs holds the connection instead, at the price of
        holding the write lock for the whole block.
        """
        if self._held is not None:
            yield
            return
        self._held = self._connect(read_only=False)
        try:
            yield
        finally:
            con, self._held = self._held, None
            con.close()

    @contextmanager
    def read(self) -> Iterator[Session]:
        if self._held is not None:
            yield Session(self._held)
            return
        con = self._connect(read_only=True)
        try:
            yield Session(con)
        finally:
            con.close()

    @contextmanager
    def write(self) -> Iterator[Session]:
        con = self._held if self._held is not None else self._connect(read_only=False)
        try:
            con.execute("BEGIN TRANSACTION")
            session = Session(con)
            try:
                yield session
            except BaseException:
                rollback_quietly(con)
                raise
            commit_checked(session)
        finally:
            if con is not self._held:
                con.close()

    def transaction(self, body: Callable[[Session], T]) -> T:
        # One writer holds the file at a time, so there is never a conflict to retry.
        with self.write() as session:
            return body(session)
