"""Study manifests (TOML): what a study ingests and reports, checked before anything runs.

    [study]                      name, seed
    [attribution]                method, steps, metric, topn, threshold, greedy, curve, batch_size, align
    [generation]                 samples, temperature, top_p, top_k, min_p, max_new_tokens, batch_size,
                                 k, chat, mode, limit
    [[tasks]]                    name, file, mode                      (circuit tasks)
    [[benchmarks]]               name, source, preset, fields, limit   (file or built-in name)
    [[models]]                   name, path, regime, lineage, step, base (a [[models]] name),
                                 tasks, benchmarks (names; default: all of them)
    [[runs]]                     name, dir, regime, lineage, base, tasks, benchmarks
                                 (training output directories)
    [[ablations]]                checkpoint, heads | heads_query, kind, factor, control, benchmarks, ...
                                 heads_query = {name, params, where = {col = value}, order_by = col
                                 (descending), limit, fallback = {another such query, used (and
                                 said) when the first finds no heads}}: the query's layer/head columns
    [[reports]]                  name, params

Paths are relative to the manifest's folder (or to `root` when given). Every problem is
reported as `FILE: key.path: problem`, so the user knows which line to fix.
"""
from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from headdb.errors import UserError
from headdb.settings import (INTERVENTION_KINDS, MODES, POST_TRAINING, REGIMES, AttributionSettings,
                             GenerationSettings, Sampling)

SECTIONS = {"study", "attribution", "generation", "tasks", "benchmarks", "models", "runs", "ablations", "reports"}
# The keys of [attribution] and [generation] are the settings' own fields (values are checked by
# the settings models when the study is planned); `k` is GenerationSettings.ks, `limit` cuts benchmarks.
ATTRIBUTION_KEYS = set(AttributionSettings.model_fields)
GENERATION_KEYS = (set(Sampling.model_fields) | set(GenerationSettings.model_fields) | {"k"}) - {"sampling", "ks"}


class ManifestError(UserError):
    pass


@dataclass
class Where:
    file: Path

    def fail(self, key: str, problem: str) -> ManifestError:
        return ManifestError(f"{self.file}: {key}: {problem}")


@dataclass(frozen=True)
class TaskSpec:
    name: str
    file: Path
    mode: str = "plain"


@dataclass(frozen=True)
class BenchSpec:
    name: str
    source: str
    preset: str | None = None
    fields: str | None = None
    limit: int | None = None


@dataclass(frozen=True)
class ModelSpec:
    name: str
    path: Path
    regime: str
    lineage: str
    step: int = 0
    base: str | None = None
    tasks: tuple[str, ...] | None = None       # None: every [[tasks]] entry
    benchmarks: tuple[str, ...] | None = None  # None: every [[benchmarks]] entry


@dataclass(frozen=True)
class RunSpec:
    name: str
    dir: Path
    regime: str
    lineage: str
    base: str | None = None
    tasks: tuple[str, ...] | None = None
    benchmarks: tuple[str, ...] | None = None


@dataclass(frozen=True)
class AblationSpec:
    key: str                      # "ablations[0]" for messages
    checkpoint: str               # a [[models]] name or "<run name>/final" / "<run name>/checkpoint-<step>" / "<run>/last"
    heads: str | None = None
    heads_query: dict | None = None
    kind: str = "zero"
    factor: float | None = None
    control: bool = False
    control_seed: int = 0
    benchmarks: tuple[str, ...] = ()
    control_avoid: dict | None = None  # a heads query: heads the random control is not drawn from


@dataclass(frozen=True)
class ReportSpec:
    name: str
    params: dict = field(default_factory=dict)


@dataclass
class Manifest:
    file: Path
    name: str
    seed: int
    attribution: dict
    generation: dict
    tasks: list[TaskSpec]
    benchmarks: list[BenchSpec]
    models: list[ModelSpec]
    runs: list[RunSpec]
    ablations: list[AblationSpec]
    reports: list[ReportSpec]


def _table_list(data: dict, section: str, where: Where) -> list[dict]:
    value = data.get(section, [])
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise where.fail(section, f"must be an array of tables ([[{section}]])")
    return value


