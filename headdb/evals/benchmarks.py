"""Benchmark loaders: local JSONL / JSON / Parquet / CSV files and a built-in synthetic set.

`load_benchmark(source)` returns a polars DataFrame with one row per item and the columns

    item_id  problem  answer  level  meta  style  prompt

``problem`` is the raw problem text (for multiple choice: the question followed by the lettered
choices), ``answer`` the gold answer as a string (GSM8K: the number after ``####``; multiple
choice: the letter), ``level`` a string or null, ``meta`` a JSON object as a string (the file's
other scalar fields plus preset extras such as TriviaQA ``aliases``), ``style`` the grading style
for `headdb.evals.grading.grade`, and ``prompt`` = `build_prompt(problem, style, suffix)`, the text a
model is given: the problem, a blank line and the study's suffix "Let's think step by step and
output the final answer within \\boxed{}." (``suffix=""`` leaves the problem as is).

Presets (auto-detected from the column names, or ``preset=``):

==========  ===========================================================  =======
preset      columns                                                      style
==========  ===========================================================  =======
math500     problem, answer, level, subject, unique_id                   math
aime        ID, Problem, Answer[, Solution]  or id, problem, answer,     math
            solution, url, year (AIME 2024/2025 layouts)
amc         question (or problem), answer[, id]  (AMC23)                 math
gsm8k       question, answer ("... #### 42")                             gsm8k
gpqa        Question, Correct Answer, Incorrect Answer 1..3[, Record ID] mc
triviaqa    question, answer {value, aliases} or a list of answers        text
math        problem, answer[, id, level]  (any other math file)          math
==========  ===========================================================  =======

GPQA choices are shuffled per item, deterministically under ``seed``: each choice is ranked by
SHA-256 of (seed, item key, original choice number). ``fields={"problem": COL, "answer": COL}``
maps other column names (roles: problem, answer, item_id, level; gpqa: question, correct,
incorrect1..3). Item ids come from the preset's id column, else the 0-based record number.

The built-in ``synthetic-arithmetic`` benchmark (`synthetic_arithmetic`) needs no file:
``load_benchmark("synthetic-arithmetic:n=50,seed=1,levels=1-3")``; ``suffix=none`` in the spec
gives the bare question without the study's prompt suffix (the offline demo's short prompts).
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence, Union

import polars as pl

from headdb.errors import UserError

__all__ = [
    "PROMPT_SUFFIX",
    "PRESETS",
    "SYNTHETIC_NAME",
    "COLUMNS",
    "build_prompt",
    "load_benchmark",
    "detect_preset",
    "parse_fields",
    "synthetic_arithmetic",
    "items_digest",
]

PROMPT_SUFFIX = "Let's think step by step and output the final answer within \\boxed{}."
SYNTHETIC_NAME = "synthetic-arithmetic"
COLUMNS = ("item_id", "problem", "answer", "level", "meta", "style", "prompt")
_SCHEMA = {c: pl.Utf8 for c in COLUMNS}
_STYLES = ("math", "gsm8k", "mc", "text")
_LETTERS = "ABCDEFGHIJ"


def build_prompt(problem: str, style: str = "math", suffix: Optional[str] = None) -> str:
    """The text given to a model: ``problem``, a blank line, then ``suffix``.

    ``suffix=None`` uses the study's `PROMPT_SUFFIX` (for every style: the graders read
    ``\\boxed{}`` first for all styles); ``suffix=""`` returns the problem unchanged.
    """
    if style not in _STYLES:
        raise UserError(f"unknown grading style {style!r}; use one of {', '.join(_STYLES)}")
    suffix = PROMPT_SUFFIX if suffix is None else suffix
    problem = problem.rstrip()
    return f"{problem}\n\n{suffix}" if suffix else problem


# --------------------------------------------------------------------------------------------
# Presets


@dataclass(frozen=True)
class Preset:
    name: str
    style: str
    roles: dict  # role -> candidate column names, first present wins
    required: tuple
    meta_extra: dict = field(default_factory=dict)


PRESETS: dict[str, Preset] = {
    "math500": Preset(
        "math500",
        "math",
        {"problem": ("problem",), "answer": ("answer",), "level": ("level",), "item_id": ("unique_id", "id")},
        ("problem", "answer"),
    ),
    "aime": Preset(
        "aime",
        "math",
        {"problem": ("Problem", "problem"), "answer": ("Answer", "answer"), "item_id": ("ID", "id"), "level": ()},
        ("problem", "answer"),
    ),
    "amc": Preset(
        "amc",
        "math",
        {"problem": ("question", "problem"), "answer": ("answer",), "item_id": ("id",), "level": ()},
        ("problem", "answer"),
    ),
    "gsm8k": Preset(
        "gsm8k",
        "gsm8k",
        {"problem": ("question",), "answer": ("answer",), "item_id": ("id",), "level": ()},
        ("problem", "answer"),
    ),
    "gpqa": Preset(
        "gpqa",
        "mc",
        {
            "question": ("Question",),
            "correct": ("Correct Answer",),
            "incorrect1": ("Incorrect Answer 1",),
            "incorrect2": ("Incorrect Answer 2",),
            "incorrect3": ("Incorrect Answer 3",),
            "item_id": ("Record ID",),
            "level": (),
        },
        ("question", "correct", "incorrect1", "incorrect2", "incorrect3"),
    ),
    "triviaqa": Preset(
        "triviaqa",
        "text",
        {"problem": ("question",), "answer": ("answer", "answers"), "item_id": ("question_id", "id"), "level": ()},
        ("problem", "answer"),
    ),
    "math": Preset(
        "math",
        "math",
        {"problem": ("problem",), "answer": ("answer",), "item_id": ("id", "item_id"), "level": ("level",)},
        ("problem", "answer"),
    ),
}

_PRESET_ALIASES = {
    "math-500": "math500",
    "math_500": "math500",
    "aime24": "aime",
    "aime2024": "aime",
    "aime25": "aime",
    "aime2025": "aime",
    "amc23": "amc",
    "gpqa-diamond": "gpqa",
    "gpqa_diamond": "gpqa",
    "trivia_qa": "triviaqa",
    "trivia-qa": "triviaqa",
    "custom": "math",
}

_GPQA_COLS = {"Question", "Correct Answer", "Incorrect Answer 1", "Incorrect Answer 2", "Incorrect Answer 3"}


def _preset_named(name: str) -> Preset:
    key = name.strip().lower()
    key = _PRESET_ALIASES.get(key, key)
    if key not in PRESETS:
        raise UserError(f"unknown benchmark preset {name!r}; use one of {', '.join(PRESETS)}")
    return PRESETS[key]


def detect_preset(columns: Iterable[str], first_record: Optional[dict] = None) -> Optional[str]:
    """The preset a layout matches, from its column names (and, for ``question``/``answer``
    files, the first record's answer: a dict or list means TriviaQA, ``####`` means GSM8K,
    anything else AMC). None when nothing matches."""
    cols = set(columns)
    if _GPQA_COLS <= cols:
        return "gpqa"
    if {"Problem", "Answer"} <= cols:
        return "aime"
    if {"problem", "answer"} <= cols:
        if cols & {"level", "subject", "unique_id"}:
            return "math500"
        if cols & {"year", "url", "solution"}:
            return "aime"
        return "math"
    if "question" in cols and "answers" in cols and "answer" not in cols:
        return "triviaqa"
    if {"question", "answer"} <= cols:
        ans = (first_record or {}).get("answer")
        if isinstance(ans, (dict, list)):
            return "triviaqa"
        if isinstance(ans, str) and "####" in ans:
            return "gsm8k"
        return "amc"
    return None


def parse_fields(spec: Union[str, dict, None]) -> Optional[dict]:
    """``"problem=q,answer=a"`` (the CLI's ``--fields``) as ``{"problem": "q", "answer": "a"}``."""
    if spec is None or isinstance(spec, dict):
        return spec
    out = {}
    for part in spec.split(","):
        if not part.strip():
            continue
        if "=" not in part:
            raise UserError(
                f"bad --fields entry {part.strip()!r}; write ROLE=COLUMN, e.g. "
                "--fields problem=question,answer=solution"
            )
        role, col = part.split("=", 1)
        out[role.strip()] = col.strip()
    return out


# --------------------------------------------------------------------------------------------
# Reading files


@dataclass
class _Records:
    path: Path
    unit: str  # "line" or "row"
    columns: list
    rows: list  # (location number, dict)


def _read_jsonl(path: Path, text: str) -> _Records:
    rows = []
    columns: dict = {}
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            raise UserError(f"{path} line {lineno}: malformed JSON ({e.msg}); fix or remove that line") from None
        if not isinstance(rec, dict):
            raise UserError(
                f"{path} line {lineno}: expected a JSON object, got {type(rec).__name__}; write one object per line"
            )
        rows.append((lineno, rec))
        for k in rec:
            columns.setdefault(k, None)
    return _Records(path, "line", list(columns), rows)


def _read_json_array(path: Path, text: str) -> _Records:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise UserError(f"{path} line {e.lineno}: malformed JSON ({e.msg}); fix the file") from None
    if isinstance(data, dict):
        # {"data": [...]} / {"rows": [...]} wrappers
        lists = [v for v in data.values() if isinstance(v, list)]
        if len(lists) != 1:
            raise UserError(f"{path}: expected a JSON list of objects or JSON lines; convert it")
        data = lists[0]
    if not isinstance(data, list):
        raise UserError(f"{path}: expected a JSON list of objects or JSON lines; convert it")
    rows, columns = [], {}
    for i, rec in enumerate(data, start=1):
        if not isinstance(rec, dict):
            raise UserError(f"{path} record {i}: expected a JSON object; fix the file")
        rows.append((i, rec))
        for k in rec:
            columns.setdefault(k, None)
    return _Records(path, "record", list(columns), rows)


def _read_csv(path: Path) -> _Records:
    rows = []
    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f, delimiter=delimiter)
        try:
            header = next(reader)
        except StopIteration:
            raise UserError(f"{path}: empty CSV file; add a header line and rows") from None
        header = [h.strip() for h in header]
        start = reader.line_num + 1
        for values in reader:
            if not any(v.strip() for v in values):
                start = reader.line_num + 1
                continue
            rec = {h: (v if v != "" else None) for h, v in zip(header, values)}
            rows.append((start, rec))
            start = reader.line_num + 1
    return _Records(path, "line", header, rows)


