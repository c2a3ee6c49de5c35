"""The study's attribution workload at real shapes: EAP-IG time and peak memory against prompt
length, batch and dtype, each beside m+2 plain forward+backward passes, and the memory model's
prediction (headdb.attribution.memory) beside the measured peak.

    .venv/bin/python benchmarks/bench_shapes.py [--shapes 0.5b,1.5b] [--seqs 128,256,512,1024]
        [--batches 1] [--dtypes float32,bfloat16] [--steps 2] [--layers N] [--device cpu|cuda]
        [--threads N] [--rounds R] [--point-timeout S] [--json FILE] [--workdir DIR] [--quick]

Shapes (random weights, config built here, nothing downloaded): 0.5b (Qwen2.5-0.5B), 1.5b
(Qwen2.5-Math-1.5B: 28 layers, 12 heads / 2 kv, d 1536, F 8960, V 151936, tied embeddings;
DeepSeek-R1-Distill-Qwen-1.5B is the same graph with untied ones), 8b (Qwen3-8B: 36 layers,
32 heads / 8 kv, head_dim 128, d 4096, F 12288, V 151936), tiny / tiny3 (Qwen2 / Qwen3, 2 layers:
the dry runs). --layers N keeps a shape's widths with N layers (the 8B widths on a CPU).

Each point (shape, dtype, seq, batch) runs as two fresh subprocesses, one after the other, each
holding one copy of the weights:
    engine    headdb.attribution.eap.eap_scores(method="eap-ig", steps=m, metric="kl") on one batch,
              once per scoring (--scorings: per-step and summed, each in its own process)
    baseline  m + 2 plain forward+backward passes of the unwrapped HF model on the same batch
              (bench_attribution.Baseline: frozen weights, grad w.r.t. the embeddings, KL at the
              last token, here with logits at the last position only, as the engine computes
              them): the engine's 2 captures + m IG steps, as plain passes
after a short warm-up call (16 tokens) in the same process, and on CUDA one more at the measured
shape (a first call at a shape pays one-time costs there). Time: wall seconds of the call.
--rounds R runs every side's process R times, in reverse order every other round (a shared
machine's speed drifts by tens of percent within minutes), and reports the median of the
per-round ratios with their range.
Peak memory of the call: on CPU the peak RSS (VmHWM reset through /proc/self/clear_refs just
before it; the absolute peak and the rise above the RSS before the call), both sides' processes
run with MALLOC_MMAP_THRESHOLD_=131072 so that freed tensors leave the RSS at once (with glibc's
default, growing threshold the heap keeps them and the peak RSS of the same call was 1.5-1.9x
the live bytes; the fixed threshold costs both sides page faults, ~+45% time at 0.5B); on CUDA
torch.cuda.max_memory_allocated (absolute and rise). A plain pass frees what it allocated, so the
baseline's peak is the peak of ONE plain forward+backward. Ratios: engine / baseline time
(target <= 1.3) and engine / baseline absolute peak (target <= 1.3). The model's working
memory (the rise it predicts at that batch) is printed beside the measured rise, and its total
(the RSS or allocation before the call + predicted working memory) beside the measured peak.
--quick: tiny3 at 32 tokens, batches 1 and 2, both dtypes (a process per point and side: minutes).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_attribution import (  # noqa: E402  (the sibling script, by path)
    DTYPES,
    SHAPES as QWEN25,
    Baseline,
    load_average,
    load_plain,
    machine,
    make_pairs,
    sync,
    timed,
    write_model,
)

SHAPES = {
    "tiny": dict(layers=2, hidden=64, heads=4, kv_heads=2, intermediate=256, vocab=512, tie=True),
    "tiny3": dict(
        arch="qwen3", layers=2, hidden=64, heads=4, kv_heads=2, head_dim=16, intermediate=256, vocab=512, tie=False
    ),
    "0.5b": QWEN25["0.5b"],
    "1.5b": QWEN25["1.5b"],
    "8b": dict(
        arch="qwen3",
        layers=36,
        hidden=4096,
        heads=32,
        kv_heads=8,
        head_dim=128,
        intermediate=12288,
        vocab=151936,
        tie=False,
    ),
}
WARMUP_SEQ = 16


class LastTokenBaseline(Baseline):
    """bench_attribution's plain passes, computing logits at the last position only as the engine
    does (`logits_to_keep=1`; the pairs have equal lengths): a full [B, S, vocab] unembedding
    would dominate a CPU bf16 pass and inflate the baseline's peak at long prompts."""

    def __call__(self, steps: int) -> None:
        from headdb.attribution.metrics import metric_values

        b = self.batch
        for _ in range(steps):
            x = self.embeds.clone().requires_grad_(True)
            with torch.enable_grad():
                logits = self.model(inputs_embeds=x, logits_to_keep=1).logits[:, -1]
                metric_values("kl", logits, self.clean_lp, b.answer, b.wrong).sum().backward()
            del logits, x


