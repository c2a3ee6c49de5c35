"""How sure a circuit is: every bootstrap replicate goes through the circuit's own selection.

For each circuit of a run (top-n, threshold, greedy, with their params and the same pruning)
and each replicate b of the run's edge scores (headdb.attribution.bootstrap), the circuit is
selected again from replicate b's ranking vector, and its surviving heads are recorded:
`Circuit.membership[b, L, h]`. From it:

    p(head)    fraction of replicates whose circuit contains the head (`head_confidence`)
    stability  mean over replicates of the Jaccard index |A_b & A| / |A_b | A| of replicate b's
               head set A_b with the full-data circuit's A (1 when both are empty)

Replicate b weights the same prompts in every run on the same items with the same seed, so two
runs' memberships can be compared replicate by replicate (p_gained in `heads_gained`).
"""

from __future__ import annotations

import numpy as np

from headdb.attribution.circuit import Circuit, reselect
from headdb.attribution.graph import GraphLayout
from headdb.attribution.result import AttributionResult


def head_mask(g: GraphLayout, circuit: Circuit) -> np.ndarray:
    """[n_layers, n_heads] bool: the circuit's surviving heads."""
    idx = [g.head_node(L, h) for L in range(g.n_layers) for h in range(g.n_heads)]
    return circuit.node_mask[idx].reshape(g.n_layers, g.n_heads)


def jaccard(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


def replicate_circuits(g: GraphLayout, result: AttributionResult, circuits: list[Circuit], *, topn: int = 5000) -> None:
    """Fill membership, stability and bootstrap_seed of every circuit (in place); nothing
    when the result has no replicates."""
    R = result.n_replicates
    if not R:
        return
    full = [head_mask(g, c) for c in circuits]
    for c in circuits:
        c.membership = np.zeros((R, g.n_layers, g.n_heads), dtype=bool)
    for b in range(R):
        ranking = result.replicate_ranking(b)
        for c in circuits:
            c.membership[b] = head_mask(g, reselect(g, ranking, c, topn))
    for c, heads in zip(circuits, full):
        c.stability = float(np.mean([jaccard(c.membership[b], heads) for b in range(R)]))
        c.bootstrap_seed = result.bootstrap_seed