_NESTED = (pl.List, pl.Struct, pl.Array)


def _read_parquet(path: Path) -> _Records:
    try:
        schema = pl.read_parquet_schema(path)
    except Exception as e:  # noqa: BLE001 - any unreadable file is the user's to fix
        raise UserError(f"{path}: not a readable Parquet file ({e}); check the file") from None
    columns = list(schema)
    return _Records(path, "row", columns, [])


def _load_parquet_rows(rec: _Records, keep: list) -> None:
    df = pl.read_parquet(rec.path, columns=keep)
    rec.rows = [(i, r) for i, r in enumerate(df.to_dicts(), start=1)]


def _read_file(path: Path) -> _Records:
    suffix = path.suffix.lower()
    if suffix in (".parquet", ".pq"):
        return _read_parquet(path)
    if suffix in (".csv", ".tsv"):
        return _read_csv(path)
    if suffix in (".jsonl", ".ndjson", ".json"):
        try:
            text = path.read_text(encoding="utf-8-sig")
        except UnicodeDecodeError:
            raise UserError(f"{path}: not UTF-8 text; re-encode it as UTF-8") from None
        if suffix == ".json" and text.lstrip()[:1] == "[":
            return _read_json_array(path, text)
        if suffix == ".json" and text.lstrip()[:1] == "{":
            first = text.lstrip().splitlines()[0] if text.strip() else ""
            try:
                json.loads(first)
            except json.JSONDecodeError:
                return _read_json_array(path, text)
        return _read_jsonl(path, text)
    raise UserError(
        f"{path}: unsupported benchmark file type {suffix or '(none)'}; use .jsonl, .json, .parquet or .csv"
    )