# ----------------------------------------------------------------------------- one point


def point(args) -> list[dict]:
    """--point engine|baseline: the measured calls of --points SEQxBATCH,... in this (fresh)
    process, one after the other (peaks reset before each)."""
    from headdb.checkpoints.loading import load_model

    device, dtype = args.device, DTYPES[args.dtype]
    vocab = json.loads((Path(args.model) / "config.json").read_text())["vocab_size"]
    warm = make_pairs(1, WARMUP_SEQ, vocab, seed=1)
    if args.point == "engine":
        loaded = load_model(args.model, dtype=args.dtype, device=device)
        params = list(loaded.hf_model.parameters())
        engine(loaded, warm, 1, 1, args.scoring)
    else:
        model = load_plain(Path(args.model), dtype, device)
        params = list(model.parameters())
        LastTokenBaseline(model, warm, device)(1)
    weights = sum(p.numel() * p.element_size() for p in params)
    out = []
    for seq, batch in args.points:
        res: dict = {"side": args.point, "seq": seq, "batch": batch, "weight_bytes": weights}
        pairs = make_pairs(batch, seq, vocab, seed=0)
        try:
            if device.startswith("cuda"):
                # One untimed call at this very shape first: a process's first call at a shape
                # pays one-time costs (allocator segments, GEMM heuristics) that its side's later
                # calls, the work a study repeats, do not.
                warm_up(args, loaded if args.point == "engine" else model, pairs, batch, device)
            if args.point == "engine":
                dt, pk = timed(lambda: engine(loaded, pairs, args.steps, batch, args.scoring), device)
            else:
                base = LastTokenBaseline(model, pairs, device)
                sync(device)
                dt, pk = timed(lambda: base(args.steps + 2), device)
                del base
            res.update(fits=True, seconds=dt, mem=pk.as_dict(), rss_before_mib=pk.rss0 / 1024)
            if device.startswith("cuda"):
                res["cuda_before_mib"] = pk.cuda0 / 2**20
        except torch.OutOfMemoryError as exc:
            res.update(fits=False, error=str(exc).strip().splitlines()[0][:300])
        out.append(res)
        if device.startswith("cuda"):
            torch.cuda.empty_cache()
    return out


def warm_up(args, model, pairs, batch: int, device: str) -> None:
    """One call of the side's own work at the measured shape (one IG step, or one plain pass)."""
    if args.point == "engine":
        engine(model, pairs, 1, batch, args.scoring)
    else:
        LastTokenBaseline(model, pairs, device)(1)
    sync(device)
    torch.cuda.empty_cache()


CIRCUITS = "circuits"  # a --scorings entry: discover's faithfulness evaluation, not a scoring


PLANNED = "planned"  # a --scorings entry: what memory.choose takes at the point with memory to spare


def scoring_of(name: str) -> tuple[str, int, int]:
    """A --scorings entry as (scoring, chunks, factored layers): "summed", "per-step",
    "per-step:K" (the sources in K chunks), "factored:F" (per step, the last F layers' heads
    factored: factored.FactoredHeads), or "circuits" (one faithfulness evaluation of a mask
    patching half the edges). "planned" is resolved per point (`planned`)."""
    scoring, _, n = name.partition(":")
    if scoring == "factored":
        return "per-step", 1, int(n)
    return scoring, int(n or 1), 0


