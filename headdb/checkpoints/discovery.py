"""Training output directories: their checkpoints and their trainer logs.

A transformers/trl output directory holds `checkpoint-<step>/` folders and, after training
ends, the final model and `trainer_state.json` at the top level. `discover` lists them in step
order; `training_metrics` turns `log_history` into (step, key, value) rows, one per numeric
entry, with keys exactly as the trainer wrote them (`loss`, `reward`, `rewards/<func>/mean`,
`completions/mean_length`, `kl`, ... and older trl names as they are).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from headdb.errors import UserError

_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


@dataclass(frozen=True)
class FoundCheckpoint:
    path: Path
    step: int
    final: bool = False  # the model saved at the top level when training ended


def _has_model_files(directory: Path) -> bool:
    return (directory / "config.json").is_file()


def discover(run_dir: str | Path) -> list[FoundCheckpoint]:
    """Every `checkpoint-<step>/` of a training output directory, plus the top-level final model.

    The final model's step is trainer_state.json's `global_step` (or the last checkpoint's step).
    A checkpoint folder without config.json is still listed (not silently skipped): planning it
    is an error that names it.
    """
    root = Path(run_dir).expanduser()
    if not root.is_dir():
        raise UserError(f"training output directory {root} does not exist")
    found = sorted(
        (
            FoundCheckpoint(p, int(m.group(1)))
            for p in root.iterdir()
            if p.is_dir() and (m := _CHECKPOINT.match(p.name))
        ),
        key=lambda c: c.step,
    )
    if _has_model_files(root):
        state = _read_state(root / "trainer_state.json") if (root / "trainer_state.json").is_file() else {}
        last = found[-1].step if found else 0
        found.append(FoundCheckpoint(root, int(state.get("global_step", last) or last), final=True))
    if not found:
        raise UserError(
            f"{root} has no checkpoint-<step>/ folders and no model at its top level; point at a trainer's output_dir"
        )
    return found


def _read_state(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise UserError(f"cannot read {path}: {exc}") from None


def latest_trainer_state(run_dir: str | Path) -> Path | None:
    """The most complete trainer_state.json: the top level's, else the last checkpoint's."""
    root = Path(run_dir)
    if (root / "trainer_state.json").is_file():
        return root / "trainer_state.json"
    states = [c.path / "trainer_state.json" for c in discover(root) if (c.path / "trainer_state.json").is_file()]
    return states[-1] if states else None


def training_metrics(state_file: str | Path) -> pl.DataFrame:
    """One (step, key, value) row per numeric entry of log_history (bools excluded)."""
    state = _read_state(Path(state_file))
    history = state.get("log_history")
    if not isinstance(history, list):
        raise UserError(f"{state_file} has no log_history list")
    steps, keys, values = [], [], []
    for entry in history:
        step = entry.get("step")
        if not isinstance(step, int):
            continue
        for key, value in entry.items():
            if key == "step" or isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            steps.append(step)
            keys.append(key)
            values.append(float(value) if not (isinstance(value, float) and math.isnan(value)) else float("nan"))
    return pl.DataFrame(
        {"step": steps, "key": keys, "value": values}, schema={"step": pl.Int64, "key": pl.Utf8, "value": pl.Float64}
    )
