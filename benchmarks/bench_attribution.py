"""EAP-IG attribution cost versus plain forward+backward passes (target: ratio <= 1.3).

    .venv/bin/python benchmarks/bench_attribution.py [--shape 0.5b|1.5b|3b|7b|tiny]
        [--seq 128] [--batch 1] [--steps 5] [--repeats 2] [--device auto|cpu|cuda]
        [--dtype float32|bfloat16] [--threads N] [--split/--no-split] [--diagnose] [--profile N]
    .venv/bin/python benchmarks/bench_attribution.py --find-largest [--device cuda] [--seq 512]
        [--shapes 0.5b,1.5b,3b,7b]
    .venv/bin/python benchmarks/bench_attribution.py --stats [--bootstrap 100] [--batch 4] [--repeats 2]
        [--shape ...] [--seq 128] [--steps 5] [--threads N]

--stats: the cost of per-example statistics and bootstrap replicates (headdb.attribution.bootstrap).
    One batch of --batch random pairs; three engine sides, alternated after one warm-up each:
    plain       attribute(..., method="eap-ig") as above (no per-example scores are formed)
    abs-mean+B  the same with bootstrap=B: per-example scores per batch (eap.add_layer_scores), the
                sum of |score| and B replicate sums (one [B, batch] x [batch, n_edges] product)
    mean-abs+B  bootstrap=B, rank="mean-abs": also the B replicate sums of |score|
    Ratios are each side's time over plain's (target <= 1.25). Memory: the replicate sums are
    B x n_edges float32 on the engine device (2x for mean-abs), reported exactly, beside the peak
    RSS rise of each call. Also timed: discover's re-selection of the top-n (5000) and threshold
    (0.1) circuits from each of the B replicates (headdb.attribution.confidence), which runs once
    per run whatever the number of examples.

What is measured, in one process, after one warm-up call of each side:
    engine    headdb.attribution.attribute(loaded, pairs, method="eap-ig", steps=m, metric="kl",
              batch_size=--batch) on one batch of --batch random pairs of --seq tokens: two
              captured forwards (clean, corrupted), m hooked forward+backward IG steps and the
              scoring (one GEMM per layer, see eap.add_layer_scores).
    baseline  m plain forward+backward passes of an UNWRAPPED copy of the same HF model
              (AutoModelForCausalLM loaded from the same directory, same dtype, same eager
              attention that headdb.checkpoints.loading uses; no bridge, no hooks) on the same clean batch:
              model(inputs_embeds=x).logits -> the same KL metric at the last position ->
              .backward(), with x = the token embeddings, requires_grad=True (what IG
              differentiates). Parameters have requires_grad=False on BOTH sides (the engine's
              graph_mode freezes them), so neither side builds weight gradients. The clean
              reference distribution of the KL is computed once, outside the timed region.
    ratio     median engine time / median baseline time. Floor ~1.0 by the brief; strictly the
              engine also does 2 no-grad capture forwards, and with frozen weights a backward
              costs about one forward, so each capture is ~half a pass: ~1 + 1/m (1.2 at m=5)
              unless the engine saves elsewhere (e.g. last-token-only logits).
Repeats alternate baseline and engine; medians and minima are reported, and the ratio of the
minimum process CPU times. On a shared CPU machine use --threads 1: with every core's thread
in use, one busy core elsewhere stalls the whole intra-op team and wall times swing by 2-10x,
whereas a single thread's CPU time barely notices other processes.
Memory: peak RSS during each timed call (Linux: VmHWM after resetting it through
/proc/self/clear_refs; elsewhere the process-lifetime ru_maxrss), as the absolute peak and as
the rise above the RSS right before the call; on CUDA also torch.cuda.max_memory_allocated
(absolute and rise). The process holds BOTH model copies, so absolute figures include the
weights twice; the rises are each side's working memory.
Split (--split, default on): one extra, instrumented engine call timed through wrappers
installed by this script only (Probe.capture, eap._ig_steps, eap.add_layer_scores /
add_logits_scores, which run inside the IG steps, and the
engine's progress callback, which fires after every pass); on CUDA each boundary synchronises.
--diagnose: also times m forward+backward passes of the bridge-wrapped model (loaded.hf_model,
no hooks) with the bridge's default flags and with the graph-mode flags (split q/k/v input,
per-head attention result) on, to separate bridge, graph-mode and hook/engine overheads.
--profile N: torch.profiler over one engine call and one baseline call; prints the top N ops.
--find-largest: for each Qwen2.5 shape (0.5b, 1.5b, 3b, 7b) runs this script in a subprocess
with --fit-only (one engine call at batch 1, --seq tokens, default 512, no baseline copy) and
reports which fit; skipped on CPU unless --force.

The model is a randomly initialised Qwen2-architecture checkpoint written to a temporary
directory (config.json, safetensors shards, the headdb.demo.tiny tokenizer) and loaded with
headdb.checkpoints.loading.load_model; token ids are random below the model vocabulary.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import torch

# Qwen2.5 base-model shapes (the HF config.json values).
SHAPES = {
    "tiny": dict(layers=2, hidden=64, heads=4, kv_heads=2, intermediate=256, vocab=512, tie=True),
    "0.5b": dict(layers=24, hidden=896, heads=14, kv_heads=2, intermediate=4864, vocab=151936, tie=True),
    "1.5b": dict(layers=28, hidden=1536, heads=12, kv_heads=2, intermediate=8960, vocab=151936, tie=True),
    "3b": dict(layers=36, hidden=2048, heads=16, kv_heads=2, intermediate=11008, vocab=151936, tie=True),
    "7b": dict(layers=28, hidden=3584, heads=28, kv_heads=4, intermediate=18944, vocab=152064, tie=False),
}
FIND_ORDER = ("0.5b", "1.5b", "3b", "7b")
DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
}


# ----------------------------------------------------------------------------- the model


def write_model(
    out: Path, shape: dict, dtype: torch.dtype, *, seed: int = 0, gen_device: str = "cpu", shard_bytes: int = 2 << 30
) -> Path:
    """Write config.json, random safetensors shards and the headdb.demo.tiny tokenizer to `out`.

    shape["arch"] "qwen3" (default "qwen2") writes a Qwen3 model (q/k norms, no q/k/v bias), with
    shape["head_dim"] when given (Qwen3 decouples it from hidden / heads)."""
    from safetensors.torch import save_file
    from transformers import Qwen2Config, Qwen2ForCausalLM, Qwen3Config, Qwen3ForCausalLM

    from headdb.demo.tiny import build_tokenizer

    out.mkdir(parents=True, exist_ok=True)
    tok = build_tokenizer()
    qwen3 = shape.get("arch", "qwen2") == "qwen3"
    config_class, model_class = (Qwen3Config, Qwen3ForCausalLM) if qwen3 else (Qwen2Config, Qwen2ForCausalLM)
    extra = {"head_dim": shape["head_dim"]} if "head_dim" in shape else {}
    config = config_class(
        vocab_size=shape["vocab"],
        hidden_size=shape["hidden"],
        intermediate_size=shape["intermediate"],
        num_hidden_layers=shape["layers"],
        num_attention_heads=shape["heads"],
        num_key_value_heads=shape["kv_heads"],
        max_position_embeddings=32768,
        rope_theta=1e6,
        rms_norm_eps=1e-6,
        tie_word_embeddings=shape["tie"],
        use_sliding_window=False,
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.eos_token_id,
        eos_token_id=tok.eos_token_id,
        initializer_range=0.02,
        **extra,
    )
    config.architectures = [model_class.__name__]
    config.save_pretrained(out)
    tok.save_pretrained(out)
    with torch.device("meta"):  # names and shapes only; no memory
        names = [(n, tuple(p.shape)) for n, p in model_class(config).named_parameters()]
    gen = torch.Generator(device=gen_device).manual_seed(seed)
    shards: list[dict] = [{}]
    size = 0
    for name, shp in names:
        if name.endswith("norm.weight"):  # also Qwen3's q_norm / k_norm
            t = 1.0 + 0.1 * torch.randn(shp, generator=gen, device=gen_device)
        else:  # weights and q/k/v biases
            t = 0.02 * torch.randn(shp, generator=gen, device=gen_device)
        t = t.to(dtype).cpu().contiguous()
        nbytes = t.numel() * t.element_size()
        if shards[-1] and size + nbytes > shard_bytes:
            shards.append({})
            size = 0
        shards[-1][name] = t
        size += nbytes
    if len(shards) == 1:
        save_file(shards[0], str(out / "model.safetensors"), metadata={"format": "pt"})
    else:
        index = {
            "metadata": {"total_size": sum(t.numel() * t.element_size() for s in shards for t in s.values())},
            "weight_map": {},
        }
        for i, s in enumerate(shards):
            fname = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
            save_file(s, str(out / fname), metadata={"format": "pt"})
            index["weight_map"].update({k: fname for k in s})
        (out / "model.safetensors.index.json").write_text(json.dumps(index, indent=1))
    return out


def make_pairs(n: int, seq: int, vocab: int, seed: int = 0):
    """EncodedPairs of n random clean prompts of `seq` ids; the corrupted prompt differs from
    the clean one at about 1 in 8 positions (always at least at one position)."""
    from headdb.attribution.tasks import EncodedPairs

    g = torch.Generator().manual_seed(seed)
    clean = torch.randint(3, vocab, (n, seq), generator=g)  # above the special ids 0..2
    flip = torch.rand((n, seq), generator=g) < 0.125
    flip[:, seq // 2] = True
    corrupted = torch.where(flip, torch.randint(3, vocab, (n, seq), generator=g), clean)
    answer = torch.randint(3, vocab, (n,), generator=g)
    return EncodedPairs(
        item_ids=[str(i) for i in range(n)],
        clean=clean.tolist(),
        corrupted=corrupted.tolist(),
        answer=answer.tolist(),
        wrong=[-1] * n,
    )


# ----------------------------------------------------------------------------- measurement


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _rss_kib() -> int:
    try:
        for line in open("/proc/self/status"):
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _trim() -> None:
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class Peak:
    """Peak memory of a block: RSS (absolute and rise, MiB) and on CUDA allocated bytes."""

    def __init__(self, device: str):
        self.device = device
        self.rss_peak = self.rss_rise = self.cuda_peak = self.cuda_rise = None
        self.exact_rss = False

    def __enter__(self):
        gc.collect()
        _trim()  # return freed heap pages to the OS so the RSS rise is this block's own
        try:
            with open("/proc/self/clear_refs", "w") as fh:
                fh.write("5")  # resets VmHWM (peak RSS) to the current RSS
            self.exact_rss = True
        except OSError:
            self.exact_rss = False
        self.rss0 = _rss_kib()
        if self.device.startswith("cuda"):
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.cuda0 = torch.cuda.memory_allocated()
        return self

    def __exit__(self, *exc):
        sync(self.device)
        hwm = None
        if self.exact_rss:
            for line in open("/proc/self/status"):
                if line.startswith("VmHWM:"):
                    hwm = int(line.split()[1])
        if hwm is None:  # lifetime maximum: an upper bound only
            hwm = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        self.rss_peak = hwm / 1024
        self.rss_rise = (hwm - self.rss0) / 1024
        if self.device.startswith("cuda"):
            self.cuda_peak = torch.cuda.max_memory_allocated() / 2**20
            self.cuda_rise = (torch.cuda.max_memory_allocated() - self.cuda0) / 2**20
        return False

    def as_dict(self) -> dict:
        return {
            "rss_peak_mib": self.rss_peak,
            "rss_rise_mib": self.rss_rise,
            "rss_exact": self.exact_rss,
            "cuda_peak_mib": self.cuda_peak,
            "cuda_rise_mib": self.cuda_rise,
        }


def merge_peaks(peaks: list[Peak]) -> dict:
    out = {}
    for key in ("rss_peak", "rss_rise", "cuda_peak", "cuda_rise"):
        vals = [getattr(p, key) for p in peaks if getattr(p, key) is not None]
        out[key + "_mib"] = max(vals) if vals else None
    out["rss_exact"] = all(p.exact_rss for p in peaks)
    return out


# ----------------------------------------------------------------------------- the two sides


def run_engine(loaded, pairs, steps: int, batch: int, progress=None, **stats):
    from headdb.attribution import attribute

    return attribute(
        loaded, pairs, method="eap-ig", steps=steps, metric="kl", batch_size=batch, progress=progress, **stats
    )


class Baseline:
    """m plain forward+backward passes of an unwrapped HF model on the clean batch."""

    def __init__(self, model, pairs, device: str):
        from headdb.attribution.batches import make_batches

        self.model = model
        b = make_batches(pairs, len(pairs), 0, torch.device(device))[0]
        self.batch = b
        with torch.no_grad():
            self.embeds = model.get_input_embeddings()(b.clean).detach()
            logits = model(inputs_embeds=self.embeds).logits
            self.clean_lp = torch.log_softmax(self._last(logits).float(), dim=-1)
        del logits

    def _last(self, logits):
        return logits[torch.arange(logits.shape[0], device=logits.device), self.batch.last]

    def __call__(self, steps: int) -> None:
        from headdb.attribution.metrics import metric_values

        b = self.batch
        for _ in range(steps):
            x = self.embeds.clone().requires_grad_(True)
            with torch.enable_grad():
                logits = self.model(inputs_embeds=x).logits
                value = metric_values("kl", self._last(logits), self.clean_lp, b.answer, b.wrong).sum()
                value.backward()
            del logits, value, x


def load_plain(path: Path, dtype: torch.dtype, device: str):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True, dtype=dtype, attn_implementation="eager")
    model.to(device).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def timed(fn, device: str, cpu_times: list | None = None) -> tuple[float, Peak]:
    """Wall seconds of fn() (and its process CPU seconds appended to cpu_times)."""
    with Peak(device) as pk:
        sync(device)
        c0, t0 = time.process_time(), time.perf_counter()
        fn()
        sync(device)
        dt = time.perf_counter() - t0
        if cpu_times is not None:
            cpu_times.append(time.process_time() - c0)
    return dt, pk


# ----------------------------------------------------------------------------- the time split


@contextmanager
def instrumented(device: str, record: dict):
    """Wrap the engine's phases (in this process only) to time them; restore afterwards."""
    from headdb.attribution import eap
    from headdb.attribution.probe import Probe

    orig = {
        "capture": Probe.capture,
        "steps": eap._ig_steps,
        "layer": eap.add_layer_scores,
        "logits": eap.add_logits_scores,
    }
    record.update(capture=[], ig_total=0.0, scores=0.0, step_marks=[])

    def capture(self, *a, **k):
        sync(device)
        t0 = time.perf_counter()
        out = orig["capture"](self, *a, **k)
        sync(device)
        record["capture"].append(time.perf_counter() - t0)
        return out

    def ig_steps(*a, **k):
        sync(device)
        t0 = time.perf_counter()
        record["step_marks"] = [t0]
        out = orig["steps"](*a, **k)
        sync(device)
        record["ig_total"] += time.perf_counter() - t0
        return out

    def scoring(fn):
        def wrapped(*a, **k):
            sync(device)
            t0 = time.perf_counter()
            out = fn(*a, **k)
            sync(device)
            record["scores"] += time.perf_counter() - t0
            return out

        return wrapped

    Probe.capture, eap._ig_steps = capture, ig_steps
    eap.add_layer_scores, eap.add_logits_scores = scoring(orig["layer"]), scoring(orig["logits"])
    try:
        yield
    finally:
        Probe.capture, eap._ig_steps = orig["capture"], orig["steps"]
        eap.add_layer_scores, eap.add_logits_scores = orig["layer"], orig["logits"]


