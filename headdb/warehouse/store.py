"""The warehouse: schema checks, migrations, registration of models/checkpoints/tasks, runs, SQL.

`headdb.connect(path)` is the one entry point: a DuckDB file path (the default) or
`ducklake:postgres:<libpq conninfo>` with a data path (lake.py). All writes go through the sink
(sinks.py) as Arrow tables inside single transactions, each a function of the session that the
sink may run again after a conflict with another writer; every read returns a polars DataFrame.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, cast

import duckdb
import polars as pl
import pyarrow as pa

from headdb import provenance
from headdb.errors import UserError
from headdb.settings import MODES, REGIMES, RUN_KINDS, TASK_KINDS, check_choice, runtime
from headdb.warehouse.migrations import apply_pending, check_compatible, code_version, current_version
from headdb.warehouse.lake import LakeSink, is_lake
from headdb.warehouse.liveness import ABANDONED, abandon_dead_runs, process_ended
from headdb.warehouse.runs import Run
from headdb.warehouse.sinks import DuckDBSink, Session, Sink
from headdb.warehouse.statements import sql

READ_ONLY_STATEMENTS = (duckdb.StatementType.SELECT, duckdb.StatementType.EXPLAIN, duckdb.StatementType.CALL)


def open_sink(
    path: str | Path | None = None,
    *,
    create: bool = True,
    lock_timeout: float | None = None,
    data_path: str | Path | None = None,
) -> Sink:
    """The sink `path` names: `ducklake:postgres:<conninfo>` (its Parquet files under
    `data_path`) or a DuckDB file. What is not given comes from headdb.settings.runtime()
    (HEADDB_DB, HEADDB_DATA_PATH, HEADDB_LOCK_TIMEOUT, then the defaults: ./headdb.duckdb, 300 s).

    lock_timeout: how long to wait for other writers (a file's lock; a lake's write conflicts).
    """
    rt = runtime(
        db=None if path is None else str(path),
        lock_timeout=lock_timeout,
        data_path=None if data_path is None else str(data_path),
    )
    if is_lake(rt.db):
        return LakeSink(rt.db, data_path=rt.data_path, create=create, retry_timeout=rt.lock_timeout)
    if data_path is not None:
        raise UserError(
            f"--data-path is for a DuckLake warehouse (--db ducklake:postgres:...), "
            f"not the DuckDB file {rt.db}; drop it"
        )
    sink = DuckDBSink(rt.db, lock_timeout=rt.lock_timeout)
    sink.check_path(create=create)
    return sink


def connect(
    path: str | Path | None = None,
    *,
    create: bool = True,
    lock_timeout: float | None = None,
    sink: Sink | None = None,
    schemas: Path | None = None,
    data_path: str | Path | None = None,
) -> "Warehouse":
    """Open (and with create=True, initialise) the warehouse at `path`: a DuckDB file, or
    `ducklake:postgres:<libpq conninfo>` whose Parquet files go under `data_path`.

    A warehouse whose schema is newer than this code is refused; an older one must be upgraded
    with `headdb migrate` first (never silently, since other users may share the file).
    """
    if sink is None:
        sink = open_sink(path, create=create, lock_timeout=lock_timeout, data_path=data_path)
    db = Warehouse(sink, schemas=schemas)
    if not sink.exists():
        db.init()
    else:
        db.check_schema()
    return db


def config_hash(kind: str, config: dict[str, Any], identity: dict[str, Any]) -> str:
    """Key of a job for idempotency: what it ran on, how, and with which headdb."""
    payload = {"kind": kind, "config": config, "identity": identity, "headdb": provenance.headdb_version()}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:32]


class Warehouse:
    def __init__(self, sink: Sink, *, schemas: Path | None = None) -> None:
        self.sink = sink
        self.schemas = schemas  # the migrations folder; None means the packaged schemas/
        self.query_dirs: tuple[str, ...] = ()  # the user's extra query folders (--queries)
        self._layouts_checked: set[str] = set()  # model_keys whose stored layout was verified

    @property
    def location(self) -> str:
        return self.sink.location

    def maintain(self, *, keep_hours: float = 24.0) -> dict[str, int]:
        """Compact a lake and delete files no snapshot needs (LakeSink.maintain); a DuckDB file
        needs none of this and is refused."""
        maintain = getattr(self.sink, "maintain", None)
        if maintain is None:
            raise UserError(f"{self.location} is a DuckDB file; only a DuckLake warehouse needs maintenance")
        done: dict[str, int] = maintain(keep_hours=keep_hours)
        return done

    def scratch_dir(self, name: str) -> Path:
        """A local folder for one run's resumable partial results: beside a DuckDB file; in the
        temporary folder for a lake, whose location is not a path."""
        return self.sink.scratch_dir() / name

    # -- schema --------------------------------------------------------------------------------
    def init(self) -> list[int]:
        """Create the schema (a no-op on an up-to-date warehouse)."""

        def body(s: Session) -> list[int]:
            version = current_version(s)
            if version is not None:
                check_compatible(version, self.location, self.schemas)
                return []
            return apply_pending(s, self.schemas)

        return self.sink.transaction(body)

    def migrate(self) -> list[int]:
        """Apply pending migrations in order, all in one transaction."""

        def body(s: Session) -> list[int]:
            version = current_version(s)
            if version is None:
                raise UserError(f"{self.location} is not a headdb warehouse; create one with `headdb init`")
            if version > code_version(self.schemas):
                check_compatible(version, self.location, self.schemas)
            return apply_pending(s, self.schemas)

        return self.sink.transaction(body)

    def schema_version(self) -> int | None:
        with self.sink.read() as s:
            return current_version(s)

    def check_schema(self) -> None:
        check_compatible(self.schema_version(), self.location, self.schemas)

    # -- reading -------------------------------------------------------------------------------
    def sql(self, query: str, params: list[Any] | dict[str, Any] | None = None, *, write: bool = False) -> pl.DataFrame:
        """Run SQL and return the last statement's result. Read-only unless write=True."""

        def body(s: Session) -> pl.DataFrame:
            try:
                statements = s.con.extract_statements(query)
            except duckdb.Error as exc:
                raise UserError(f"SQL error: {str(exc).splitlines()[0]}") from None
            if not statements:
                raise UserError("no SQL statement given")
            if not write:
                for statement in statements:
                    if statement.type not in READ_ONLY_STATEMENTS:
                        kind = statement.type.name.replace("_", " ")
                        raise UserError(
                            f"{kind} refused: `headdb sql` is read-only; add --write to modify the warehouse"
                        )
            try:
                result = None
                for i, statement in enumerate(statements):
                    last = i == len(statements) - 1
                    result = s.execute(statement.query, params if last else None)
                if result is None or s.con.description is None:
                    return pl.DataFrame()
                return cast(pl.DataFrame, pl.from_arrow(result.to_arrow_table()))  # an Arrow table gives a DataFrame
            except duckdb.Error as exc:
                raise UserError(f"SQL error: {str(exc).splitlines()[0]}") from None

        if write:
            return self.sink.transaction(body)
        with self.sink.read() as s:
            return body(s)

    def query(self, name: str, /, **params: Any) -> pl.DataFrame:
        """Run a named query of the catalogue (queries/*.sql) with bound parameters."""
        from headdb.warehouse.queries import run_query

        return run_query(self, name, params, self.query_dirs)

    def batch(self) -> Any:  # the sink's context manager (Sink.held)
        """`with db.batch():` many runs share one open connection (faster bulk ingest; holds the
        write lock for the whole block, so other processes wait)."""
        return self.sink.held()

    def runs(self) -> pl.DataFrame:
        """Every run; a `running` row whose process ended on this host reads `abandoned` (the
        next writer stores that)."""
        with self.sink.read() as s:
            df = cast(pl.DataFrame, pl.from_arrow(s.fetch(sql("warehouse", "list_runs"))))
        dead = [
            status == "running" and process_ended(host, pid)
            for status, host, pid in df.select("status", "host", "pid").iter_rows()
        ]
        return df.with_columns(
            pl.when(pl.Series(dead, dtype=pl.Boolean))
            .then(pl.lit(ABANDONED))
            .otherwise(pl.col("status"))
            .alias("status")
        )

    def checkpoints(self) -> pl.DataFrame:
        with self.sink.read() as s:
            return cast(pl.DataFrame, pl.from_arrow(s.fetch(sql("warehouse", "list_checkpoints"))))

    # -- registration (idempotent) ------------------------------------------------------------
    def register_model(self, shape: dict[str, Any], nodes: pa.Table, edges: pa.Table) -> str:
        """Record an architecture shape and its graph layout once per model_key.

        `nodes`/`edges` are the layout the code builds for the shape
        (headdb.attribution.graph.build_layout). A model_key registered before must have the
        same n_layers / n_heads / n_kv_heads and exactly this layout, else a UserError: scores
        stored by edge id under another layout would carry the wrong edge names.
        """
        key: str = shape["model_key"]
        row = {
            c: [shape.get(c)]
            for c in (
                "model_key",
                "architecture",
                "n_layers",
                "n_heads",
                "n_kv_heads",
                "d_model",
                "d_head",
                "vocab_size",
            )
        }
        row["config_json"] = [json.dumps(shape.get("config", {}), sort_keys=True, default=str)]

        def body(s: Session) -> None:
            stored = s.rows(sql("warehouse", "model_shape"), [key])
            if not stored:
                s.insert("models", pa.table(row))
            else:
                want = tuple(int(shape[c]) for c in ("n_layers", "n_heads", "n_kv_heads"))
                if tuple(stored[0]) != want:
                    raise _layout_mismatch(key, f"{_shape_text(stored[0])}", _shape_text(want))
            if not s.scalar(sql("warehouse", "count_graph_nodes"), [key]):
                s.insert("graph_nodes", _with_key(nodes, key))
                s.insert("graph_edges", _with_key(edges, key))
            elif key not in self._layouts_checked:
                _check_stored_layout(s, key, nodes, edges)

        self.sink.transaction(body)
        self._layouts_checked.add(key)
        return key

    def verify_layout(self, model_key: str, nodes: pa.Table, edges: pa.Table) -> bool:
        """Read-only: False when `model_key` has no stored layout; True when the stored one is
        exactly `nodes` / `edges`; UserError when it differs (see register_model)."""
        if model_key in self._layouts_checked:
            return True
        with self.sink.read() as s:
            if not s.scalar(sql("warehouse", "count_graph_nodes"), [model_key]):
                return False
            _check_stored_layout(s, model_key, nodes, edges)
        self._layouts_checked.add(model_key)
        return True

    def register_checkpoint(
        self,
        *,
        model_key: str,
        path: str | Path,
        weights_digest: str,
        name: str | None = None,
        lineage: str | None = None,
        regime: str = "other",
        step: int = 0,
        parent_id: int | None = None,
    ) -> int:
        """A checkpoint is identified by (path, weights digest); re-registering updates its labels."""
        check_choice("regime", regime, REGIMES)
        path = str(Path(path).resolve())
        name = name or Path(path).name
        lineage = lineage or name

        def body(s: Session) -> int:
            found = s.rows(sql("warehouse", "find_checkpoint"), [path, weights_digest])
            if found:
                checkpoint_id: int = found[0][0]
                s.execute(
                    sql("warehouse", "update_checkpoint"), [name, lineage, regime, step, parent_id, checkpoint_id]
                )
                return checkpoint_id
            checkpoint_id = s.scalar(sql("warehouse", "next_checkpoint_id"))
            s.execute(
                sql("warehouse", "insert_checkpoint"),
                [checkpoint_id, model_key, name, path, weights_digest, lineage, regime, step, parent_id],
            )
            return checkpoint_id

        return self.sink.transaction(body)

    def register_task(
        self,
        *,
        name: str,
        kind: str,
        digest: str,
        items: pa.Table | pl.DataFrame,
        source: str | None = None,
        template: str | None = None,
        mode: str = "plain",
    ) -> int:
        """A task is identified by (content digest, kind, mode, name); its items are stored once."""
        check_choice("task kind", kind, TASK_KINDS)
        check_choice("task mode", mode, MODES)
        items = items.to_arrow() if isinstance(items, pl.DataFrame) else items

        def body(s: Session) -> int:
            found = s.rows(sql("warehouse", "find_task"), [digest, kind, mode, name])
            if found:
                return cast(int, found[0][0])
            task_id: int = s.scalar(sql("warehouse", "next_task_id"))
            s.execute(
                sql("warehouse", "insert_task"), [task_id, name, kind, source, digest, items.num_rows, template, mode]
            )
            s.insert("task_items", items.append_column("task_id", pa.array([task_id] * items.num_rows, pa.int64())))
            return task_id

        return self.sink.transaction(body)

    def add_training_metrics(self, lineage: str, metrics: pa.Table | pl.DataFrame) -> int:
        """Store (step, key, value) rows for a lineage, replacing rows of the same steps."""
        table = metrics.to_arrow() if isinstance(metrics, pl.DataFrame) else metrics
        table = table.append_column("lineage", pa.array([lineage] * table.num_rows, pa.string()))

        def body(s: Session) -> int:
            s.con.register("__headdb_new_metrics", table)
            try:
                s.execute(sql("warehouse", "delete_training_metrics"), [lineage])
            finally:
                s.con.unregister("__headdb_new_metrics")
            return s.insert("training_metrics", table)

        return self.sink.transaction(body)

    # -- runs ----------------------------------------------------------------------------------
    @staticmethod
    def _hash_in(
        s: Session,
        kind: str,
        config: dict[str, Any],
        checkpoint_id: int | None,
        task_id: int | None,
        identity: dict[str, Any] | None,
    ) -> str:
        ck_digest, task_digest = s.rows(sql("warehouse", "run_identity"), [checkpoint_id, task_id])[0]
        return config_hash(kind, config, {"checkpoint": ck_digest, "task": task_digest, **(identity or {})})

    def _config_hash(
        self,
        kind: str,
        config: dict[str, Any],
        checkpoint_id: int | None,
        task_id: int | None,
        identity: dict[str, Any] | None,
    ) -> str:
        with self.sink.read() as s:
            return self._hash_in(s, kind, config, checkpoint_id, task_id, identity)

    def completed_run(
        self,
        kind: str,
        *,
        config: dict[str, Any],
        checkpoint_id: int | None = None,
        task_id: int | None = None,
        identity: dict[str, Any] | None = None,
    ) -> int | None:
        """The ok run of exactly this job, if there is one (lets callers skip loading a model)."""
        digest = self._config_hash(kind, config, checkpoint_id, task_id, identity)
        with self.sink.read() as s:
            ok = [r[0] for r in s.rows(sql("warehouse", "find_run_by_hash"), [digest]) if r[1] == "ok"]
        return ok[-1] if ok else None

    def start_run(
        self,
        kind: str,
        *,
        config: dict[str, Any],
        checkpoint_id: int | None = None,
        task_id: int | None = None,
        identity: dict[str, Any] | None = None,
        device: str | None = None,
        dtype: str | None = None,
        seed: int | None = None,
        force: bool = False,
    ) -> Run:
        """Open a run, or return a skipped Run when an ok run with the same config_hash exists."""
        check_choice("run kind", kind, RUN_KINDS)
        versions = json.dumps(provenance.versions(), sort_keys=True)
        config_json = json.dumps(config, sort_keys=True, default=str)
        git_sha, host, version = provenance.git_sha(), provenance.host(), provenance.headdb_version()

        def body(s: Session) -> Run:
            abandon_dead_runs(s)  # rows of writers that died on this host say so from now on
            digest = self._hash_in(s, kind, config, checkpoint_id, task_id, identity)
            previous = s.rows(sql("warehouse", "find_run_by_hash"), [digest])
            ok = [r[0] for r in previous if r[1] == "ok"]
            if ok and not force:
                return Run(self, ok[-1], skipped=True, config_hash=digest)
            run_id = s.scalar(sql("warehouse", "next_run_id"))
            s.execute(
                sql("warehouse", "insert_run"),
                [
                    run_id,
                    kind,
                    checkpoint_id,
                    task_id,
                    config_json,
                    digest,
                    versions,
                    git_sha,
                    host,
                    device,
                    dtype,
                    seed,
                    version,
                    os.getpid(),
                ],
            )
            # Earlier runs of this config (failed, abandoned, or ok when forced) go when this one lands.
            return Run(self, run_id, replaces=tuple(r[0] for r in previous), config_hash=digest)

        return self.sink.transaction(body)


