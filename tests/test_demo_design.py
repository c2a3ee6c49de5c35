"""The demo's design, checked without training: the circuit tasks measure what they claim, the
pretraining corpus never shows the skill SFT teaches and boxes the share it says, quick is smaller."""

from __future__ import annotations

from dataclasses import fields

import pytest

from headdb.demo import recipes
from headdb.demo.study import FULL, QUICK, SUFFIX, circuit_task_items
from headdb.demo.tiny import build_tokenizer


@pytest.fixture(scope="module")
def tok():
    return build_tokenizer()


@pytest.mark.parametrize("op", ["+", "-"])
def test_circuit_tasks_ask_for_the_first_digit_of_the_result(op, tok):
    items = circuit_task_items(24, 0, op)
    assert len({i["clean"] for i in items}) > 12
    for item in items:
        values = {}
        for side, digit in (("clean", "answer"), ("corrupted", "wrong_answer")):
            sign = op if side == "clean" else "+"  # sub's corrupted prompt is the same problem as a sum
            a, b = (int(x) for x in item[f"{side}_prefix"].rstrip("= ").split(f" {sign} "))
            value = a + b if sign == "+" else a - b
            assert item[side] == f"What is {a} {sign} {b}?" and str(value)[0] == item[digit]
            assert 10 <= value < 100
            values[side] = (a, b)
            if op == "+":
                assert a % 10 + b % 10 >= 10  # the first digit needs the carry
            elif side == "clean":
                assert a % 10 >= b % 10  # no borrow
        if op == "-":
            assert values["clean"] == values["corrupted"]  # only the operation differs
        assert item["answer"] != item["wrong_answer"]
        assert len(tok(item["clean"] + item["clean_prefix"])["input_ids"]) == len(
            tok(item["corrupted"] + item["corrupted_prefix"])["input_ids"]
        )
    assert circuit_task_items(24, 0, op) == items  # deterministic
    with pytest.raises(ValueError):
        circuit_task_items(2, 0, "*")


def test_the_base_corpus_has_no_subtraction_and_boxes_about_half(tok):
    texts = recipes.pretraining_texts(
        tok,
        400,
        seed=0,
        levels=FULL.pretrain_levels,
        steps_fraction=0.0,
        boxed_fraction=FULL.boxed_fraction,
        lines_per_plain=2,
        suffix=SUFFIX,
    )
    assert not any(" - " in t for t in texts)
    chats = [t for t in texts if "<|im_start|>assistant" in t]
    boxed = sum("\\boxed{" in t for t in chats) / len(chats)
    assert 0.4 < boxed < 0.6
    assert all("Let's think step by step" not in t for t in texts)  # the demo's bare prompts
    assert recipes.solution_text("47 + 38", "unboxed") == "47 + 38 = 85."
    sft = recipes.sft_dataset(8, seed=0, levels=FULL.sft_levels, style="direct", suffix=SUFFIX)
    assert sum(" - " in r[0]["content"] for r in sft["prompt"]) == 4  # half the SFT items subtract
    assert all("\\boxed{" in c[0]["content"] for c in sft["completion"])


def test_quick_is_smaller_than_full():
    sizes = ("pretrain_steps", "sft_steps", "grpo_steps", "task_items", "bench_items", "samples")
    assert all(getattr(QUICK, f) <= getattr(FULL, f) for f in sizes)
    assert {f.name for f in fields(FULL)} >= set(sizes)
    assert FULL.n_heads > 4 and FULL.n_heads % FULL.n_kv_heads == 0
