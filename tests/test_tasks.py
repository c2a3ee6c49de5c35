"""Circuit task files: parsing, line-numbered errors, digests, modes, length alignment."""

from __future__ import annotations

import json

import polars as pl
import pytest

from headdb.demo.tiny import build_tokenizer
from headdb.errors import UserError
from headdb.attribution.tasks import encode_pairs, load_task
from headdb.evals.prompts import THINK_OFF_BLOCK as THINK_OFF_PREFIX, render, task_chat


def render_prompt(text, prefix, tok, mode):
    return render(tok, text, chat=task_chat(mode), mode=mode, prefix=prefix)


ITEMS = [
    {"id": "a", "clean": "12+35=", "corrupted": "19+38=", "answer": "4", "wrong_answer": "5", "source": "gsm"},
    {"clean": "7+2=", "corrupted": "9+5=", "answer": 9},
]


@pytest.fixture(scope="module")
def tok():
    return build_tokenizer()


def _write(path, lines):
    path.write_text("".join((l if isinstance(l, str) else json.dumps(l)) + "\n" for l in lines))
    return path


def test_parse_jsonl(tmp_path):
    task = load_task(_write(tmp_path / "t.jsonl", ITEMS + [""]))
    df = task.items
    assert task.name == "t" and task.n_items == 2 and task.mode == "plain" and task.kind == "circuit"
    assert df["item_id"].to_list() == ["a", "1"]
    assert df["answer"].to_list() == ["4", "9"]
    assert df["wrong_answer"].to_list() == ["5", None]
    assert json.loads(df["meta"][0]) == {"source": "gsm"} and df["meta"][1] is None
    assert {"item_id", "clean", "corrupted", "answer", "wrong_answer", "meta"} <= set(df.columns)
    rows = task.task_items_frame()
    assert rows.columns == ["item_id", "problem", "answer", "clean", "corrupted", "level", "meta"]
    assert json.loads(rows["meta"][0]) == {"source": "gsm", "wrong_answer": "5"}
    assert task.tasks_row()["n_items"] == 2 and task.tasks_row()["digest"] == task.digest


@pytest.mark.parametrize(
    "bad, message",
    [
        ('{"clean": "1+1=", "corrupted": "1+2=", "answer": "2"', "malformed JSON"),
        ('{"clean": "1+1=", "answer": "2"}', "missing field 'corrupted'"),
        ('{"clean": 5, "corrupted": "1+2=", "answer": "2"}', "'clean' must be a string"),
        ("[1, 2]", "expected a JSON object"),
        ('{"id": "a", "clean": "1+1=", "corrupted": "1+2=", "answer": "2"}', "duplicate id 'a'"),
    ],
)
def test_bad_line_is_reported_by_number(tmp_path, bad, message):
    path = _write(tmp_path / "t.jsonl", [ITEMS[0], "", bad])
    with pytest.raises(UserError, match=message) as err:
        load_task(path)
    assert f"{path}:3:" in str(err.value)


def test_missing_or_empty_file(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_task(tmp_path / "none.jsonl")
    with pytest.raises(UserError, match="no items"):
        load_task(_write(tmp_path / "e.jsonl", [""]))
    with pytest.raises(UserError, match="unknown task mode"):
        load_task(_write(tmp_path / "t.jsonl", ITEMS), mode="thinking")


def test_digest_is_stable_and_canonical(tmp_path):
    base = load_task(_write(tmp_path / "a.jsonl", ITEMS)).digest
    assert len(base) == 64
    assert load_task(_write(tmp_path / "a.jsonl", ITEMS)).digest == base
    # Key order, spacing and file name do not matter.
    reordered = [json.dumps(dict(reversed(list(it.items()))), indent=None, separators=(", ", " : ")) for it in ITEMS]
    assert load_task(_write(tmp_path / "b.jsonl", reordered)).digest == base
    # Parquet with the same items digests the same.
    rows = [{**it, "answer": str(it["answer"]), "id": it.get("id")} for it in ITEMS]
    pq = tmp_path / "c.parquet"
    pl.DataFrame(rows).write_parquet(pq)
    pq_task = load_task(pq)
    assert pq_task.items["item_id"].to_list() == ["a", "1"]
    assert pq_task.digest == base
    # Content and mode do.
    changed = [dict(ITEMS[0], answer="5"), ITEMS[1]]
    assert load_task(_write(tmp_path / "d.jsonl", changed)).digest != base
    assert load_task(tmp_path / "a.jsonl", mode="think_off").digest != base


def test_parquet_errors_name_the_row(tmp_path):
    pq = tmp_path / "t.parquet"
    pl.DataFrame({"clean": ["1+1=", ""], "corrupted": ["1+2=", "2+2="], "answer": ["2", "4"]}).write_parquet(pq)
    with pytest.raises(UserError, match=r"row 2: field 'clean' is empty"):
        load_task(pq)
    pl.DataFrame({"clean": ["1+1="]}).write_parquet(pq)
    with pytest.raises(UserError, match="missing column"):
        load_task(pq)


def test_modes_render_chat_templates(tok):
    plain = render_prompt("3+4=", None, tok, "plain")
    assert plain == "3+4="
    on = render_prompt("3+4=", "Step 1:", tok, "think_on")
    off = render_prompt("3+4=", "Step 1:", tok, "think_off")
    assert on.startswith("<|im_start|>user\n3+4=<|im_end|>\n<|im_start|>assistant\n")
    assert THINK_OFF_PREFIX not in on and on.endswith("assistant\nStep 1:")
    assert off.endswith("assistant\n" + THINK_OFF_PREFIX + "Step 1:")
    # A template without enable_thinking: the empty think block is appended by headdb.
    tok2 = build_tokenizer()
    tok2.chat_template = (
        "{% for m in messages %}[{{ m['role'] }}]{{ m['content'] }}{% endfor %}"
        "{% if add_generation_prompt %}[assistant]{% endif %}"
    )
    assert render_prompt("3+4=", None, tok2, "think_off") == "[user]3+4=[assistant]" + THINK_OFF_PREFIX
    assert render_prompt("3+4=", None, tok2, "think_on") == "[user]3+4=[assistant]"


def test_encode_pairs_first_answer_token_and_truncation(tmp_path, tok):
    items = [
        {"id": "same", "clean": "12+35=", "corrupted": "19+38=", "answer": "47", "wrong_answer": "57"},
        {"id": "long", "clean": "12+35=", "corrupted": "1+3=", "answer": "47"},
    ]
    task = load_task(_write(tmp_path / "t.jsonl", items))
    pairs = encode_pairs(task, tok)
    four = tok("4", add_special_tokens=False)["input_ids"][0]
    five = tok("5", add_special_tokens=False)["input_ids"][0]
    assert pairs.answer == [four, four] and pairs.wrong == [five, -1]
    assert pairs.truncated == ["long"]
    # The rule: keep the first min(len) tokens of both; the shared beginning stays aligned.
    assert pairs.clean[1] == tok("12+3")["input_ids"] and pairs.corrupted[1] == tok("1+3=")["input_ids"]
    assert all(len(c) == len(k) for c, k in zip(pairs.clean, pairs.corrupted))
    with pytest.raises(UserError, match="item.*'?long"):
        encode_pairs(task, tok, align="strict")
    chat = encode_pairs(load_task(tmp_path / "t.jsonl", mode="think_off"), tok)
    assert chat.clean[0][0] == tok.convert_tokens_to_ids("<|im_start|>")
