"""A warehouse in a DuckLake: catalog in PostgreSQL, data as Parquet files under a data path.

    headdb.connect("ducklake:postgres:dbname=lake host=/run/postgresql", data_path="/shared/lake")

Many processes on many machines write to one lake at once; each keeps one DuckDB connection with
the lake attached for its lifetime (loading the extensions and attaching costs ~0.5 s, too much
per operation). The `ducklake` and `postgres_scanner` extensions are LOADed by the path of the
file inside their PyPI wheels (`pip install 'headdb[lake]'`), never downloaded: DuckDB's
auto-install and auto-load are switched off, so a missing file is an error at once instead of a
network fetch (which can hang on a cluster node).

Concurrency. DuckLake commits optimistically: a transaction works on the snapshot it started
from, and its COMMIT fails with "Transaction conflict" when a transaction that committed in the
meantime changed something it touched. Plain appends to one table do not conflict, which would
let two writers that both read `max(run_id) + 1` store the same id, or both register the same
checkpoint. So every headdb write transaction also rewrites the rows of `schema_version` (the
"write token"; their values stay the same): two write transactions that overlap in time then
always conflict, the later one is rolled back and run again from the start on a new snapshot,
where it sees what the first one wrote, as DuckLake intends. That alone is correct, but a lost
race throws away the Parquet files the loser wrote, and with several busy writers most attempts
lose. So a writer first waits for its turn - a PostgreSQL advisory lock in the lake's catalog
database, held in a PostgreSQL transaction of its own until the lake transaction has committed
- and starts its lake transaction (and snapshot) only then. The turn is a courtesy, not the
guarantee: a writer that dies releases it with its connection, one that waits longer than the
retry timeout goes ahead without it, and the token still makes any overlap a conflict.
"""

from __future__ import annotations

import hashlib
import os
import random
import tempfile
import re
import threading
import time
from contextlib import contextmanager
from importlib import resources
from pathlib import Path
from typing import Callable, Iterator, TypeVar, cast

import duckdb

from headdb.errors import UserError
from headdb.warehouse.sinks import Session, commit_checked, rollback_quietly

PREFIX = "ducklake:"
POSTGRES_PREFIX = "ducklake:postgres:"
ALIAS = "headdb_lake"
# (Python package of the wheel, its name on PyPI, extension name)
EXTENSIONS = (
    ("duckdb_extension_postgres_scanner", "duckdb-extension-postgres-scanner", "postgres_scanner"),
    ("duckdb_extension_ducklake", "duckdb-extension-ducklake", "ducklake"),
)
# DuckLake's own word for a lost race; "maximum retry count" is its internal commit retry giving
# up under many writers. Both mean: nothing was written, run the transaction again.
_RETRYABLE = ("Transaction conflict", "maximum retry count", "could not serialize access")
# Two processes creating the same new lake at once: one creates DuckLake's catalog tables, the
# other fails on PostgreSQL's catalog; attaching again finds the finished lake.
_INIT_RACE = ("Failed to initialize DuckLake", "duplicate key value", "already exists")
_LIBPQ = re.compile(r"Unable to connect to Postgres at \"[^\"]*\": (.*)", re.S)
_TOKEN = "UPDATE schema_version SET version = version"
# pg_try_advisory_xact_lock's key: any fixed number; advisory locks are per database.
_TURN_KEY = 0x68656164646200
# DuckLake reaches its catalog through an attachment of this name (ducklake 1.5.5); the turn is
# taken through it, so it needs no connection string of its own.
_TURN = (
    f"SELECT * FROM postgres_query('__ducklake_metadata_{ALIAS}', "
    f"'SELECT pg_try_advisory_xact_lock({_TURN_KEY}) AS got')"
)
T = TypeVar("T")


def is_lake(spec: str | os.PathLike[str] | None) -> bool:
    return isinstance(spec, str) and spec.startswith(PREFIX)


def conninfo(spec: str) -> str:
    """The libpq connection string of a `ducklake:postgres:...` warehouse spec."""
    if not spec.startswith(POSTGRES_PREFIX):
        raise UserError(
            f"--db {spec!r}: headdb keeps DuckLake catalogs in PostgreSQL only; "
            "write --db 'ducklake:postgres:dbname=NAME host=HOST'"
        )
    info = spec[len(POSTGRES_PREFIX) :].strip()
    if not info:
        raise UserError(
            "--db ducklake:postgres: needs a connection string, e.g. "
            "--db 'ducklake:postgres:dbname=lake host=/var/run/postgresql'"
        )
    return info