def _get(entry: dict, key: str, path: str, where: Where, kind: type | tuple, default: Any = ..., *,
         choices: tuple | None = None) -> Any:
    if key not in entry:
        if default is ...:
            raise where.fail(f"{path}.{key}", "is required")
        return default
    value = entry[key]
    if not isinstance(value, kind) or (isinstance(value, bool) and kind in (int, float, (int, float))):
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise where.fail(f"{path}.{key}", f"must be a {names}, got {value!r}")
    if choices is not None and value not in choices:
        raise where.fail(f"{path}.{key}", f"{value!r} is not one of {', '.join(map(str, choices))}")
    return value


def _no_unknown(entry: dict, allowed: set, path: str, where: Where) -> None:
    unknown = sorted(set(entry) - allowed)
    if unknown:
        raise where.fail(f"{path}.{unknown[0]}", f"unknown key (allowed: {', '.join(sorted(allowed))})")


def _unique(names: list[str], section: str, where: Where) -> None:
    seen = set()
    for i, name in enumerate(names):
        if name in seen:
            raise where.fail(f"{section}[{i}].name", f"{name!r} is used twice")
        seen.add(name)


def _check_heads_query(query: Any, key: str, where: Where, fallback: bool = True) -> None:
    if not isinstance(query, dict):
        raise where.fail(key, "must be a table such as { name = \"heads_gained\", params = { ... } }")
    allowed = {"name", "params", "limit", "where", "order_by"} | ({"fallback"} if fallback and not key.endswith("fallback")
                                                                  else set())
    _no_unknown(query, allowed, key, where)
    _get(query, "name", key, where, str)
    _get(query, "params", key, where, dict, {})
    _get(query, "where", key, where, dict, {})


