"""The vocabulary of headdb, defined once: allowed values and the typed settings of every job.

The CLI options, the study manifest's sections, the Python API and the run's config (and so its
config_hash) are all built from these models, so a setting has one name, one type and one
validation rule everywhere. A value a user got wrong becomes one UserError line that names the
option (`--steps`) or the manifest key (`study.toml: attribution.steps`) it came from.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Callable, Literal, get_args

from pydantic import BaseModel, ByteSize, ConfigDict, Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from headdb.errors import UserError

Regime = Literal["base", "sft", "grpo", "distill", "other"]
PostTraining = Literal["sft", "grpo", "distill", "other"]  # the regimes of a training run's checkpoints
Mode = Literal["plain", "think_on", "think_off"]
Chat = Literal["auto", "on", "off"]
Method = Literal["eap-ig", "eap", "exact"]
IgRule = Literal["midpoint", "left", "right"]  # alpha_k = (k+1/2)/m | k/m, k<m (EAP-IG, MIB) | k/m, k>=1
Rank = Literal["abs-mean", "mean-abs"]  # circuits rank edges by |mean score| (EAP-IG) | mean |score| (study)
Metric = Literal["kl", "logit-diff", "logprob"]
Align = Literal["truncate", "strict"]
InterventionKind = Literal["zero", "mean", "scale"]
RunKind = Literal["attribution", "generation", "import"]
TaskKind = Literal["circuit", "benchmark"]
Selection = Literal["topn", "threshold", "greedy"]
ExecutorKind = Literal["local", "ray"]

REGIMES: tuple[str, ...] = get_args(Regime)
POST_TRAINING: tuple[str, ...] = get_args(PostTraining)
MODES: tuple[str, ...] = get_args(Mode)
CHAT_MODES: tuple[str, ...] = get_args(Chat)
METHODS: tuple[str, ...] = get_args(Method)
IG_RULES: tuple[str, ...] = get_args(IgRule)
RANK_RULES: tuple[str, ...] = get_args(Rank)
METRICS: tuple[str, ...] = get_args(Metric)
ALIGN_RULES: tuple[str, ...] = get_args(Align)
INTERVENTION_KINDS: tuple[str, ...] = get_args(InterventionKind)
RUN_KINDS: tuple[str, ...] = get_args(RunKind)
TASK_KINDS: tuple[str, ...] = get_args(TaskKind)
SELECTIONS: tuple[str, ...] = get_args(Selection)
EXECUTORS: tuple[str, ...] = get_args(ExecutorKind)


def check_choice(what: str, value: Any, allowed: tuple[str, ...]) -> None:
    """One message for a value outside a vocabulary, wherever it is checked."""
    if value not in allowed:
        raise UserError(f"unknown {what} {value!r}; choose one of {', '.join(allowed)}")


class Settings(BaseModel):
    """Frozen, strict about unknown keys; subclasses list their fields with defaults."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class AttributionSettings(Settings):
    # Each field's description is the help of its command-line option (headdb.cli.ingest.option).
    method: Method = Field("eap-ig", description="eap-ig | eap | exact.")
    steps: int = Field(5, ge=1, description="Integrated-gradient steps (eap-ig).")
    ig_rule: IgRule = Field("midpoint", description="midpoint | left (EAP-IG, MIB) | right (the study's appendix).")
    metric: Metric = Field("kl", description="kl | logit-diff | logprob.")
    topn: int = Field(5000, ge=1, description="Edges kept in the top-n circuit.")
    threshold: float | None = Field(0.1, ge=0, le=1, description="tau of the simplified circuit.")
    greedy: int | None = Field(None, ge=1, description="Also a greedy circuit of this many edges.")
    curve: bool = Field(True, description="Measure the MIB faithfulness curve.")
    align: Align = Field("truncate", description="truncate | strict: unequal clean/corrupted lengths.")
    prepend_bos: bool = Field(
        False,
        description="Prepend the tokenizer's BOS (else its EOS, e.g. <|endoftext|>) to every prompt, as "
        "EAP-IG's tokenize_plus does (docs/attribution.md).",
    )
    rank: Rank = Field("abs-mean", description="abs-mean (|mean score|, EAP-IG) | mean-abs (mean |score|, the study).")
    bootstrap: int = Field(
        0, ge=0, description="Poisson-bootstrap replicates for per-head confidence (0 = off; e.g. 100)."
    )  # docs/confidence.md
    seed: int = Field(0, description="Seed of the bootstrap replicates' weights (pair runs by it).")
    # how the work is cut, not what a run means: not hashed
    batch_size: int = Field(8, ge=1, description="Prompt pairs per attribution batch (at most; see --max-memory).")
    max_memory: ByteSize | None = Field(
        None,
        description="Memory the run may use, weights included, e.g. 70GB or 24GiB (default: what the device has "
        "free); the batch shrinks to fit it (docs/attribution.md, Memory).",
    )

    def model_post_init(self, _context: Any) -> None:
        if self.method == "exact" and (self.bootstrap or self.rank != "abs-mean"):
            raise UserError(
                "exact patching keeps no per-example scores: it takes neither bootstrap replicates "
                "nor rank mean-abs; use method eap-ig for those"
            )

    def config(self, dtype: str, intervention: dict[str, Any] | None = None) -> dict[str, Any]:
        """The run config this job is keyed by (with the checkpoint and task digests). rank,
        bootstrap and seed appear only when they change the run (not at abs-mean, 0 replicates),
        so runs made before they existed keep their config_hash; so does prepend_bos when off."""
        cfg = self.model_dump(exclude={"batch_size", "max_memory"})
        if not cfg["prepend_bos"]:
            del cfg["prepend_bos"]
        if cfg["rank"] == "abs-mean":
            del cfg["rank"]
        if not cfg["bootstrap"]:
            del cfg["bootstrap"], cfg["seed"]
        return {**cfg, "dtype": dtype, "intervention": intervention}


