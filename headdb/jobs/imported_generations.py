"""Generations sampled by another engine (vLLM, or any script that writes JSONL), graded by
headdb's grader and stored as a generation run of a checkpoint, with the file's provenance.

One line per problem, as a vLLM script writes it from `LLM.generate`'s `RequestOutput`s:

    {"id": "arith-0003",                      # the benchmark's item id; or "problem": its text
     "prompt": "...",                          # optional
     "outputs": [{"text": "...", "finish_reason": "stop", "token_ids": [...]}, ...],
                                               # or "completions": ["...", ...]
     "sampling_params": {"temperature": 0.6, "top_p": 0.95, "max_tokens": 4096, "n": 8, "seed": 0},
     "engine": "vllm", "engine_version": "0.9.2", "model": "..."}     # all three optional

The output of lm-evaluation-harness run with `--log_samples` is read too: its
`samples_<task>_<time>.jsonl` (each line's `doc` names the item: its `id`, or its `problem` /
`question` text, else the prompt `arguments` text; `resps` holds the samples) with the
`results_<time>.json` beside it (the model's `pretrained` path, the task's generation_kwargs and
version, lm_eval's version).

Every line is checked when the job is built (before anything is written): it must name one
item of the benchmark, no item twice, every line the same number of samples and the same
sampling settings and engine. The run's config records the engine, its version and settings as
the file has them, the file's name and sha256; importing the same file onto the same checkpoint
again is skipped. pass@k / maj@k come from the same code as headdb's own runs.

Samples of a checkpoint that `headdb export checkpoint` wrote (its config.json says so) are
stored as an intervened generation run of the checkpoint it was exported FROM, the intervention
read from the export's record (headdb/jobs/exported.py explains why).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence, cast

import polars as pl

from headdb.errors import UserError
from headdb.evals.interventions import Intervention, format_heads
from headdb.evals.passk import eval_metrics_frame
from headdb.jobs.exported import exported_source
from headdb.jobs.generations import Benchmark, grade_samples, register_benchmark
from headdb.jobs.job import JobContext, Placement, Target
from headdb.jobs.plan import CheckpointWork, Plan, existing_target, target
from headdb.settings import MODES, Execution, check_choice
from headdb.warehouse.runs import Facts

if TYPE_CHECKING:
    from headdb.checkpoints.loading import LoadedModel
    from headdb.warehouse.store import Warehouse

_SHARED = ("sampling_params", "engine", "engine_version", "model")  # must agree across lines


@dataclass(frozen=True)
class SamplesFile:
    """A file of samples matched to a benchmark: one row per sample, and what the file says
    about how they were made."""

    samples: pl.DataFrame  # prompt_index, sample_idx, completion, n_tokens, finish_reason
    provenance: dict[str, Any]  # engine, engine_version, model, sampling (as recorded), file, sha256
    n_items: int


def lm_eval_results(file: Path) -> Path | None:
    """The results JSON of an lm-evaluation-harness samples file (same run: same time stamp)."""
    if not file.name.startswith("samples_"):
        return None
    stamp = file.stem.rsplit("_", 1)[-1]
    found = sorted(file.parent.glob(f"results_{stamp}.json"))
    return found[0] if found else None


def _lm_eval_line(line: dict[str, Any], where: str) -> dict[str, Any]:
    """An lm-evaluation-harness sample as a line of the plain format."""
    doc = cast("dict[str, Any]", line.get("doc") if isinstance(line.get("doc"), dict) else {})
    resps = line.get("resps")
    texts = [t for r in resps for t in (r if isinstance(r, list) else [r])] if isinstance(resps, list) else None
    if not texts or not all(isinstance(t, str) for t in texts):
        raise UserError(f'{where}: no "resps" of generated text (a generate_until task run with --log_samples)')
    out: dict[str, Any] = {"completions": texts}
    for key in ("id", "item_id"):
        if key in doc:
            return {**out, "id": doc[key]}
    for key in ("problem", "question"):
        if isinstance(doc.get(key), str):
            return {**out, "problem": doc[key]}
    prompt = (line.get("arguments") or {}).get("gen_args_0", {}).get("arg_0")
    if isinstance(prompt, str):
        return {**out, "problem": prompt}
    raise UserError(f"{where}: its doc has no id, problem or question, and no prompt text to match")


def lm_eval_provenance(results: Path, task: str | None) -> dict[str, Any]:
    """engine, version, model path and the task's generation settings, from a results JSON."""
    try:
        data = json.loads(results.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"{results}: not a readable lm-evaluation-harness results JSON ({exc})") from None
    args = (data.get("config") or {}).get("model_args")
    if isinstance(args, str):  # "pretrained=DIR,dtype=..." in some versions
        args = dict(part.split("=", 1) for part in args.split(",") if "=" in part)
    configs = data.get("configs") or {}
    task = task or next(iter(configs), None)
    return {
        "engine": "lm-evaluation-harness",
        "engine_version": data.get("lm_eval_version"),
        "model": (args or {}).get("pretrained") or data.get("model_name"),
        "sampling": (configs.get(task) or {}).get("generation_kwargs"),
        "task": task,
        "task_version": (data.get("versions") or {}).get(task),
    }


