"""Where EAP-IG's time goes on CUDA, beside m + 2 plain passes (torch.profiler).

    OUT=DIR python3 benchmarks/gpu_profile.py 0.5b:512 8b:1024 [SHAPE:TOKENS ...]

For each shape (bench_shapes.SHAPES, random bf16 weights) and length, batch 1, m = 5: each
scoring (per-step, summed) and discover's circuits phase, then the baseline, each warmed at the
shape, timed 3 times without the profiler, then once under it. Writes DIR/<shape>-<tokens>-<side>.txt
(the kernels by device time, the ops by CPU time) and DIR/prof.json (wall seconds, summed device
seconds, kernel count). Wall well above device time means a launch-bound call. DEV=cpu runs it on
the CPU (a check of the script).
"""

import json
import os
import shutil
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_shapes  # noqa: E402  (the sibling scripts, by path)
from bench_attribution import DTYPES, load_plain, make_pairs, sync, write_model  # noqa: E402

STEPS = 5
SCORINGS = ("per-step", "summed", bench_shapes.CIRCUITS)


def profiled(fn, key: str, out: Path, device: str) -> dict:
    """fn() once to warm up, 3 timed calls, then one under torch.profiler: its kernels by device
    time and its ops by CPU time go to out/<key>.txt; wall seconds, summed device seconds and
    the kernel count are returned."""
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    fn()
    sync(device)
    wall = []
    for _ in range(3):
        t0 = time.perf_counter()
        fn()
        sync(device)
        wall.append(time.perf_counter() - t0)
    with torch.profiler.profile(activities=activities) as prof:
        fn()
        sync(device)
    ka = prof.key_averages()
    by_device = ka.table(sort_by="self_device_time_total", row_limit=30, max_name_column_width=60)
    by_cpu = ka.table(sort_by="self_cpu_time_total", row_limit=20, max_name_column_width=60)
    (out / f"{key}.txt").write_text(by_device + "\n\n" + by_cpu)
    got = {
        "wall": wall,
        "device_s": sum(e.self_device_time_total for e in ka) / 1e6,
        "kernels": sum(e.count for e in ka if e.self_device_time_total > 0),
    }
    print(key, got, flush=True)
    return got


def profile_shape(name: str, seq: int, out: Path, device: str) -> dict:
    """Every scoring of the engine, then the baseline, at one shape and length (batch 1)."""
    from headdb.checkpoints.loading import load_model

    model = Path(f"/tmp/prof-{name}")
    write_model(model, dict(bench_shapes.SHAPES[name]), DTYPES["bfloat16"], gen_device=device)
    vocab = json.loads((model / "config.json").read_text())["vocab_size"]
    pairs, warm = make_pairs(1, seq, vocab, seed=0), make_pairs(1, bench_shapes.WARMUP_SEQ, vocab, seed=1)
    res = {}
    loaded = load_model(str(model), dtype="bfloat16", device=device)
    for scoring in SCORINGS:
        bench_shapes.engine(loaded, warm, 1, 1, scoring)
        res[f"{name}-{seq}-{scoring}"] = profiled(
            lambda: bench_shapes.engine(loaded, pairs, STEPS, 1, scoring), f"{name}-{seq}-{scoring}", out, device
        )
    loaded = None  # the weights go before the baseline loads its own copy
    plain = bench_shapes.LastTokenBaseline(load_plain(model, DTYPES["bfloat16"], device), pairs, device)
    res[f"{name}-{seq}-baseline"] = profiled(lambda: plain(STEPS + 2), f"{name}-{seq}-baseline", out, device)
    plain = None
    if device == "cuda":
        torch.cuda.empty_cache()
    shutil.rmtree(model, ignore_errors=True)
    return res


def main() -> None:
    out = Path(os.environ.get("OUT", "/tmp/prof"))
    out.mkdir(parents=True, exist_ok=True)
    device = os.environ.get("DEV", "cuda")
    res: dict = {}
    for arg in sys.argv[1:]:
        name, seq = arg.split(":")
        res.update(profile_shape(name, int(seq), out, device))
        (out / "prof.json").write_text(json.dumps(res, indent=1))  # as it goes


if __name__ == "__main__":
    main()
