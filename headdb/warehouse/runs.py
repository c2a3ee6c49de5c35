"""The run lifecycle: a job's facts and its `ok` status land in one transaction.

    run = db.start_run("attribution", checkpoint_id=c, task_id=t, config={...})
    if run.skipped:            # an ok run with the same config_hash exists
        return run
    with run:                  # an exception marks the run failed, writes no facts, re-raises
        run.add("edge_scores", table)
        run.metric("completeness_residual", r)

`start_run` records a `running` row at once (so `headdb runs` shows work in progress); facts are
held in memory as Arrow tables and written, with the status change, by one transaction on exit.
A process killed mid-job leaves its `running` row and no facts; the next start of the same
config replaces it.
"""

from __future__ import annotations

import traceback
from types import TracebackType
from typing import TYPE_CHECKING, Literal

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from headdb.warehouse.statements import sql

if TYPE_CHECKING:
    from headdb.warehouse.sinks import Session
    from headdb.warehouse.store import Warehouse

# Fact tables a run may write; all but the circuit children carry run_id.
RUN_TABLES = (
    "edge_scores",
    "head_scores",
    "circuits",
    "faithfulness_curve",
    "run_metrics",
    "generations",
    "interventions",
    "eval_metrics",
    "edge_score_se",
    "head_importance_interval",
)
CIRCUIT_CHILDREN = ("circuit_edges", "circuit_heads", "circuit_head_replicates")
FACT_TABLES = RUN_TABLES + CIRCUIT_CHILDREN


def _arrow(data: pa.Table | pl.DataFrame) -> pa.Table:
    return data.to_arrow() if isinstance(data, pl.DataFrame) else data


class Facts:
    """What one job produced: Arrow tables per fact table and scalar metrics, not yet stored.

    Jobs build Facts without knowing where they go; a Run commits them in one transaction.
    They pickle, so a remote worker can compute them and the driver commit them.
    """

    def __init__(self) -> None:
        self.tables: dict[str, list[pa.Table]] = {}
        self.metrics: dict[str, float] = {}

    def add(self, table: str, data: pa.Table | pl.DataFrame) -> None:
        """Queue rows for `table`. circuit_id values are local to the run; commit makes them global."""
        if table not in FACT_TABLES:
            raise ValueError(f"{table!r} is not a run fact table ({', '.join(FACT_TABLES)})")
        self.tables.setdefault(table, []).append(_arrow(data))

    def metric(self, key: str, value: float) -> None:
        self.metrics[key] = float(value)

    def extend(self, other: "Facts") -> None:
        for name, parts in other.tables.items():
            self.tables.setdefault(name, []).extend(parts)
        self.metrics.update(other.metrics)

    def assembled(self) -> dict[str, pa.Table]:
        facts = {name: pa.concat_tables(parts, promote_options="default") for name, parts in self.tables.items()}
        if self.metrics:
            facts["run_metrics"] = pa.concat_tables(
                ([facts["run_metrics"]] if "run_metrics" in facts else [])
                + [pa.table({"key": list(self.metrics), "value": list(self.metrics.values())})],
                promote_options="default",
            )
        return facts


class Run:
    def __init__(
        self,
        db: "Warehouse",
        run_id: int,
        *,
        skipped: bool = False,
        replaces: tuple[int, ...] = (),
        config_hash: str = "",
    ) -> None:
        self.db = db
        self.run_id = run_id
        self.skipped = skipped
        self.replaces = replaces
        self.config_hash = config_hash
        self.status = "ok" if skipped else "running"
        self.facts = Facts()

    def add(self, table: str, data: pa.Table | pl.DataFrame) -> None:
        self.facts.add(table, data)

    def metric(self, key: str, value: float) -> None:
        self.facts.metric(key, value)

    # -- lifecycle -------------------------------------------------------------------------
    def __enter__(self) -> "Run":
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> Literal[False]:
        if self.skipped:
            return False
        if exc_type is None:
            self.commit()
        else:
            message = (
                "interrupted"
                if exc_type is KeyboardInterrupt
                else (f"{exc_type.__name__}: {exc}\n" + "".join(traceback.format_tb(tb)[-3:]))
            )
            self.fail(message)
        return False

    def commit(self, facts: Facts | None = None) -> None:
        """Write the queued facts (and `facts`, when given) with the `ok` status in one transaction."""
        if facts is not None:
            self.facts.extend(facts)
        assembled = self.facts.assembled()

        def body(s: Session) -> None:  # may run more than once (a sink with many writers retries it)
            for old in self.replaces:
                _delete_run(s, old)
            staged = _globalise_circuit_ids(s, assembled) if "circuits" in assembled else assembled
            for name, table in staged.items():
                if name in RUN_TABLES:
                    table = table.append_column("run_id", pa.array([self.run_id] * table.num_rows, pa.int64()))
                s.insert(name, table)
            s.execute(sql("warehouse", "finish_run"), [self.run_id])

        self.db.sink.transaction(body)
        self.status = "ok"
        self.facts = Facts()

    def fail(self, error: str) -> None:
        self.db.sink.transaction(lambda s: s.execute(sql("warehouse", "fail_run"), [error[:20000], self.run_id]))
        self.status = "failed"
        self.facts = Facts()


def _delete_run(s: Session, run_id: int) -> None:
    s.execute(sql("warehouse", "delete_circuit_children_edges"), [run_id])
    s.execute(sql("warehouse", "delete_circuit_children_heads"), [run_id])
    s.execute(sql("warehouse", "delete_circuit_children_replicates"), [run_id])
    for table in RUN_TABLES:
        s.execute(f"DELETE FROM {table} WHERE run_id = ?", [run_id])
    s.execute(sql("warehouse", "delete_run"), [run_id])


def _globalise_circuit_ids(s: Session, facts: dict[str, pa.Table]) -> dict[str, pa.Table]:
    base = s.scalar(sql("warehouse", "next_circuit_id"))
    out = dict(facts)
    for name in ("circuits",) + CIRCUIT_CHILDREN:
        if name in out:
            table = out[name]
            i = table.schema.get_field_index("circuit_id")
            shifted = pc.add(table.column(i).cast(pa.int64()), pa.scalar(base, pa.int64()))
            out[name] = table.set_column(i, "circuit_id", shifted)
    return out
