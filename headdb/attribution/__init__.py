"""headdb's attribution engine: edge scores, head scores, circuits and their faithfulness.

Modules (one concern each):
    graph         node/edge layout per model shape (EAP-IG names, GQA k/v ports)
    metrics       kl | logit-diff | logprob at the last real token
    batches       right-padded clean/corrupted batches
    probe         where nodes and ports live in a TransformerBridge
    result        AttributionResult (what every method returns) and the progress ticker
    eap           EAP and EAP-IG scores (one matrix product per destination block)
    bootstrap     ranking rules, per-example statistics, Poisson-bootstrap replicate weights
    confidence    circuits re-selected per bootstrap replicate: head p, stability
    exact         exact node/edge activation patching (validation on small models)
    circuit       top-n / threshold / greedy selection and input->logits pruning
    faithfulness  edge-patched circuit evaluation, MIB curve, CPR/CMD
    tasks         circuit tasks (clean/corrupted pairs) and their encoding

Typical use (what `headdb ingest attribution` does):

    loaded = headdb.checkpoints.loading.load_model(ckpt_dir)
    task = headdb.attribution.tasks.load_task(task_file, mode="plain")
    pairs = headdb.attribution.tasks.encode_pairs(task, loaded.tokenizer)
    d = discover(loaded, pairs, method="eap-ig", metric="kl", steps=5)
    nodes, edges = layout(loaded.shape)            # graph_nodes / graph_edges, once per model_key
    d.result.edges_table()                         # edge_scores
    d.result.heads_table()                         # head_scores
    [c.edges_table(), c.heads_table()] for c in d.circuits   # circuits, circuit_edges, circuit_heads
    d.curve.table()                                # faithfulness_curve
    d.run_metrics()                                # run_metrics
"""
from __future__ import annotations

from dataclasses import dataclass

from headdb.attribution.circuit import (Circuit, prune, rank, select_greedy, select_threshold,
                                        select_topn)
from headdb.attribution.bootstrap import INTERVAL, RANK_RULES, check_bootstrap, check_rank
from headdb.attribution.confidence import replicate_circuits
from headdb.attribution.eap import eap_scores, passes
from headdb.attribution.exact import exact_passes, exact_scores
from headdb.attribution.faithfulness import (MIB_PERCENTS, CircuitEval, FaithfulnessCurve,
                                             curve_from, curve_masks, evaluate_circuits,
                                             faithfulness_curve)
from headdb.attribution.graph import GraphLayout, build_layout, layout
from headdb.attribution.metrics import METRICS
from headdb.attribution.result import AttributionResult, Ticker
from headdb.errors import UserError

METHODS = ("eap-ig", "eap", "exact")

__all__ = [
    "AttributionResult", "Circuit", "CircuitEval", "Discovery", "FaithfulnessCurve", "GraphLayout",
    "INTERVAL", "METHODS", "METRICS", "MIB_PERCENTS", "RANK_RULES", "attribute", "build_layout", "discover",
    "evaluate_circuits", "exact_scores", "faithfulness_curve", "layout", "prune", "rank",
    "select_greedy", "select_threshold", "select_topn",
]