# --------------------------------------------------------------------------------------------
# Converting records


def _is_missing(v: Any) -> bool:
    if v is None:
        return True
    if isinstance(v, float) and math.isnan(v):
        return True
    if isinstance(v, str) and not v.strip():
        return True
    if isinstance(v, (list, dict)) and not v:
        return True
    return False


def _as_text(v: Any) -> str:
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    if isinstance(v, (int, float)):
        return repr(v)
    return str(v).strip()


def _json_scalar(v: Any) -> bool:
    return v is None or isinstance(v, (str, int, float, bool))


def _gsm8k_gold(text: str) -> str:
    if "####" in text:
        text = text.rsplit("####", 1)[1]
    text = text.strip().replace("$", "")
    text = re.sub(r"(?<=\d),(?=\d{3}(?!\d))", "", text)
    return text.strip().rstrip(".").strip()


def _answer_and_aliases(v: Any) -> tuple[Optional[str], list]:
    """TriviaQA-style answers: {value, aliases}, a list, or a plain value."""
    aliases: list = []
    if isinstance(v, dict):
        main = v.get("value", v.get("answer"))
        raw = v.get("aliases") or v.get("normalized_aliases") or []
        aliases = [_as_text(a) for a in raw if not _is_missing(a)]
        if _is_missing(main):
            main = aliases[0] if aliases else None
    elif isinstance(v, list):
        vals = [_as_text(a) for a in v if not _is_missing(a)]
        main = vals[0] if vals else None
        aliases = vals[1:]
    else:
        main = v
    if _is_missing(main):
        return None, []
    main_s = _as_text(main)
    seen = {main_s}
    out = []
    for a in aliases:
        if a not in seen:
            seen.add(a)
            out.append(a)
    return main_s, out


