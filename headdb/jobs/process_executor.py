"""The local executor with worker processes: each checkpoint's missing jobs run in one of N
processes of this machine, as Ray runs them on a cluster, and the driver commits what comes back.

    headdb study study.toml --workers 2

For a machine with several GPUs or spare cores and no Ray: each worker loads its own checkpoint
(N models in memory at once). With CUDA and more than one visible GPU, worker i sees GPU
i mod n_gpus only. On CPU a worker computes with one torch thread (`threads`). The driver
keeps the run lifecycle, as with Ray: `open_run` before dispatch, `close_run` as each result
arrives, so every sink works and a job never knows where it ran. The workers run
`executor.unit_results`, the function Ray's tasks run.

A worker that dies (killed, out of memory) breaks the pool: its jobs and those not finished yet
are recorded `failed` with the reason, the ones that landed stay, and a re-run does what is
missing. Ctrl-C stops the workers and records their runs as interrupted, as in process.
"""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from headdb.jobs.executor import JobResult, Outcome, Say, Unit, close_run, interrupt, open_units, unit_results
from headdb.jobs.job import Progress

if TYPE_CHECKING:
    from headdb.jobs.executor import Pending

    UnitResults = tuple[bool, list[JobResult | None]]
    from headdb.warehouse.runs import Run
    from headdb.warehouse.store import Warehouse


def gpu_slots(workers: int, visible: list[str]) -> list[str]:
    """The GPU each worker sees (round robin over the visible ones): one each when there are
    enough, shared when there are more workers than GPUs."""
    return [visible[i % len(visible)] for i in range(workers)] if visible else []


def _visible_gpus() -> list[str]:
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        return [g for g in listed.split(",") if g.strip()]
    import torch

    return [str(i) for i in range(torch.cuda.device_count())]


def _start_worker(log: str | None, slots: Any) -> None:
    """Before torch starts in the worker: its GPU (a slot taken from the queue, as
    CUDA_VISIBLE_DEVICES, so `cuda` means that GPU); its library output (warnings, logs) to `log`
    when given, never over the driver's progress bars."""
    if slots is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = slots.get()
    if log is not None:
        fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)


@dataclass
class ProcessExecutor:
    workers: int = 2
    threads: int = 1  # torch threads per worker
    log: str | None = None  # a file for the workers' stdout and stderr (None: the driver's)

    def run(
        self, db: Warehouse, units: list[Unit], outcome: Outcome, *, force: bool, progress: Progress, say: Say
    ) -> None:
        inflight: dict[Future[UnitResults], tuple[Unit, list[tuple[Pending, Run]]]] = {}
        done = 0
        # spawn, not fork: the driver holds a warehouse connection and torch's thread pools
        context = multiprocessing.get_context("spawn")
        slots = None
        # only for a plain "cuda": a unit placed on "cuda:3" keeps the GPU it names
        if {u.device for u in units} == {"cuda"} and len(visible := _visible_gpus()) > 1:
            slots = context.Queue()
            for gpu in gpu_slots(self.workers, visible):
                slots.put(gpu)
        pool = ProcessPoolExecutor(
            max_workers=self.workers, mp_context=context, initializer=_start_worker, initargs=(self.log, slots)
        )
        try:
            for unit, opened in open_units(db, units, outcome, force, say):
                future = pool.submit(
                    unit_results,
                    str(unit.path),
                    unit.device,
                    unit.dtype,
                    [p.job for p, _ in opened],
                    [db.scratch_dir(run.config_hash) for _, run in opened],
                    self.threads,
                )
                inflight[future] = (unit, opened)
                progress(f"{unit.label} jobs", 0, len(opened))
            total = sum(len(o) for _, o in inflight.values())
            while inflight:
                # a bounded wait: the driver's Ctrl-C is handled within a second, not when a job ends
                finished, _ = wait(list(inflight), timeout=0.5, return_when=FIRST_COMPLETED)
                for future in finished:
                    unit, opened = inflight.pop(future)
                    done += _land(db, future, unit, opened, outcome, say)
                    progress(f"{unit.label} jobs", len(opened), len(opened))
                    progress("jobs done", done, total)
        except KeyboardInterrupt:  # as in process: the workers stop, nothing is left `running`
            for process in list(getattr(pool, "_processes", {}).values()):
                process.kill()
            pool.shutdown(wait=False, cancel_futures=True)
            interrupt(db, [(unit, p, run) for unit, opened in inflight.values() for p, run in opened], outcome, say)
            raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)


def _land(
    db: Warehouse,
    future: Future[UnitResults],
    unit: Unit,
    opened: list[tuple[Pending, Run]],
    outcome: Outcome,
    say: Say,
) -> int:
    """Commit (or fail) the runs of one finished unit; returns how many it closed."""
    try:
        loaded, results = future.result()
        outcome.loads += loaded
    except BrokenProcessPool as exc:  # a worker died: this unit's jobs, and the pool, are lost
        reason = f"worker process died ({exc})"
        results = [JobResult("failed", 0.0, error_kind="worker", message=reason)] * len(opened)
        say(f"{unit.label}: {reason}")
    for (p, run), result in zip(opened, results):
        close_run(db, unit, p, run, result or _lost(), outcome, say)
    return len(opened)


def _lost() -> JobResult:
    return JobResult("failed", 0.0, error_kind="worker", message="the worker returned no result")
