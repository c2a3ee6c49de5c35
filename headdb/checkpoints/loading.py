"""Load a local checkpoint directory offline, wrapped in a TransformerLens `TransformerBridge`.

`load_model(path)` validates the directory first and raises `headdb.errors.UserError` with one
clear line when the user pointed at the wrong thing:

- the path does not exist (and, when it looks like a hub name such as "Qwen/Qwen2.5-1.5B",
  says that headdb loads only local directories and how to fetch one; the network is never
  tried, whatever HF_HUB_OFFLINE says);
- the path is not a directory, or is a directory without config.json or without weights
  ("not a model directory");
- config.json names an architecture headdb does not support (the supported ones are listed).

It then loads the model with transformers (`local_files_only=True`, eager attention) and the
tokenizer with `AutoTokenizer`. On first use of `loaded.bridge` the model is wrapped in a bridge
built from the module (`build_bridge_from_module`, the documented way to bridge an
already-loaded HF model: the bridge swaps its components into the model in place, so
`loaded.hf_model` and `loaded.bridge` run the same weights). The bridge starts in its default
mode; the attribution engine turns on `use_attn_result` / `use_split_qkv_input` only while it
runs. Generation never runs through the bridge (see `LoadedModel`).

`weights_digest(path)` identifies a checkpoint's content cheaply, also for multi-GB weights;
see its docstring for exactly what it covers.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from headdb.checkpoints.integrity import check_weights
from headdb.errors import UserError

SUPPORTED_ARCHITECTURES = {
    "Qwen2ForCausalLM": "qwen2",
    "Qwen3ForCausalLM": "qwen3",
    "LlamaForCausalLM": "llama",
}

# Weight files transformers can load; the digest reads them only partially.
_WEIGHT_PATTERNS = ("*.safetensors", "pytorch_model*.bin")
# Small files that change what the model computes or how text is tokenised: hashed in full.
_METADATA_FILES = (
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "chat_template.jinja",
    "chat_template.json",
    "vocab.json",
    "merges.txt",
    "tokenizer.model",
)
_HUB_NAME = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_MIB = 1 << 20


@dataclass(frozen=True)
class ModelShape:
    """The architecture shape: everything the graph layout and the `models` table need."""

    architecture: str
    n_layers: int
    n_heads: int
    n_kv_heads: int
    d_model: int
    d_head: int
    d_mlp: int
    vocab_size: int
    config: dict = field(default_factory=dict, compare=False, hash=False, repr=False)

    @property
    def family(self) -> str:
        return SUPPORTED_ARCHITECTURES.get(self.architecture, self.architecture.lower())

    @property
    def model_key(self) -> str:
        """Stable id of the shape, e.g. "qwen2-L2-H4-KV2-D64-DH16-F256-V104".

        Checkpoints with equal keys share one graph layout (edge ids line up across them)."""
        return (
            f"{self.family}-L{self.n_layers}-H{self.n_heads}-KV{self.n_kv_heads}"
            f"-D{self.d_model}-DH{self.d_head}-F{self.d_mlp}-V{self.vocab_size}"
        )

    def models_row(self) -> dict:
        """The row for the warehouse `models` table."""
        return {
            "model_key": self.model_key,
            "architecture": self.architecture,
            "n_layers": self.n_layers,
            "n_heads": self.n_heads,
            "n_kv_heads": self.n_kv_heads,
            "d_model": self.d_model,
            "d_head": self.d_head,
            "vocab_size": self.vocab_size,
            "config_json": json.dumps(self.config, sort_keys=True, default=str),
        }


@dataclass
class LoadedModel:
    """A loaded checkpoint: the HF model, its tokenizer and shape, and (built on first use) the
    TransformerLens bridge that attribution hooks into.

    The bridge swaps its components into the HF model in place, and a model wrapped that way
    generates wrongly with HF's KV cache (seen with transformer-lens 4.3: correct with
    use_cache=False, garbage with it). So the bridge is built only when attribution asks for it,
    and generation uses `generation_model()`: the HF model itself while it is unwrapped, else a
    fresh copy loaded from disk.
    """

    path: Path
    hf_model: Any
    tokenizer: Any
    shape: ModelShape
    device: str
    dtype: Any  # torch.dtype
    _bridge: Any = field(default=None, repr=False)
    _plain: Any = field(default=None, repr=False)

    @property
    def model_key(self) -> str:
        return self.shape.model_key

    @property
    def bridged(self) -> bool:
        return self._bridge is not None

    @property
    def bridge(self) -> Any:
        if self._bridge is None:
            from transformer_lens.model_bridge.sources._bridge_builder import build_bridge_from_module

            # The bridge normalises the tokenizer it is given in place (sets a missing bos to
            # eos, may reload it with add_bos_token=True), so it gets a copy: `self.tokenizer`
            # stays exactly what AutoTokenizer returned, and task prompts tokenise as in the study.
            self._bridge = build_bridge_from_module(
                self.hf_model,
                self.shape.architecture,
                hf_config=self.hf_model.config,
                tokenizer=copy.deepcopy(self.tokenizer),
                dtype=self.dtype,
                device=self.device,
                model_name=str(self.path),
            )
            self._bridge.eval()
        return self._bridge

    def generation_model(self) -> Any:
        """An HF model safe for `generate()` (never one wrapped by the bridge)."""
        if self._bridge is None:
            return self.hf_model
        if self._plain is None:
            self._plain = _load_hf(self.path, self.dtype, self.device)
        return self._plain


def _load_hf(directory: Path, torch_dtype, device: str):
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # headdb draws its own progress; a bar per load is noise

    try:
        from safetensors import SafetensorError
    except ImportError:  # older safetensors: the error type lives in the rust module only
        SafetensorError = OSError
    try:
        model = AutoModelForCausalLM.from_pretrained(
            directory, local_files_only=True, dtype=torch_dtype, attn_implementation="eager"
        )
    except (OSError, ValueError, RuntimeError, SafetensorError) as exc:
        first = (str(exc).strip().splitlines() or [exc.__class__.__name__])[0][:200]
        raise UserError(
            f"cannot load the weights in {directory}: {first} "
            "(truncated or mismatched checkpoint? re-save or re-download it)"
        ) from None
    model.to(device)
    model.eval()
    return model


def _not_found(raw: str) -> UserError:
    if _HUB_NAME.match(raw) and not raw.startswith((".", "/", "~")):
        return UserError(
            f"{raw!r} is not a local directory: headdb loads models only from local directories "
            f"and never downloads; fetch it first (e.g. `huggingface-cli download {raw} "
            f"--local-dir DIR`) and pass DIR"
        )
    return UserError(f"model path {raw!r} does not exist; pass a local checkpoint directory")


def _weight_files(directory: Path) -> list[Path]:
    found: set[Path] = set()
    for pattern in _WEIGHT_PATTERNS:
        found.update(p for p in directory.glob(pattern) if p.is_file())
    return sorted(found)


def read_config(path) -> tuple[Path, dict]:
    """Validate a checkpoint directory and return (resolved dir, parsed config.json)."""
    raw = str(path)
    directory = Path(raw).expanduser()
    if not directory.exists():
        raise _not_found(raw)
    if not directory.is_dir():
        raise UserError(
            f"{raw!r} is a file, not a model directory; pass the checkpoint directory "
            "that holds config.json and the weights"
        )
    config_path = directory / "config.json"
    if not config_path.is_file():
        raise UserError(
            f"{raw!r} is not a model directory (no config.json); pass a Hugging Face "
            "checkpoint directory with config.json and *.safetensors weights"
        )
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"{config_path} is not valid JSON ({exc}); fix or re-save the checkpoint") from None
    if not isinstance(config, dict):
        raise UserError(f"{config_path} does not hold a JSON object; fix or re-save the checkpoint")
    if not _weight_files(directory):
        raise UserError(
            f"{raw!r} is not a model directory (config.json but no weights: expected "
            "model.safetensors, model-*.safetensors or pytorch_model*.bin)"
        )
    archs = config.get("architectures") or []
    arch = archs[0] if archs else None
    if arch not in SUPPORTED_ARCHITECTURES:
        supported = ", ".join(sorted(SUPPORTED_ARCHITECTURES))
        raise UserError(f"unsupported architecture {arch!r} in {config_path}; headdb supports {supported}")
    check_weights(directory)
    return directory.resolve(), config


def shape_from_config(config: dict) -> ModelShape:
    """The `ModelShape` described by a parsed config.json (supported architectures only)."""
    arch = (config.get("architectures") or [None])[0]
    n_heads = int(config["num_attention_heads"])
    d_model = int(config["hidden_size"])
    return ModelShape(
        architecture=arch,
        n_layers=int(config["num_hidden_layers"]),
        n_heads=n_heads,
        n_kv_heads=int(config.get("num_key_value_heads") or n_heads),
        d_model=d_model,
        d_head=int(config.get("head_dim") or d_model // n_heads),
        d_mlp=int(config["intermediate_size"]),
        vocab_size=int(config["vocab_size"]),
        config=config,
    )


def resolve_dtype(dtype, device: str):
    import torch

    if dtype is None or dtype == "auto":
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    names = {
        "float32": torch.float32,
        "fp32": torch.float32,
        "bfloat16": torch.bfloat16,
        "bf16": torch.bfloat16,
        "float16": torch.float16,
        "fp16": torch.float16,
    }
    if str(dtype) not in names:
        raise UserError(f"unknown dtype {dtype!r}; choose float32, bfloat16 or float16")
    return names[str(dtype)]


def load_tokenizer(directory: Path):
    """The checkpoint's tokenizer alone (cheap: plans check prompts with it before any model loads)."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(directory, local_files_only=True)
    except (OSError, ValueError) as exc:
        raise UserError(
            f"cannot load the tokenizer from {directory} ({exc.__class__.__name__}); "
            "the checkpoint directory must include its tokenizer files"
        ) from None