def load_manifest(file: str | Path, *, root: str | Path | None = None) -> Manifest:
    """Parse and validate a manifest; relative paths resolve against `root` or the file's folder."""
    path = Path(file)
    if not path.is_file():
        raise UserError(f"manifest {path} does not exist")
    where = Where(path)
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ManifestError(f"{path}: not valid TOML: {exc}") from None
    base_dir = Path(root) if root is not None else path.resolve().parent
    unknown = sorted(set(data) - SECTIONS)
    if unknown:
        raise where.fail(unknown[0], f"unknown section (allowed: {', '.join(sorted(SECTIONS))})")

    study = data.get("study", {})
    _no_unknown(study, {"name", "seed"}, "study", where)
    attribution = data.get("attribution", {})
    _no_unknown(attribution, ATTRIBUTION_KEYS, "attribution", where)
    generation = data.get("generation", {})
    _no_unknown(generation, GENERATION_KEYS | {"limit"}, "generation", where)

    def resolve(p: str) -> Path:
        q = Path(p).expanduser()
        return q if q.is_absolute() else base_dir / q

    tasks = []
    for i, t in enumerate(_table_list(data, "tasks", where)):
        key = f"tasks[{i}]"
        _no_unknown(t, {"name", "file", "mode"}, key, where)
        tasks.append(TaskSpec(_get(t, "name", key, where, str), resolve(_get(t, "file", key, where, str)),
                              _get(t, "mode", key, where, str, "plain", choices=MODES)))
    benchmarks = []
    for i, b in enumerate(_table_list(data, "benchmarks", where)):
        key = f"benchmarks[{i}]"
        _no_unknown(b, {"name", "source", "preset", "fields", "limit"}, key, where)
        source = _get(b, "source", key, where, str)
        if not source.startswith("synthetic-arithmetic"):
            source = str(resolve(source))
        benchmarks.append(BenchSpec(_get(b, "name", key, where, str), source, _get(b, "preset", key, where, str, None),
                                    _get(b, "fields", key, where, str, None), _get(b, "limit", key, where, int, None)))
    task_names = {t.name for t in tasks}
    bench_names = {b.name for b in benchmarks}

    def subset(entry: dict, key: str, field_name: str, known: set) -> tuple[str, ...] | None:
        names = _get(entry, field_name, key, where, list, None)
        if names is None:
            return None
        for n in names:
            if n not in known:
                raise where.fail(f"{key}.{field_name}", f"{n!r} is not the name of a [[{field_name}]] entry")
        return tuple(names)

    models = []
    for i, m in enumerate(_table_list(data, "models", where)):
        key = f"models[{i}]"
        _no_unknown(m, {"name", "path", "regime", "lineage", "step", "base", "tasks", "benchmarks"}, key, where)
        name = _get(m, "name", key, where, str)
        models.append(ModelSpec(name, resolve(_get(m, "path", key, where, str)),
                                _get(m, "regime", key, where, str, choices=REGIMES),
                                _get(m, "lineage", key, where, str, name), _get(m, "step", key, where, int, 0),
                                _get(m, "base", key, where, str, None), subset(m, key, "tasks", task_names),
                                subset(m, key, "benchmarks", bench_names)))
    runs = []
    for i, r in enumerate(_table_list(data, "runs", where)):
        key = f"runs[{i}]"
        _no_unknown(r, {"name", "dir", "regime", "lineage", "base", "tasks", "benchmarks"}, key, where)
        name = _get(r, "name", key, where, str)
        runs.append(RunSpec(name, resolve(_get(r, "dir", key, where, str)),
                            _get(r, "regime", key, where, str, choices=POST_TRAINING),
                            _get(r, "lineage", key, where, str, name), _get(r, "base", key, where, str, None),
                            subset(r, key, "tasks", task_names), subset(r, key, "benchmarks", bench_names)))
    # a task name may appear twice with different modes: thinking on and off of one task
    _unique([f"{t.name} ({t.mode})" for t in tasks], "tasks", where)
    _unique([b.name for b in benchmarks], "benchmarks", where)
    _unique([m.name for m in models] + [r.name for r in runs], "models/runs", where)

    model_names = {m.name for m in models}
    for i, m in enumerate(models):
        if m.base is not None and m.base not in model_names:
            raise where.fail(f"models[{i}].base", f"{m.base!r} is not the name of a [[models]] entry")
    for i, r in enumerate(runs):
        if r.base is not None and r.base not in model_names:
            raise where.fail(f"runs[{i}].base", f"{r.base!r} is not the name of a [[models]] entry")

    ablations = []
    for i, a in enumerate(_table_list(data, "ablations", where)):
        key = f"ablations[{i}]"
        _no_unknown(a, {"checkpoint", "heads", "heads_query", "kind", "factor", "control", "control_seed",
                        "control_avoid", "benchmarks"}, key, where)
        heads = _get(a, "heads", key, where, str, None)
        query = _get(a, "heads_query", key, where, dict, None)
        if (heads is None) == (query is None):
            raise where.fail(key, "give exactly one of heads = \"L5H1,L7H3\" or heads_query = {name = ..., params = {...}}")
        if query is not None:
            _check_heads_query(query, f"{key}.heads_query", where)
            if "fallback" in query:
                _check_heads_query(query["fallback"], f"{key}.heads_query.fallback", where)
            _get(query, "name", f"{key}.heads_query", where, str)
        avoid = _get(a, "control_avoid", key, where, dict, None)
        if avoid is not None:
            _check_heads_query(avoid, f"{key}.control_avoid", where, fallback=False)
        kind = _get(a, "kind", key, where, str, "zero", choices=INTERVENTION_KINDS)
        factor = _get(a, "factor", key, where, (int, float), None)
        if kind == "scale" and factor is None:
            raise where.fail(f"{key}.factor", "is required when kind = \"scale\"")
        benches = tuple(_get(a, "benchmarks", key, where, list, [b.name for b in benchmarks]))
        for b in benches:
            if b not in bench_names:
                raise where.fail(f"{key}.benchmarks", f"{b!r} is not the name of a [[benchmarks]] entry")
        ablations.append(AblationSpec(key, _get(a, "checkpoint", key, where, str), heads, query, kind,
                                      None if factor is None else float(factor), _get(a, "control", key, where, bool, False),
                                      _get(a, "control_seed", key, where, int, 0), benches, avoid))
    reports = []
    for i, r in enumerate(_table_list(data, "reports", where)):
        key = f"reports[{i}]"
        _no_unknown(r, {"name", "params"}, key, where)
        reports.append(ReportSpec(_get(r, "name", key, where, str), _get(r, "params", key, where, dict, {})))
    return Manifest(file=path, name=study.get("name", path.stem), seed=int(study.get("seed", 0)),
                    attribution=attribution, generation=generation, tasks=tasks, benchmarks=benchmarks,
                    models=models, runs=runs, ablations=ablations, reports=reports)
