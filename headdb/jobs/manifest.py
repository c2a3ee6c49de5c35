"""Study manifests (TOML): what a study ingests and reports, checked before anything runs.

    [study]                      name, seed
    [attribution]                method, steps, ig_rule, metric, topn, threshold, greedy, curve, align,
                                 prepend_bos, rank, bootstrap, seed, batch_size, max_memory
                                 (headdb.settings.AttributionSettings)
    [generation]                 samples, temperature, top_p, top_k, min_p, max_new_tokens, seed,
                                 batch_size, k, chat, mode (GenerationSettings, Sampling), limit
    [[tasks]]                    name, file, mode                      (circuit tasks)
    [[benchmarks]]               name, source, preset, fields, limit   (file or built-in name)
    [[models]]                   name, path, regime, lineage, step, base (a [[models]] name),
                                 tasks, benchmarks (names; default: all of them)
    [[runs]]                     name, dir, regime, lineage, base, tasks, benchmarks
                                 (training output directories)
    [[ablations]]                checkpoint, heads | heads_query, kind, factor, control, benchmarks,
                                 control_seed, control_avoid (a heads_query), label
                                 heads_query = {name, params, where = {col = value}, order_by = col
                                 (descending), limit, fallback = {another such query, used (and
                                 said) when the first finds no heads}}: the query's layer/head columns
    [[reports]]                  name, params

Paths are relative to the manifest's folder (or to `root` when given). Every problem is
reported as `FILE: key.path: problem`, so the user knows which line to fix.

The manifest is parsed by pydantic models: each section and entry below is a frozen model that
forbids unknown keys, and [attribution] and [generation] are the settings models themselves
(`AttributionSettings`; `GenerationSettings` with its `Sampling`, from the section's flat keys),
so a study's settings travel whole from the file to the jobs. What no single entry can check
(names that refer to other entries, names used twice) is checked after parsing.
"""

from __future__ import annotations

import tomllib
from types import UnionType
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence, Union, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from headdb.errors import UserError
from headdb.settings import (
    CONTROL_LABEL,
    FALLBACK_LABEL,
    AttributionSettings,
    GenerationSettings,
    InterventionKind,
    Mode,
    PostTraining,
    Regime,
    Sampling,
)

if TYPE_CHECKING:
    from pydantic_core import ErrorDetails


class ManifestError(UserError):
    pass


@dataclass
class Where:
    file: Path

    def fail(self, key: str, problem: str) -> ManifestError:
        return ManifestError(f"{self.file}: {key}: {problem}")


class Spec(BaseModel):
    """A manifest table: frozen, no unknown keys; paths resolved against the manifest's folder."""

    model_config = ConfigDict(frozen=True, extra="forbid")


def _resolved(value: Any, info: ValidationInfo) -> Any:
    if not isinstance(value, str):
        return value
    path = Path(value).expanduser()
    return path if path.is_absolute() else Path((info.context or {}).get("base", ".")) / path


class StudySection(Spec):
    name: str | None = None
    seed: int = 0


class GenerationSection(Spec):
    """[generation]: the GenerationSettings of every generation job (its flat keys: the Sampling
    fields, chat, mode and k), and `limit`, which cuts every benchmark."""

    settings: GenerationSettings = Field(default_factory=GenerationSettings)
    limit: int | None = Field(None, ge=1)


class HeadsQuery(Spec):
    """A named query that selects heads: its layer/head columns, rows where `where` matches,
    ordered by `order_by` (descending), the first `limit`."""

    name: str
    params: dict[str, Any] = Field(default_factory=dict)
    where: dict[str, Any] = Field(default_factory=dict)
    order_by: str | None = None
    limit: int | None = Field(None, ge=1)


class HeadsQueryWithFallback(HeadsQuery):
    fallback: HeadsQuery | None = None  # used (and said) when the query finds no heads


class TaskSpec(Spec):
    name: str
    file: Path
    mode: Mode = "plain"

    _paths = field_validator("file", mode="before")(_resolved)


class BenchSpec(Spec):
    name: str
    source: str
    preset: str | None = None
    fields: str | None = None
    limit: int | None = Field(None, ge=1)

    @field_validator("source", mode="before")
    @classmethod
    def _file(cls, value: Any, info: ValidationInfo) -> Any:
        if isinstance(value, str) and not value.startswith("synthetic-arithmetic"):
            return str(_resolved(value, info))
        return value