def extension_files() -> list[str]:
    """Paths of the extension binaries for the installed duckdb, from their PyPI wheels."""
    paths = []
    for package, dist, name in EXTENSIONS:
        try:
            root = resources.files(package)
        except ModuleNotFoundError:
            raise UserError(f"a DuckLake warehouse needs the {dist} package: pip install 'headdb[lake]'") from None
        path = root / "extensions" / f"v{duckdb.__version__}" / f"{name}.duckdb_extension"
        if not path.is_file():
            built = sorted(p.name for p in (root / "extensions").iterdir()) if (root / "extensions").is_dir() else []
            raise UserError(
                f"{dist} has no build for duckdb {duckdb.__version__} (it has {', '.join(built) or 'none'}); "
                "install the matching pair: pip install 'headdb[lake]'"
            )
        paths.append(str(path))
    return paths


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def is_conflict(exc: BaseException) -> bool:
    return isinstance(exc, duckdb.Error) and any(word in str(exc) for word in _RETRYABLE)


def _local(path: str) -> bool:
    return "://" not in path


class LakeSink:
    """A DuckLake on a PostgreSQL catalog; many processes may write at once."""

    many_writers = True

    def __init__(
        self,
        spec: str,
        *,
        data_path: str | os.PathLike[str] | None = None,
        create: bool = True,
        retry_timeout: float = 300.0,
        take_turns: bool = True,
    ) -> None:
        self.location = spec
        self.conninfo = conninfo(spec)
        self.data_path = self._check_data_path(data_path)
        self.create = create
        self.retry_timeout = retry_timeout
        self.conflicts = 0  # transactions re-run after losing a race (for tests and benchmarks)
        self.take_turns = take_turns
        self.turn_waits = 0  # write transactions that found another writer's turn in progress
        self._con: duckdb.DuckDBPyConnection | None = None
        self._turn_con: duckdb.DuckDBPyConnection | None = None
        self._pid = 0
        self._lock = threading.RLock()
        self._in_transaction = False
        self._token_ready = False

    @staticmethod
    def _check_data_path(data_path: str | os.PathLike[str] | None) -> str | None:
        if data_path is None or str(data_path) == "":
            return None
        text = str(data_path)
        if not _local(text):
            return text
        path = Path(text).expanduser().resolve()
        if path.exists() and not path.is_dir():
            raise UserError(f"--data-path {path} is a file; give a folder for the lake's Parquet files")
        if not path.exists() and not path.parent.is_dir():
            raise UserError(f"--data-path {path}: folder {path.parent} does not exist")
        return str(path)

    # -- the connection ------------------------------------------------------------------------
    def _connection(self) -> duckdb.DuckDBPyConnection:
        if self._con is not None and self._pid == os.getpid():
            return self._con
        # A forked child must not use its parent's connection: open its own.
        self._con, self._pid, self._token_ready = self._open(), os.getpid(), False
        # Its own DuckDB transaction, hence its own PostgreSQL transaction, holds the turn.
        self._turn_con = self._con.cursor()
        return self._con

    def _open(self) -> duckdb.DuckDBPyConnection:
        files = extension_files()
        con = duckdb.connect(config={"autoinstall_known_extensions": False, "autoload_known_extensions": False})
        try:
            for path in files:
                con.execute(f"LOAD {_literal(path)}")
            self._attach(con)
            con.execute(f"USE {ALIAS}")
        except BaseException:
            con.close()
            raise
        return con

    def _attach(self, con: duckdb.DuckDBPyConnection) -> None:
        options = []
        if self.data_path is not None:
            options.append(f"DATA_PATH {_literal(self.data_path)}")
        if not self.create:
            options.append("CREATE_IF_NOT_EXISTS false")
        info = self.conninfo
        if "connect_timeout" not in info and "PGCONNECT_TIMEOUT" not in os.environ:
            # libpq waits for an unreachable host as long as the OS does (minutes); say so sooner.
            info += " connect_timeout=20"
        sql = f"ATTACH {_literal(POSTGRES_PREFIX + info)} AS {ALIAS}" + (f" ({', '.join(options)})" if options else "")
        deadline = time.monotonic() + 60
        while True:
            try:
                con.execute(sql)
                return
            except duckdb.Error as exc:
                message = str(exc)
                if any(w in message for w in _INIT_RACE) and time.monotonic() < deadline:
                    time.sleep(0.1 + random.random() * 0.3)
                    continue
                raise self._attach_error(message) from None

    def _attach_error(self, message: str) -> UserError:
        where = f"DuckLake {self.location!r}"
        if "data_path is not set" in message:
            return UserError(
                f"no warehouse in {where} yet; to create one give --data-path DIR "
                "(env HEADDB_DATA_PATH), a folder for its Parquet files that every writer can reach"
            )
        if "creating a new DuckLake is explicitly disabled" in message:
            return UserError(
                f"no warehouse in {where}; create one with `headdb --db '{self.location}' --data-path DIR init`"
            )
        stored = re.search(r'existing data path in the catalog "([^"]*)"', message)
        if stored:
            return UserError(
                f"--data-path {self.data_path} is not this lake's data path {stored.group(1)}; "
                "omit --data-path (the lake remembers it) or give that folder"
            )
        libpq = _LIBPQ.search(message)
        if libpq:
            reason = " ".join(libpq.group(1).split())
            return UserError(
                f"cannot reach the lake's PostgreSQL catalog ({self.conninfo}): {reason}; "
                "is the server running and the connection string right?"
            )
        return UserError(f"cannot open {where}: {message.strip().splitlines()[0]}")

    def close(self) -> None:
        with self._lock:
            con, turn, self._con, self._turn_con = self._con, self._turn_con, None, None
            if con is not None and self._pid == os.getpid():
                assert turn is not None  # _connection opens the turn's cursor with the connection
                turn.close()
                con.close()

    # -- the Sink protocol ----------------------------------------------------------------------
    def exists(self) -> bool:
        """True when the lake holds a headdb schema (opening it creates an empty lake if allowed)."""
        with self.read() as s:
            return bool(
                s.scalar(
                    "SELECT count(*) FROM information_schema.tables "
                    "WHERE table_catalog = current_database() AND table_name = 'schema_version'"
                )
            )

    def scratch_dir(self) -> Path:
        """A folder on this machine for partial results a job resumes from after a crash.

        Not under the data path: that may be object storage, and partial results are only ever
        resumed by a process on the same machine.
        """
        key = hashlib.sha256(self.location.encode()).hexdigest()[:16]
        return Path(tempfile.gettempdir()) / f"headdb-parts-{key}"

    @contextmanager
    def held(self) -> Iterator[None]:
        # The connection stays open for the sink's lifetime anyway, and holds no lock.
        yield

    @contextmanager
    def read(self) -> Iterator[Session]:
        """A read-only transaction: one snapshot for the whole block, and writes are refused."""
        with self._lock:
            con = self._connection()
            if self._in_transaction:  # a read inside this thread's write transaction
                yield Session(con)
                return
            con.execute("BEGIN TRANSACTION READ ONLY")
            self._in_transaction = True
            try:
                yield Session(con)
            finally:
                self._in_transaction = False
                rollback_quietly(con)

    @contextmanager
    def write(self) -> Iterator[Session]:
        """One write transaction, not re-run on conflict (a conflict raises); prefer transaction()."""
        with self._lock:
            con = self._connection()
            turn = self._wait_for_turn()
            try:
                con.execute("BEGIN TRANSACTION")
                self._in_transaction = True
                session = Session(con)
                try:
                    yield session
                    touched = commit_checked(session, last=self._touch_token)
                    self._token_ready = self._token_ready or touched
                except BaseException:
                    rollback_quietly(con)
                    raise
            finally:
                self._in_transaction = False
                if turn is not None:
                    rollback_quietly(turn)  # ends its PostgreSQL transaction: the next writer's turn

    def _wait_for_turn(self) -> duckdb.DuckDBPyConnection | None:
        """Hold the lake's write turn (module doc); None when going ahead without it."""
        turn = self._turn_con
        if not self.take_turns or turn is None:
            return None
        deadline = time.monotonic() + self.retry_timeout
        try:
            turn.execute("BEGIN TRANSACTION")
            waited = False
            while not cast("tuple[bool]", turn.execute(_TURN).fetchone())[0]:  # one row: the lock's result
                self.turn_waits += not waited
                waited = True
                if time.monotonic() >= deadline:
                    break  # a writer that holds it this long is stuck; the token keeps us correct
                time.sleep(random.uniform(0.002, 0.02))
        except duckdb.Error:
            # Not reachable the way this DuckLake version names its catalog: optimistic only.
            rollback_quietly(turn)
            self.take_turns = False
            return None
        except BaseException:  # interrupted while waiting: leave no turn held
            rollback_quietly(turn)
            raise
        return turn

    def transaction(self, body: Callable[[Session], T]) -> T:
        """Run body(session) in one transaction; when a concurrent writer wins, run it again.

        Gives up after `retry_timeout` seconds. Between attempts it waits a random time of up to
        about one attempt's length, doubling with each further loss: the writers still at work
        commit within about that long, and colliding with them again would waste another attempt.
        """
        deadline = time.monotonic() + self.retry_timeout
        losses = 0
        while True:
            started = time.monotonic()
            try:
                with self.write() as session:
                    return body(session)
            except duckdb.Error as exc:
                if not is_conflict(exc):
                    raise
                self.conflicts += 1
                losses += 1
                now = time.monotonic()
                if now >= deadline:
                    raise UserError(
                        f"gave up writing to {self.location} after {self.retry_timeout:g} s of "
                        f"conflicts with other writers ({_first_line(exc)}); "
                        "retry, or raise --lock-timeout / HEADDB_LOCK_TIMEOUT"
                    ) from None
                ceiling = min(max(now - started, 0.02) * 2 ** min(losses - 1, 6), 2.0)
                time.sleep(random.uniform(0.2, 1.0) * ceiling)

    def maintain(self, *, keep_hours: float = 24.0) -> dict[str, int]:
        """Compact the lake and delete files that no snapshot needs; safe while others write.

        Moves inlined rows (small inserts kept in PostgreSQL) into Parquet, merges small adjacent
        files, forgets snapshots older than `keep_hours` (time travel before that is given up)
        and deletes their files, and deletes files no snapshot refers to - Parquet files of
        writers that died mid-commit - once they are `keep_hours` old, so files of commits in
        flight are never touched. Each step is its own DuckLake transaction (DuckLake 1.5.5
        fails on them inside a larger one) and runs in this process's write turn; a writer that
        conflicts with one simply runs again. Returns the count each step reported.
        """
        cutoff = f"now() - INTERVAL '{max(0.0, keep_hours) * 3600:.0f} seconds'"
        steps = {
            "flushed_tables": f"CALL ducklake_flush_inlined_data('{ALIAS}')",
            "merged_tables": f"CALL ducklake_merge_adjacent_files('{ALIAS}')",
            "expired_snapshots": f"CALL ducklake_expire_snapshots('{ALIAS}', older_than => {cutoff})",
            "deleted_old_files": f"CALL ducklake_cleanup_old_files('{ALIAS}', older_than => {cutoff})",
            "deleted_orphaned_files": f"CALL ducklake_delete_orphaned_files('{ALIAS}', older_than => {cutoff})",
        }
        done = {}
        with self._lock:
            con = self._connection()
            for name, call in steps.items():
                deadline = time.monotonic() + self.retry_timeout
                while True:
                    turn = self._wait_for_turn()
                    try:
                        done[name] = len(con.execute(call).fetchall())
                        break
                    except duckdb.Error as exc:
                        rollback_quietly(con)  # a failed statement leaves the connection aborted
                        if not is_conflict(exc) or time.monotonic() >= deadline:
                            raise
                        self.conflicts += 1
                    finally:
                        if turn is not None:
                            rollback_quietly(turn)
                    time.sleep(random.uniform(0.05, 0.2))
        return done

    def _touch_token(self, session: Session) -> bool:
        """Rewrite schema_version's rows so that any two overlapping writers conflict (module doc)."""
        if not self._token_ready and not session.scalar(
            "SELECT count(*) FROM information_schema.tables "
            "WHERE table_catalog = current_database() AND table_name = 'schema_version'"
        ):
            return False  # no schema yet: two writers creating it conflict on the tables themselves
        session.execute(_TOKEN)
        return True