def time_split(loaded, pairs, steps: int, batch: int, device: str) -> dict:
    rec: dict = {}

    def progress(done, total):
        if rec.get("step_marks"):  # inside the IG loop: one tick per step
            sync(device)
            rec["step_marks"].append(time.perf_counter())

    with instrumented(device, rec):
        sync(device)
        t0 = time.perf_counter()
        run_engine(loaded, pairs, steps, batch, progress=progress)
        sync(device)
        total = time.perf_counter() - t0
    marks = rec["step_marks"]
    step_times = [b - a for a, b in zip(marks, marks[1:])]
    cap = rec["capture"]
    other = total - sum(cap) - rec["ig_total"]  # the scoring runs inside the IG steps
    return {
        "total_s": total,
        "capture_clean_s": cap[0] if cap else None,
        "capture_corrupted_s": cap[1] if len(cap) > 1 else None,
        "ig_steps_s": rec["ig_total"],
        "ig_step_each_s": step_times,
        "scores_s": rec["scores"],
        "other_s": other,
    }


# ----------------------------------------------------------------------------- diagnostics


def bridge_passes(loaded, baseline: Baseline, steps: int, graph_flags: bool) -> None:
    """m forward+backward passes of loaded.hf_model (bridge components inside, no hooks)."""
    from headdb.attribution.metrics import metric_values
    from headdb.attribution.probe import Probe

    model = loaded.hf_model
    probe = Probe(loaded)
    b = baseline.batch

    def passes():
        for _ in range(steps):
            x = baseline.embeds.clone().requires_grad_(True)
            with torch.enable_grad():
                logits = model(inputs_embeds=x).logits
                value = metric_values("kl", baseline._last(logits), baseline.clean_lp, b.answer, b.wrong).sum()
                value.backward()

    params = list(model.parameters())
    saved = [p.requires_grad for p in params]
    try:
        for p in params:
            p.requires_grad_(False)
        if graph_flags:
            with probe.graph_mode():
                passes()
        else:
            passes()
    finally:
        for p, s in zip(params, saved):
            p.requires_grad_(s)