def _gpqa_order(seed: int, key: str, n: int) -> list[int]:
    def rank(i: int) -> str:
        return hashlib.sha256(f"{seed}\x00{key}\x00{i}".encode()).hexdigest()

    return sorted(range(n), key=rank)


class _Converter:
    def __init__(self, recs: _Records, preset: Preset, fields: Optional[dict], style: str, seed: int):
        self.recs, self.preset, self.style, self.seed = recs, preset, style, seed
        roles = {r: tuple(c) for r, c in preset.roles.items()}
        for role, col in (fields or {}).items():
            if role not in roles:
                raise UserError(
                    f"unknown field role {role!r} for preset {preset.name}; use "
                    f"{', '.join(roles)} (e.g. --fields problem=COLUMN,answer=COLUMN)"
                )
            roles[role] = (col,)
        self.roles = roles
        self.user_fields = dict(fields or {})

    def where(self, num: int) -> str:
        return f"{self.recs.path} {self.recs.unit} {num}"

    def column_for(self, role: str, rec: dict) -> Optional[str]:
        for c in self.roles.get(role, ()):
            if c in rec:
                return c
        return None

    def get(self, role: str, rec: dict, num: int, required: bool) -> Any:
        col = self.column_for(role, rec)
        val = rec.get(col) if col is not None else None
        if required and _is_missing(val):
            cands = self.roles.get(role) or (role,)
            name = col or cands[0]
            hint = (
                f"add it or map another column with --fields {role}=COLUMN"
                if role in ("problem", "answer")
                else "add it or fix the row"
            )
            raise UserError(f"{self.where(num)}: missing field {name!r} ({role}, preset {self.preset.name}); {hint}")
        return val

    def used_columns(self, rec: dict) -> set:
        return {c for role in self.roles for c in [self.column_for(role, rec)] if c}

    def convert(self, index: int, num: int, rec: dict) -> dict:
        p = self.preset
        meta: dict = {}
        raw_id = self.get("item_id", rec, num, required=False) if "item_id" in self.roles else None
        item_id = _as_text(raw_id) if not _is_missing(raw_id) else str(index)
        level = self.get("level", rec, num, required=False) if "level" in self.roles else None
        level = None if _is_missing(level) else _as_text(level)

        if p.name == "gpqa" and "problem" not in self.user_fields:
            question = _as_text(self.get("question", rec, num, True))
            choices = [
                _as_text(self.get(r, rec, num, True)) for r in ("correct", "incorrect1", "incorrect2", "incorrect3")
            ]
            order = _gpqa_order(self.seed, item_id if not _is_missing(raw_id) else question, len(choices))
            letters = _LETTERS[: len(choices)]
            shuffled = {letters[pos]: choices[orig] for pos, orig in enumerate(order)}
            answer = letters[order.index(0)]
            problem = question + "\n\n" + "\n".join(f"{k}) {v}" for k, v in shuffled.items())
            meta.update(choices=shuffled, correct_text=choices[0], shuffle_seed=self.seed)
        else:
            problem = _as_text(self.get("problem", rec, num, True))
            ans_raw = self.get("answer", rec, num, True)
            if self.style == "text" or isinstance(ans_raw, (dict, list)):
                answer, aliases = _answer_and_aliases(ans_raw)
                if answer is None:
                    self.get("answer", {}, num, True)  # reports the missing field
                if aliases:
                    meta["aliases"] = aliases
            else:
                answer = _as_text(ans_raw)
            if self.style == "gsm8k":
                if isinstance(ans_raw, str) and "####" in ans_raw:
                    meta["solution"] = ans_raw.strip()
                answer = _gsm8k_gold(answer)
                if not answer:
                    self.get("answer", {}, num, True)
            elif self.style == "mc":
                answer = answer.strip().strip("()").upper()

        used = self.used_columns(rec)
        for k, v in rec.items():
            if k not in used and k not in meta and _json_scalar(v) and not _is_missing(v):
                meta[k] = v
        return {
            "item_id": item_id,
            "problem": problem,
            "answer": answer,
            "level": level,
            "meta": json.dumps(meta, sort_keys=True, ensure_ascii=False, default=str),
            "style": self.style,
            "_num": num,
        }


