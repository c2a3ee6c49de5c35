"""One demo training stage in a second process, beside the one the demo runs itself.

SFT and GRPO both start from the base and do not depend on each other, so the demo trains them
at the same time, each with one torch thread: on a machine with two cores that takes the time
of the longer one instead of their sum, and each run's numbers are the same bits as when it runs
alone (one thread, its own seeded trainer). The child process is started with "spawn" (a clean
interpreter, no forked torch state); its progress bar updates come back through a queue and are
drawn by the parent's rich Progress; its library output goes to the same log file.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import threading
import traceback
from queue import Empty
from pathlib import Path
from typing import Iterator


class _RelayedProgress:
    """The part of rich's Progress that `TrainerBar` uses, sent over a queue to the parent."""

    def __init__(self, queue):
        self.queue, self.tasks = queue, 0

    def add_task(self, description: str, **fields) -> int:
        self.tasks += 1
        self.queue.put(("add", self.tasks, description, fields))
        return self.tasks

    def update(self, task: int, **fields) -> None:
        self.queue.put(("update", task, None, fields))


def _child(
    path: str, what: str, recipe: str, kwargs: dict, show: str, threads: int, log_path: str | None, queue
) -> None:
    import torch

    from headdb.demo.stages import Stages, run_stage

    torch.set_num_threads(threads)
    try:
        with open(log_path, "a", encoding="utf-8") if log_path else contextlib.nullcontext() as log:
            stages = Stages(progress=_RelayedProgress(queue), say=lambda line: queue.put(("say", 0, line, {})), log=log)
            run_stage(Path(path), what, recipe, kwargs, stages, show)
        queue.put(("done", 0, None, stages.seconds))
    except BaseException:  # the parent re-raises it with the child's traceback
        queue.put(("error", 0, traceback.format_exc(), {}))


@contextlib.contextmanager
def stage_beside(
    path: Path, what: str, recipe: str, kwargs: dict, stages, show: str, threads: int, log_path: Path | None
) -> Iterator[None]:
    """Run `run_stage(path, what, recipe, kwargs)` in a child process while the body runs here;
    on leaving, wait for it and raise its error, if any."""
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(
        target=_child,
        args=(str(path), what, recipe, kwargs, show, threads, str(log_path) if log_path else None, queue),
        daemon=True,
    )
    outcome: dict = {}
    task_ids: dict[int, object] = {}

    def relay() -> None:
        while True:
            try:
                kind, task, text, fields = queue.get(timeout=0.5)
            except Empty:
                if not proc.is_alive() and queue.empty():  # died without a word (killed, or could not start)
                    outcome["error"] = f"the process exited with code {proc.exitcode} before finishing"
                    return
                continue
            if kind == "add" and stages.progress is not None:
                task_ids[task] = stages.progress.add_task(text, **fields)
            elif kind == "update" and stages.progress is not None and task in task_ids:
                stages.progress.update(task_ids[task], **fields)
            elif kind == "say":
                stages.say(text)
            elif kind in ("done", "error"):
                outcome[kind] = fields if kind == "done" else text
                return

    proc.start()
    listener = threading.Thread(target=relay, daemon=True)
    listener.start()
    try:
        yield
    finally:
        listener.join()
        proc.join()
    if "error" in outcome:
        raise RuntimeError(f"{what} failed in its process:\n{outcome['error']}")
    stages.seconds.update(outcome.get("done", {}))