class Sampling(Settings):
    samples: int = Field(4, ge=1, description="Samples per problem.")
    temperature: float = Field(0.6, ge=0, description="0 means greedy.")
    top_p: float = Field(0.95, gt=0, le=1, description="Sample from the smallest set of tokens with this probability.")
    top_k: int | None = Field(None, ge=1, description="Sample from the k most likely tokens.")
    min_p: float | None = Field(
        None, ge=0, le=1, description="Drop tokens below this fraction of the top one's probability."
    )
    max_new_tokens: int = Field(512, ge=1, description="Tokens generated per sample at most.")
    seed: int = Field(0, description="Sampling seed (and benchmark shuffles).")
    batch_size: int = Field(16, ge=1, description="Prompts per generation batch.")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    def config(self) -> dict[str, Any]:
        return self.model_dump()


class GenerationSettings(Settings):
    sampling: Sampling = Field(default_factory=Sampling)
    chat: Chat = Field("auto", description="auto | on | off: use the chat template.")
    mode: Mode = Field("plain", description="plain | think_on | think_off (tasks and generation alike).")
    ks: tuple[int, ...] = Field((1,), description="pass@k / maj@k values, e.g. 1,4,16.")

    @field_validator("ks")
    @classmethod
    def _positive(cls, ks: tuple[int, ...]) -> tuple[int, ...]:
        if not ks or any(k < 1 for k in ks):
            raise ValueError("must be positive integers such as 1,4,16")
        return ks

    def config(self, dtype: str, intervention: dict[str, Any] | None = None) -> dict[str, Any]:
        return {
            "sampling": self.sampling.config(),
            "chat": self.chat,
            "mode": self.mode,
            "ks": list(self.ks),
            "dtype": dtype,
            "intervention": intervention,
        }


# The labels headdb gives the head sets it makes itself (a manifest's own labels may not take them):
# the random layer-matched control of an ablation, and the heads of a heads_query's fallback.
CONTROL_LABEL = "control"
FALLBACK_LABEL = "fallback: "


class InterventionSettings(Settings):
    """A head set to intervene on: `heads` is the text form (L5H1,L7H3), resolved per model."""

    kind: InterventionKind = "zero"
    heads: str
    factor: float | None = None
    label: str | None = None  # CONTROL_LABEL, FALLBACK_LABEL + a query name, or a manifest's label

    @field_validator("factor")
    @classmethod
    def _finite(cls, factor: float | None) -> float | None:
        if factor is not None and not factor == factor:
            raise ValueError("must be a number")
        return factor

    def model_post_init(self, _context: Any) -> None:
        if self.kind == "scale" and self.factor is None:
            raise UserError("a scale intervention needs a factor, e.g. --scale L5H1=1.3 or factor = 1.3")