# --------------------------------------------------------------------------------------------
# Public loaders


def load_benchmark(
    source: Union[str, Path],
    *,
    preset: Optional[str] = None,
    fields: Union[dict, str, None] = None,
    style: Optional[str] = None,
    seed: int = 0,
    suffix: Optional[str] = None,
    limit: Optional[int] = None,
) -> pl.DataFrame:
    """Load a benchmark file (JSONL, JSON, Parquet, CSV) or the built-in synthetic set.

    ``preset``: a preset name (see the module docstring); auto-detected when None.
    ``fields``: role -> column mapping (dict or ``"problem=q,answer=a"``).
    ``style``: the grading style, overriding the preset's. ``seed``: GPQA choice shuffling and
    the synthetic set's default seed. ``suffix``: the prompt suffix (None: the study's).
    ``limit``: keep only the first N items. Raises `UserError` for missing files, unknown
    layouts, malformed lines, missing fields and duplicate item ids.
    """
    if style is not None and style not in _STYLES:
        raise UserError(f"unknown grading style {style!r}; use one of {', '.join(_STYLES)}")
    if limit is not None and limit < 0:
        raise UserError(f"limit must be >= 0, got {limit}")
    src = str(source)
    name = src.split(":", 1)[0].strip().lower().replace("_", "-")
    if name == SYNTHETIC_NAME and not Path(src).exists():
        opts = {"suffix": suffix, **_parse_synthetic_options(src, seed)}  # the spec's suffix= wins
        df = synthetic_arithmetic(**opts, style=style or "math")
        return df.head(limit) if limit is not None else df

    path = Path(src).expanduser()
    if not path.exists():
        raise UserError(
            f"benchmark file not found: {src}; pass a .jsonl/.json/.parquet/.csv path or "
            f"the built-in name {SYNTHETIC_NAME}"
        )
    if path.is_dir():
        raise UserError(f"{src} is a directory; pass a benchmark file inside it")
    fields = parse_fields(fields)
    recs = _read_file(path)

    if preset is not None:
        pre = _preset_named(preset)
    else:
        first = recs.rows[0][1] if recs.rows else None
        if recs.unit == "row" and first is None:
            # Parquet: peek at the first row for the question/answer disambiguation.
            cols = [c for c in ("answer", "answers") if c in recs.columns]
            if cols:
                peek = pl.read_parquet(path, columns=cols, n_rows=1).to_dicts()
                first = peek[0] if peek else None
        detected = detect_preset(recs.columns, first)
        if detected is None and fields:
            detected = "math"
        if detected is None:
            shown = ", ".join(list(recs.columns)[:12])
            raise UserError(
                f"cannot tell the layout of {path} (columns: {shown}); pass --preset "
                f"({', '.join(PRESETS)}) or --fields problem=COLUMN,answer=COLUMN"
            )
        pre = PRESETS[detected]
    use_style = style or pre.style

    if recs.unit == "row":
        schema = pl.read_parquet_schema(path)
        role_cols = {c for cands in pre.roles.values() for c in cands}
        role_cols |= set((fields or {}).values())
        keep = [c for c, dt in schema.items() if c in role_cols or not isinstance(dt, _NESTED)]
        _load_parquet_rows(recs, keep)

    conv = _Converter(recs, pre, fields, use_style, seed)
    rows = []
    seen: dict = {}
    for index, (num, rec) in enumerate(recs.rows):
        if limit is not None and len(rows) >= limit:
            break
        row = conv.convert(index, num, rec)
        if row["item_id"] in seen:
            raise UserError(
                f"{conv.where(num)}: duplicate item id {row['item_id']!r} (first at "
                f"{recs.unit} {seen[row['item_id']]}); make the ids unique"
            )
        seen[row["item_id"]] = num
        row.pop("_num")
        row["prompt"] = build_prompt(row["problem"], use_style, suffix)
        rows.append(row)
    if not rows and limit != 0:
        raise UserError(f"{path}: no items found; the file is empty")
    return pl.DataFrame(rows, schema=_SCHEMA) if rows else pl.DataFrame(schema=_SCHEMA)


