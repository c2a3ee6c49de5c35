"""Circuit selection from edge scores: top-n, threshold, greedy; pruning to input->logits paths.

Ranking is by |score| (EAP-IG's default, absolute=True), ties broken by the lower edge id
(deterministic). `rank(scores, absolute=False)` ranks by signed score, largest first (MIB's CPR
ranking; callers orient the scores first, see faithfulness.py). The selections below take a
RANKING VECTOR: the mean edge scores for EAP-IG's |mean score| rule, or
`AttributionResult.ranking` (|mean| or mean |score|, see headdb.attribution.bootstrap); the
threshold applies to the same magnitudes.

    topn(n)        the n highest-ranked edges (default n = 5000), then pruned.
    threshold(tau) the edges of the top-n circuit whose |score| >= tau * max_e |score| (max over
                   ALL edges of the graph) and whose score is not 0, then pruned again: the
                   study's "simplified" circuit (default tau = 0.1).
    greedy(n)      grown from logits as in EAP-IG's greedy search: keep a frontier of the edges
                   entering the nodes reached so far (starting with logits); repeatedly take the
                   highest-ranked frontier edge, and when its source is new, add the source's
                   incoming edges to the frontier; stop at n edges; then pruned.

Pruning keeps exactly the edges that lie on some path input -> ... -> logits made of selected
edges, and the nodes on those paths. Under GQA a k/v port of kv head g (see graph.py) is an
input of every query head of g: a path may enter head h through its own q port or through
the k/v port of its kv head. A circuit's heads are its surviving head nodes; n_nodes counts
input and logits too (0 for an empty circuit).
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from headdb.attribution.graph import GraphLayout

SELECTIONS = ("topn", "threshold", "greedy")


@dataclass
class Circuit:
    selection: str  # topn | threshold | greedy
    param: float  # n, tau or n
    edge_mask: np.ndarray  # bool [n_edges]
    node_mask: np.ndarray  # bool [n_nodes]
    layout: GraphLayout
    faithfulness: float | None = None
    # Bootstrap (headdb.attribution.confidence): membership[b, L, h] = head (L, h) is in the
    # circuit selected the same way from replicate b; stability = mean over b of the Jaccard
    # index of replicate b's head set with this circuit's. None without replicates.
    membership: np.ndarray | None = None
    stability: float | None = None
    bootstrap_seed: int | None = None

    @property
    def edge_ids(self) -> np.ndarray:
        return np.flatnonzero(self.edge_mask).astype(np.int32)

    @property
    def node_ids(self) -> np.ndarray:
        return np.flatnonzero(self.node_mask).astype(np.int32)

    @property
    def heads(self) -> list[tuple[int, int]]:
        g = self.layout
        return [(int(g.node_layer[n]), int(g.node_head[n])) for n in self.node_ids if g.node_kind[n] == "attn"]

    @property
    def n_edges(self) -> int:
        return int(self.edge_mask.sum())

    @property
    def n_nodes(self) -> int:
        return int(self.node_mask.sum())

    def edges_table(self) -> pa.Table:
        return pa.table({"edge_id": pa.array(self.edge_ids)})

    def heads_table(self) -> pa.Table:
        h = self.heads
        return pa.table(
            {"layer": pa.array([x[0] for x in h], pa.int32()), "head": pa.array([x[1] for x in h], pa.int32())}
        )

    @property
    def n_replicates(self) -> int:
        return 0 if self.membership is None else int(self.membership.shape[0])

    @property
    def head_confidence(self) -> np.ndarray | None:
        """[n_layers, n_heads]: fraction of bootstrap replicates whose circuit has the head."""
        return None if self.membership is None else self.membership.mean(axis=0)

    def confidence_columns(self) -> dict[str, pa.Array]:
        """The `circuits` columns n_replicates, stability, bootstrap_seed (one row; NULL
        without replicates)."""
        has = self.membership is not None
        return {
            "n_replicates": pa.array([self.n_replicates if has else None], pa.int32()),
            "stability": pa.array([self.stability if has else None], pa.float64()),
            "bootstrap_seed": pa.array([self.bootstrap_seed if has else None], pa.int64()),
        }

    def replicates_table(self) -> pa.Table:
        """Rows for `circuit_head_replicates` (add circuit_id): layer, head, n_in and the
        replicate bitmask ('1' at character b when replicate b's circuit has the head), for
        every head in at least one replicate's circuit."""
        m = self.membership if self.membership is not None else np.zeros((0, 0, 0), bool)
        flat = m.reshape(m.shape[0], -1)
        cols = np.flatnonzero(flat.any(axis=0)) if flat.size else np.zeros(0, np.int64)
        n_heads = self.layout.n_heads
        masks = ["".join(np.where(flat[:, c], "1", "0")) for c in cols]
        return pa.table(
            {
                "layer": pa.array((cols // n_heads).astype(np.int32)),
                "head": pa.array((cols % n_heads).astype(np.int32)),
                "n_in": pa.array(flat[:, cols].sum(axis=0).astype(np.int32)),
                "replicates": pa.array(masks, pa.string()),
            }
        )


def rank(scores: np.ndarray, absolute: bool = True) -> np.ndarray:
    """Edge ids ordered by descending |score| (absolute) or descending score, ties by ascending
    edge id; NaN ranks as 0 under |score| and last under signed ranking."""
    values = scores.astype(np.float64)
    if absolute:
        key = np.abs(np.nan_to_num(values, nan=0.0))
    else:
        key = np.nan_to_num(values, nan=-np.inf)
    return np.lexsort((np.arange(len(key)), -key))


def _group_of_port(g: GraphLayout, port_index: int) -> np.ndarray:
    """Query heads (within the layer) that read a port: q -> itself, k/v -> its kv group."""
    H, KV = g.n_heads, g.n_kv_heads
    if port_index < H:
        return np.array([port_index])
    kv = (port_index - H) % KV
    return np.arange(kv * g.n_rep, (kv + 1) * g.n_rep)


def prune(g: GraphLayout, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(edge mask, node mask) of the selected edges on input -> logits paths."""
    mask = np.asarray(mask, dtype=bool)
    src = g.edge_src
    # Forward pass: which nodes a selected path from input reaches.
    reached = np.zeros(g.n_nodes, dtype=bool)
    reached[0] = True
    for L in range(g.n_layers):
        n, P = g.n_src_attn(L), g.n_ports
        blk = mask[g.attn_offset[L] : g.attn_offset[L] + P * n].reshape(P, n) & reached[:n]
        port_hit = blk.any(axis=1)
        for p in np.flatnonzero(port_hit):
            reached[g.head_node(L, 0) + _group_of_port(g, p)] = True
        nm = g.n_src_mlp(L)
        reached[g.mlp_node(L)] = (mask[g.mlp_offset[L] : g.mlp_offset[L] + nm] & reached[:nm]).any()
    nl = g.n_src_logits
    reached[g.logits_node] = (mask[g.logits_offset :] & reached[:nl]).any()
    # Backward pass: which nodes reach logits through selected edges.
    alive = np.zeros(g.n_nodes, dtype=bool)
    alive[g.logits_node] = True
    useful = np.zeros(g.n_edges, dtype=bool)  # selected edge whose destination reaches logits
    useful[g.logits_offset :] = mask[g.logits_offset :]
    alive[:nl] |= mask[g.logits_offset :]
    for L in reversed(range(g.n_layers)):
        nm, off = g.n_src_mlp(L), g.mlp_offset[L]
        if alive[g.mlp_node(L)]:
            useful[off : off + nm] = mask[off : off + nm]
            alive[:nm] |= mask[off : off + nm]
        n, P, off = g.n_src_attn(L), g.n_ports, g.attn_offset[L]
        heads_alive = alive[g.head_node(L, 0) : g.head_node(L, 0) + g.n_heads]
        port_ok = np.array([heads_alive[_group_of_port(g, p)].any() for p in range(P)])
        blk = mask[off : off + P * n].reshape(P, n) & port_ok[:, None]
        useful[off : off + P * n] = blk.reshape(-1)
        alive[:n] |= blk.any(axis=0)
    live = useful & reached[src]
    nodes = reached & alive
    if not live.any():
        nodes[:] = False
    return live, nodes


def _make(g, selection, param, mask, scores) -> Circuit:
    # An edge that scores exactly 0 carries no difference between the prompts: it is in no
    # circuit, however few edges score (a model that cannot tell them apart has an empty one).
    edges, nodes = prune(g, mask & (np.nan_to_num(scores) != 0))
    return Circuit(selection=selection, param=float(param), edge_mask=edges, node_mask=nodes, layout=g)


def topn_mask(scores: np.ndarray, n: int, absolute: bool = True) -> np.ndarray:
    """The first n edges of `rank(scores, absolute)`, found in linear time (a partition, not a
    sort: the bootstrap re-selects every circuit once per replicate): every edge above the n-th
    largest key, then the edges tied with it by ascending edge id."""
    values = scores.astype(np.float64)
    key = np.abs(np.nan_to_num(values, nan=0.0)) if absolute else np.nan_to_num(values, nan=-np.inf)
    n = min(max(0, int(n)), len(key))
    mask = np.zeros(len(key), dtype=bool)
    if n == 0:
        return mask
    kth = np.partition(key, len(key) - n)[len(key) - n]  # the n-th largest key
    mask[key > kth] = True
    ties = np.flatnonzero(key == kth)
    mask[ties[: n - int(mask.sum())]] = True
    return mask


def select_topn(g: GraphLayout, scores: np.ndarray, n: int = 5000) -> Circuit:
    return _make(g, "topn", n, topn_mask(scores, n), scores)


def select_threshold(g: GraphLayout, scores: np.ndarray, tau: float = 0.1, n: int = 5000) -> Circuit:
    mag = np.abs(np.nan_to_num(scores.astype(np.float64), nan=0.0))
    base, _ = prune(g, topn_mask(scores, n))
    peak = mag.max() if len(mag) else 0.0
    return _make(g, "threshold", tau, base & (mag >= tau * peak), scores)


def _in_edges(g: GraphLayout, node: int) -> list[np.ndarray]:
    """Edge id ranges entering a node (for heads: its q port and its kv group's k/v ports)."""
    kind = g.node_kind[node]
    if kind == "logits":
        return [np.arange(g.logits_offset, g.n_edges)]
    L = int(g.node_layer[node])
    if kind == "mlp":
        return [np.arange(g.mlp_offset[L], g.mlp_offset[L] + g.n_src_mlp(L))]
    if kind == "attn":
        h, n, off = int(g.node_head[node]), g.n_src_attn(L), g.attn_offset[L]
        kv = h // g.n_rep
        ports = [h, g.n_heads + kv, g.n_heads + g.n_kv_heads + kv]
        return [np.arange(off + p * n, off + (p + 1) * n) for p in ports]
    return []


def select_greedy(g: GraphLayout, scores: np.ndarray, n: int = 5000) -> Circuit:
    mag = np.abs(np.nan_to_num(scores.astype(np.float64), nan=0.0))
    chosen = np.zeros(g.n_edges, dtype=bool)
    in_frontier = np.zeros(g.n_edges, dtype=bool)
    have = np.zeros(g.n_nodes, dtype=bool)
    heap: list = []

    def add_node(node):
        have[node] = True
        for ids in _in_edges(g, node):
            fresh = ids[~in_frontier[ids]]
            in_frontier[fresh] = True
            for e in fresh:
                heapq.heappush(heap, (-mag[e], int(e)))

    add_node(g.logits_node)
    count = 0
    while heap and count < int(n):
        _, e = heapq.heappop(heap)
        chosen[e] = True
        count += 1
        s = int(g.edge_src[e])
        if not have[s]:
            add_node(s)
    return _make(g, "greedy", n, chosen, scores)


def reselect(g: GraphLayout, ranking: np.ndarray, circuit: Circuit, topn: int = 5000) -> Circuit:
    """The circuit that `circuit`'s selection (and param) picks from another ranking vector;
    `topn` is the top-n a threshold circuit is taken within."""
    if circuit.selection == "topn":
        return select_topn(g, ranking, int(circuit.param))
    if circuit.selection == "threshold":
        return select_threshold(g, ranking, circuit.param, topn)
    if circuit.selection == "greedy":
        return select_greedy(g, ranking, int(circuit.param))
    raise ValueError(f"unknown selection {circuit.selection!r}")