def planned(shape, dtype_bytes: int, seq: int, batch: int) -> str:
    """The --scorings entry the plan takes at this point with memory to spare."""
    from headdb.attribution.memory import plan_shape

    return entry_of(plan_shape(shape, dtype_bytes=dtype_bytes, seq=seq, budget=2**62, wanted=batch, device="cuda"))


def entry_of(plan) -> str:
    """A per-step or summed memory.Plan as a --scorings entry (`scoring_of` reads it back)."""
    if plan.factored:
        return f"factored:{plan.factored}"
    return f"per-step:{plan.chunks}" if plan.chunks > 1 else plan.scoring


def engine(loaded, pairs, steps: int, batch: int, scoring: str):
    """EAP-IG at exactly `batch` pairs per batch with `scoring` (no memory planning but
    "planned"'s), or the circuits phase of `discover`: one evaluate_circuits call."""
    import numpy as np

    from headdb.attribution import build_layout, evaluate_circuits
    from headdb.attribution.eap import eap_scores

    if scoring == CIRCUITS:
        mask = np.arange(build_layout(loaded.shape).n_edges) % 2 == 0
        return evaluate_circuits(loaded, pairs, [mask], metric="kl", batch_size=batch)
    if scoring == PLANNED:
        seq = max(len(ids) for ids in pairs.clean)
        scoring = planned(loaded.shape, loaded.dtype.itemsize, seq, batch)
    scoring, chunks, factored = scoring_of(scoring)
    return eap_scores(
        loaded,
        pairs,
        method="eap-ig",
        steps=steps,
        metric="kl",
        batch_size=batch,
        scoring=scoring,
        chunks=chunks,
        factored=factored,
    )


def run_point(
    args, side: str, model: Path, dtype: str, points: list[tuple[int, int]], scoring: str = "per-step"
) -> list[dict]:
    """`point` in a fresh subprocess; a failed process (killed for memory, timed out) gives
    one error row per point."""
    fd, out = tempfile.mkstemp(suffix=".json")
    os.close(fd)
    spec = ",".join(f"{s}x{b}" for s, b in points)
    cmd = [sys.executable, __file__, "--point", side, "--model", str(model), "--dtype", dtype, "--points", spec]
    cmd += ["--steps", str(args.steps), "--device", args.device, "--json", out, "--scoring", scoring]
    cmd += ["--threads", str(args.threads)] if args.threads else []
    env = dict(os.environ)
    if not args.device.startswith("cuda"):
        # A fixed mmap threshold: glibc returns every freed block >= 128 KiB at once, so peak RSS
        # is the live tensor bytes (what the memory model predicts), not the heap's high-water mark.
        env["MALLOC_MMAP_THRESHOLD_"] = "131072"
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.point_timeout, env=env)
        try:
            return json.loads(Path(out).read_text())
        except (OSError, ValueError):
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["?"]
            # a CPU process the kernel killed for memory ends with -9 and no JSON
            error = f"exit {proc.returncode}: {tail[0][:300]}"
    except subprocess.TimeoutExpired:
        error = f"timed out after {args.point_timeout} s"
    finally:
        Path(out).unlink(missing_ok=True)
    return [{"side": side, "seq": s, "batch": b, "fits": None, "error": error} for s, b in points]


# ----------------------------------------------------------------------------- the grid


def model_shape(model: Path):
    from headdb.checkpoints.loading import read_config, shape_from_config

    return shape_from_config(read_config(model)[1])