def items_digest(df: pl.DataFrame) -> str:
    """SHA-256 (hex) over the loaded items: every column of `COLUMNS` present, row order kept."""
    h = hashlib.sha256()
    cols = [c for c in COLUMNS if c in df.columns]
    h.update(json.dumps(cols).encode())
    for row in df.select(cols).iter_rows():
        h.update(json.dumps(row, ensure_ascii=False).encode())
        h.update(b"\n")
    return h.hexdigest()


# --------------------------------------------------------------------------------------------
# Synthetic arithmetic

_LEVEL_TEXT = {
    1: "one-digit addition without carry",
    2: "two-digit addition with a carry",
    3: "three-digit addition or subtraction",
    4: "multi-step expression",
    5: "two-digit subtraction without borrow",
}


def _synthetic_item(level: int, rng: random.Random) -> tuple[str, int]:
    if level == 1:
        a = rng.randint(1, 8)
        b = rng.randint(1, 9 - a)
        return f"{a} + {b}", a + b
    if level == 2:
        while True:
            a, b = rng.randint(10, 99), rng.randint(10, 99)
            if a % 10 + b % 10 >= 10:
                return f"{a} + {b}", a + b
    if level == 3:
        a, b = rng.randint(100, 999), rng.randint(100, 999)
        if rng.random() < 0.5:
            return f"{a} + {b}", a + b
        a, b = max(a, b), min(a, b)
        return f"{a} - {b}", a - b
    if level == 4:
        form = rng.randrange(3)
        if form == 0:
            a, b, c = rng.randint(2, 20), rng.randint(2, 20), rng.randint(2, 9)
            return f"({a} + {b}) * {c}", (a + b) * c
        if form == 1:
            a, b, c = rng.randint(2, 20), rng.randint(2, 9), rng.randint(1, 30)
            return f"{a} * {b} - {c}", a * b - c
        a, b = rng.randint(11, 40), rng.randint(2, 10)
        c, d = rng.randint(2, 9), rng.randint(1, 20)
        return f"({a} - {b}) * {c} + {d}", (a - b) * c + d
    if level == 5:
        # Every column subtracts without a borrow and the tens differ, so the result has two digits.
        ta, tb = sorted(rng.sample(range(1, 10), 2), reverse=True)
        ob = rng.randint(0, 9)
        oa = rng.randint(ob, 9)
        return f"{10 * ta + oa} - {10 * tb + ob}", 10 * (ta - tb) + (oa - ob)
    raise UserError(f"unknown synthetic arithmetic level {level}; use levels 1 to 5")


