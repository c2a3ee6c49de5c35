"""Running the whole demo: models, the study, reports, the closing summary and the HTML report.

The terminal gets one progress bar per stage (pretraining, SFT, GRPO, then each checkpoint's
jobs), a few notes, the reports and the summary; everything the libraries and the executor say
goes to `<out>/demo.log`.
"""

from __future__ import annotations

import importlib
import time
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.progress import Progress

from headdb.demo.stages import Stages
from headdb.demo.study import THREADS, DemoSettings, build_models, demo_study

LOG = "demo.log"
HTML = "demo-report.html"
# Executor lines worth showing on the terminal (the head sets of the ablations, failures).
SHOWN = ("ablations[", "FAILED")


def check_warehouse(db, root: Path) -> None:
    """Refuse, before anything is built, a warehouse that already holds a checkpoint named
    `base` from another folder (another demo, or a study of its own): the demo's manifest names
    its checkpoints base, sft@last and grpo@last, and those names would match two checkpoints
    once the demo had trained and ingested for minutes. Its own folder is a resumed run."""
    from headdb.errors import UserError

    ours = (root / "models" / "base").resolve()
    paths = db.sql("select distinct path from checkpoints where name = 'base' order by path")["path"].to_list()
    theirs = [p for p in paths if Path(p).resolve() != ours]
    if theirs:
        raise UserError(
            f"{db.location} already holds a checkpoint named base ({theirs[0]}), which the demo's study "
            "would name too; give the demo a warehouse of its own (--db NEW.duckdb), or the --out "
            "of that demo to resume it"
        )


@dataclass
class DemoOutcome:
    outcome: object
    seconds: dict[str, float] = field(default_factory=dict)
    summary: list[str] = field(default_factory=list)
    html: Path | None = None
    log: Path | None = None


def run_demo(
    db,
    root: Path,
    settings: DemoSettings,
    *,
    seed: int,
    console: Console,
    out: Console,
    reports: bool = True,
    title: str = "headdb demo",
) -> DemoOutcome:
    """Build the models, run the study, print the reports (on `out`) and write the HTML report.
    `console` (stderr) carries the progress bars and notes."""
    import torch

    from headdb.demo.quiet import IngestBars, progress_columns, quiet_libraries
    from headdb.demo.summary import MARGINS, summarize
    from headdb.jobs.study import run_study
    from headdb.settings import Execution

    started = time.monotonic()
    check_warehouse(db, root)
    root.mkdir(parents=True, exist_ok=True)
    log_path = root / LOG
    result = DemoOutcome(outcome=None, log=log_path)
    with open(log_path, "a", encoding="utf-8") as log:
        log.write(f"\n=== headdb demo, seed {seed}, {time.strftime('%Y-%m-%d %H:%M:%S')} ===\n")
        with quiet_libraries(log):  # importing the trainers logs a little too
            importlib.import_module("trl")
            torch.set_num_threads(THREADS)

        def say(line: str) -> None:
            log.write(line + "\n")
            log.flush()
            if line.startswith(SHOWN):
                progress.console.print(line, highlight=False, markup=False)

        with Progress(*progress_columns(), console=console, transient=False) as progress:
            stages = Stages(progress=progress, say=say, log=log)
            build_models(root, settings, seed=seed, stages=stages, log_path=log_path)
            result.seconds["models"] = time.monotonic() - started
            m = demo_study(root, settings)
            t0 = time.monotonic()
            with quiet_libraries(log):
                result.outcome = run_study(
                    db,
                    m,
                    execution=Execution(device="cpu", dtype="float32"),
                    executor=make_executor(settings.study_workers, log_path),
                    progress=IngestBars(progress),
                    say=say,
                )
            result.seconds["ingest"] = time.monotonic() - t0
        t0 = time.monotonic()
        if reports:
            from headdb.reports import print_reports  # the same rendering as `headdb study`

            print_reports(db, [(r.name, r.params) for r in m.reports], out, db.query_dirs, files_dir=root)
        result.summary = summarize(db)
        from headdb.reports.html import write_study_html

        with quiet_libraries(log):
            result.html = write_study_html(
                db,
                [(r.name, r.params) for r in m.reports],
                root / HTML,
                title=title,
                subtitle=f"seed {seed}; warehouse {db.location}",
                summary=[*result.summary, MARGINS],
                extra_dirs=db.query_dirs,
            )
        result.seconds["reports"] = time.monotonic() - t0
    result.seconds["total"] = time.monotonic() - started
    return result


def make_executor(workers: int, log_path: Path):
    """In process for one worker; else worker processes whose library output goes to the log."""
    from headdb.jobs.executor import LocalExecutor
    from headdb.jobs.process_executor import ProcessExecutor

    if workers <= 1:
        return LocalExecutor()
    return ProcessExecutor(workers=workers, threads=THREADS, log=str(log_path))