def predicted(shape, dtype: str, seq: int, batch: int, scoring: str) -> dict:
    """The memory model's figures for one point: the engine's, one plain pass's, and the entry
    the plan takes with memory to spare (`planned`)."""
    from headdb.attribution.memory import estimate, plain_pass

    w = DTYPES[dtype].itemsize
    plan = planned(shape, w, seq, batch)
    sc, chunks, factored = scoring_of(plan if scoring == PLANNED else scoring)
    this = estimate(
        shape, dtype_bytes=w, seq=seq, scoring=sc, chunks=chunks, factored=factored, circuits=sc == CIRCUITS
    )
    phase = CIRCUITS if sc == CIRCUITS else this.phase  # that phase alone: what the call holds
    plain = plain_pass(shape, dtype_bytes=w, seq=seq)
    return {
        "weights_mib": this.weights / 2**20,
        "working_mib": (this.fixed + batch * this.phases[phase]) / 2**20,
        "plain_working_mib": plain.working(batch) / 2**20,
        "planned": plan,
        "phase": phase,
    }


def measure(args, name: str, shape: dict, dtype: str, model: Path) -> list[dict]:
    """Every (seq, batch) of the grid: on CPU a fresh process per point and side (peak RSS is a
    process's), on CUDA one process per side for all points (its allocator's peak resets)."""
    points = [(seq, batch) for seq in args.seqs for batch in args.batches]
    grouped = args.device.startswith("cuda") or getattr(args, "group", False)
    groups = [points] if grouped else [[p] for p in points]
    rows = []
    for group in groups:
        t0 = time.perf_counter()
        runs = rounds(args, model, dtype, group)
        baseline = [paired([r[i] for r in runs[BASELINE]]) for i in range(len(group))]
        for i, ((seq, batch), b) in enumerate(zip(group, baseline)):
            for sc in args.scorings:
                row: dict = {"shape": name, "layers": shape["layers"], "dtype": dtype, "seq": seq, "batch": batch}
                row.update(scoring=sc, model=predicted(model_shape(model), dtype, seq, batch, sc))
                row.update(engine=paired([r[i] for r in runs[("engine", sc)]]), baseline=b)
                row["wall_s"] = time.perf_counter() - t0
                row["load"] = load_average()
                finish(row, args.device)
                print(format_row(row), flush=True)
                rows.append(row)
        if args.json:  # as it goes: a long grid keeps what it measured
            Path(args.json + ".partial").write_text(json.dumps(rows, indent=1, default=str))
    return rows


BASELINE = ("baseline", "per-step")


def rounds(args, model: Path, dtype: str, group: list[tuple[int, int]]) -> dict:
    """--rounds R of every side's process: the engine's scorings, then the baseline, in the
    reverse order the next round, so that a shared machine's drifting speed falls on both sides
    (the house rule: ratios in one run, alternating sides). side -> [round -> rows of `group`]."""
    sides = [("engine", sc) for sc in args.scorings] + [BASELINE]
    runs: dict = {side: [] for side in sides}
    for r in range(args.rounds):
        for side in sides if r % 2 == 0 else sides[::-1]:
            runs[side].append(run_point(args, side[0], model, dtype, group, side[1]))
    return runs


def paired(results: list[dict]) -> dict:
    """One side's rounds of a point as one result: the first round's (memory is the same in
    every round), with every round's seconds beside it."""
    first = dict(results[0])
    if all(r.get("fits") for r in results):
        first["seconds_all"] = [r["seconds"] for r in results]
        first["seconds"] = statistics.median(first["seconds_all"])
    return first


def finish(row: dict, device: str) -> None:
    """Ratios and the model's errors of one point (where both sides ran)."""
    e, b, m = row["engine"], row["baseline"], row["model"]
    if not (e.get("fits") and b.get("fits")):
        return
    peak, rise = ("cuda_peak_mib", "cuda_rise_mib") if device.startswith("cuda") else ("rss_peak_mib", "rss_rise_mib")
    before = e["cuda_before_mib"] if device.startswith("cuda") else e["rss_before_mib"]
    # Per round, engine over baseline of the same round; the median of the rounds.
    ratios = [x / y for x, y in zip(e.get("seconds_all", [e["seconds"]]), b.get("seconds_all", [b["seconds"]]))]
    row["time_ratios"] = ratios
    row["time_ratio"] = statistics.median(ratios)
    row["peak_ratio"] = e["mem"][peak] / b["mem"][peak]
    row["engine_peak_mib"], row["engine_rise_mib"] = e["mem"][peak], e["mem"][rise]
    row["baseline_peak_mib"] = b["mem"][peak]
    row["model_total_mib"] = before + m["working_mib"]
    row["model_error_total"] = row["model_total_mib"] / e["mem"][peak] - 1
    row["model_error_working"] = m["working_mib"] / e["mem"][rise] - 1 if e["mem"][rise] > 0 else None
    row["weights_error"] = m["weights_mib"] / (e["weight_bytes"] / 2**20) - 1
    if "plain_working_mib" in m and b["mem"][rise] > 0:
        row["plain_error_working"] = m["plain_working_mib"] / b["mem"][rise] - 1


