"""One renderer: think_off means the same for circuit tasks and for generation, with or without a
template that takes `enable_thinking`."""

from __future__ import annotations

import pytest

from headdb.attribution.tasks import Task, render_prompts
from headdb.demo.tiny import build_tokenizer
from headdb.errors import UserError
from headdb.evals.generation import chat_prompts
from headdb.evals.prompts import THINK_OFF_BLOCK, render

NATIVE = (
    "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}{% endfor %}"
    "{% if add_generation_prompt %}<assistant>{% if enable_thinking is defined and not enable_thinking %}"
    "<think>\n\n</think>\n\n{% endif %}{% endif %}"
)
NO_FLAG = (
    "{% for m in messages %}[{{ m['role'] }}]{{ m['content'] }}{% endfor %}"
    "{% if add_generation_prompt %}[assistant]{% endif %}"
)


def _tok(template):
    tok = build_tokenizer()
    tok.chat_template = template
    return tok


def _task(mode):
    import polars as pl

    items = pl.DataFrame(
        {
            "item_id": ["0"],
            "clean": ["3+4="],
            "corrupted": ["3+5="],
            "answer": ["7"],
            "wrong_answer": [None],
            "clean_prefix": [None],
            "corrupted_prefix": [None],
            "problem": [None],
            "level": [None],
            "meta": [None],
        },
        schema_overrides={
            c: pl.Utf8 for c in ("wrong_answer", "clean_prefix", "corrupted_prefix", "problem", "level", "meta")
        },
    )
    return Task(name="t", source="t", mode=mode, digest="d", items=items)


@pytest.mark.parametrize("template", [NATIVE, NO_FLAG], ids=["enable_thinking", "no-flag"])
def test_think_off_is_the_same_for_tasks_and_generation(template):
    tok = _tok(template)
    generated = chat_prompts(tok, ["3+4="], mode="think_off")[0]
    task_clean = render_prompts(_task("think_off"), tok)[0][0]
    assert generated == task_clean
    assert generated.endswith("ssistant>" + THINK_OFF_BLOCK) or generated.endswith("[assistant]" + THINK_OFF_BLOCK)
    on = chat_prompts(tok, ["3+4="], mode="think_on")[0]
    assert THINK_OFF_BLOCK not in on and on == render_prompts(_task("think_on"), tok)[0][0]


def test_think_off_without_the_flag_used_to_think():
    # The bug this renderer fixed: generation passed only the flag, which a template without
    # enable_thinking ignores, so think_off generation ran with thinking on.
    tok = _tok(NO_FLAG)
    assert chat_prompts(tok, ["q"], mode="think_off") != chat_prompts(tok, ["q"], mode="think_on")


def test_modes_that_need_a_template_say_so():
    tok = build_tokenizer()
    tok.chat_template = None
    with pytest.raises(UserError, match="needs a chat template"):
        render(tok, "q", mode="think_off")
    with pytest.raises(UserError, match="no chat template"):
        render(tok, "q", chat="on")
    assert render(tok, "q", prefix=" A:") == "q A:"