class ModelSpec(Spec):
    name: str
    path: Path
    regime: Regime
    lineage: str | None = None  # None: the name
    step: int = 0
    base: str | None = None  # a [[models]] name
    tasks: tuple[str, ...] | None = None  # None: every [[tasks]] entry
    benchmarks: tuple[str, ...] | None = None  # None: every [[benchmarks]] entry

    _paths = field_validator("path", mode="before")(_resolved)


class RunSpec(Spec):
    name: str
    dir: Path
    regime: PostTraining
    lineage: str | None = None
    base: str | None = None
    tasks: tuple[str, ...] | None = None
    benchmarks: tuple[str, ...] | None = None

    _paths = field_validator("dir", mode="before")(_resolved)


class AblationSpec(Spec):
    key: str = ""  # "ablations[0]" for messages (set when the manifest is loaded)
    checkpoint: str  # a [[models]] name or "<run name>/final" / "<run name>/checkpoint-<step>" / "<run>/last"
    heads: str | None = None
    heads_query: HeadsQueryWithFallback | None = None
    kind: InterventionKind = "zero"
    factor: float | None = None
    control: bool = False
    control_seed: int = 0
    benchmarks: tuple[str, ...] | None = None  # None: every [[benchmarks]] entry
    control_avoid: HeadsQuery | None = None  # heads the random control is not drawn from
    label: str | None = None  # the head set's name in ablation reports (default: kind and heads)


class ReportSpec(Spec):
    name: str
    params: dict[str, Any] = Field(default_factory=dict)


class Manifest(Spec):
    file: Path
    study: StudySection = Field(default_factory=StudySection)
    attribution: AttributionSettings = Field(default_factory=AttributionSettings)
    generation: GenerationSection = Field(default_factory=GenerationSection)
    tasks: list[TaskSpec] = Field(default_factory=list)
    benchmarks: list[BenchSpec] = Field(default_factory=list)
    models: list[ModelSpec] = Field(default_factory=list)
    runs: list[RunSpec] = Field(default_factory=list)
    ablations: list[AblationSpec] = Field(default_factory=list)
    reports: list[ReportSpec] = Field(default_factory=list)

    @property
    def name(self) -> str:
        return self.study.name or self.file.stem

    @property
    def seed(self) -> int:
        return self.study.seed


SECTIONS = tuple(f for f in Manifest.model_fields if f != "file")
_GENERATION_KEYS = (*Sampling.model_fields, "chat", "mode", "k", "limit")


def _generation_table(table: Any, seed: int) -> Any:
    """[generation]'s flat keys as GenerationSection's shape; the sampling seed defaults to the
    study's. Keys it does not know stay where GenerationSettings refuses them by name."""
    if not isinstance(table, dict):
        return table
    rest = dict(table)
    limit = rest.pop("limit", None)
    sampling = {k: rest.pop(k) for k in list(rest) if k in Sampling.model_fields}
    sampling.setdefault("seed", seed)
    if "k" in rest:
        rest["ks"] = rest.pop("k")
    return {"settings": {"sampling": sampling, **rest}, **({} if limit is None else {"limit": limit})}


def _key(loc: tuple[int | str, ...]) -> str:
    """('models', 0, 'regime') -> 'models[0].regime'; [generation]'s nesting folded back."""
    parts: list[int | str] = list(loc)
    if parts[:2] == ["generation", "settings"]:
        folded: list[int | str] = ["generation"]
        parts = folded + [p for p in parts[2:] if p != "sampling"]
        parts = ["k" if p == "ks" else p for p in parts]
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


def _model_at(loc: tuple[int | str, ...]) -> type[BaseModel] | None:
    """The model class whose table `loc` (a path to one of its keys) is in."""
    cls: Any = Manifest
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        ann = cls.model_fields[part].annotation
        while get_origin(ann) in (list, tuple, Union, UnionType):
            ann = next(a for a in get_args(ann) if a is not type(None) and a is not Ellipsis)
        cls = ann
    return cls if isinstance(cls, type) and issubclass(cls, BaseModel) else None