def profile(label: str, fn, device: str, top: int) -> None:
    from torch.profiler import ProfilerActivity, profile as tprofile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.startswith("cuda") else [])
    with tprofile(activities=acts, record_shapes=False) as prof:
        fn()
        sync(device)
    key = "self_device_time_total" if device.startswith("cuda") else "self_cpu_time_total"
    print(f"\n--- profile: {label} (top {top} by {key}) ---")
    print(prof.key_averages().table(sort_by=key, row_limit=top, max_name_column_width=60))


# ----------------------------------------------------------------------------- modes


def shape_of(args) -> dict:
    shape = dict(SHAPES[args.shape])
    for key in ("layers", "hidden", "heads", "kv_heads", "intermediate", "vocab"):
        v = getattr(args, key)
        if v is not None:
            shape[key] = v
    return shape


def machine(device: str) -> str:
    if device.startswith("cuda"):
        return f"{torch.cuda.get_device_name()}, torch {torch.__version__}"
    return (
        f"{platform.machine()} {os.cpu_count()}-core, CPU, torch {torch.__version__}, {torch.get_num_threads()} threads"
    )


def load_average() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "?"


def fmt_mem(d: dict) -> str:
    s = f"RSS peak {d['rss_peak_mib']:.0f} MiB ({d['rss_rise_mib']:+.0f})"
    if not d.get("rss_exact", True):
        s += " [lifetime max]"
    if d.get("cuda_peak_mib") is not None:
        s += f", CUDA peak {d['cuda_peak_mib']:.0f} MiB ({d['cuda_rise_mib']:+.0f})"
    return s


