"""One GPU check of the study's workload (benchmarks/gpu_check.sh, `make bench-gpu`): <= 8 minutes
on one H200. Prints one table and writes a JSON.

    .venv/bin/python benchmarks/gpu_check.py [--json gpu_check.json] [--budget-s 420] [--dry]
        [--parts scores,shapes,largest,generate]

1. scores   EAP-IG edge scores on CUDA (float32) against the same call on CPU, tiny Qwen2 and
            Qwen3 models: largest |difference| over the largest |score|, and Pearson r.
2. shapes   bench_shapes on CUDA in bfloat16: 0.5b, 1.5b and 8b (Qwen3-8B) at 128, 512 and
            1024 tokens, batch 1, both scorings (per-step, summed) and the plan's choice at the
            point ("planned": e.g. per step with the last layers' heads factored where that
            is what keeps the peak within 1.3x): EAP-IG time and peak allocation beside m + 2
            plain forward+backward passes, and the memory model's prediction beside the peak;
            and discover's circuits phase (one faithfulness evaluation: its peak against the
            model's `circuits` phase).
3. largest  per shape at 512 tokens: the largest batch the plan takes in the GPU's free memory
            (headdb.attribution.memory.plan_shape: per step, the last layers' heads factored where
            it asks), then one engine call of that plan at that batch: does it fit, and how
            close was the prediction.
4. generate greedy generation tokens/s at the 1.5b shape, bf16, 16 prompts x 64 new tokens (every
            stop token suppressed), plain and with 4 heads per layer zero-ablated
            (headdb.evals.interventions.applied): after one untimed call of the same shape on
            each side, 3 rounds in alternating order; the medians.
Work that would start after --budget-s is skipped and marked so. --dry: everything on the CPU
with a tiny Qwen3 shape (32 and 64 tokens; the "CUDA" side of the score check is a second CPU
run): checks that the script runs and writes its JSON (a minute or two: each side's process
imports torch and transformers).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_shapes  # noqa: E402  (the sibling script, by path)
from bench_attribution import DTYPES, load_average, machine, make_pairs, write_model  # noqa: E402


PARTS = ("scores", "shapes", "largest", "generate")


def check_scores(device: str) -> list[dict]:
    from headdb.attribution import attribute
    from headdb.checkpoints.loading import load_model
    from headdb.demo.tiny import build_tiny_model

    rows = []
    for arch in ("qwen2", "qwen3"):
        path = build_tiny_model(tempfile.mkdtemp(), arch=arch, n_layers=2, n_heads=4, n_kv_heads=2, d_model=64, seed=0)
        pairs = make_pairs(4, 24, 100, seed=0)
        scores = {}
        for side, dev in (("cpu", "cpu"), ("device", device)):
            loaded = load_model(path, dtype="float32", device=dev)
            scores[side] = attribute(loaded, pairs, method="eap-ig", steps=5, metric="kl", batch_size=4).edge_scores
        a, b = scores["cpu"].astype(np.float64), scores["device"].astype(np.float64)
        rows.append(
            {
                "arch": arch,
                "device": device,
                "max_rel_diff": float(np.abs(a - b).max() / np.abs(a).max()),
                "pearson": float(np.corrcoef(a, b)[0, 1]),
                "ok": bool(np.abs(a - b).max() <= 1e-3 * np.abs(a).max()),
            }
        )
    return rows


def largest_batch(args, name: str, model: Path, dtype: str, seq: int) -> dict:
    """The largest batch the plan takes in the free memory (memory.plan_shape, as a run plans it:
    per step, with the last layers' heads factored where its peak target or the budget asks),
    then one engine call of that plan at that batch."""
    from headdb.attribution.memory import HEADROOM, available, estimate, plan_shape

    shape = bench_shapes.model_shape(model)
    w = DTYPES[dtype].itemsize
    free = available(args.device)
    plan = plan_shape(shape, dtype_bytes=w, seq=seq, budget=int(free * HEADROOM), wanted=1 << 20, device=args.device)
    batch, scoring = plan.batch_size, bench_shapes.entry_of(plan)
    est = estimate(shape, dtype_bytes=w, seq=seq, chunks=plan.chunks, factored=plan.factored)
    row: dict = {"shape": name, "seq": seq, "free_mib": free / 2**20, "predicted_batch": batch, "plan": scoring}
    batch = min(batch, args.verify_cap)  # the dry run's tiny model "fits" thousands of rows
    row["run_batch"] = batch
    if batch >= 1:
        got = bench_shapes.run_point(args, "engine", model, dtype, [(seq, batch)], scoring)[0]
        row["engine"] = got
        row["fits"] = got.get("fits")
        if got.get("fits"):
            key = "cuda_peak_mib" if args.device.startswith("cuda") else "rss_peak_mib"
            row["peak_mib"] = got["mem"][key]
            row["predicted_peak_mib"] = est.total(batch) / 2**20
            row["predicted_working_mib"] = est.working(batch) / 2**20
    return row


def generation_rate(model: Path, dtype: str, device: str, prompts: int, new_tokens: int, rounds: int = 3) -> dict:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from headdb.evals.generation import Sampling, eos_ids, generate
    from headdb.evals.interventions import Intervention, applied

    hf = AutoModelForCausalLM.from_pretrained(model, dtype=DTYPES[dtype], local_files_only=True).to(device).eval()
    tok = AutoTokenizer.from_pretrained(model)
    # Every sample runs to new_tokens: all of generate's stop tokens are suppressed, not only the
    # tokenizer's (a batch runs on while its stopped rows count no tokens).
    hf.generation_config.suppress_tokens = eos_ids(hf, tok)
    n_layers, n_heads = hf.config.num_hidden_layers, hf.config.num_attention_heads
    heads = [(L, h) for L in range(n_layers) for h in range(min(4, n_heads))]
    texts = [f"{a * 37 % 1000}+{a * 91 % 1000}=" for a in range(prompts)]
    s = Sampling(samples=1, temperature=0, max_new_tokens=new_tokens, batch_size=prompts)
    sides = {"plain": None, "ablated": Intervention("zero", heads)}
    out: dict = {"prompts": prompts, "new_tokens": new_tokens, "ablated_heads": len(heads), "rounds": rounds}
    # The warm-up is a whole timed call's shape, on each side: on the H200 a first 16 x 64 call ran
    # at 69 tok/s and the next ones at 318-331 (a 2 x 4 warm-up had not covered it), and a first
    # ablated call at 402 tok/s against 560-569 after it (benchmarks/RESULTS.md).
    for name in sides:
        with applied(hf, sides[name]):
            generate(hf, tok, texts, s)
    rates: dict[str, list[float]] = {name: [] for name in sides}
    for r in range(rounds):
        for name in sorted(sides, reverse=r % 2 == 1):  # alternating order
            with applied(hf, sides[name]):
                bench_shapes.sync(device)
                t0 = time.perf_counter()
                got = generate(hf, tok, texts, s)
                bench_shapes.sync(device)
                rates[name].append(float(got["n_tokens"].sum()) / (time.perf_counter() - t0))
                if not (got["finish_reason"] == "length").all():
                    raise RuntimeError(f"generation check: a {name} sample stopped before {new_tokens} tokens")
    for name, got in rates.items():
        out[f"{name}_tokens_per_s"] = statistics.median(got)
        out[f"{name}_tokens_per_s_all"] = got
    out["ablated_over_plain"] = statistics.median(a / p for a, p in zip(rates["ablated"], rates["plain"]))
    return out


def run(args) -> dict:
    started = time.perf_counter()
    left = lambda: args.budget_s - (time.perf_counter() - started)  # noqa: E731
    res: dict = {
        "dry": args.dry,
        "device": args.device,
        "machine": machine(args.device),
        "date": time.strftime("%Y-%m-%d"),
        "load_before": load_average(),
        "steps": args.steps,
        "skipped": [],
    }
    res["parts"] = args.parts
    if "scores" in args.parts:
        res["scores"] = check_scores(args.device)
    root = Path(tempfile.mkdtemp(prefix="headdb-gpu-check-"))
    res["shapes"], res["largest"] = [], []
    for name in args.shapes:
        if left() < 60:
            res["skipped"].append(f"shape {name}: out of time")
            continue
        shape = dict(bench_shapes.SHAPES[name])
        model = root / name
        write_model(model, shape, DTYPES[args.dtype], gen_device=args.device)
        if "shapes" in args.parts:
            res["shapes"] += bench_shapes.measure(args, name, shape, args.dtype, model)
        if "largest" in args.parts:
            if left() > 30:
                res["largest"].append(largest_batch(args, name, model, args.dtype, args.largest_seq))
            else:
                res["skipped"].append(f"largest batch {name}: out of time")
        if name == args.generate_shape and "generate" in args.parts and left() > 30:
            res["generation"] = generation_rate(model, args.dtype, args.device, args.prompts, args.new_tokens)
        import shutil

        shutil.rmtree(model, ignore_errors=True)
    res["seconds"] = time.perf_counter() - started
    res["load_after"] = load_average()
    return res


def table(res: dict) -> str:
    lines = [
        f"headdb GPU check on {res['machine']} ({'DRY RUN on CPU' if res['dry'] else res['device']}), {res['date']}"
    ]
    for r in res.get("scores", []):
        lines.append(
            f"scores {r['arch']:<5} {r['device']} vs cpu: max |diff| / max |score| {r['max_rel_diff']:.2e}, "
            f"pearson {r['pearson']:.8f}  {'ok' if r['ok'] else 'MISMATCH'}"
        )
    lines.append(
        "shape  dtype     seq  batch  scoring              engine s  base s  time x  peak MiB  base MiB  peak x  model err"
    )
    for r in res["shapes"]:
        if "time_ratio" not in r:
            lines.append(
                f"{r['shape']:<6} {r['dtype']:<9} {r['seq']:<4} {r['batch']:<5}  {bench_shapes.scoring_label(r):<19}  "
                f"not measured: {r['engine'].get('error')}"
            )
            continue
        lines.append(
            f"{r['shape']:<6} {r['dtype']:<9} {r['seq']:<4} {r['batch']:<5}  {bench_shapes.scoring_label(r):<19}  "
            f"{r['engine']['seconds']:8.3f}  "
            f"{r['baseline']['seconds']:6.3f}  {r['time_ratio']:6.2f}  {r['engine_peak_mib']:8.0f}  "
            f"{r['baseline_peak_mib']:8.0f}  {r['peak_ratio']:6.2f}  {r['model_error_total']:+.1%}"
        )
    for r in res["largest"]:
        extra = f", peak {r['peak_mib']:.0f} MiB (model {r['predicted_peak_mib']:.0f})" if "peak_mib" in r else ""
        lines.append(
            f"largest batch {r['shape']} at {r['seq']} tokens: the plan takes {r['predicted_batch']} "
            f"({r.get('plan', 'per-step')}) in "
            f"{r['free_mib']:.0f} MiB free; ran {r['run_batch']}: fits {r.get('fits')}{extra}"
        )
    g = res.get("generation")
    if g:
        lines.append(
            f"generation ({g['prompts']} prompts x {g['new_tokens']} tokens): {g['plain_tokens_per_s']:.0f} tok/s plain, "
            f"{g['ablated_tokens_per_s']:.0f} tok/s with {g['ablated_heads']} heads ablated (x{g['ablated_over_plain']:.2f})"
        )
    lines += [f"skipped: {s}" for s in res["skipped"]]
    lines.append(f"total {res['seconds']:.0f} s")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--json", default="gpu_check.json")
    ap.add_argument("--budget-s", type=float, default=420.0, help="start no new work after this (default %(default)s)")
    ap.add_argument("--dry", action="store_true", help="CPU, tiny shapes: checks the script itself")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument(
        "--parts", default=",".join(PARTS), help="comma-separated, of %(default)s (a rerun of some of them)"
    )
    args = ap.parse_args()
    args.parts = [p for p in args.parts.split(",") if p]
    if unknown := sorted(set(args.parts) - set(PARTS)):
        ap.error(f"unknown --parts {', '.join(unknown)}; choose from {', '.join(PARTS)}")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.dry:
        args.device, args.shapes, args.seqs, args.batches = "cpu", ["tiny3"], [32, 64], [1]
        args.generate_shape, args.largest_seq, args.prompts, args.new_tokens = "tiny3", 64, 4, 8
        args.verify_cap = 4
    else:
        if not torch.cuda.is_available():
            sys.exit("gpu_check: no CUDA device here (use --dry to check the script on a CPU)")
        args.device, args.shapes, args.seqs, args.batches = "cuda", ["0.5b", "1.5b", "8b"], [128, 512, 1024], [1]
        args.generate_shape, args.largest_seq, args.prompts, args.new_tokens = "1.5b", 512, 16, 64
        args.verify_cap = 1 << 30
    # bench_shapes.measure's settings: one process per side for all of a shape's points
    # the dry run checks the script, not bf16 speed: float32, as a CPU without bf16 matmuls is 10x slower in bf16
    args.dtype = "float32" if args.dry else "bfloat16"
    args.steps, args.point_timeout, args.group, args.rounds = 5, 300.0, True, 1
    args.scorings = ["per-step", "summed", bench_shapes.PLANNED, bench_shapes.CIRCUITS]
    res = run(args)
    print(table(res))
    Path(args.json).write_text(json.dumps(res, indent=1, default=str))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
