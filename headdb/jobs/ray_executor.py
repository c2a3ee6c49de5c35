"""The Ray executor: each checkpoint's missing jobs become one Ray task with the resources asked
for; results come back as Facts (Arrow tables) and the driver commits them through the sink.

    headdb study study.toml --executor ray [--address ray://head:10001] [--gpus-per-job 1] [--cpus-per-job 4]

The driver keeps the whole run lifecycle (`open_run` before dispatch, so `headdb runs` shows the
work in progress; `close_run` as each result arrives), so any sink works, the default DuckDB file
included, and no job knows where it ran. A job that raises comes back as its error and is
recorded `failed`; a worker that dies takes its task's jobs with it, and they are recorded
`failed` with the reason while the other tasks finish; a re-run does only what is missing.
The worker runs `executor.unit_results` (`compute_unit`, the very function the in-process executor
runs); Ctrl-C
cancels the tasks in flight and records their runs as interrupted, as in process.
Ray is an optional extra: `pip install 'headdb[ray]'`.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from headdb.errors import UserError
from headdb.jobs.executor import JobResult, Outcome, Say, Unit, close_run, interrupt, open_units, unit_results
from headdb.jobs.job import Progress

if TYPE_CHECKING:
    from headdb.jobs.executor import Pending
    from headdb.warehouse.runs import Run
    from headdb.warehouse.store import Warehouse


def _ray() -> Any:  # the ray module (an optional extra)
    try:
        import ray
    except ImportError:
        raise UserError("--executor ray needs Ray: pip install 'headdb[ray]'") from None
    return ray


@dataclass
class RayExecutor:
    address: str | None = None  # None: start a local Ray cluster on this machine
    gpus_per_job: float = 0
    cpus_per_job: float = 1
    num_cpus: int | None = None  # local cluster only: CPUs it may use (default: all)

    def _init(self, ray: Any) -> None:
        if ray.is_initialized():
            return
        os.environ.setdefault("RAY_DEDUP_LOGS", "0")
        try:
            ray.init(
                address=self.address,
                num_cpus=self.num_cpus if self.address is None else None,
                include_dashboard=False,
                log_to_driver=False,
                logging_level=logging.ERROR,
                configure_logging=True,
            )
        except (ConnectionError, RuntimeError, ValueError) as exc:
            where = self.address or "a local cluster"
            raise UserError(f"cannot start or reach Ray at {where}: {str(exc).splitlines()[0]}") from None

    def run(
        self, db: Warehouse, units: list[Unit], outcome: Outcome, *, force: bool, progress: Progress, say: Say
    ) -> None:
        ray = _ray()
        self._init(ray)
        remote = ray.remote(unit_results).options(num_gpus=self.gpus_per_job, num_cpus=self.cpus_per_job, max_retries=0)
        inflight: dict[Any, tuple[Unit, list[tuple[Pending, Run]]]] = {}  # ray ref -> (unit, [(pending, run)])
        done = failed = 0
        try:
            for unit, opened in open_units(db, units, outcome, force, say):
                ref = remote.remote(
                    str(unit.path),
                    unit.device,
                    unit.dtype,
                    [p.job for p, _ in opened],
                    [db.scratch_dir(run.config_hash) for _, run in opened],
                    int(self.cpus_per_job),
                )
                inflight[ref] = (unit, opened)
            total = sum(len(o) for _, o in inflight.values())
            progress("jobs running", sum(len(o) for _, o in inflight.values()), total)
            while inflight:
                ready, _ = ray.wait(list(inflight), num_returns=1)
                unit, opened = inflight.pop(ready[0])
                try:
                    loaded, results = ray.get(ready[0])
                    outcome.loads += loaded
                except ray.exceptions.RayError as exc:  # the worker died
                    reason = _reason(exc)
                    results = [JobResult("failed", 0.0, error_kind="worker", message=reason)] * len(opened)
                    say(f"{unit.label}: its Ray task failed ({reason.splitlines()[0]})")
                for (p, run), result in zip(opened, results):
                    close_run(db, unit, p, run, result, outcome, say)
                    done += result.status == "ok"
                    failed += result.status != "ok"
                progress("jobs done", done, total)
                progress("jobs failed", failed, total)
                progress("jobs running", sum(len(o) for _, o in inflight.values()), total)
        except KeyboardInterrupt:  # as in process: nothing left `running`; the tasks are cancelled
            for ref in inflight:
                ray.cancel(ref, force=True)
            interrupt(db, [(unit, p, run) for unit, opened in inflight.values() for p, run in opened], outcome, say)
            raise


def _reason(exc: BaseException) -> str:
    cause = getattr(exc, "cause", None)
    if cause is not None:  # a RayTaskError wraps what the task raised
        return f"{cause.__class__.__name__}: {cause}"
    return f"{exc.__class__.__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else 'worker died'}"