def _shape_text(dims: tuple[Any, ...]) -> str:
    n_layers, n_heads, n_kv = dims
    return f"{n_layers} layers x {n_heads} heads, {n_kv} kv heads"


def _layout_mismatch(key: str, stored: str, wanted: str) -> UserError:
    return UserError(
        f"model {key} is registered with another graph layout ({stored}) than this model needs ({wanted}), "
        "e.g. from an imported graph; scores stored under it would carry the wrong edge names: "
        "use another warehouse, or delete that model's rows (models, graph_nodes, graph_edges) and its runs"
    )


def _check_stored_layout(s: Session, key: str, nodes: pa.Table, edges: pa.Table) -> None:
    """Raise unless model `key`'s stored graph layout is exactly `nodes` / `edges`."""
    s.con.register("__headdb_layout_nodes", nodes)
    s.con.register("__headdb_layout_edges", edges)
    try:
        differ = s.scalar(sql("warehouse", "layout_differences"), {"key": key})
    finally:
        s.con.unregister("__headdb_layout_nodes")
        s.con.unregister("__headdb_layout_edges")
    if differ:
        n_nodes, n_edges = s.rows(sql("warehouse", "stored_layout_size"), [key, key])[0]
        raise _layout_mismatch(
            key, f"{n_nodes} nodes, {n_edges} edges", f"{nodes.num_rows} nodes, {edges.num_rows} edges"
        )


def _with_key(table: pa.Table, key: str) -> pa.Table:
    return table.append_column("model_key", pa.array([key] * table.num_rows, pa.string()))
