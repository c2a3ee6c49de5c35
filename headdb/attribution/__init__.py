"""headdb's attribution engine: edge scores, head scores, circuits and their faithfulness.

Modules (one concern each):
    graph         node/edge layout per model shape (EAP-IG names, GQA k/v ports)
    metrics       kl | logit-diff | logprob at the last real token
    batches       right-padded clean/corrupted batches
    probe         where nodes and ports live in a TransformerBridge
    result        AttributionResult (what every method returns) and the progress ticker
    memory        what a run holds (weights, node-output differences, port gradients, saved
                  activations) and the batch size that fits --max-memory or the free memory
    eap           EAP and EAP-IG scores (one matrix product per destination block)
    bootstrap     ranking rules, per-example statistics, Poisson-bootstrap replicate weights
    confidence    circuits re-selected per bootstrap replicate: head p, stability
    exact         exact node/edge activation patching (validation on small models)
    circuit       top-n / threshold / greedy selection and input->logits pruning
    faithfulness  edge-patched circuit evaluation, MIB curves, CPR/CMD
    tasks         circuit tasks (clean/corrupted pairs) and their encoding

Typical use (what `headdb ingest attribution` does):

    loaded = headdb.checkpoints.loading.load_model(ckpt_dir)
    task = headdb.attribution.tasks.load_task(task_file, mode="plain")
    pairs = headdb.attribution.tasks.encode_pairs(task, loaded.tokenizer)
    d = discover(loaded, pairs, AttributionSettings(steps=5, metric="kl"))   # or discover(..., steps=5)
    nodes, edges = layout(loaded.shape)            # graph_nodes / graph_edges, once per model_key
    d.result.edges_table()                         # edge_scores
    d.result.heads_table()                         # head_scores
    [c.edges_table(), c.heads_table()] for c in d.circuits   # circuits, circuit_edges, circuit_heads
    d.curve.table()                                # faithfulness_curve (both MIB rankings)
    d.run_metrics()                                # run_metrics

Scores carry hannamw/EAP-IG's sign: (z(corrupted) - z(clean)) . dL/d(input), see eap.py and
docs/attribution.md.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

from headdb.attribution.circuit import Circuit, prune, rank, select_greedy, select_threshold, select_topn
from headdb.attribution.bootstrap import INTERVAL
from headdb.attribution.confidence import replicate_circuits
from headdb.attribution.eap import eap_scores, passes
from headdb.attribution.exact import exact_passes, exact_scores
from headdb.attribution.faithfulness import (
    MIB_PERCENTS,
    RANKINGS,
    CircuitEval,
    FaithfulnessCurve,
    MIBCurves,
    curve_from,
    curve_masks,
    evaluate_circuits,
    faithfulness_curve,
)
from headdb.attribution.graph import GraphLayout, build_layout, layout
from headdb.attribution.memory import Plan, plan_for
from headdb.attribution.metrics import HELPS_SIGN, METRICS, check_metric
from headdb.attribution.result import AttributionResult, Ticker
from headdb.settings import IG_RULES, METHODS, RANK_RULES, AttributionSettings, build


__all__ = [
    "AttributionResult",
    "Circuit",
    "CircuitEval",
    "Discovery",
    "FaithfulnessCurve",
    "GraphLayout",
    "HELPS_SIGN",
    "IG_RULES",
    "INTERVAL",
    "METHODS",
    "METRICS",
    "MIBCurves",
    "MIB_PERCENTS",
    "RANKINGS",
    "RANK_RULES",
    "attribute",
    "build_layout",
    "discover",
    "evaluate_circuits",
    "exact_scores",
    "faithfulness_curve",
    "layout",
    "prune",
    "rank",
    "select_greedy",
    "select_threshold",
    "select_topn",
]


def fitted(loaded, pairs, settings: AttributionSettings, *, circuits: bool = False) -> tuple[AttributionSettings, Plan]:
    """`settings` with batch_size lowered to what fits in memory, and the plan that fits
    (headdb.attribution.memory.plan_for: scoring, source chunks; `circuits`: their evaluation
    too); a UserError when not even one pair fits."""
    plan = plan_for(loaded, pairs, settings, circuits=circuits)
    if plan.chunks > 1:  # k times the passes: worth a line, as a lock wait is
        print(
            f"headdb: one prompt pair does not fit {plan.where} whole; scoring its sources in "
            f"{plan.chunks} chunks ({plan.chunks}x the passes)",
            file=sys.stderr,
            flush=True,
        )
    if plan.batch_size != settings.batch_size:
        settings = settings.model_copy(update={"batch_size": plan.batch_size})
    return settings, plan


def settings_of(settings: AttributionSettings | None, fields: dict) -> AttributionSettings:
    """The settings a call runs with: `settings` whole, or built from keyword `fields` by the
    same model (one definition of every default and rule; a wrong value is one UserError line)."""
    if settings is None:
        return build(AttributionSettings, fields, label=str)
    if fields:
        raise TypeError(f"give settings or keyword settings, not both (got {', '.join(fields)})")
    return settings


def attribute(
    loaded, pairs, settings: AttributionSettings | None = None, *, progress=None, ticker: Ticker | None = None, **fields
) -> AttributionResult:
    """Edge and node scores of one model on encoded pairs by `settings.method` (eap | eap-ig | exact).

    loaded: headdb.checkpoints.loading.LoadedModel; pairs: headdb.attribution.tasks.EncodedPairs.
    settings: headdb.settings.AttributionSettings, or its fields as keywords (method, metric,
    steps, ig_rule, batch_size, max_memory, rank, bootstrap, seed; the others do not matter here).
    batch_size is the most pairs per batch: fewer when they would not fit max_memory (default: the
    device's free memory; headdb.attribution.memory). ig_rule
    places eap-ig's `steps` points (left reproduces hannamw/EAP-IG and MIB); rank says what
    `result.ranking` is (abs-mean: |mean score|; mean-abs: mean |score|); bootstrap: Poisson
    replicates (0 = none) with weights from `seed` (headdb.attribution.bootstrap).
    progress: optional callable(done, total) in forward passes.
    """
    s = settings_of(settings, fields)
    check_metric(s.metric, pairs.wrong)  # a rule about the task's items, not the settings
    s, plan = fitted(loaded, pairs, s)
    return _scored(loaded, pairs, s, plan, progress=progress, ticker=ticker)


def _scored(loaded, pairs, s: AttributionSettings, plan: Plan, *, progress=None, ticker=None) -> AttributionResult:
    """The scores of `attribute` under a plan already made."""
    if s.method == "exact":
        return exact_scores(loaded, pairs, metric=s.metric, batch_size=s.batch_size, progress=progress, ticker=ticker)
    return eap_scores(
        loaded,
        pairs,
        method=s.method,
        metric=s.metric,
        steps=s.steps,
        ig_rule=s.ig_rule,
        batch_size=s.batch_size,
        progress=progress,
        ticker=ticker,
        rank=s.rank,
        bootstrap=s.bootstrap,
        seed=s.seed,
        scoring=plan.scoring,
        chunks=plan.chunks,
        factored=plan.factored,
    )


@dataclass
class Discovery:
    """Everything one attribution run produces."""

    result: AttributionResult
    circuits: list[Circuit]  # topn, then threshold, then greedy (those requested)
    curve: MIBCurves | None  # the MIB curves (signed and abs ranking), when requested

    def run_metrics(self) -> dict[str, float]:
        """result.run_metrics() and, with the curves, cpr, cmd, cpr_abs, cmd_signed."""
        out = self.result.run_metrics()
        if self.curve is not None:
            out.update(self.curve.metrics())
        return out


def discover(loaded, pairs, settings: AttributionSettings | None = None, *, progress=None, **fields) -> Discovery:
    """Score every edge, select circuits, and measure their faithfulness.

    settings: headdb.settings.AttributionSettings, or its fields as keywords (see `attribute`).
    Circuits: top-`topn` (pruned); the threshold circuit (tau=`threshold`, within the top-n;
    None to skip); a greedy circuit of `greedy` edges when given. Each gets `faithfulness`.
    Edges are ranked by `result.ranking` (rank: abs-mean | mean-abs); the MIB curves keep MIB's
    own rankings of the mean scores (signed for CPR, |score| for CMD) whatever `rank`.
    curve: also evaluate both MIB curves (2 x 10 more patched passes per batch) for CPR/CMD.
    bootstrap, seed: with bootstrap = R > 0 every circuit is re-selected from each of R
    replicates (headdb.attribution.confidence: membership, head p, stability).
    progress: optional callable(done, total), counted in forward passes over all phases.
    """
    s = settings_of(settings, fields)
    check_metric(s.metric, pairs.wrong)
    s, plan = fitted(loaded, pairs, s, circuits=True)
    method, metric, steps, batch_size = s.method, s.metric, s.steps, s.batch_size
    topn, threshold, greedy, curve = s.topn, s.threshold, s.greedy, s.curve
    g = build_layout(loaded.shape)
    n_batches = -(-len(pairs) // max(1, int(batch_size)))
    n_curve = len(RANKINGS) * len(MIB_PERCENTS) if curve else 0
    n_masks = 1 + (threshold is not None) + (greedy is not None) + n_curve
    attrib = (
        exact_passes(n_batches, g.n_edges, g.n_nodes - 2)
        if method == "exact"
        else passes(method, steps, n_batches, plan.chunks)
    )
    tick = Ticker(progress, attrib + n_batches * (2 + n_masks))
    result = _scored(loaded, pairs, s, plan, ticker=tick)
    by = result.ranking  # what the circuits rank edges by (abs-mean or mean-abs)
    circuits = [select_topn(g, by, topn)]
    if threshold is not None:
        circuits.append(select_threshold(g, by, threshold, topn))
    if greedy is not None:
        circuits.append(select_greedy(g, by, greedy))
    replicate_circuits(g, result, circuits, topn=topn)
    masks = [c.edge_mask for c in circuits]
    counts: dict[str, list[int]] = {}
    if curve:
        for ranking in RANKINGS:
            counts[ranking], curve_m = curve_masks(g, result.edge_scores, metric=metric, ranking=ranking)
            masks += curve_m
    ev = evaluate_circuits(loaded, pairs, masks, metric=metric, batch_size=batch_size, ticker=tick)
    faith = ev.faithfulness()
    for c, f in zip(circuits, faith):
        c.faithfulness = f
    fc = None
    if curve:
        n, k = len(circuits), len(MIB_PERCENTS)
        made = {
            r: curve_from(MIB_PERCENTS, counts[r], faith[n + i * k : n + (i + 1) * k], r)
            for i, r in enumerate(RANKINGS)
        }
        fc = MIBCurves(signed=made["signed"], absolute=made["abs"])
    return Discovery(result=result, circuits=circuits, curve=fc)
