"""Tiny local models and tokenizers, built on disk in seconds, for tests and the offline demo.

`build_tiny_model(out_dir, arch=...)` writes a complete Hugging Face model directory
(config.json, model.safetensors, tokenizer.json, tokenizer_config.json with a chat template)
that `headdb.checkpoints.loading.load_model` loads like any real checkpoint. Everything is deterministic
under `seed`: the same arguments give byte-identical weights.

The tokenizer is character level (a byte-level BPE over printable ASCII with no merges), so
it covers any arithmetic text ("12+35=47", "\\boxed{47}", "Step 1: ...") with one token per
character, and a number's first token is its first digit. Non-ASCII characters have no token
and are dropped.
Special tokens are single tokens: `<pad>` (id 0, the pad token), `<unk>`, `<|endoftext|>`
(eos; also the model config's bos id, but the tokenizer prepends nothing), `<|im_start|>`,
`<|im_end|>`, `<think>`, `</think>`.

The chat template is a miniature of Qwen3's: ChatML turns, and with
`add_generation_prompt=True, enable_thinking=False` it appends the empty think block
`<think>\\n\\n</think>\\n\\n` to the assistant turn; with thinking on (the default) it opens the
assistant turn only.
"""

from __future__ import annotations

import string
from pathlib import Path

SPECIAL_TOKENS = ["<pad>", "<unk>", "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>"]
PAD, UNK, EOS = "<pad>", "<unk>", "<|endoftext|>"

# Every printable ASCII character plus newline and tab: digits, letters, arithmetic symbols,
# LaTeX braces and backslashes, punctuation, space.
CHARACTERS = sorted(set(string.printable) - set("\r\x0b\x0c"))

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n"
    "{% if enable_thinking is defined and enable_thinking is false %}<think>\n\n</think>\n\n{% endif %}"
    "{% endif %}"
)

ARCHITECTURES = ("qwen2", "llama", "qwen3")


def build_tokenizer():
    """The character-level tokenizer as a `transformers.PreTrainedTokenizerFast`.

    It is a byte-level BPE with an empty merge list, so every ASCII character is one token.
    That shape matters: `AutoTokenizer` rebuilds Qwen2/Qwen3 tokenizers from (vocab, merges)
    as byte-level BPE, so a byte-level BPE round-trips through it unchanged, whichever class
    loads it (`Qwen2Tokenizer` for qwen2/qwen3 directories, the generic backend for llama).
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    symbols = _byte_level_symbols()
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
    for ch in CHARACTERS:
        vocab.setdefault(symbols[ord(ch)], len(vocab))
    core = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token=None, fuse_unk=False))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    core.decoder = decoders.ByteLevel()
    # Registered as special so "<think>" is one token and never split into characters.
    core.add_special_tokens(SPECIAL_TOKENS)
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core,
        pad_token=PAD,
        unk_token=UNK,
        eos_token=EOS,
        bos_token=None,
        additional_special_tokens=SPECIAL_TOKENS[3:],
        padding_side="right",
        model_max_length=4096,
        clean_up_tokenization_spaces=False,
    )
    tok.chat_template = CHAT_TEMPLATE
    return tok


def _byte_level_symbols() -> dict[int, str]:
    """GPT-2's byte -> printable unicode map (what the ByteLevel pre-tokenizer emits)."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    table = {b: chr(b) for b in keep}
    extra = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def _config(
    arch: str,
    *,
    vocab: int,
    n_layers: int,
    n_heads: int,
    n_kv_heads: int,
    d_model: int,
    d_mlp: int,
    d_head: int | None,
    pad_id: int,
    eos_id: int,
    init_std: float,
    max_pos: int,
):
    common = dict(
        vocab_size=vocab,
        hidden_size=d_model,
        intermediate_size=d_mlp,
        num_hidden_layers=n_layers,
        num_attention_heads=n_heads,
        num_key_value_heads=n_kv_heads,
        max_position_embeddings=max_pos,
        initializer_range=init_std,
        rms_norm_eps=1e-6,
        tie_word_embeddings=False,
        pad_token_id=pad_id,
        bos_token_id=eos_id,
        eos_token_id=eos_id,
        use_cache=True,
    )
    if arch == "qwen2":
        from transformers import Qwen2Config, Qwen2ForCausalLM

        return Qwen2Config(**common, **({"head_dim": d_head} if d_head else {})), Qwen2ForCausalLM
    if arch == "llama":
        from transformers import LlamaConfig, LlamaForCausalLM

        return LlamaConfig(**common, head_dim=d_head or d_model // n_heads), LlamaForCausalLM
    if arch == "qwen3":
        from transformers import Qwen3Config, Qwen3ForCausalLM

        return Qwen3Config(**common, head_dim=d_head or d_model // n_heads), Qwen3ForCausalLM
    raise ValueError(f"unknown tiny architecture {arch!r}; choose one of {', '.join(ARCHITECTURES)}")


def build_tiny_model(
    out_dir,
    arch: str = "qwen2",
    n_layers: int = 2,
    n_heads: int = 4,
    n_kv_heads: int = 2,
    d_model: int = 64,
    d_mlp: int | None = None,
    vocab: int | None = None,
    seed: int = 0,
    *,
    d_head: int | None = None,
    init_std: float = 0.02,
    max_positions: int = 512,
) -> Path:
    """Write a randomly initialised tiny causal LM + tokenizer to `out_dir`; return the path.

    arch: "qwen2" (q/k/v biases), "llama", or "qwen3" (q/k norms, explicit head_dim). d_head
    defaults to d_model // n_heads; a larger one gives many heads rotary room in a small model.
    d_mlp defaults to 4 * d_model; vocab defaults to the tokenizer's size (larger values add
    unused rows). init_std is the normal init's standard deviation (HF default 0.02; tests use
    larger values so that a random model's outputs depend visibly on its input).
    Deterministic: the weights depend only on the arguments (the global torch RNG is restored).
    """
    import torch

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tok = build_tokenizer()
    n_vocab = len(tok) if vocab is None else int(vocab)
    if n_vocab < len(tok):
        raise ValueError(f"vocab={n_vocab} is smaller than the tokenizer's {len(tok)} tokens")
    config, model_cls = _config(
        arch,
        vocab=n_vocab,
        n_layers=n_layers,
        n_heads=n_heads,
        n_kv_heads=n_kv_heads,
        d_model=d_model,
        d_mlp=d_mlp or 4 * d_model,
        d_head=d_head,
        pad_id=tok.pad_token_id,
        eos_id=tok.eos_token_id,
        init_std=init_std,
        max_pos=max_positions,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = model_cls(config)
        # HF leaves RMSNorm weights at 1; jitter them so norms are not a trivial identity
        # scale in tests of gradient bookkeeping.
        for name, p in model.named_parameters():
            if "norm" in name:
                with torch.no_grad():
                    p.mul_(1.0 + 0.1 * torch.randn_like(p))
    model.eval()
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    return out
