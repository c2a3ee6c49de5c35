"""Circuit task files: (clean, corrupted, answer) pairs, their digest, prompts and token ids.

File format (JSONL, one object per non-blank line, or Parquet with the same columns):
    clean        str, required: the clean prompt
    corrupted    str, required: the corrupted prompt
    answer       str, required (a number is accepted and turned into its string): the expected
                 continuation of the clean prompt; metrics use its FIRST token, tokenised on its
                 own without special tokens (put a leading space in it if the continuation has one)
    id           str or int, optional, unique: the item id (default: the 0-based item index)
    wrong_answer str, optional: the contrasting answer (needed by the logit-diff metric)
    clean_prefix, corrupted_prefix  str, optional: text that opens the assistant turn in the
                 chat modes (e.g. a sampled answer prefix); in plain mode they are appended
    problem, level  str, optional: carried into the task_items table
Other keys with non-null values are kept, as a JSON object, in `meta`. A malformed line is reported by its 1-based
line number (Parquet: its 1-based row number) as a `UserError`.

Modes (`mode=`): the text a model sees for each prompt P with prefix X:
    plain      P + X, tokenised with the tokenizer's special tokens (e.g. a BOS if it adds one)
    think_on   chat template applied to one user turn P with the generation prompt, then X
    think_off  same, with thinking disabled: `enable_thinking=False` is passed when the template
               mentions `enable_thinking` (Qwen3); otherwise "<think>\\n\\n</think>\\n\\n" is
               appended to the opened assistant turn, as Qwen3's template does. Chat-mode text is
               tokenised without extra special tokens (the template already has them).

Digest: sha256 of the canonical JSON of {"mode": mode, "items": [...]}, the items in file order
with every field above (meta as parsed JSON), so JSONL and Parquet files with the same items
give the same digest, and so does a reordering of keys or whitespace; the file name does not
enter it.

Alignment of unequal token lengths (`encode_pairs(align=...)`): EAP-IG compares clean and
corrupted activations position by position, so both token sequences of an item must have the
same length. `align="truncate"` (default) keeps the first min(len_clean, len_corrupted) tokens
of both, i.e. cuts the END of the longer one: the shared beginning (system prompt, problem)
stays position-aligned and the evaluated position is the last kept token; truncated items are
listed in `EncodedPairs.truncated`. `align="strict"` raises a `UserError` naming the items.

BOS (`encode_pairs(prepend_bos=True)`, attribution setting `prepend_bos`): EAP-IG's
`tokenize_plus` (TransformerLens `to_tokens(prepend_bos=True)`) puts the tokenizer's BOS in front
of every prompt, and its EOS (`<|endoftext|>` for Qwen) when it has no BOS, unless the tokenizer
already adds that token itself. headdb by default feeds what the tokenizer gives (Qwen: no BOS),
so the same task scores differently; prepend_bos reproduces EAP-IG's token ids (the answers stay
as they are: their first token, without special tokens).
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from headdb.errors import UserError
from headdb.evals.prompts import render, task_chat, template_label
from headdb.settings import ALIGN_RULES, MODES, check_choice


_REQUIRED = ("clean", "corrupted", "answer")
_OPTIONAL_TEXT = ("wrong_answer", "clean_prefix", "corrupted_prefix", "problem", "level")
_COLUMNS = (
    "item_id",
    "clean",
    "corrupted",
    "answer",
    "wrong_answer",
    "clean_prefix",
    "corrupted_prefix",
    "problem",
    "level",
    "meta",
)


@dataclass(frozen=True)
class Task:
    """A parsed task file. `items` has one row per item with the columns in `_COLUMNS`."""

    name: str
    source: str
    mode: str
    digest: str
    items: pl.DataFrame
    kind: str = "circuit"

    @property
    def n_items(self) -> int:
        return self.items.height

    def tasks_row(self, tokenizer=None) -> dict:
        """The row for the warehouse `tasks` table (template needs the tokenizer in chat modes)."""
        return {
            "name": self.name,
            "kind": self.kind,
            "source": self.source,
            "digest": self.digest,
            "n_items": self.n_items,
            "mode": self.mode,
            "template": template_label(tokenizer, task_chat(self.mode), self.mode) if tokenizer is not None else None,
        }

    def task_items_frame(self) -> pl.DataFrame:
        """The rows for `task_items` (item_id, problem, answer, clean, corrupted, level, meta);
        wrong_answer, clean_prefix and corrupted_prefix, which have no column there, are added
        to meta when set."""
        metas = []
        for row in self.items.iter_rows(named=True):
            meta = json.loads(row["meta"]) if row["meta"] else {}
            for key in ("wrong_answer", "clean_prefix", "corrupted_prefix"):
                if row[key] is not None:
                    meta[key] = row[key]
            metas.append(json.dumps(meta, sort_keys=True, ensure_ascii=False) if meta else None)
        return self.items.select("item_id", "problem", "answer", "clean", "corrupted", "level").with_columns(
            pl.Series("meta", metas, dtype=pl.Utf8)
        )


@dataclass
class EncodedPairs:
    """Token ids of a task's prompts for one tokenizer, equal length per item (see `align`)."""

    item_ids: list[str]
    clean: list[list[int]]
    corrupted: list[list[int]]
    answer: list[int]  # first token of the answer
    wrong: list[int]  # first token of wrong_answer, -1 when absent
    truncated: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.item_ids)


