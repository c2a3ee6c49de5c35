"""The scoring product of one layer alone, in the forms a GPU library might run faster.

    python benchmarks/bench_scoring_gemm.py [--device cuda] [--shape 8b] [--seq 1024] [--reps 10]

`add_layer_scores` scores a layer's edges as one GEMM: the layer's port gradients [P + 1, S*D]
times the upstream differences [S*D, k] (k sources). M = P + 1 is small and K = S*D is huge
(4.2M at Qwen3-8B and 1024 tokens), a shape GEMM heuristics rarely see. This times, at a shape's
P, D and S and for k at a quarter, half and all of its sources, in the model dtype (bf16):
    mm-aligned  rows @ delta.T over k rounded up to a multiple of 8 rows, the extra columns
                dropped (the engine's form on CUDA: eap.gemm_columns)
    mm        rows @ delta.T                      (the engine's form before it, and on a CPU)
    mm-t      (delta @ rows.T).T                  (the roles swapped)
    split-S   torch.bmm over position blocks, fp32 partial sums (split-K by hand)
timed with CUDA events around `--reps` calls after one warm call (wall time on a CPU). Each
row prints the seconds per call, the TFLOP/s (2 (P+1) k S D FLOPs) and, on a GPU, the largest
error against a float32 product relative to its largest value. Writes JSON with --json.
Results: benchmarks/RESULTS.md, "One command for a GPU".
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_shapes import SHAPES  # noqa: E402


def forms(rows: torch.Tensor, delta: torch.Tensor, blocks: int, k: int):
    """delta holds k rows, rounded up to a multiple of 8 (the engine's CUDA form reads them all)."""
    S_D = rows.shape[1]
    yield "mm-aligned", lambda: (rows @ delta.T)[:, :k]
    delta = delta[:k]
    yield "mm", lambda: rows @ delta.T
    yield "mm-t", lambda: (delta @ rows.T).T
    c = blocks
    if S_D % c == 0:
        r3 = rows.view(rows.shape[0], c, S_D // c).transpose(0, 1)  # [c, M, K/c]
        d3 = delta.view(delta.shape[0], c, S_D // c).permute(1, 2, 0)  # [c, K/c, k]
        yield f"split-S/{c}", lambda: torch.bmm(r3, d3).float().sum(0)


def timed(fn, reps: int, device: str) -> float:
    fn()
    if device.startswith("cuda"):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(reps):
            fn()
        end.record()
        torch.cuda.synchronize()
        return start.elapsed_time(end) / 1e3 / reps
    t0 = time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - t0) / reps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--shape", default="8b")
    ap.add_argument("--seq", type=int, default=1024)
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--blocks", default="16,64")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    sh = SHAPES[args.shape]
    P, D, L = sh["heads"] + 2 * sh["kv_heads"], sh["hidden"], sh["layers"]
    n_src = 1 + L * (sh["heads"] + 1)
    out = []
    g = torch.Generator(device=args.device).manual_seed(0)
    rows = torch.randn((P + 1, args.seq * D), generator=g, device=args.device, dtype=torch.bfloat16)
    for k in (n_src // 4, n_src // 2, n_src):
        k_up = -(-k // 8) * 8
        delta = torch.randn((k_up, args.seq * D), generator=g, device=args.device, dtype=torch.bfloat16)
        ref = (rows.float() @ delta[:k].float().T) if args.device != "cpu" else None
        flops = 2 * (P + 1) * k * args.seq * D
        for c in [int(b) for b in args.blocks.split(",")]:
            for name, fn in forms(rows, delta, c, k):
                if name in {r["form"] for r in out if r["k"] == k}:
                    continue
                s = timed(fn, args.reps, args.device)
                row = {"shape": args.shape, "seq": args.seq, "M": P + 1, "k": k, "form": name, "seconds": s}
                row["tflops"] = flops / s / 1e12
                if ref is not None:
                    row["max_rel_err"] = float((fn().float() - ref).abs().max() / ref.abs().max())
                out.append(row)
                print(json.dumps(row), flush=True)
        del delta
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