def _problem(error: ErrorDetails) -> tuple[str, str]:
    loc = tuple(error["loc"])
    key = _key(loc)
    if error["type"] == "extra_forbidden":
        if loc[0] == "generation":
            allowed = _GENERATION_KEYS
        elif len(loc) == 1:
            return key, f"unknown section (allowed: {', '.join(SECTIONS)})"
        else:
            model = _model_at(loc)
            allowed = tuple(f for f in (model.model_fields if model else ()) if f != "key")
        return key, f"unknown key (allowed: {', '.join(sorted(allowed))})"
    if error["type"] == "missing":
        return key, "is required"
    message = error["msg"].removeprefix("Value error, ")
    value = error.get("input")
    return key, message + ("" if isinstance(value, (dict, list)) else f" (got {value!r})")


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
    study = data.get("study", {})
    if "generation" in data:
        data["generation"] = _generation_table(
            data["generation"], study.get("seed", 0) if isinstance(study, dict) else 0
        )
    elif isinstance(study, dict) and "seed" in study:
        data["generation"] = _generation_table({}, study["seed"])
    try:
        m = Manifest.model_validate({**data, "file": path}, context={"base": base_dir})
    except ValidationError as exc:
        raise where.fail(*_problem(exc.errors()[0])) from None
    except UserError as exc:  # a rule of a settings model that spans fields (e.g. exact + bootstrap)
        raise ManifestError(f"{path}: {exc}") from None
    return _cross_checked(m, where)


def _unique(names: list[str], section: str, where: Where) -> None:
    seen = set()
    for i, name in enumerate(names):
        if name in seen:
            raise where.fail(f"{section}[{i}].name", f"{name!r} is used twice")
        seen.add(name)


def _cross_checked(m: Manifest, where: Where) -> Manifest:
    """What no entry can check alone: names that refer to other entries, names used twice, and
    what an ablation needs; fills in the defaults that depend on other entries."""
    # a task name may appear twice with different modes: thinking on and off of one task
    _unique([f"{t.name} ({t.mode})" for t in m.tasks], "tasks", where)
    _unique([b.name for b in m.benchmarks], "benchmarks", where)
    _unique([x.name for x in m.models] + [r.name for r in m.runs], "models/runs", where)
    names = {"tasks": {t.name for t in m.tasks}, "benchmarks": {b.name for b in m.benchmarks}}
    model_names = {x.name for x in m.models}
    sections: tuple[tuple[str, Sequence[ModelSpec | RunSpec]], ...] = (("models", m.models), ("runs", m.runs))
    for section, entries in sections:
        for i, e in enumerate(entries):
            for kind in ("tasks", "benchmarks"):
                for n in getattr(e, kind) or ():
                    if n not in names[kind]:
                        raise where.fail(f"{section}[{i}].{kind}", f"{n!r} is not the name of a [[{kind}]] entry")
            if e.base is not None and e.base not in model_names:
                raise where.fail(f"{section}[{i}].base", f"{e.base!r} is not the name of a [[models]] entry")
    ablations = []
    for i, a in enumerate(m.ablations):
        key = f"ablations[{i}]"
        if (a.heads is None) == (a.heads_query is None):
            raise where.fail(
                key, 'give exactly one of heads = "L5H1,L7H3" or heads_query = {name = ..., params = {...}}'
            )
        if a.kind == "scale" and a.factor is None:
            raise where.fail(f"{key}.factor", 'is required when kind = "scale"')
        if a.label is not None and (a.label == CONTROL_LABEL or a.label.startswith(FALLBACK_LABEL)):
            raise where.fail(f"{key}.label", f"{a.label!r} is how headdb marks its own head sets; choose another name")
        for b in a.benchmarks or ():
            if b not in names["benchmarks"]:
                raise where.fail(f"{key}.benchmarks", f"{b!r} is not the name of a [[benchmarks]] entry")
        ablations.append(
            a.model_copy(update={"key": key, "benchmarks": a.benchmarks or tuple(b.name for b in m.benchmarks)})
        )
    models = [x if x.lineage else x.model_copy(update={"lineage": x.name}) for x in m.models]
    runs = [r if r.lineage else r.model_copy(update={"lineage": r.name}) for r in m.runs]
    return m.model_copy(update={"ablations": ablations, "models": models, "runs": runs})
