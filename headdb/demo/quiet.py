"""Keeping the demo's terminal readable: library chatter goes to a log file, progress to bars.

`quiet_libraries(log)` sends everything the libraries say while it is active (transformers, trl,
accelerate, datasets and Python warnings through `logging`; anything printed to sys.stdout or
sys.stderr, such as a trainer's log dicts) to the open text file `log`, and turns the libraries'
own tqdm progress bars off. The rich Console the demo draws on is created beforehand on the real
stderr, so its bars and messages still reach the terminal.

`TrainerBar` is a transformers `TrainerCallback` that drives one rich progress bar per training
stage (steps done of max_steps, with the latest loss or reward beside it). `IngestBars` turns the executor's (stage, done, total)
callbacks into one bar per checkpoint (its jobs done) plus the stage of the job running now.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from typing import IO, Iterator

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

LIBRARY_LOGGERS = (
    "transformers",
    "trl",
    "accelerate",
    "datasets",
    "huggingface_hub",
    "torch",
    "transformer_lens",
    "py.warnings",
)


def progress_columns():
    return (
        TextColumn("[bold]{task.description:<26}"),
        BarColumn(bar_width=24),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[note]}", style="dim"),
    )


def _disable_library_bars() -> None:
    import datasets
    import transformers
    from huggingface_hub.utils import disable_progress_bars

    transformers.utils.logging.disable_progress_bar()
    datasets.disable_progress_bars()
    disable_progress_bars()


@contextlib.contextmanager
def quiet_libraries(log: IO[str]) -> Iterator[None]:
    """Route library logging, warnings, prints and progress bars to `log` while active."""
    import transformers

    _disable_library_bars()
    handler = logging.StreamHandler(log)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s: %(message)s"))
    saved = []
    names = set(LIBRARY_LOGGERS) | {
        name for name in logging.root.manager.loggerDict if name.split(".")[0] in LIBRARY_LOGGERS
    }
    for name in sorted(names):
        logger = logging.getLogger(name)
        saved.append((logger, logger.handlers[:], logger.propagate, logger.level))
        logger.handlers = [handler]
        logger.propagate = False
        if logger.level == logging.NOTSET or logger.level > logging.INFO:
            logger.setLevel(logging.INFO)
    transformers.utils.logging.disable_default_handler()
    logging.captureWarnings(True)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
            warnings.simplefilter("default")
            yield
    finally:
        logging.captureWarnings(False)
        transformers.utils.logging.enable_default_handler()
        for logger, handlers, propagate, level in saved:
            logger.handlers, logger.propagate, logger.level = handlers, propagate, level
        log.flush()


def _trainer_callback_base():
    from transformers import TrainerCallback

    return TrainerCallback


class TrainerBar(_trainer_callback_base()):
    """One progress bar for a trainer's run, with the latest value of the logged key `show`.
    (The trainer's own printed log dicts reach the log file through `quiet_libraries`.)"""

    def __init__(self, progress: Progress, label: str, show: str = "loss"):
        self.progress, self.label, self.show = progress, label, show
        self.task = progress.add_task(label, total=None, note="")

    def on_train_begin(self, args, state, control, **kwargs):
        self.progress.update(self.task, total=state.max_steps, completed=state.global_step)

    def on_step_end(self, args, state, control, **kwargs):
        self.progress.update(self.task, completed=state.global_step)

    def on_log(self, args, state, control, logs=None, **kwargs):
        logs = dict(logs or {})
        if self.show in logs:
            self.progress.update(self.task, note=f"{self.show} {float(logs[self.show]):.3g}")

    def on_train_end(self, args, state, control, **kwargs):
        self.progress.update(self.task, completed=state.max_steps, note="done")


class IngestBars:
    """Executor progress as one bar per checkpoint: "<label> jobs" opens (done == 0) and advances
    it; a job's own stages ("<label> attribution", "<label> generate") show beside it. Bars are
    kept by label, as worker processes finish checkpoints in any order."""

    def __init__(self, progress: Progress, prefix: str = "ingest"):
        self.progress, self.prefix = progress, prefix
        self.bars: dict[str, TaskID] = {}
        self.current: TaskID | None = None  # the last bar opened: a job's stage whose label has spaces

    def __call__(self, stage: str, done: int, total: int) -> None:
        if stage == "jobs done":
            return
        label, _, what = stage.rpartition(" ")
        if what == "jobs":
            if done == 0 or label not in self.bars:
                self.bars[label] = self.current = self.progress.add_task(f"{self.prefix} {label}", total=total, note="")
            self.progress.update(self.bars[label], completed=done, total=total)
            if done >= total:
                self.progress.update(self.bars[label], note="done")
            return
        bar = self.bars.get(label, self.current)
        if bar is not None:
            self.progress.update(bar, note=f"{what} {done}/{total}")
