"""How much memory an attribution run needs, and the batch size and scoring that fit a budget.

The model counts what `eap.eap_scores` and the bridge's hooked forward actually hold, per batch
row and per token (docs/attribution.md, "Memory"). Notation: L layers, H query heads, KV kv heads,
D d_model, dh head dim, F MLP width, S tokens (the longest prompt), w the model dtype's bytes,
x = w for a half-precision model and 0 for float32 (the float32 upcasts a half model keeps beside
its own copies; in float32 they are the same tensor), P = H + 2 KV (a layer's q/k/v ports).

    delta   node-output differences [N_src, B, S, D]: d N_src D per token, N_src = 1 + L (H + 1)
            (every node but logits); d = w, in the model's dtype (eap.delta_dtype; exact
            patching keeps float32, d = 4); ceil(N_src / k) of them when the plan scores the
            sources in k chunks; with the last F layers' heads factored (factored.FactoredHeads)
            d (N_src - F (H + 1)) D + d F (H dh + D)
    expand  (F > 0 only) one factored layer's heads expanded for a product: w H D
    summed  (scoring "summed" only) the port gradients summed over the IG steps, float32:
            4 n_ports D per token, n_ports = L (P + 1) + 1 (q/k/v ports, MLP port, logits port)
    rows    one layer's port gradients as the backward forms them, float32, and their cast to
            a half model's dtype for the scoring product: (4 + x) (P + 1) D
    taps    the attention pre-norm inputs of every layer, held for the port gradients: x L D
            (in float32 the norm saves that very tensor, counted in `saved`)
    grad_tmp  the norm backward's temporaries of one layer, 4 D + x (4 D + H D) (a half model's
            float32 upcast and the per-head product in its own dtype), and the layer's q/k/v
            projection gradients, w P dh
    saved   what one dense forward keeps for its backward, per layer and token:
              4 (D + 2)                         pre-norm input and rsqrt
            + w (D + 3 F + 3 H dh) + x D        the normed inputs, the MLP's gate/up/act
                                                inputs, q, k and v (k and v repeated to H
                                                heads), the attention output
            + (4 + x) H S                       the attention probabilities (float32 softmax,
                                                plus its cast for a half model)
            + 4 (H + KV)(dh + 1)                Qwen3's q/k norms
            measured with torch's saved-tensor hooks on Qwen2 and Qwen3 models (exact to
            16 bytes per token per layer).
    misc    both embeddings, their difference and the step input: (3 w + 4) D per token

The run's peak is the larger of its phases (per row):
    captures   delta (the corrupted capture is written over the clean one as their difference;
               3 delta for exact patching, which keeps both and the difference) + one no-grad
               layer in flight
    IG steps   delta + [summed] + taps + saved over all layers + rows + [expand] + grad_tmp + misc
    circuits   (discover only) faithfulness: the running differences of all N_src sources,
               w N_src D, + the corrupted outputs with every head factored, w (D + L (H dh + D)),
               + one layer's heads expanded from them, w H D, + one layer's patched q/k/v term
               w P D + the per-head forks (2 w + 8 [half]) P D + one no-grad layer in flight + misc
Scoring "summed" scores each layer once per batch from its sums; "per-step" scores each step's
gradients as they come and never holds the sums (m times the scoring GEMMs: a few percent of a
step on a CPU).

A plain forward+backward (frozen weights, gradient to the input embeddings) holds the same
`saved` over all layers plus the embeddings and their gradient, 2 w D: `plain_pass`. It is 2-8%
below the measured rise of such passes (benchmarks/RESULTS.md, "Real shapes"), so the test below
errs towards "per-step".
`choose` takes "summed" when it fits the budget at the asked batch AND its peak stays within
PEAK_TARGET of a plain pass at that batch; else "per-step" with the heads of the fewest last
layers F factored (0 where none need be) that bring its peak within PEAK_TARGET, or as low as
factoring can, but no more than `factor_limit` (FACTOR_COST of a step's FLOPs) for the target
alone, at the largest batch that fits (more layers only where fewer fit no pair); else, when
not even one pair fits that way,
"per-step" with the sources in the fewest chunks that fit (k chunks: k times the passes).
Factoring F layers costs F + F (F + 1) / 2 expansions of B S H dh D multiply-adds per IG step
(docs/attribution.md, "Memory"): at Qwen3-8B's shape and 1024 tokens the 13 layers that bring it
within 1.3x make 104, about an eighth of the step's forward and backward FLOPs, where 2 chunks
would double its passes.
Per-example statistics add 4 n_edges per row and R bootstrap replicate sums 4 R n_edges (twice
for rank mean-abs), fixed. The weights come on top: their bytes as loaded.

These are live tensor bytes: what torch.cuda.max_memory_allocated reports on CUDA. On CPU,
glibc's malloc keeps freed blocks below its (growing) mmap threshold in the heap, so the process's
peak RSS was 1.5-1.9x the live bytes (benchmarks/RESULTS.md, "Real shapes"); CPU budgets count the
working memory CPU_SLACK times.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from headdb.errors import UserError

HEADROOM = 0.9  # of the memory found free: other processes and allocator slack keep the rest
CPU_SLACK = 2.0  # peak RSS over live tensor bytes under glibc malloc (measured 1.5-1.9x)
# The summed scoring is taken only while the run's live bytes stay within this multiple of one
# plain forward+backward's: the sums buy a few percent of time, not a larger machine.
PEAK_TARGET = 1.3
# The plan factors heads for PEAK_TARGET only while their expansions cost at most this fraction
# of a step's forward and backward FLOPs (`factor_limit`); to fit the budget, as many as it takes.
FACTOR_COST = 0.25


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes of one attribution run: weights + fixed + batch * per_row, at its peak phase."""

    weights: int
    per_row: int  # working bytes per batch row at `seq` tokens, in the peak phase
    fixed: int  # working bytes whatever the batch (bootstrap replicate sums)
    seq: int
    phase: str  # captures | ig-steps: where the peak is
    phases: dict  # bytes per row of every phase

    def total(self, batch: int) -> int:
        return self.weights + self.fixed + batch * self.per_row

    def working(self, batch: int) -> int:
        return self.fixed + batch * self.per_row

    def on(self, device: str) -> "MemoryEstimate":
        """The estimate as the device's allocator holds it: working memory x CPU_SLACK on CPU."""
        if str(device).startswith("cuda"):
            return self
        k = CPU_SLACK
        return MemoryEstimate(
            self.weights, int(self.per_row * k), int(self.fixed * k), self.seq, self.phase, self.phases
        )

    def largest_batch(self, budget: int) -> int:
        """The most rows whose total fits `budget` bytes (0 when not even one does)."""
        room = budget - self.weights - self.fixed
        return max(0, room // self.per_row) if self.per_row > 0 else 0


def _dims(shape) -> tuple[int, int, int, int, int, int, int, bool, bool]:
    L, H, KV, D = shape.n_layers, shape.n_heads, shape.n_kv_heads or shape.n_heads, shape.d_model
    dh = getattr(shape, "d_head", None) or D // H
    F, V = shape.d_mlp, shape.vocab_size
    config = getattr(shape, "config", None) or {}
    family = getattr(shape, "family", "") or ""
    qk_norm = family == "qwen3"
    tied = bool(config.get("tie_word_embeddings", False))
    return L, H, KV, D, dh, F, V, qk_norm, tied


def weight_bytes(shape, dtype_bytes: int) -> int:
    """Bytes of the model's parameters in the load dtype (counted from the shape)."""
    L, H, KV, D, dh, F, V, qk_norm, tied = _dims(shape)
    config = getattr(shape, "config", None) or {}
    family = getattr(shape, "family", "") or ""
    bias = family == "qwen2" or bool(config.get("attention_bias", False))
    layer = D * H * dh + 2 * D * KV * dh + H * dh * D + 3 * D * F + 2 * D
    layer += (H * dh + 2 * KV * dh) if bias else 0
    layer += 2 * dh if qk_norm else 0
    return dtype_bytes * (V * D * (1 if tied else 2) + L * layer + D)


def layer_saved_bytes(shape, dtype_bytes: int, seq: int) -> int:
    """Bytes per token of one layer's tensors saved for the IG step's backward (see above)."""
    _, H, KV, D, dh, F, _, qk_norm, _ = _dims(shape)
    w, x = dtype_bytes, (dtype_bytes if dtype_bytes != 4 else 0)
    saved = 4 * (D + 2) + w * (D + 3 * F + 3 * H * dh) + x * D + (4 + x) * H * seq
    return saved + (4 * (H + KV) * (dh + 1) if qk_norm else 0)


def estimate(
    shape,
    *,
    dtype_bytes: int,
    seq: int,
    method: str = "eap-ig",
    n_edges: int = 0,
    per_example: bool = False,
    bootstrap: int = 0,
    mean_abs: bool = False,
    scoring: str = "per-step",
    chunks: int = 1,
    factored: int = 0,
    circuits: bool = False,
) -> MemoryEstimate:
    """The memory of attributing prompts of `seq` tokens with `scoring` (see the module
    docstring; "per-step" is the least a run can hold), the sources' differences held `chunks`
    at a time (eap.source_chunks: the largest chunk, ceil(N_src / chunks)), the heads of the
    last `factored` layers factored (factored.FactoredHeads; with chunks 1).

    n_edges: the graph's edge count (per-example statistics and bootstrap replicates only).
    circuits: the run also evaluates circuits (`discover`: faithfulness), whose phase holds every
    source's output whatever the chunks."""
    L, H, KV, D, dh, F, _, _, _ = _dims(shape)
    w, x, S = dtype_bytes, (dtype_bytes if dtype_bytes != 4 else 0), seq
    P = H + 2 * KV
    n_src = source_count(shape)
    n_ports = L * (P + 1) + 1
    held = -(-n_src // max(1, min(chunks, n_src))) if method != "exact" else n_src
    F = min(factored, L) if method != "exact" else 0
    delta = (4 if method == "exact" else w) * (held - F * (H + 1)) * D * S + w * F * (H * dh + D) * S
    expand = w * H * D * S if F else 0
    summed = 4 * n_ports * D * S if scoring == "summed" else 0
    rows = (4 + x) * (P + 1) * D * S
    taps = x * L * D * S
    grad_tmp = (4 * D + (4 * D + H * D if x else 0) + w * P * dh) * S
    saved = L * layer_saved_bytes(shape, w, S) * S + (8 * D + 2 * dh * w) * S
    misc = (3 * w + 4) * D * S
    # One no-grad layer in flight during a capture: its MLP activations and attention scores.
    in_flight = (2 * w * F + 4 * D) * S + (4 + x) * H * S * S
    # eap/eap-ig write the corrupted capture over the clean one (one buffer); exact patching
    # holds the clean and corrupted outputs and their difference.
    phases = {"captures": (3 if method == "exact" else 1) * delta + in_flight + misc}
    if method != "exact":
        phases["ig-steps"] = delta + summed + taps + saved + rows + expand + grad_tmp + misc
    if circuits:
        # faithfulness.evaluate_circuits: the running differences of every source (in the
        # model's dtype, eap.delta_dtype), the corrupted outputs with the heads factored and
        # one layer's expanded, one layer's patched q/k/v term, and the per-head forks of the
        # patched pass: the residual repeated to P ports and its norm, which in a half model
        # also takes a float32 upcast and its square.
        forks = (2 * w + (8 if x else 0)) * P
        corrupt = w * (D + L * (H * dh + D)) + w * H * D
        phases["circuits"] = (w * n_src + w * P + forks) * D * S + corrupt * S + in_flight + misc
    stats = 4 * n_edges if per_example else 0
    phase = max(phases, key=lambda k: phases[k])
    return MemoryEstimate(
        weights=weight_bytes(shape, w),
        per_row=phases[phase] + stats,
        fixed=4 * bootstrap * n_edges * (2 if mean_abs else 1),
        seq=S,
        phase=phase,
        phases=phases,
    )


def source_count(shape) -> int:
    """N_src: the graph's source nodes (input, every head, every MLP)."""
    L, H = shape.n_layers, shape.n_heads
    return 1 + L * (H + 1)


def plain_pass(shape, *, dtype_bytes: int, seq: int) -> MemoryEstimate:
    """One plain forward+backward of the model on prompts of `seq` tokens: frozen weights, the
    gradient taken to the input embeddings (the yardstick of PEAK_TARGET)."""
    L, _, _, D, _, _, _, _, _ = _dims(shape)
    w, S = dtype_bytes, seq
    per_row = (L * layer_saved_bytes(shape, w, S) + 2 * w * D) * S
    return MemoryEstimate(weight_bytes(shape, w), per_row, 0, S, "plain", {"plain": per_row})


def available(device: str) -> int:
    """Bytes free for this process on `device`: CUDA free memory plus what torch's caching
    allocator holds unused; on CPU the RAM the OS reports available."""
    if str(device).startswith("cuda"):
        import torch

        free, _ = torch.cuda.mem_get_info(device)
        return int(free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device))
    import psutil

    return int(psutil.virtual_memory().available)


def size(n: float) -> str:
    """Bytes for people, e.g. 6.2GiB (pydantic's ByteSize, the type of --max-memory)."""
    from pydantic import ByteSize

    return ByteSize(int(n)).human_readable()


def fit_batch(est: MemoryEstimate, budget: int, wanted: int, *, where: str) -> int:
    """min(wanted, the largest batch within `budget`); a UserError saying what one row needs
    when not even batch 1 fits. `where` names the budget (e.g. "--max-memory 1MB")."""
    fits = est.largest_batch(budget)
    if fits < 1:
        raise UserError(
            f"attribution needs {size(est.total(1))} at batch 1 ({est.seq} tokens: weights {size(est.weights)} "
            f"+ {size(est.working(1))} working memory), more than {where} ({size(budget)}); "
            "shorten the prompts or give a larger --max-memory"
        )
    return max(1, min(int(wanted), int(fits)))


def for_settings(
    shape,
    settings,
    *,
    dtype_bytes: int,
    seq: int,
    scoring: str = "per-step",
    chunks: int = 1,
    factored: int = 0,
    circuits: bool = False,
) -> MemoryEstimate:
    """`estimate` for a run of `settings` (AttributionSettings) on prompts of `seq` tokens."""
    from headdb.attribution.graph import build_layout

    per_example = settings.rank == "mean-abs" or settings.bootstrap > 0
    return estimate(
        shape,
        dtype_bytes=dtype_bytes,
        seq=seq,
        method=settings.method,
        n_edges=build_layout(shape).n_edges if per_example or settings.bootstrap else 0,
        per_example=per_example,
        bootstrap=settings.bootstrap,
        mean_abs=settings.rank == "mean-abs",
        scoring=scoring,
        chunks=chunks,
        factored=factored,
        circuits=circuits,
    )


def check_plan(shape, settings, *, dtype_bytes: int, seq: int, device: str) -> None:
    """Plan time, nothing loaded: a UserError when batch 1 cannot fit --max-memory or, without
    it, the memory free on `device` here (skipped for a CUDA device this machine lacks: the
    worker that has it checks again when it loads the model). The least a run holds: per step,
    its sources' differences one at a time (`choose` splits them only as far as it must)."""
    most = source_count(shape)
    est = for_settings(shape, settings, dtype_bytes=dtype_bytes, seq=seq, chunks=most, circuits=True).on(device)
    if settings.max_memory is not None:
        fit_batch(est, int(settings.max_memory), 1, where="--max-memory")
        return
    if str(device).startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            return
    fit_batch(est, int(available(device) * HEADROOM), 1, where=f"the memory free on {device}")


@dataclass(frozen=True)
class Plan:
    """How an attribution run fits its budget: pairs per batch and the scoring (see above)."""

    batch_size: int
    scoring: str  # summed | per-step
    chunks: int = 1  # the sources' differences held this many chunks at a time (eap.source_chunks)
    factored: int = 0  # the last layers whose head differences are held factored (FactoredHeads)
    where: str = field(default="", compare=False)  # the budget, for messages: "--max-memory (40.0GB)"


def choose(
    summed: MemoryEstimate,
    per_step: MemoryEstimate,
    plain: MemoryEstimate,
    budget: int,
    wanted: int,
    rows: int,
    *,
    device: str,
    where: str,
    chunked: Callable[[int], MemoryEstimate] | None = None,
    most_chunks: int = 1,
    factored: Callable[[int], MemoryEstimate] | None = None,
    layers: int = 0,
    cheap: int | None = None,
) -> Plan:
    """Scoring "summed" at `wanted` pairs per batch when its batches (`rows` pairs at most) fit
    `budget` on `device` and hold at most PEAK_TARGET x `plain`'s live bytes; else "per-step"
    with the heads of the fewest last layers factored (`factored(F)`, F <= layers; F = 0 is
    `per_step`) whose peak is within PEAK_TARGET, or as low as factoring all `layers` gets it,
    but no more than `cheap` layers for the target alone (`factor_limit`: what costs at most
    FACTOR_COST of a step), at min(wanted, what fits); more of them only where no fewer let one
    pair fit; when not even one pair fits that
    way, per-step with the sources' differences in the fewest chunks (`chunked(k)`, k <=
    most_chunks) that let one pair fit: k times the passes, so only where the run would
    otherwise not run at all; a UserError when not even that fits. The estimates are live bytes;
    the budget is checked as `device`'s allocator holds them (`on`)."""
    batch = min(wanted, rows)
    if summed.on(device).largest_batch(budget) >= batch and summed.total(batch) <= PEAK_TARGET * plain.total(batch):
        return Plan(wanted, "summed")
    if factored is not None and layers > 0:
        ests = [per_step] + [factored(f) for f in range(1, layers + 1)]
        cap = layers if cheap is None else min(cheap, layers)
        allowed = max(PEAK_TARGET * plain.total(batch), min(e.total(batch) for e in ests[: cap + 1]))
        target = next(f for f, est in enumerate(ests) if est.total(batch) <= allowed or f == cap)
        for f in range(target, layers + 1):  # the target's layers, or the fewest more that fit a pair
            if ests[f].on(device).largest_batch(budget) >= 1:
                return Plan(fit_batch(ests[f].on(device), budget, wanted, where=where), "per-step", factored=f)
    if per_step.on(device).largest_batch(budget) >= 1 or chunked is None:
        return Plan(fit_batch(per_step.on(device), budget, wanted, where=where), "per-step")
    for k in range(2, most_chunks + 1):  # the last one says what a pair needs when even it does not fit
        est = chunked(k).on(device)
        if est.largest_batch(budget) >= 1 or k == most_chunks:
            return Plan(fit_batch(est, budget, wanted, where=where), "per-step", k, where=f"{where} ({size(budget)})")
    return Plan(fit_batch(per_step.on(device), budget, wanted, where=where), "per-step")  # one source: no chunks


def factor_limit(shape) -> int:
    """The most last layers whose heads the plan factors for its peak target alone: their
    expansions (F + F (F + 1) / 2 per IG step, each 2 S H dh D FLOPs per row) cost at most
    FACTOR_COST of the step's forward and backward (4 FLOPs per layer weight and token).
    Factoring pays for the memory it saves in compute: at a large batch the target can ask for
    nearly every layer (Qwen3-8B at 512 tokens and 16 pairs: 34 of 36, 70% more FLOPs per
    step), which buys no batch the budget did not already allow."""
    L, H, KV, D, dh, F, _, _, _ = _dims(shape)
    expansion = 2 * H * dh * D
    step = 4 * L * (D * H * dh + 2 * D * KV * dh + H * dh * D + 3 * D * F)
    f = 0
    while f < L and ((f + 1) + (f + 1) * (f + 2) // 2) * expansion <= FACTOR_COST * step:
        f += 1
    return f


def plan_for(loaded, pairs, settings, *, circuits: bool = False) -> Plan:
    """Run time, model loaded: the `choose`n plan for settings.batch_size pairs per batch within
    --max-memory (or the device's free memory plus the resident weights); `circuits`: the run
    evaluates circuits too (discover)."""
    wanted = int(settings.batch_size)
    if len(pairs) == 0:
        return Plan(wanted, "summed")
    params = list(loaded.hf_model.parameters())
    weights = sum(p.numel() * p.element_size() for p in params)
    seq = max(len(ids) for ids in pairs.clean)
    device = str(loaded.device)

    dtype_bytes = params[0].element_size()

    def as_loaded(est: MemoryEstimate) -> MemoryEstimate:
        return MemoryEstimate(weights, est.per_row, est.fixed, est.seq, est.phase, est.phases)

    def run(scoring: str, chunks: int = 1, factored: int = 0) -> MemoryEstimate:
        return as_loaded(
            for_settings(
                loaded.shape,
                settings,
                dtype_bytes=dtype_bytes,
                seq=seq,
                scoring=scoring,
                chunks=chunks,
                factored=factored,
                circuits=circuits,
            )
        )

    plain = as_loaded(plain_pass(loaded.shape, dtype_bytes=dtype_bytes, seq=seq))
    if settings.max_memory is not None:
        budget, where = int(settings.max_memory), "--max-memory"
    else:
        budget, where = weights + int(available(device) * HEADROOM), f"the memory free on {device}"
    split = settings.method != "exact"  # exact patching holds every source's outputs anyway
    return plan_of(loaded.shape, run, plain, budget, wanted, len(pairs), device=device, where=where, split=split)


def plan_of(
    shape,
    run: Callable[..., MemoryEstimate],
    plain: MemoryEstimate,
    budget: int,
    wanted: int,
    rows: int,
    *,
    device: str,
    where: str,
    split: bool = True,
) -> Plan:
    """`choose` over every way to run `shape`: run(scoring, chunks=1, factored=0) is the
    estimate of each; `split` (eap and eap-ig, not exact patching): chunks and factored heads
    may be taken. (plan_for's plan, and what the benchmarks and docs say a plan takes.)"""
    return choose(
        run("summed"),
        run("per-step"),
        plain,
        budget,
        wanted,
        rows,
        device=device,
        where=where,
        chunked=(lambda k: run("per-step", k)) if split else None,
        most_chunks=source_count(shape) if split else 1,
        factored=(lambda f: run("per-step", factored=f)) if split else None,
        layers=shape.n_layers if split else 0,
        cheap=factor_limit(shape),
    )


def plan_shape(
    shape, *, dtype_bytes: int, seq: int, budget: int, wanted: int, device: str, circuits: bool = False
) -> Plan:
    """`plan_of` for a bare shape, nothing loaded: an EAP-IG run of `wanted` pairs of `seq`
    tokens within `budget` bytes (weights included) on `device`; `circuits`: a study's run
    (discover). What the benchmarks and the docs say a plan takes."""

    def run(scoring: str, chunks: int = 1, factored: int = 0) -> MemoryEstimate:
        kw = dict(scoring=scoring, chunks=chunks, factored=factored, circuits=circuits)
        return estimate(shape, dtype_bytes=dtype_bytes, seq=seq, **kw)

    plain = plain_pass(shape, dtype_bytes=dtype_bytes, seq=seq)
    return plan_of(shape, run, plain, budget, wanted, wanted, device=device, where="")
