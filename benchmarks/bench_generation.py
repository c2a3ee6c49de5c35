"""Batched versus one-at-a-time generation throughput on a tiny model (issue: target >= 4x).

    .venv/bin/python benchmarks/bench_generation.py [--prompts 64] [--new-tokens 32]

Both modes generate the same prompts greedily with the same settings after one warm-up pass;
throughput is generated tokens per second of wall time, measured in one process.
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from headdb.evals.generation import Sampling, generate
from headdb.demo.tiny import build_tiny_model


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--prompts", type=int, default=64)
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--batch", type=int, default=16)
    args = ap.parse_args()
    path = build_tiny_model(
        tempfile.mkdtemp(), arch="qwen2", n_layers=4, n_heads=8, n_kv_heads=2, d_model=128, init_std=0.02, seed=0
    )
    model = AutoModelForCausalLM.from_pretrained(path).eval()
    tok = AutoTokenizer.from_pretrained(path)
    # eos suppressed so every sequence produces exactly --new-tokens tokens in both modes
    model.generation_config.suppress_tokens = [tok.eos_token_id]
    prompts = [f"{a * 37 % 1000}+{a * 91 % 1000}=" for a in range(args.prompts)]
    results = {}
    for name, bs in (("batched", args.batch), ("one-at-a-time", 1)):
        s = Sampling(samples=1, temperature=0, max_new_tokens=args.new_tokens, batch_size=bs)
        generate(model, tok, prompts[:bs], s)  # warm-up
        t0 = time.perf_counter()
        out = generate(model, tok, prompts, s)
        dt = time.perf_counter() - t0
        results[name] = out["n_tokens"].sum() / dt
    ratio = results["batched"] / results["one-at-a-time"]
    print(
        f"machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
        f"threads {torch.get_num_threads()}"
    )
    for name, rate in results.items():
        print(f"{name:>14}: {rate:10.1f} tokens/s")
    print(f"ratio batched/one-at-a-time at batch {args.batch}: {ratio:.2f}x (target >= 4x)")


if __name__ == "__main__":
    main()
