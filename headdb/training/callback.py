"""`HeadDBCallback`: fill the warehouse while a transformers/trl trainer saves checkpoints.

    from headdb.training.callback import HeadDBCallback
    trainer = GRPOTrainer(..., callbacks=[HeadDBCallback("study.duckdb", lineage="grpo-gsm8k",
                                                         regime="grpo", base="/models/base",
                                                         args=["--bench", "gsm8k.jsonl", "--limit", "50"])])

Pointed at a lake (`HeadDBCallback("ducklake:postgres:dbname=lake host=pg.cluster", data_path=
"/shared/lake", ...)`), trainers on several machines fill one warehouse at once.

On each save it runs `headdb ingest run OUTPUT_DIR ...` in a subprocess, which registers the new
checkpoint (with the trainer_state.json metrics so far) and runs the configured jobs on it; the
previous save's ingest is finished first, so they run one at a time and each only does what is
missing. Why a subprocess rather than the live model in the training process:
- it measures exactly what was saved, loaded fresh, never the model mid-update;
- attribution wraps a model in TransformerLens hooks and swaps modules in place; doing that to
  the model being trained would change training;
- a crash, OOM or bug in the ingest cannot take training down: failures are logged, never raised.
The final model saved after `trainer.train()` returns is not seen by the callback; run
`headdb ingest run OUTPUT_DIR ...` once more after training (it only adds what is missing).
"""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path
from typing import Sequence

from transformers import TrainerCallback

log = logging.getLogger("headdb.training")


class HeadDBCallback(TrainerCallback):
    def __init__(
        self,
        db: str | Path,
        *,
        lineage: str,
        regime: str,
        base: str | Path | None = None,
        args: Sequence[str] = (),
        wait: bool = False,
        log_file: str | Path | None = None,
        data_path: str | Path | None = None,
    ):
        """db: the warehouse (a DuckDB file or `ducklake:postgres:...`); data_path: a lake's data
        folder (--data-path); args: extra `headdb ingest run` options (--bench, --task, ...);
        wait: block training until each ingest finishes (tests, or to bound resource use)."""
        self.db = str(db)
        self.data_path = str(data_path) if data_path is not None else None
        self.command_tail = [
            "--regime",
            regime,
            "--lineage",
            lineage,
            *(["--base", str(base)] if base is not None else []),
            *map(str, args),
        ]
        self.wait = wait
        self.log_file = Path(log_file) if log_file else None
        self._proc: subprocess.Popen | None = None
        self.returncodes: list[int] = []

    def command(self, output_dir: str) -> list[str]:
        lake = ["--data-path", self.data_path] if self.data_path is not None else []
        return [
            sys.executable,
            "-m",
            "headdb",
            "--db",
            self.db,
            *lake,
            "ingest",
            "run",
            str(output_dir),
            *self.command_tail,
        ]

    def on_save(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        try:
            self.finish()
            out = open(self.log_file, "a") if self.log_file else subprocess.DEVNULL
            self._proc = subprocess.Popen(self.command(args.output_dir), stdout=out, stderr=subprocess.STDOUT)
            if self.wait:
                self.finish()
        except Exception:  # never break training
            log.exception("headdb: could not start the ingest of %s", args.output_dir)

    def on_train_end(self, args, state, control, **kwargs):
        self.finish()

    def finish(self) -> None:
        """Wait for the running ingest, if any, and log its outcome."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        try:
            code = proc.wait()
        except Exception:
            log.exception("headdb: waiting for the ingest failed")
            return
        self.returncodes.append(code)
        if code != 0:
            log.warning("headdb: ingest exited with code %s (see %s)", code, self.log_file or "its log")