# ------------------------------------------------------------------------------- parsing


def _text(value, what: str, where: str, *, required: bool, numbers: bool = False):
    if value is None:
        if required:
            raise UserError(f"{where}: missing field {what!r}")
        return None
    if numbers and isinstance(value, (int, float)) and not isinstance(value, bool):
        if isinstance(value, float) and not math.isfinite(value):
            raise UserError(f"{where}: field {what!r} is not a finite number")
        return str(value)
    if not isinstance(value, str):
        raise UserError(f"{where}: field {what!r} must be a string, got {type(value).__name__}")
    if required and not value:
        raise UserError(f"{where}: field {what!r} is empty")
    return value


def _item(obj, index: int, where: str) -> dict:
    if not isinstance(obj, dict):
        raise UserError(f"{where}: expected a JSON object with clean, corrupted, answer")
    row = {
        "clean": _text(obj.get("clean"), "clean", where, required=True),
        "corrupted": _text(obj.get("corrupted"), "corrupted", where, required=True),
        "answer": _text(obj.get("answer"), "answer", where, required=True, numbers=True),
    }
    for key in _OPTIONAL_TEXT:
        row[key] = _text(obj.get(key), key, where, required=False, numbers=key in ("wrong_answer", "level"))
    raw_id = obj.get("id")
    if raw_id is None:
        row["item_id"] = str(index)
    elif isinstance(raw_id, (str, int)) and not isinstance(raw_id, bool) and str(raw_id) != "":
        row["item_id"] = str(raw_id)
    else:
        raise UserError(f"{where}: field 'id' must be a non-empty string or an integer")
    # Null extras are dropped: a Parquet column that only some items fill reads as null for
    # the others, and JSONL and Parquet files with the same items must digest the same.
    extra = {k: v for k, v in obj.items() if k not in _REQUIRED + _OPTIONAL_TEXT + ("id",) and v is not None}
    row["meta"] = json.dumps(extra, sort_keys=True, ensure_ascii=False, default=str) if extra else None
    return row


def _read_jsonl(path: Path) -> list[tuple[dict, str]]:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    rows = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}:{lineno}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise UserError(f"{where}: malformed JSON ({exc.msg} at column {exc.colno})") from None
        rows.append((obj, where))
    return rows


def _read_parquet(path: Path) -> list[tuple[dict, str]]:
    try:
        frame = pl.read_parquet(path)
    except Exception as exc:  # polars raises several error types for unreadable files
        raise UserError(f"{path}: not a readable Parquet file ({exc.__class__.__name__})") from None
    missing = [c for c in _REQUIRED if c not in frame.columns]
    if missing:
        raise UserError(f"{path}: missing column(s) {', '.join(missing)}; a task needs clean, corrupted, answer")
    return [(row, f"{path}: row {i}") for i, row in enumerate(frame.iter_rows(named=True), start=1)]


def load_task(path, *, mode: str = "plain", name: str | None = None) -> Task:
    """Read a JSONL (.jsonl/.json) or Parquet (.parquet) task file; see the module docstring."""
    check_choice("task mode", mode, MODES)
    p = Path(path).expanduser()
    if not p.is_file():
        raise UserError(f"task file {str(path)!r} does not exist")
    rows = _read_parquet(p) if p.suffix.lower() == ".parquet" else _read_jsonl(p)
    if not rows:
        raise UserError(f"{p}: no items; a task file needs at least one (clean, corrupted, answer) line")
    items, seen = [], {}
    for index, (obj, where) in enumerate(rows):
        item = _item(obj, index, where)
        if item["item_id"] in seen:
            raise UserError(f"{where}: duplicate id {item['item_id']!r} (first at {seen[item['item_id']]})")
        seen[item["item_id"]] = where
        items.append(item)
    frame = pl.DataFrame({c: [it[c] for it in items] for c in _COLUMNS}, schema={c: pl.Utf8 for c in _COLUMNS})
    return Task(name=name or p.stem, source=str(p), mode=mode, digest=task_digest(frame, mode), items=frame)