def read_samples(path: str | Path, bench: Benchmark) -> SamplesFile:
    """Read and check a JSONL file of samples against `bench` (UserError naming the first bad line):
    the plain format, or lm-evaluation-harness's samples file when its results JSON is beside it."""
    file = Path(path)
    if not file.is_file():
        raise UserError(f"samples file {file} does not exist")
    raw = file.read_bytes()
    results = lm_eval_results(file)
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
        if results is not None:
            line = _lm_eval_line(line, where)
        index = _item_index(line, by_id, by_problem, bench, where)
        if index in seen:
            raise UserError(f"{where}: item {items['item_id'][index]!r} again (first at line {seen[index]})")
        seen[index] = number
        outputs = _outputs(line, where)
        if per_item is None:
            per_item = len(outputs)
        elif len(outputs) != per_item:
            raise UserError(
                f"{where}: {len(outputs)} samples, but the first line has {per_item}; "
                "pass@k needs the same number for every problem"
            )
        these = {k: line.get(k) for k in _SHARED}
        if shared is None:
            shared = these
        elif these != shared:
            key = next(k for k in _SHARED if these[k] != shared[k])
            raise UserError(f"{where}: {key} differs from the first line's; one file is one run")
        rows += [{"prompt_index": index, "sample_idx": i, **o} for i, o in enumerate(outputs)]
    if not rows:
        raise UserError(f"{file}: no samples (no non-empty line)")
    samples = pl.DataFrame(
        rows,
        schema={
            "prompt_index": pl.Int64,
            "sample_idx": pl.Int64,
            "completion": pl.Utf8,
            "n_tokens": pl.Int64,
            "finish_reason": pl.Utf8,
        },
    )
    shared = shared or {}
    if results is not None:
        task = file.stem.removeprefix("samples_").rsplit("_", 1)[0]
        provenance = {**lm_eval_provenance(results, task), "results_file": results.name}
    else:
        provenance = {
            "engine": shared.get("engine") or "unknown",
            "engine_version": shared.get("engine_version"),
            "model": shared.get("model"),
            "sampling": shared.get("sampling_params"),
        }
    provenance.update(file=file.name, sha256=hashlib.sha256(raw).hexdigest())
    return SamplesFile(samples, provenance, len(seen))


def _item_index(
    line: dict[str, Any], by_id: dict[str, int], by_problem: dict[str, int], bench: Benchmark, where: str
) -> int:
    if "id" in line:
        key = str(line["id"])
        if key not in by_id:
            some = ", ".join(list(by_id)[:3])
            raise UserError(f"{where}: item {key!r} is not in benchmark {bench.name} ({len(by_id)} items: {some}, ...)")
        return by_id[key]
    if isinstance(line.get("problem"), str):
        text = line["problem"].strip()
        if text not in by_problem:
            raise UserError(
                f"{where}: its problem text matches no problem of benchmark {bench.name} "
                f"({text[:60]!r}); give the item's id instead"
            )
        return by_problem[text]
    raise UserError(f'{where}: no "id" (the benchmark\'s item id) or "problem" (its text)')


