"""Generations sampled by another engine (vLLM, or any script that writes JSONL), graded by
headdb's grader and stored as a generation run of a checkpoint, with the file's provenance.

One line per problem, as a vLLM script writes it from `LLM.generate`'s `RequestOutput`s:

    {"id": "arith-0003",                      # the benchmark's item id; or "problem": its text
     "prompt": "...",                          # optional
     "outputs": [{"text": "...", "finish_reason": "stop", "token_ids": [...]}, ...],
                                               # or "completions": ["...", ...]
     "sampling_params": {"temperature": 0.6, "top_p": 0.95, "max_tokens": 4096, "n": 8, "seed": 0},
     "engine": "vllm", "engine_version": "0.9.2", "model": "..."}     # all three optional

Every line is checked when the job is built (before anything is written): it must name one
item of the benchmark, no item twice, every line the same number of samples and the same
sampling settings and engine. The run's config records the engine, its version and settings as
the file has them, the file's name and sha256; importing the same file onto the same checkpoint
again is skipped. pass@k / maj@k come from the same code as headdb's own runs.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import polars as pl

from headdb.errors import UserError
from headdb.evals.passk import eval_metrics_frame
from headdb.jobs.generations import Benchmark, grade_samples, register_benchmark
from headdb.jobs.job import JobContext, Placement, Target
from headdb.jobs.plan import CheckpointWork, Plan, existing_target, target
from headdb.settings import MODES, Execution, check_choice
from headdb.warehouse.runs import Facts

_SHARED = ("sampling_params", "engine", "engine_version", "model")  # must agree across lines


@dataclass(frozen=True)
class SamplesFile:
    """A file of samples matched to a benchmark: one row per sample, and what the file says
    about how they were made."""

    samples: pl.DataFrame          # prompt_index, sample_idx, completion, n_tokens, finish_reason
    provenance: dict[str, Any]     # engine, engine_version, model, sampling (as recorded), file, sha256
    n_items: int


def read_samples(path: str | Path, bench: Benchmark) -> SamplesFile:
    """Read and check a JSONL file of samples against `bench` (UserError naming the first bad line)."""
    file = Path(path)
    if not file.is_file():
        raise UserError(f"samples file {file} does not exist")
    raw = file.read_bytes()
    items = bench.items.with_row_index("prompt_index")
    by_id = dict(zip(items["item_id"].to_list(), items["prompt_index"].to_list()))
    by_problem = {str(p).strip(): i for p, i in zip(items["problem"].to_list(), items["prompt_index"].to_list())}
    rows: list[dict[str, Any]] = []
    seen: dict[int, int] = {}
    shared: dict[str, Any] | None = None
    per_item = None
    for number, text in enumerate(raw.decode("utf-8", errors="strict").splitlines(), start=1):
        if not text.strip():
            continue
        where = f"{file}: line {number}"
        try:
            line = json.loads(text)
        except json.JSONDecodeError as exc:
            raise UserError(f"{where}: not JSON ({exc.msg} at column {exc.colno})") from None
        if not isinstance(line, dict):
            raise UserError(f"{where}: expected a JSON object with id (or problem) and outputs (or completions)")
        index = _item_index(line, by_id, by_problem, bench, where)
        if index in seen:
            raise UserError(f"{where}: item {items['item_id'][index]!r} again (first at line {seen[index]})")
        seen[index] = number
        outputs = _outputs(line, where)
        if per_item is None:
            per_item = len(outputs)
        elif len(outputs) != per_item:
            raise UserError(f"{where}: {len(outputs)} samples, but the first line has {per_item}; "
                            "pass@k needs the same number for every problem")
        these = {k: line.get(k) for k in _SHARED}
        if shared is None:
            shared = these
        elif these != shared:
            key = next(k for k in _SHARED if these[k] != shared[k])
            raise UserError(f"{where}: {key} differs from the first line's; one file is one run")
        rows += [{"prompt_index": index, "sample_idx": i, **o} for i, o in enumerate(outputs)]
    if not rows:
        raise UserError(f"{file}: no samples (no non-empty line)")
    samples = pl.DataFrame(rows, schema={"prompt_index": pl.Int64, "sample_idx": pl.Int64, "completion": pl.Utf8,
                                         "n_tokens": pl.Int64, "finish_reason": pl.Utf8})
    shared = shared or {}
    provenance = {"engine": shared.get("engine") or "unknown", "engine_version": shared.get("engine_version"),
                  "model": shared.get("model"), "sampling": shared.get("sampling_params"),
                  "file": file.name, "sha256": hashlib.sha256(raw).hexdigest()}
    return SamplesFile(samples, provenance, len(seen))


def _item_index(line: dict[str, Any], by_id: dict[str, int], by_problem: dict[str, int], bench: Benchmark,
                where: str) -> int:
    if "id" in line:
        key = str(line["id"])
        if key not in by_id:
            some = ", ".join(list(by_id)[:3])
            raise UserError(f"{where}: item {key!r} is not in benchmark {bench.name} ({len(by_id)} items: {some}, ...)")
        return by_id[key]
    if isinstance(line.get("problem"), str):
        text = line["problem"].strip()
        if text not in by_problem:
            raise UserError(f"{where}: its problem text matches no problem of benchmark {bench.name} "
                            f"({text[:60]!r}); give the item's id instead")
        return by_problem[text]
    raise UserError(f"{where}: no \"id\" (the benchmark's item id) or \"problem\" (its text)")


def _outputs(line: dict[str, Any], where: str) -> list[dict[str, Any]]:
    if isinstance(line.get("outputs"), list):
        out = []
        for o in line["outputs"]:
            if not isinstance(o, dict) or not isinstance(o.get("text"), str):
                raise UserError(f"{where}: every output needs a \"text\" string (vLLM's CompletionOutput.text)")
            ids = o.get("token_ids")
            out.append({"completion": o["text"], "finish_reason": o.get("finish_reason"),
                        "n_tokens": len(ids) if isinstance(ids, list) else o.get("n_tokens")})
        return out
    if isinstance(line.get("completions"), list) and all(isinstance(c, str) for c in line["completions"]):
        return [{"completion": c, "finish_reason": None, "n_tokens": None} for c in line["completions"]]
    raise UserError(f"{where}: no \"outputs\" (a list of {{text, finish_reason, token_ids}}) or "
                    "\"completions\" (a list of strings)")


@dataclass
class ImportedGenerationJob:
    """A generation run whose samples come from a file; it needs no model."""

    bench: Benchmark
    file: Path
    ks: tuple[int, ...] = (1,)
    mode: str = "plain"
    kind: str = "generation"
    needs_model: bool = False
    _read: SamplesFile | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self._read = read_samples(self.file, self.bench)  # every line checked now, before any write

    @property
    def label(self) -> str:
        return f"imported generations on {self.bench.name} ({Path(self.file).name})"

    @property
    def seed(self) -> int | None:
        sampling = self.provenance["sampling"]
        return sampling.get("seed") if isinstance(sampling, dict) else None

    @property
    def provenance(self) -> dict[str, Any]:
        assert self._read is not None
        return self._read.provenance

    def validate(self, target: Target) -> None:
        pass  # checked against the benchmark when built

    def register_task(self, db: Any) -> int:
        return register_benchmark(db, self.bench, self.mode)

    def config(self, dtype: str) -> dict[str, Any]:
        return {"source": "imported", **self.provenance, "ks": list(self.ks), "mode": self.mode,
                "intervention": None}

    def compute(self, loaded: Any, ctx: JobContext) -> Facts:
        assert self._read is not None
        graded = grade_samples(self.bench.items, self._read.samples)
        facts = Facts()
        facts.add("generations", graded.drop("style"))
        facts.add("eval_metrics", eval_metrics_frame(graded, self.ks))
        return facts


def plan_imported_generations(db: Any, file: str | Path, bench: Benchmark, *, checkpoint: str | Path | None = None,
                              ref: str | None = None, ks: Sequence[int] = (1,), mode: str = "plain",
                              placement: Placement = Placement(), execution: Execution = Execution()) -> Plan:
    """The plan of importing a samples file onto a checkpoint directory or a registered
    checkpoint (`db` is the warehouse when it exists, else None); nothing is written."""
    from headdb.warehouse.refs import resolve_checkpoint

    check_choice("mode", mode, MODES)
    if (checkpoint is None) == (ref is None):
        raise UserError("give the checkpoint directory the samples came from (--checkpoint DIR) or a registered "
                        "checkpoint (--ref REF)")
    if checkpoint is not None:
        t = target(checkpoint, placement)
    else:
        if db is None:
            raise UserError(f"no checkpoint {ref!r}: there is no warehouse yet; give its directory with --checkpoint")
        t = existing_target(db, resolve_checkpoint(db, ref))
    job = ImportedGenerationJob(bench, Path(file), tuple(ks), mode)
    return Plan([CheckpointWork(t, [job])], execution).validate()
