"""A demo training stage: a recipe run once, skipped when its folder holds a finished result.

Each stage reports to `Stages` (progress bars, one-line notes, the log file, seconds taken), and
writes a marker file when it succeeds, so an interrupted demo resumes where it stopped.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

DONE = ".headdb-done"


@dataclass
class Stages:
    """What the demo's stages report to: progress bars, one-line notes, the log file."""

    progress: object = None  # a rich Progress, or None (no bars)
    say: Callable[[str], None] = print
    log: object = None  # an open text file for library output, or None
    seconds: dict[str, float] = field(default_factory=dict)


def run_stage(path: Path, what: str, recipe: str, kwargs: dict, stages: Stages, show: str = "loss") -> None:
    """Run `recipes.<recipe>(**kwargs, callbacks=...)` unless `path` holds a finished result (a
    marker written after it succeeds)."""
    import contextlib

    from headdb.demo import recipes
    from headdb.demo.quiet import TrainerBar, quiet_libraries

    if (path / DONE).exists():
        stages.say(f"{what}: already built in {path}")
        return
    if path.exists():
        shutil.rmtree(path)  # an interrupted stage starts over
    started = time.monotonic()
    callbacks = [TrainerBar(stages.progress, what, show=show)] if stages.progress is not None else []
    quiet = quiet_libraries(stages.log) if stages.log is not None else contextlib.nullcontext()
    with quiet:
        getattr(recipes, recipe)(**kwargs, callbacks=callbacks)
    (path / DONE).write_text("ok\n")
    stages.seconds[what] = time.monotonic() - started