def _outputs(line: dict[str, Any], where: str) -> list[dict[str, Any]]:
    if isinstance(line.get("outputs"), list):
        out = []
        for o in line["outputs"]:
            if not isinstance(o, dict) or not isinstance(o.get("text"), str):
                raise UserError(f'{where}: every output needs a "text" string (vLLM\'s CompletionOutput.text)')
            ids = o.get("token_ids")
            out.append(
                {
                    "completion": o["text"],
                    "finish_reason": o.get("finish_reason"),
                    "n_tokens": len(ids) if isinstance(ids, list) else o.get("n_tokens"),
                }
            )
        return out
    if isinstance(line.get("completions"), list) and all(isinstance(c, str) for c in line["completions"]):
        return [{"completion": c, "finish_reason": None, "n_tokens": None} for c in line["completions"]]
    raise UserError(
        f'{where}: no "outputs" (a list of {{text, finish_reason, token_ids}}) or "completions" (a list of strings)'
    )


@dataclass
class ImportedGenerationJob:
    """A generation run whose samples come from a file; it needs no model."""

    bench: Benchmark
    file: Path
    ks: tuple[int, ...] = (1,)
    mode: str = "plain"
    kind: str = "generation"
    needs_model: bool = False
    # samples of a checkpoint headdb exported with an intervention in its weights: the run is the
    # source's, intervened (headdb.jobs.exported); `exported` names the folder and its weights
    intervention: Intervention | None = None
    exported: dict[str, Any] | None = None
    _read: SamplesFile | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self._read = read_samples(self.file, self.bench)  # every line checked now, before any write

    @property
    def label(self) -> str:
        what = f"imported generations on {self.bench.name} ({Path(self.file).name})"
        if self.intervention is not None:
            what += f" of the exported checkpoint {self.intervention.kind} {format_heads(self.intervention.heads)}"
        return what

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

    def register_task(self, db: Warehouse) -> int:
        return register_benchmark(db, self.bench, self.mode)

    def config(self, dtype: str) -> dict[str, Any]:
        spec = None if self.intervention is None else {**self.intervention.spec(), "exported": self.exported}
        return {"source": "imported", **self.provenance, "ks": list(self.ks), "mode": self.mode, "intervention": spec}

    def compute(self, loaded: LoadedModel | None, ctx: JobContext) -> Facts:
        assert self._read is not None
        graded = grade_samples(self.bench.items, self._read.samples)
        facts = Facts()
        facts.add("generations", graded.drop("style"))
        facts.add("eval_metrics", eval_metrics_frame(graded, self.ks))
        if self.intervention is not None:
            facts.add("interventions", self.intervention.table())
        return facts


def plan_imported_generations(
    db: Warehouse | None,
    file: str | Path,
    bench: Benchmark,
    *,
    checkpoint: str | Path | None = None,
    ref: str | None = None,
    ks: Sequence[int] = (1,),
    mode: str = "plain",
    placement: Placement = Placement(),
    execution: Execution = Execution(),
) -> Plan:
    """The plan of importing a samples file onto a checkpoint directory or a registered
    checkpoint (`db` is the warehouse when it exists, else None); nothing is written."""
    from headdb.warehouse.refs import resolve_checkpoint

    check_choice("mode", mode, MODES)
    job = ImportedGenerationJob(bench, Path(file), tuple(ks), mode)  # every line checked here
    if checkpoint is None and ref is None:
        model = job.provenance.get("model")
        if job.provenance["engine"] != "lm-evaluation-harness" or not model:
            raise UserError(
                "give the checkpoint directory the samples came from (--checkpoint DIR) or a "
                "registered checkpoint (--ref REF)"
            )
        if not Path(model).is_dir():
            raise UserError(
                f"the samples' model {model!r} (lm-evaluation-harness's pretrained) is not a local "
                "directory here; give the checkpoint with --checkpoint DIR or --ref REF"
            )
        checkpoint = model
    if checkpoint is not None and ref is not None:
        raise UserError("give --checkpoint DIR or --ref REF, not both")
    if checkpoint is not None:
        t = target(checkpoint, placement)
    else:
        if db is None:
            raise UserError(f"no checkpoint {ref!r}: there is no warehouse yet; give its directory with --checkpoint")
        assert ref is not None  # checkpoint is None only when ref was given (else it is set above or raised)
        t = existing_target(db, resolve_checkpoint(db, ref))
    mapped = exported_source(db, t)
    if mapped is not None:  # an exported checkpoint: the source's run, under the intervention
        t, job.intervention, job.exported = mapped
    return Plan([CheckpointWork(t, [job])], execution).validate()