def task_digest(items: pl.DataFrame, mode: str) -> str:
    """sha256 over the canonical JSON of the items (file order) and the mode."""
    canon = []
    for row in items.select(list(_COLUMNS)).iter_rows(named=True):
        row = dict(row)
        row["meta"] = json.loads(row["meta"]) if row["meta"] else None
        canon.append(row)
    blob = json.dumps({"mode": mode, "items": canon}, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


# ------------------------------------------------------------------------------ prompts


def render_prompts(task: Task, tokenizer) -> tuple[list[str], list[str]]:
    """(clean texts, corrupted texts) of every item, rendered for the task's mode."""
    chat = task_chat(task.mode)
    rows = task.items.select("clean", "clean_prefix", "corrupted", "corrupted_prefix").iter_rows()
    clean, corrupted = [], []
    for c, cp, k, kp in rows:
        clean.append(render(tokenizer, c, chat=chat, mode=task.mode, prefix=cp))
        corrupted.append(render(tokenizer, k, chat=chat, mode=task.mode, prefix=kp))
    return clean, corrupted


def _first_token(tokenizer, text: str, what: str, item_id: str) -> int:
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if not ids:
        raise UserError(f"item {item_id!r}: {what} {text!r} tokenises to nothing")
    return int(ids[0])


def bos_id(tokenizer) -> int:
    """The token EAP-IG (TransformerLens) prepends: the BOS, else the EOS (e.g. <|endoftext|>)."""
    token = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    if token is None:
        raise UserError("prepend_bos: the tokenizer has neither a BOS nor an EOS token to prepend")
    return int(token)


def encode_pairs(task: Task, tokenizer, *, align: str = "truncate", prepend_bos: bool = False) -> EncodedPairs:
    """Tokenise every item's clean/corrupted prompt and answers; equalise lengths per `align`;
    prepend_bos: start every prompt with EAP-IG's BOS (module docstring)."""
    check_choice("align", align, ALIGN_RULES)
    clean_txt, corrupt_txt = render_prompts(task, tokenizer)
    special = task.mode == "plain"
    enc_clean = tokenizer(clean_txt, add_special_tokens=special)["input_ids"]
    enc_corrupt = tokenizer(corrupt_txt, add_special_tokens=special)["input_ids"]
    if prepend_bos:  # unless the tokenizer put it there already (TransformerLens does the same)
        bos = bos_id(tokenizer)
        enc_clean = [ids if ids[:1] == [bos] else [bos, *ids] for ids in enc_clean]
        enc_corrupt = [ids if ids[:1] == [bos] else [bos, *ids] for ids in enc_corrupt]
    out = EncodedPairs(item_ids=[], clean=[], corrupted=[], answer=[], wrong=[])
    mismatched = []
    for row, c_ids, k_ids in zip(task.items.iter_rows(named=True), enc_clean, enc_corrupt):
        item_id = row["item_id"]
        if not c_ids or not k_ids:
            raise UserError(f"item {item_id!r}: a prompt tokenises to nothing")
        if len(c_ids) != len(k_ids):
            mismatched.append(f"{item_id} ({len(c_ids)} vs {len(k_ids)} tokens)")
            n = min(len(c_ids), len(k_ids))
            c_ids, k_ids = c_ids[:n], k_ids[:n]
            out.truncated.append(item_id)
        out.item_ids.append(item_id)
        out.clean.append(list(c_ids))
        out.corrupted.append(list(k_ids))
        out.answer.append(_first_token(tokenizer, row["answer"], "answer", item_id))
        wrong = row["wrong_answer"]
        out.wrong.append(-1 if wrong is None else _first_token(tokenizer, wrong, "wrong_answer", item_id))
    if mismatched and align == "strict":
        shown = ", ".join(mismatched[:5]) + (f" and {len(mismatched) - 5} more" if len(mismatched) > 5 else "")
        raise UserError(
            f"clean and corrupted prompts differ in token length for item(s) {shown}; "
            "make them equal or use align='truncate'"
        )
    return out