def scoring_label(row: dict) -> str:
    """The row's --scorings entry; "planned" with what it resolved to."""
    sc = row.get("scoring", "per-step")
    return f"{sc}={row['model']['planned']}" if sc == PLANNED and "planned" in row.get("model", {}) else sc


def format_row(row: dict) -> str:
    head = (
        f"{row['shape']:>5} L{row['layers']:<2} {row['dtype']:>8} S={row['seq']:<5} B={row['batch']:<3}"
        f" {scoring_label(row):>8}"
    )
    if "time_ratio" not in row:
        why = row["engine"].get("error") or row["baseline"].get("error")
        return f"{head} not measured: {why}"
    e, b = row["engine"], row["baseline"]
    err_w = row["model_error_working"]
    ratios = row.get("time_ratios", [])
    spread = f" (median of {len(ratios)} rounds: {min(ratios):.2f}-{max(ratios):.2f})" if len(ratios) > 1 else ""
    return (
        f"{head} engine {e['seconds']:8.2f} s  base {b['seconds']:8.2f} s  time x{row['time_ratio']:.2f}{spread}  "
        f"peak {row['engine_peak_mib']:8.0f} / {row['baseline_peak_mib']:8.0f} MiB x{row['peak_ratio']:.2f}  "
        f"model total {row['model_total_mib']:8.0f} MiB ({row['model_error_total']:+.1%}), working "
        f"{row['model']['working_mib']:7.0f} vs rise {row['engine_rise_mib']:7.0f} MiB "
        f"({'n/a' if err_w is None else f'{err_w:+.1%}'}) [{row['model']['phase']}]"
        + (f"; plain pass: model vs rise {row['plain_error_working']:+.1%}" if "plain_error_working" in row else "")
        + (f"; planned: {row['model']['planned']}" if "planned" in row["model"] else "")
    )


def rescore(path: str, device: str) -> list[dict]:
    """--rescore FILE: a grid's measured rows (its JSON or .partial) with the memory model's
    current predictions (the model is a function of the shape; nothing is re-measured)."""
    data = json.loads(Path(path).read_text())
    rows = data["rows"] if isinstance(data, dict) else data
    for row in rows:
        shape = config_shape(dict(SHAPES[row["shape"]], layers=row["layers"]))
        row["model"] = predicted(shape, row["dtype"], row["seq"], row["batch"], row.get("scoring", "per-step"))
        finish(row, device)
        print(format_row(row))
    return rows


def config_shape(shape: dict):
    """The ModelShape of the config `write_model` writes for `shape` (no weights, no files)."""
    from transformers import Qwen2Config, Qwen3Config

    from headdb.checkpoints.loading import shape_from_config

    qwen3 = shape.get("arch", "qwen2") == "qwen3"
    extra = {"head_dim": shape["head_dim"]} if "head_dim" in shape else {}
    config = (Qwen3Config if qwen3 else Qwen2Config)(
        vocab_size=shape["vocab"],
        hidden_size=shape["hidden"],
        intermediate_size=shape["intermediate"],
        num_hidden_layers=shape["layers"],
        num_attention_heads=shape["heads"],
        num_key_value_heads=shape["kv_heads"],
        tie_word_embeddings=shape["tie"],
        **extra,
    )
    config.architectures = ["Qwen3ForCausalLM" if qwen3 else "Qwen2ForCausalLM"]
    return shape_from_config(config.to_dict())