def synthetic_arithmetic(
    n: int = 100,
    levels: Sequence[int] = (1, 2, 3, 4),
    seed: int = 0,
    *,
    suffix: Optional[str] = None,
    style: str = "math",
) -> pl.DataFrame:
    """A synthetic arithmetic benchmark, deterministic under ``seed``, in `load_benchmark`'s shape.

    Levels: 1 one-digit addition without carry; 2 two-digit addition with a carry in the ones;
    3 three-digit addition or subtraction (non-negative result); 4 multi-step expressions
    ``(a + b) * c``, ``a * b - c``, ``(a - b) * c + d``; 5 two-digit subtraction without a borrow
    and with a two-digit result (the demo's skill that its base model never sees). Item i has level
    ``levels[i % len(levels)]`` and its own random stream seeded by (seed, i), so a smaller n is a
    prefix of a larger one. Problem: "What is 12 + 34?"; answer: the integer; grading ``style``
    "math" unless given.
    """
    if n < 1:
        raise UserError(f"synthetic arithmetic needs n >= 1, got {n}")
    levels = [int(x) for x in levels]
    if not levels or any(x not in _LEVEL_TEXT for x in levels):
        raise UserError(f"synthetic arithmetic levels must be among 1-5, got {levels}")
    rows = []
    for i in range(n):
        level = levels[i % len(levels)]
        rng = random.Random(f"headdb-synthetic-arithmetic:{seed}:{i}")
        expr, value = _synthetic_item(level, rng)
        problem = f"What is {expr}?"
        meta = {"expression": expr, "kind": _LEVEL_TEXT[level], "seed": seed, "source": SYNTHETIC_NAME}
        rows.append(
            {
                "item_id": f"arith-{i:04d}",
                "problem": problem,
                "answer": str(value),
                "level": str(level),
                "meta": json.dumps(meta, sort_keys=True),
                "style": style,
                "prompt": build_prompt(problem, style, suffix),
            }
        )
    return pl.DataFrame(rows, schema=_SCHEMA)


def _parse_levels(text: str) -> list[int]:
    out: list[int] = []
    for part in re.split(r"[|+/ ;]", text):
        part = part.strip()
        if not part:
            continue
        if "-" in part:
            lo, hi = part.split("-", 1)
            out.extend(range(int(lo), int(hi) + 1))
        else:
            out.append(int(part))
    return out


def _parse_synthetic_options(spec: str, default_seed: int) -> dict:
    opts: dict = {"seed": default_seed}
    if ":" not in spec:
        return opts
    for part in spec.split(":", 1)[1].split(","):
        if not part.strip():
            continue
        if "=" not in part:
            raise UserError(
                f"bad option {part.strip()!r} in {spec!r}; write e.g. {SYNTHETIC_NAME}:n=50,seed=1,levels=1-3"
            )
        key, val = (s.strip() for s in part.split("=", 1))
        try:
            if key == "n":
                opts["n"] = int(val)
            elif key == "seed":
                opts["seed"] = int(val)
            elif key == "levels":
                opts["levels"] = _parse_levels(val)
            elif key == "suffix":
                if val not in ("study", "none"):
                    raise UserError(
                        f"suffix in {spec!r} must be 'study' (the study's prompt suffix, the "
                        f"default) or 'none' (the bare question)"
                    )
                opts["suffix"] = None if val == "study" else ""
            else:
                raise UserError(
                    f"unknown option {key!r} in {spec!r}; use n, seed, levels, suffix "
                    f"(e.g. {SYNTHETIC_NAME}:n=50,seed=1,levels=1-3)"
                )
        except ValueError:
            raise UserError(
                f"bad value {val!r} for {key} in {spec!r}; use integers, levels like 1-3 or 1|2|4"
            ) from None
    return opts