class Execution(Settings):
    """Where jobs run; recorded on each run (device, dtype), not part of what it means."""

    device: str | None = Field(None, description="cuda | cpu (default: cuda when available).")
    dtype: str = Field("auto", description="auto | float32 | bfloat16 | float16.")
    force: bool = Field(False, description="Recompute even if an ok run exists.")


class ExecutorSettings(Settings):
    """Which executor runs a plan's jobs, and (Ray) with what resources per checkpoint task."""

    executor: ExecutorKind = Field("local", description="local | ray: where the jobs run.")
    address: str | None = Field(None, description="Ray cluster address (default: start a local cluster).")
    gpus_per_job: float = Field(0.0, ge=0, description="GPUs per checkpoint task (Ray).")
    cpus_per_job: float = Field(1.0, gt=0, description="CPUs per checkpoint task (Ray).")
    workers: int = Field(
        1, ge=1, description="Checkpoints computed at once, each in its own process with its own model (local)."
    )

    def model_post_init(self, _context: Any) -> None:
        if self.executor == "local" and (self.address or self.gpus_per_job or self.cpus_per_job != 1):
            raise UserError("--address, --gpus-per-job and --cpus-per-job apply to --executor ray")
        if self.executor == "ray" and self.workers != 1:
            raise UserError(
                "--workers applies to --executor local; Ray runs as many as --cpus-per-job/--gpus-per-job allow"
            )


class Runtime(BaseSettings):
    """Where headdb reads and writes: each field from its option (`--db`, ...) when given, else
    from its environment variable (HEADDB_DB, HEADDB_DATA_PATH, HEADDB_LOCK_TIMEOUT,
    HEADDB_QUERIES, HEADDB_CACHE), else its default. Read in one place: `runtime()`."""

    model_config = SettingsConfigDict(env_prefix="HEADDB_", frozen=True, extra="forbid")

    db: str = Field(
        "headdb.duckdb", description="Warehouse: a DuckDB file, or 'ducklake:postgres:dbname=... host=...' (a lake)."
    )
    data_path: str | None = Field(None, description="A lake's folder of Parquet files, needed to create it.")
    lock_timeout: float = Field(300.0, ge=0, description="Seconds to wait for another writer.")
    queries: Annotated[tuple[Path, ...], NoDecode] = Field(
        (), description="Extra folders of named queries (in the variable: joined by ':')."
    )
    cache: Path = Field(Path("~/.cache/headdb"), description="Where headdb caches checkpoint weight digests.")

    @field_validator("queries", mode="before")
    @classmethod
    def _folders(cls, value: Any) -> Any:
        return tuple(p for p in value.split(os.pathsep) if p) if isinstance(value, str) else value


RUNTIME_ENV = {name: f"HEADDB_{name.upper()}" for name in Runtime.model_fields}


def runtime(**given: Any) -> Runtime:
    """The runtime settings: `given` values (options; None means not given) over the environment
    over the defaults. A bad value is one UserError line naming the option and its variable."""
    try:
        return Runtime(**{k: v for k, v in given.items() if v is not None and v != ()})
    except ValidationError as exc:
        first = exc.errors()[0]
        name = str(first["loc"][0]) if first["loc"] else "runtime"
        where = f"{as_option(name)} / {RUNTIME_ENV.get(name, name)}"
        raise UserError(f"{where}: {first['msg']} (got {first.get('input')!r})") from None


# ------------------------------------------------------------------------------ validation

Label = Callable[[str], str]


def as_option(field: str) -> str:
    """How a settings field is named on the command line."""
    return "--" + field.replace("_", "-")


def build(model: type[Settings], values: dict[str, Any], *, label: Label = as_option) -> Settings:
    """`model(**values)` with a UserError of one line naming the offending option or key."""
    try:
        return model(**{k: v for k, v in values.items() if v is not None or k in _nullable(model)})
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first["loc"] if not isinstance(p, int)) or model.__name__
        message = first["msg"].removeprefix("Value error, ")
        if first["type"] == "extra_forbidden":
            allowed = ", ".join(model.model_fields)
            raise UserError(f"{label(loc)}: unknown setting (allowed: {allowed})") from None
        value = first.get("input")
        shown = "" if isinstance(value, dict) else f" (got {value!r})"
        raise UserError(f"{label(loc)}: {message}{shown}") from None


def _nullable(model: type[Settings]) -> set[str]:
    """Fields whose explicit None means something (no threshold circuit), not 'use the default'."""
    return {name for name, f in model.model_fields.items() if f.default is None or name == "threshold"}
