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
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, "benchmarks")
import bench_shapes  # noqa: E402
from bench_attribution import DTYPES, load_plain, make_pairs, write_model  # noqa: E402

from headdb.checkpoints.loading import load_model  # noqa: E402

out = Path(os.environ.get("OUT", "/tmp/prof"))
out.mkdir(parents=True, exist_ok=True)
dev = os.environ.get("DEV", "cuda")
sync = (lambda: torch.cuda.synchronize()) if dev == "cuda" else (lambda: None)
res = {}
ACT = [torch.profiler.ProfilerActivity.CPU] + ([torch.profiler.ProfilerActivity.CUDA] if dev == "cuda" else [])
for name, seq in [(a.split(":")[0], int(a.split(":")[1])) for a in sys.argv[1:]]:
    shape = dict(bench_shapes.SHAPES[name])
    model = Path(f"/tmp/prof-{name}")
    t0 = time.perf_counter()
    write_model(model, shape, DTYPES["bfloat16"], gen_device=dev)
    print(name, "written", time.perf_counter() - t0, flush=True)
    vocab = json.loads((model / "config.json").read_text())["vocab_size"]
    pairs = make_pairs(1, seq, vocab, seed=0)
    warm = make_pairs(1, 16, vocab, seed=1)
    loaded = load_model(str(model), dtype="bfloat16", device=dev)
    for sc in ["per-step", "summed", "circuits"]:
        bench_shapes.engine(loaded, warm, 1, 1, sc)
        bench_shapes.engine(loaded, pairs, 5, 1, sc)  # warm at the shape
        sync()
        ts = []
        for _ in range(3):
            t = time.perf_counter()
            bench_shapes.engine(loaded, pairs, 5, 1, sc)
            sync()
            ts.append(time.perf_counter() - t)
        with torch.profiler.profile(activities=ACT) as p:
            bench_shapes.engine(loaded, pairs, 5, 1, sc)
            sync()
        ka = p.key_averages()
        dev_total = sum(e.self_device_time_total for e in ka) / 1e6
        n_kernels = sum(e.count for e in ka if e.self_device_time_total > 0)
        tab = ka.table(sort_by="self_device_time_total", row_limit=30, max_name_column_width=60)
        tabc = ka.table(sort_by="self_cpu_time_total", row_limit=20, max_name_column_width=60)
        (out / f"{name}-{seq}-{sc}.txt").write_text(tab + "\n\n" + tabc)
        res[f"{name}-{seq}-{sc}"] = dict(wall=ts, device_s=dev_total, kernels=n_kernels)
        print(name, seq, sc, res[f"{name}-{seq}-{sc}"], flush=True)
    del loaded
    dev == "cuda" and torch.cuda.empty_cache()
    plain = load_plain(model, DTYPES["bfloat16"], dev)
    base = bench_shapes.LastTokenBaseline(plain, pairs, dev)
    base(7)
    sync()
    ts = []
    for _ in range(3):
        t = time.perf_counter()
        base(7)
        sync()
        ts.append(time.perf_counter() - t)
    with torch.profiler.profile(activities=ACT) as p:
        base(7)
        sync()
    ka = p.key_averages()
    dev_total = sum(e.self_device_time_total for e in ka) / 1e6
    n_kernels = sum(e.count for e in ka if e.self_device_time_total > 0)
    (out / f"{name}-{seq}-baseline.txt").write_text(
        ka.table(sort_by="self_device_time_total", row_limit=30, max_name_column_width=60)
    )
    res[f"{name}-{seq}-baseline"] = dict(wall=ts, device_s=dev_total, kernels=n_kernels)
    print(name, seq, "baseline", res[f"{name}-{seq}-baseline"], flush=True)
    del plain, base
    dev == "cuda" and torch.cuda.empty_cache()
    import shutil

    shutil.rmtree(model, ignore_errors=True)
    (out / "prof.json").write_text(json.dumps(res, indent=1))