def bench(args) -> dict:
    from headdb.checkpoints.loading import load_model

    device, dtype = args.device, DTYPES[args.dtype]
    shape = shape_of(args)
    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="headdb-bench-attr-"))
    res: dict = {
        "shape": shape,
        "seq": args.seq,
        "batch": args.batch,
        "steps": args.steps,
        "device": device,
        "dtype": args.dtype,
        "machine": machine(device),
        "load_before": load_average(),
    }
    try:
        t0 = time.perf_counter()
        if not (work / "config.json").is_file():
            write_model(work, shape, dtype, gen_device=device if device.startswith("cuda") else "cpu")
        res["write_s"] = time.perf_counter() - t0
        pairs = make_pairs(args.batch, args.seq, shape["vocab"], seed=args.seed)
        if args.fit_only:  # load + one cold engine call, no baseline copy
            try:
                loaded = load_model(work, dtype=args.dtype, device=device)
                dt, pk = timed(lambda: run_engine(loaded, pairs, args.steps, args.batch), device)
                res.update(fits=True, engine_s=dt, engine_mem=pk.as_dict())
                print(f"fits: engine {dt:.2f} s (cold), {fmt_mem(pk.as_dict())}")
            except torch.OutOfMemoryError as exc:
                res.update(fits=False, error=str(exc).strip().splitlines()[0][:300])
                print(f"does not fit: {res['error']}")
            return res

        t0 = time.perf_counter()
        loaded = load_model(work, dtype=args.dtype, device=device)
        res["load_s"] = time.perf_counter() - t0
        print(
            f"model {loaded.model_key} ({sum(p.numel() for p in loaded.hf_model.parameters()) / 1e6:.0f}M "
            f"params, {args.dtype}) on {device}; seq {args.seq}, batch {args.batch}, steps {args.steps}",
            flush=True,
        )

        plain = load_plain(work, dtype, device)
        base = Baseline(plain, pairs, device)
        # Warm-up of each side (allocator, kernels, oneDNN/cuBLAS plans).
        t0 = time.perf_counter()
        base(args.steps)
        sync(device)
        res["baseline_warmup_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        r = run_engine(loaded, pairs, args.steps, args.batch)
        sync(device)
        res["engine_warmup_s"] = time.perf_counter() - t0
        res["completeness_relative"] = r.completeness_relative
        print(f"warm-up: baseline {res['baseline_warmup_s']:.2f} s, engine {res['engine_warmup_s']:.2f} s", flush=True)

        bt, et, bp, ep, bc, ec = [], [], [], [], [], []
        for i in range(args.repeats):
            dt, pk = timed(lambda: base(args.steps), device, bc)
            bt.append(dt)
            bp.append(pk)
            dt, pk = timed(lambda: run_engine(loaded, pairs, args.steps, args.batch), device, ec)
            et.append(dt)
            ep.append(pk)
            print(
                f"repeat {i + 1}: baseline {bt[-1]:.2f} s (cpu {bc[-1]:.2f} s), engine {et[-1]:.2f} s "
                f"(cpu {ec[-1]:.2f} s), load {load_average()}",
                flush=True,
            )
        res.update(
            baseline_s=bt,
            engine_s=et,
            baseline_cpu_s=bc,
            engine_cpu_s=ec,
            baseline_mem=merge_peaks(bp),
            engine_mem=merge_peaks(ep),
        )
        res["ratio_median"] = statistics.median(et) / statistics.median(bt)
        res["ratio_min"] = min(et) / min(bt)
        res["ratio_cpu_min"] = min(ec) / min(bc)

        if args.split:
            res["split"] = time_split(loaded, pairs, args.steps, args.batch, device)
        if args.diagnose:
            for name, flags in (("bridge_default", False), ("bridge_graph_flags", True)):
                bridge_passes(loaded, base, args.steps, flags)  # warm-up
                dt, _ = timed(lambda: bridge_passes(loaded, base, args.steps, flags), device)
                res[name + "_s"] = dt
        if args.profile:
            profile(
                "engine attribute()", lambda: run_engine(loaded, pairs, args.steps, args.batch), device, args.profile
            )
            profile("baseline (m plain fwd+bwd)", lambda: base(args.steps), device, args.profile)
        res["load_after"] = load_average()
        report(res)
        return res
    finally:
        if not args.workdir and not args.keep:
            shutil.rmtree(work, ignore_errors=True)


def bench_stats(args) -> dict:
    """--stats: plain EAP-IG versus EAP-IG with per-example statistics and B replicates."""
    from headdb.attribution import build_layout
    from headdb.attribution.circuit import select_threshold, select_topn
    from headdb.attribution.confidence import replicate_circuits
    from headdb.checkpoints.loading import load_model

    device, dtype = args.device, DTYPES[args.dtype]
    shape = shape_of(args)
    B = args.bootstrap
    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="headdb-bench-stats-"))
    sides = {"plain": {}, f"abs-mean+{B}": {"bootstrap": B}, f"mean-abs+{B}": {"bootstrap": B, "rank": "mean-abs"}}
    res: dict = {
        "mode": "stats",
        "shape": shape,
        "seq": args.seq,
        "batch": args.batch,
        "steps": args.steps,
        "bootstrap": B,
        "device": device,
        "dtype": args.dtype,
        "machine": machine(device),
        "load_before": load_average(),
    }
    try:
        if not (work / "config.json").is_file():
            write_model(work, shape, dtype, gen_device=device if device.startswith("cuda") else "cpu")
        pairs = make_pairs(args.batch, args.seq, shape["vocab"], seed=args.seed)
        loaded = load_model(work, dtype=args.dtype, device=device)
        g = build_layout(loaded.shape)
        res["n_edges"] = g.n_edges
        print(
            f"model {loaded.model_key} ({g.n_edges} edges), seq {args.seq}, batch {args.batch} (one batch), "
            f"steps {args.steps}, B {B}",
            flush=True,
        )
        results = {}
        for name, kw in sides.items():  # warm-up
            t0 = time.perf_counter()
            results[name] = run_engine(loaded, pairs, args.steps, args.batch, **kw)
            print(f"warm-up {name}: {time.perf_counter() - t0:.2f} s", flush=True)
        wall = {n: [] for n in sides}
        cpu = {n: [] for n in sides}
        peaks = {n: [] for n in sides}
        for i in range(args.repeats):
            for name, kw in sides.items():
                dt, pk = timed(lambda: run_engine(loaded, pairs, args.steps, args.batch, **kw), device, cpu[name])
                wall[name].append(dt)
                peaks[name].append(pk)
            print(
                f"repeat {i + 1}: "
                + ", ".join(f"{n} {wall[n][-1]:.2f} s (cpu {cpu[n][-1]:.2f})" for n in sides)
                + f"; load {load_average()}",
                flush=True,
            )
        res["sides"] = {}
        for name in sides:
            res["sides"][name] = {
                "wall_s": wall[name],
                "cpu_s": cpu[name],
                "mem": merge_peaks(peaks[name]),
                "ratio_median": statistics.median(wall[name]) / statistics.median(wall["plain"]),
                "ratio_min": min(wall[name]) / min(wall["plain"]),
                "ratio_cpu_min": min(cpu[name]) / min(cpu["plain"]),
            }
        r = results[f"mean-abs+{B}"]
        res["replicate_bytes_abs_mean"] = B * g.n_edges * 4
        res["replicate_bytes_mean_abs"] = 2 * B * g.n_edges * 4
        res["result_replicate_bytes"] = r.replicates.nbytes + r.replicates_abs.nbytes
        ra = results[f"abs-mean+{B}"]
        t0 = time.perf_counter()
        circuits = [select_topn(g, ra.ranking, 5000), select_threshold(g, ra.ranking, 0.1, 5000)]
        res["select_full_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        replicate_circuits(g, ra, circuits, topn=5000)
        res["reselect_s"] = time.perf_counter() - t0
        res["stability"] = [c.stability for c in circuits]
        res["load_after"] = load_average()
        report_stats(res)
        return res
    finally:
        if not args.workdir and not args.keep:
            shutil.rmtree(work, ignore_errors=True)


def report_stats(res: dict) -> None:
    B = res["bootstrap"]
    print(f"\nmachine: {res['machine']}; load average before {res['load_before']}, after {res['load_after']}")
    print(
        f"shape {res['shape']}, {res['n_edges']} edges; seq {res['seq']}, one batch of {res['batch']}, "
        f"steps {res['steps']}, {res['dtype']}, B {B}"
    )
    for name, side in res["sides"].items():
        print(
            f"{name:>14}: median {fs(statistics.median(side['wall_s']))}, min {fs(min(side['wall_s']))}; "
            f"ratio to plain {side['ratio_median']:.3f}x median, {side['ratio_min']:.3f}x min, "
            f"{side['ratio_cpu_min']:.3f}x CPU-time min (target <= 1.25); {fmt_mem(side['mem'])}"
        )
    print(
        f"replicate sums on the device: B x n_edges x 4 bytes = {res['replicate_bytes_abs_mean'] / 2**20:.1f} MiB "
        f"(abs-mean), {res['replicate_bytes_mean_abs'] / 2**20:.1f} MiB (mean-abs); host copies in the "
        f"result {res['result_replicate_bytes'] / 2**20:.1f} MiB (mean-abs)"
    )
    print(
        f"circuit re-selection from {B} replicates (top-5000 + threshold 0.1): {fs(res['reselect_s'])} "
        f"(full-data selection {fs(res['select_full_s'])}); stability {res['stability']}"
    )


def fs(t: float) -> str:
    """Seconds with 3 significant digits."""
    return f"{t:.3g} s"


def report(res: dict) -> None:
    m = res["steps"]
    print(
        f"\nmachine: {res['machine']}; load average before {res['load_before']}, "
        f"after {res['load_after']} (other processes compete for the cores when > 0)"
    )
    print(f"shape {res['shape']}, seq {res['seq']}, batch {res['batch']}, steps {m}, {res['dtype']}")
    bm, em = statistics.median(res["baseline_s"]), statistics.median(res["engine_s"])
    print(
        f"baseline ({m} plain fwd+bwd): median {fs(bm)}, min {fs(min(res['baseline_s']))} "
        f"({fs(bm / m)}/pass); {fmt_mem(res['baseline_mem'])}"
    )
    print(
        f"engine eap-ig (m={m}):        median {fs(em)}, min {fs(min(res['engine_s']))}; {fmt_mem(res['engine_mem'])}"
    )
    print(
        f"ratio engine/baseline: {res['ratio_median']:.2f}x median, {res['ratio_min']:.2f}x min "
        f"(target <= 1.3, floor ~1.0); process-CPU-time ratio {res['ratio_cpu_min']:.2f}x min "
        f"(less sensitive to other processes at --threads 1)"
    )
    sp = res.get("split")
    if sp:
        each = ", ".join(f"{t:.3g}" for t in sp["ig_step_each_s"])
        print(
            f"split (instrumented call, {fs(sp['total_s'])}): capture clean {fs(sp['capture_clean_s'])}, "
            f"capture corrupted {fs(sp['capture_corrupted_s'])}, IG steps {fs(sp['ig_steps_s'])} "
            f"[{each}] (of which scoring {fs(sp['scores_s'])}), other {fs(sp['other_s'])}"
        )
    if "bridge_default_s" in res:
        print(
            f"diagnose ({m} fwd+bwd, no hooks): bridge-wrapped default {fs(res['bridge_default_s'])}, "
            f"bridge-wrapped graph flags on {fs(res['bridge_graph_flags_s'])}"
        )
    print(f"completeness_relative {res['completeness_relative']:.3g}")


def find_largest(args) -> None:
    if args.device == "cpu" and not args.force:
        print("--find-largest: skipped on CPU (pass --force to run it anyway)")
        return
    rows = []
    for name in args.shapes.split(","):
        fd, out = tempfile.mkstemp(suffix=".json")
        os.close(fd)
        cmd = [
            sys.executable,
            __file__,
            "--shape",
            name,
            "--seq",
            str(args.seq),
            "--batch",
            "1",
            "--steps",
            str(args.steps),
            "--device",
            args.device,
            "--dtype",
            args.dtype,
            "--fit-only",
            "--json",
            out,
        ] + (["--threads", str(args.threads)] if args.threads else [])
        print("$", " ".join(cmd), flush=True)
        proc = subprocess.run(cmd, capture_output=True, text=True)
        try:
            res = json.loads(Path(out).read_text())
        except (OSError, ValueError):
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["?"]
            res = {"fits": False, "error": f"exit {proc.returncode}: {tail[0][:300]}"}
        finally:
            Path(out).unlink(missing_ok=True)
        rows.append((name, res))
        if res.get("fits"):
            print(f"{name}: fits, engine {res['engine_s']:.1f} s cold, {fmt_mem(res['engine_mem'])}", flush=True)
        else:
            print(f"{name}: does NOT fit ({res.get('error')})", flush=True)
            break  # the shapes grow monotonically
    fitting = [n for n, r in rows if r.get("fits")]
    print(
        f"\nlargest shape that fits at batch 1, {args.seq} tokens, {args.dtype} on {args.device}: "
        f"{fitting[-1] if fitting else 'none'}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shape", choices=sorted(SHAPES), default="0.5b")
    for key in ("layers", "hidden", "heads", "kv_heads", "intermediate", "vocab"):
        ap.add_argument(
            "--" + key.replace("_", "-"), dest=key, type=int, default=None, help=f"override the shape's {key}"
        )
    ap.add_argument("--seq", type=int, default=None, help="tokens per prompt (128; 512 with --find-largest)")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    ap.add_argument("--dtype", default=None, help="float32 | bfloat16 | float16 (float32 on CPU, bfloat16 on CUDA)")
    ap.add_argument("--split", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument("--diagnose", action="store_true")
    ap.add_argument("--profile", type=int, default=0, metavar="N")
    ap.add_argument("--find-largest", action="store_true")
    ap.add_argument(
        "--shapes",
        default=",".join(FIND_ORDER),
        help="--find-largest: shapes to try, smallest first (default %(default)s)",
    )
    ap.add_argument("--force", action="store_true", help="run --find-largest on CPU too")
    ap.add_argument("--fit-only", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--json", default=None, help="also write the results as JSON to this file")
    ap.add_argument("--workdir", default=None, help="model directory to (re)use instead of a temp dir")
    ap.add_argument("--keep", action="store_true", help="keep the temporary model directory")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    ap.add_argument("--stats", action="store_true", help="per-example statistics + bootstrap cost (see above)")
    ap.add_argument("--bootstrap", type=int, default=100, help="--stats: replicates B (default %(default)s)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.dtype is None:
        args.dtype = "bfloat16" if args.device.startswith("cuda") else "float32"
    if args.seq is None:
        args.seq = 512 if args.find_largest else 128
    if args.find_largest:
        find_largest(args)
        return
    if args.stats:
        res = bench_stats(args)
        if args.json:
            Path(args.json).write_text(json.dumps(res, indent=1, default=str))
        return
    res = bench(args)
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1, default=str))


if __name__ == "__main__":
    main()