def load_model(path, *, dtype="auto", device: str | None = None) -> LoadedModel:
    """Load a local checkpoint directory offline (the `TransformerBridge` comes on first use).

    dtype: "auto" (bfloat16 on CUDA, float32 on CPU), "float32", "bfloat16", "float16" or a
    torch.dtype. device: default "cuda" when available, else "cpu".
    """
    directory, config = read_config(path)
    import torch

    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    torch_dtype = resolve_dtype(dtype, device)
    tokenizer = load_tokenizer(directory)
    model = _load_hf(directory, torch_dtype, device)
    return LoadedModel(
        path=directory,
        hf_model=model,
        tokenizer=tokenizer,
        shape=shape_from_config(config),
        device=str(device),
        dtype=torch_dtype,
    )


# ---------------------------------------------------------------------------- digest


def _cache_file() -> Path:
    from headdb.settings import runtime

    return runtime().cache.expanduser() / "weights-digests.json"


def _load_cache() -> dict:
    try:
        data = json.loads(_cache_file().read_text(encoding="utf-8"))
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _save_cache(cache: dict) -> None:
    target = _cache_file()
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f"{target.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(cache, sort_keys=True), encoding="utf-8")
        os.replace(tmp, target)  # atomic: a concurrent reader sees the old or the new file
    except OSError:
        pass  # the cache is an optimisation only