def grid(args) -> dict:
    res: dict = {
        "machine": machine(args.device),
        "device": args.device,
        "steps": args.steps,
        "load_before": load_average(),
        "date": time.strftime("%Y-%m-%d"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "rows": [],
    }
    root = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="headdb-bench-shapes-"))
    print(f"machine: {res['machine']}; load average {res['load_before']}; m = {args.steps} IG steps", flush=True)
    try:
        for name in args.shapes:
            shape = dict(SHAPES[name])
            if args.layers:
                shape["layers"] = args.layers
            for dtype in args.dtypes:
                model = root / f"{name}-L{shape['layers']}-{dtype}"
                if not (model / "config.json").is_file():
                    gen = args.device if args.device.startswith("cuda") else "cpu"
                    write_model(model, shape, DTYPES[dtype], gen_device=gen)
                res["rows"] += measure(args, name, shape, dtype, model)
                if not args.workdir and not args.keep:
                    shutil.rmtree(model, ignore_errors=True)
    finally:
        if not args.workdir and not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    res["load_after"] = load_average()
    print(f"load average after: {res['load_after']}")
    return res


def ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip()]


def points_of(text: str) -> list[tuple[int, int]]:
    """ "128x1,256x2" -> [(128, 1), (256, 2)] (tokens x batch)."""
    return [(int(s), int(b)) for s, b in (p.split("x") for p in text.split(","))]


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shapes", default="0.5b,1.5b", help=f"comma-separated: {', '.join(SHAPES)}")
    ap.add_argument("--seqs", type=ints, default=[128, 256, 512, 1024])
    ap.add_argument("--batches", type=ints, default=[1])
    ap.add_argument("--dtypes", default="float32,bfloat16")
    ap.add_argument(
        "--scorings",
        default="per-step,summed",
        help="the engine's scorings to measure (eap._ig_steps), each in its own process; per-step:K holds the "
        "sources' differences in K chunks (eap.source_chunks); factored:F the last F layers' heads factored "
        "(factored.FactoredHeads); planned: what the memory plan takes at each point with memory to spare; "
        "circuits: one faithfulness evaluation (discover's last phase; its time is not comparable with the "
        "m + 2 passes)",
    )
    ap.add_argument(
        "--rounds", type=int, default=1, help="processes per side and point, in alternating order (time: the median)"
    )
    ap.add_argument("--steps", type=int, default=2, help="IG steps m (few on a CPU; the ratio is what matters)")
    ap.add_argument("--layers", type=int, default=None, help="override every shape's layer count")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--point-timeout", type=float, default=3600.0)
    ap.add_argument("--json", default=None)
    ap.add_argument("--workdir", default=None, help="keep the written models here (reused when present)")
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--quick", action="store_true", help="a tiny shape: checks the script runs")
    ap.add_argument("--rescore", default=None, help="reprint a grid's JSON with the current memory model")
    # one point in a fresh process (internal)
    ap.add_argument("--point", choices=("engine", "baseline"), help=argparse.SUPPRESS)
    ap.add_argument("--model", help=argparse.SUPPRESS)
    ap.add_argument("--points", type=points_of, help=argparse.SUPPRESS)
    ap.add_argument("--dtype", help=argparse.SUPPRESS)
    ap.add_argument("--scoring", default="per-step", help=argparse.SUPPRESS)
    return ap


def main() -> None:
    args = parser().parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.rescore:
        rescore(args.rescore, args.device)
        return
    if args.point:
        res = point(args)
        Path(args.json).write_text(json.dumps(res, default=str))
        return
    if args.quick:
        args.shapes, args.seqs, args.batches, args.steps = "tiny3", [32], [1, 2], 2
    args.shapes = args.shapes.split(",")
    args.dtypes = args.dtypes.split(",")
    args.scorings = args.scorings.split(",")
    res = grid(args)
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1, default=str))


if __name__ == "__main__":
    main()
