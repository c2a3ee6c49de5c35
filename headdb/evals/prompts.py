"""The one prompt renderer: the exact text a model sees, for circuit tasks and for generation.

    chat  auto (the chat template when the tokenizer has one) | on (required) | off (raw text)
    mode  plain      no thinking switch: the template as it is
          think_on   Qwen3-style thinking on (`enable_thinking=True` when the template takes it)
          think_off  thinking off: `enable_thinking=False` when the template takes it; otherwise
                     (e.g. an R1-distill template) the empty think block `<think>\\n\\n</think>\\n\\n`
                     is appended after the generation prompt, which is what the flag renders to
                     on templates that have it. Either way think_off means the same thing.

Circuit tasks render with chat off in mode plain and chat on otherwise; generation takes both
from its settings. `prefix` (a task's answer prefix) is appended after the rendered prompt.
"""

from __future__ import annotations

import hashlib

from headdb.errors import UserError
from headdb.settings import CHAT_MODES, MODES, check_choice

THINK_OFF_BLOCK = "<think>\n\n</think>\n\n"


def has_template(tokenizer) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def takes_enable_thinking(tokenizer) -> bool:
    template = getattr(tokenizer, "chat_template", None)
    if isinstance(template, dict):
        template = " ".join(str(v) for v in template.values())
    return bool(template) and "enable_thinking" in str(template)


def uses_chat(tokenizer, chat: str, mode: str) -> bool:
    """Whether the chat template applies; a setting the tokenizer cannot serve is a UserError."""
    check_choice("chat", chat, CHAT_MODES)
    check_choice("mode", mode, MODES)
    if chat == "on" and not has_template(tokenizer):
        raise UserError("chat 'on', but the tokenizer has no chat template; use chat 'off' or 'auto'")
    use = chat == "on" or (chat == "auto" and has_template(tokenizer))
    if not use and mode != "plain":
        raise UserError(
            f"mode {mode} needs a chat template, but "
            + ("chat is 'off'" if has_template(tokenizer) else "this tokenizer has none")
            + "; use mode 'plain'"
        )
    return use


def render(tokenizer, text: str, *, chat: str = "auto", mode: str = "plain", prefix: str | None = None) -> str:
    """The text fed to the model for one prompt."""
    if not uses_chat(tokenizer, chat, mode):
        return text + (prefix or "")
    native = takes_enable_thinking(tokenizer)
    kwargs = {"enable_thinking": mode == "think_on"} if native and mode != "plain" else {}
    rendered = tokenizer.apply_chat_template(
        [{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True, **kwargs
    )
    if mode == "think_off" and not native:
        rendered += THINK_OFF_BLOCK
    return rendered + (prefix or "")


def task_chat(mode: str) -> str:
    """Circuit tasks: plain prompts are raw text; think modes go through the chat template."""
    return "off" if mode == "plain" else "on"


def template_label(tokenizer, chat: str, mode: str) -> str | None:
    """A short description of how prompts were rendered (the tasks.template column)."""
    if not uses_chat(tokenizer, chat, mode):
        return None
    template = str(getattr(tokenizer, "chat_template", "") or "")
    how = "enable_thinking" if takes_enable_thinking(tokenizer) else "appended-think-block"
    return f"chat:{hashlib.sha256(template.encode()).hexdigest()[:12]}:{mode}:{how}"