def _weight_file_fingerprint(path: Path, size: int) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        if path.suffix == ".safetensors" and size >= 8:
            # The JSON header lists every tensor's name, dtype, shape and byte offsets.
            n = int.from_bytes(fh.read(8), "little")
            if 0 < n <= min(size - 8, 100 * _MIB):
                h.update(b"header")
                h.update(fh.read(n))
        fh.seek(0)
        h.update(b"head")
        h.update(fh.read(_MIB))
        if size > _MIB:
            fh.seek(max(size - _MIB, _MIB))
            h.update(b"tail")
            h.update(fh.read(_MIB))
    return h.hexdigest()


def weights_digest(path) -> str:
    """A sha256 hex digest identifying a checkpoint directory's content, cheap for large weights.

    Covers, in sorted file-name order:
    - every weight file (`*.safetensors`, `pytorch_model*.bin`): its name, its size in bytes,
      and a sha256 over its safetensors JSON header (tensor names, dtypes, shapes, offsets),
      its first 1 MiB and its last 1 MiB. Bytes in the middle of a weight file are NOT read:
      two files of equal size and header that differ only there digest equal (training changes
      every tensor, so real checkpoints never collide this way);
    - these small files in full when present: config.json, generation_config.json,
      tokenizer.json, tokenizer_config.json, special_tokens_map.json, added_tokens.json,
      chat_template.jinja, chat_template.json, vocab.json, merges.txt, tokenizer.model.
    Not covered: anything else in the directory (optimizer.pt, trainer_state.json, ...), the
    directory's own name or location.
    Per-weight-file fingerprints are cached in $HEADDB_CACHE/weights-digests.json (default
    ~/.cache/headdb) keyed by (absolute path, size, mtime_ns), so an unchanged file is not
    re-read; a stale or unreadable cache is ignored.
    """
    directory = Path(path).expanduser()
    if not directory.is_dir():
        raise _not_found(str(path)) if not directory.exists() else UserError(f"{str(path)!r} is not a directory")
    cache = _load_cache()
    changed = False
    h = hashlib.sha256()
    for weight in _weight_files(directory):
        st = weight.stat()
        key = str(weight.resolve())
        hit = cache.get(key)
        if isinstance(hit, dict) and hit.get("size") == st.st_size and hit.get("mtime_ns") == st.st_mtime_ns:
            fp = hit["sha256"]
        else:
            fp = _weight_file_fingerprint(weight, st.st_size)
            cache[key] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": fp}
            changed = True
        h.update(f"weights\t{weight.name}\t{st.st_size}\t{fp}\n".encode())
    for name in sorted(_METADATA_FILES):
        meta = directory / name
        if meta.is_file():
            data = meta.read_bytes()
            h.update(f"file\t{name}\t{len(data)}\t{hashlib.sha256(data).hexdigest()}\n".encode())
    if changed:
        _save_cache(cache)
    return h.hexdigest()