def attribute(loaded, pairs, *, method: str = "eap-ig", metric: str = "kl", steps: int = 5,
              batch_size: int = 8, progress=None, ticker: Ticker | None = None,
              rank: str = "abs-mean", bootstrap: int = 0, seed: int = 0) -> AttributionResult:
    """Edge and node scores of one model on encoded pairs by `method` (eap | eap-ig | exact).

    loaded: headdb.checkpoints.loading.LoadedModel; pairs: headdb.attribution.tasks.EncodedPairs.
    progress: optional callable(done, total) in forward passes.
    rank: RANK_RULES, what `result.ranking` is (abs-mean: |mean score|; mean-abs: mean |score|).
    bootstrap: number of Poisson-bootstrap replicates (0 = none); seed: their weights' seed
    (headdb.attribution.bootstrap). Exact patching keeps no per-example scores: it takes neither
    mean-abs nor replicates.
    """
    check_rank(rank)
    bootstrap = check_bootstrap(bootstrap)
    if method == "exact" and (bootstrap or rank != "abs-mean"):
        raise UserError("exact patching keeps no per-example scores, so it has no bootstrap replicates "
                        "and no mean-abs ranking; use method eap-ig, or bootstrap 0 and rank abs-mean")
    if method == "exact":
        return exact_scores(loaded, pairs, metric=metric, batch_size=batch_size, progress=progress,
                            ticker=ticker)
    if method not in METHODS:
        raise UserError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    return eap_scores(loaded, pairs, method=method, metric=metric, steps=steps, batch_size=batch_size,
                      progress=progress, ticker=ticker, rank=rank, bootstrap=bootstrap, seed=seed)


@dataclass
class Discovery:
    """Everything one attribution run produces."""

    result: AttributionResult
    circuits: list[Circuit]          # topn, then threshold, then greedy (those requested)
    curve: FaithfulnessCurve | None  # the MIB curve, when requested

    def run_metrics(self) -> dict[str, float]:
        out = self.result.run_metrics()
        if self.curve is not None:
            out["cpr"] = self.curve.cpr
            out["cmd"] = self.curve.cmd
        return out


def discover(loaded, pairs, *, method: str = "eap-ig", metric: str = "kl", steps: int = 5,
             topn: int = 5000, threshold: float | None = 0.1, greedy: int | None = None,
             curve: bool = True, batch_size: int = 8, progress=None,
             rank: str = "abs-mean", bootstrap: int = 0, seed: int = 0) -> Discovery:
    """Score every edge, select circuits, and measure their faithfulness.

    Circuits: top-`topn` (pruned); the threshold circuit (tau=`threshold`, within the top-n;
    None to skip); a greedy circuit of `greedy` edges when given. Each gets `faithfulness`.
    Edges are ranked by `result.ranking` (rank: abs-mean | mean-abs), for the curve too.
    curve: also evaluate the MIB curve (10 more patched passes per batch).
    bootstrap, seed: with bootstrap = R > 0 every circuit is re-selected from each of R
    replicates (headdb.attribution.confidence: membership, head p, stability).
    progress: optional callable(done, total), counted in forward passes over all phases.
    """
    g = build_layout(loaded.shape)
    n_batches = -(-len(pairs) // max(1, int(batch_size)))
    n_masks = 1 + (threshold is not None) + (greedy is not None) + (len(MIB_PERCENTS) if curve else 0)
    attrib = (exact_passes(n_batches, g.n_edges, g.n_nodes - 2) if method == "exact"
              else passes(method, steps, n_batches))
    tick = Ticker(progress, attrib + n_batches * (2 + n_masks))
    result = attribute(loaded, pairs, method=method, metric=metric, steps=steps,
                       batch_size=batch_size, ticker=tick, rank=rank, bootstrap=bootstrap, seed=seed)
    ranking = result.ranking
    circuits = [select_topn(g, ranking, topn)]
    if threshold is not None:
        circuits.append(select_threshold(g, ranking, threshold, topn))
    if greedy is not None:
        circuits.append(select_greedy(g, ranking, greedy))
    replicate_circuits(g, result, circuits, topn=topn)
    masks = [c.edge_mask for c in circuits]
    counts: list[int] = []
    if curve:
        counts, curve_m = curve_masks(g, ranking)
        masks += curve_m
    ev = evaluate_circuits(loaded, pairs, masks, metric=metric, batch_size=batch_size, ticker=tick)
    faith = ev.faithfulness()
    for c, f in zip(circuits, faith):
        c.faithfulness = f
    fc = curve_from(MIB_PERCENTS, counts, faith[len(circuits):]) if curve else None
    return Discovery(result=result, circuits=circuits, curve=fc)
