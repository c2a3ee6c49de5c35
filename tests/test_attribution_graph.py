"""Graph layout and circuit selection, without a model."""

from __future__ import annotations

import numpy as np
import pytest

from headdb.attribution import build_layout, layout, prune, rank, select_greedy, select_topn
from headdb.attribution.faithfulness import curve_from


def test_layout_names_counts_and_order():
    g = build_layout((3, 4, 2))  # 3 layers, 4 query heads, 2 kv heads
    assert g.node_names[0] == "input" and g.node_names[-1] == "logits"
    assert g.node_names[g.head_node(1, 2)] == "a1.h2" and g.node_names[g.mlp_node(2)] == "m2"
    # Per layer: 4 q-ports + 2 k-ports + 2 v-ports (kv-head ports), each fed by every earlier node.
    expected = sum(8 * (1 + L * 5) + (1 + L * 5 + 4) for L in range(3)) + (1 + 3 * 5)
    assert g.n_edges == expected
    names = g.edge_names
    assert "a0.h1->a2.h1<k>" in names and "a0.h1->a2.h3<q>" in names
    assert "a0.h1->a2.h3<k>" not in names  # only kv heads 0 and 1 have k ports
    assert "a1.h0->m1" in names and "m0->a1.h0<v>" in names and "m2->logits" in names
    assert "a1.h0->a1.h2<q>" not in names  # no edges within a layer's attention
    # Destination-major, sources in node order.
    assert names[:3] == ["input->a0.h0<q>", "input->a0.h1<q>", "input->a0.h2<q>"]
    assert names[-1] == "m2->logits"
    assert (g.edge_src < g.edge_dst).all()  # edges only run forward
    nodes, edges = layout((3, 4, 2))
    assert nodes.column_names == ["node_id", "name", "kind", "layer", "head"]
    assert edges.column_names == ["edge_id", "src_node", "dst_node", "dst_port", "name"]
    assert edges.column("edge_id").to_pylist() == list(range(g.n_edges))
    assert set(edges.column("dst_port").to_pylist()) == {"q", "k", "v", ""}
    assert nodes.column("kind").to_pylist().count("attn") == 12
    assert build_layout((3, 4, 2)) is g  # cached: one layout per shape


def test_layout_without_gqa_is_eap_ig_graph():
    g = build_layout((2, 2, 2))
    assert sum(1 for p in g.edge_port if p == "k") == 2 * 1 + 2 * 4  # 2 kv ports x sources per layer


def _mask(g, names):
    m = np.zeros(g.n_edges, bool)
    for n in names:
        m[g.edge_id(n)] = True
    return m


def test_prune_keeps_only_input_to_logits_paths():
    g = build_layout((2, 2, 2))
    chosen = [
        "input->a0.h0<q>",
        "a0.h0->a1.h1<v>",
        "a1.h1->logits",  # a full path
        "input->a0.h1<q>",  # dead end: a0.h1 never read
        "a1.h0->logits",
    ]  # a1.h0 never reached
    edges, nodes = prune(g, _mask(g, chosen))
    kept = {g.edge_names[e] for e in np.flatnonzero(edges)}
    assert kept == {"input->a0.h0<q>", "a0.h0->a1.h1<v>", "a1.h1->logits"}
    assert {g.node_names[n] for n in np.flatnonzero(nodes)} == {"input", "a0.h0", "a1.h1", "logits"}
    none_e, none_n = prune(g, _mask(g, ["input->a0.h0<q>"]))
    assert not none_e.any() and not none_n.any()


def test_prune_reads_kv_ports_as_inputs_of_the_whole_kv_group():
    g = build_layout((2, 4, 2))  # n_rep = 2: kv head 1 serves query heads 2 and 3
    chosen = ["input->a1.h1<k>", "a1.h3->logits"]
    edges, nodes = prune(g, _mask(g, chosen))
    assert edges.sum() == 2
    assert {g.node_names[n] for n in np.flatnonzero(nodes)} == {"input", "a1.h3", "logits"}
    # kv head 0 serves heads 0 and 1, not head 3: no path.
    assert not prune(g, _mask(g, ["input->a1.h0<k>", "a1.h3->logits"]))[0].any()


def test_rank_topn_and_greedy_are_deterministic():
    g = build_layout((2, 2, 1))
    rng = np.random.default_rng(0)
    scores = rng.normal(size=g.n_edges).astype(np.float32)
    scores[5] = scores[6] = 10.0  # a tie: the lower id ranks first
    order = rank(scores)
    assert list(order[:2]) == [5, 6]
    top = select_topn(g, scores, 10)
    assert top.n_edges <= 10 and set(top.edge_ids) <= set(order[:10])
    greedy = select_greedy(g, scores, 8)
    assert greedy.n_edges <= 8
    assert np.array_equal(greedy.edge_mask, select_greedy(g, scores, 8).edge_mask)
    # Greedy grows from logits: each kept edge ends at logits or at a node some kept edge leaves.
    for e in greedy.edge_ids:
        dst = g.edge_dst[e]
        assert dst == g.logits_node or greedy.node_mask[dst] or g.edge_port[e] in ("k", "v")
    full = select_topn(g, scores, g.n_edges)
    assert full.n_edges == g.n_edges and full.n_nodes == g.n_nodes


def test_edges_that_score_zero_are_in_no_circuit():
    """A model that reads both prompts alike scores every edge exactly 0: its circuit is empty,
    not the first n edges by id; with a few nonzero edges, only those (and their paths) count."""
    g = build_layout((2, 4, 2))
    assert select_topn(g, np.zeros(g.n_edges, np.float32), 10).n_edges == 0
    assert select_greedy(g, np.zeros(g.n_edges, np.float32), 10).n_edges == 0
    scores = np.zeros(g.n_edges, np.float32)
    into_logits = [e for e in range(g.n_edges) if g.edge_dst[e] == g.logits_node][:3]
    scores[into_logits] = [0.5, -0.2, 0.1]
    top = select_topn(g, scores, 10)
    assert set(top.edge_ids) <= set(into_logits) and top.n_edges > 0
    # ties above zero still fill the n-th place by id, as before
    assert select_topn(g, np.ones(g.n_edges, np.float32), 10).edge_mask.sum() <= 10


def test_cpr_cmd_use_the_trapezoid_rule():
    c = curve_from([0.1, 1.0, 100.0], [1, 2, 3], [0.0, 0.5, 1.0])
    x = np.array([0.001, 0.01, 1.0])
    assert c.area_under == np.trapezoid([0.0, 0.5, 1.0], x)
    assert c.area_from_1 == np.trapezoid([1.0, 0.5, 0.0], x)


def test_mib_curves_count_rank_and_name_as_mib_does():
    """MIB: k = int(fraction * n_edges) (floor, may be 0); CPR = area under f of the SIGNED
    ranking (edges that support the clean behaviour first), CMD = area under |1 - f| of the
    ABSOLUTE ranking; the areas are MIB's pairwise trapezoids."""
    from headdb.attribution.faithfulness import MIB_PERCENTS, MIBCurves, curve_masks

    g = build_layout((2, 4, 2))
    scores = np.linspace(-1.0, 0.5, g.n_edges)[np.random.default_rng(0).permutation(g.n_edges)]
    counts, masks = curve_masks(g, scores, metric="logit-diff", ranking="signed")
    assert counts == [int(f * g.n_edges) for f in (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1)]
    assert counts[0] == 0 and not masks[0].any()
    # logit-diff is a reward: the most negative score supports the answer most, so it comes first
    k = counts[6]
    want = np.argsort(scores)[:k]
    assert set(np.flatnonzero(prune(g, np.isin(np.arange(g.n_edges), want))[0])) == set(np.flatnonzero(masks[6]))
    _, kl_masks = curve_masks(g, scores, metric="kl", ranking="signed")  # kl is a distance: largest first
    assert set(np.flatnonzero(kl_masks[6])) <= set(np.argsort(-scores)[:k])
    _, abs_masks = curve_masks(g, scores, metric="logit-diff", ranking="abs")
    assert not np.array_equal(abs_masks[8], masks[8])  # half the edges: |score| takes positive ones too

    def mib_areas(f):
        under = from_1 = 0.0
        x = [p / 100 for p in MIB_PERCENTS]
        for i in range(len(f) - 1):
            under += (x[i + 1] - x[i]) * (f[i] + f[i + 1]) / 2
            from_1 += (x[i + 1] - x[i]) * (abs(1 - f[i]) + abs(1 - f[i + 1])) / 2
        return under, from_1

    f_signed = [0.0, 0.1, 0.3, 0.6, 0.9, 1.2, 1.1, 1.05, 1.0, 1.0]
    f_abs = [0.0, 0.05, 0.2, 0.5, 0.7, 0.9, 0.95, 0.99, 1.0, 1.0]
    curves = MIBCurves(
        signed=curve_from(MIB_PERCENTS, counts, f_signed, "signed"),
        absolute=curve_from(MIB_PERCENTS, counts, f_abs, "abs"),
    )
    m = curves.metrics()
    assert m["cpr"] == pytest.approx(mib_areas(f_signed)[0], abs=1e-12)
    assert m["cmd"] == pytest.approx(mib_areas(f_abs)[1], abs=1e-12)
    assert m["cpr_abs"] == pytest.approx(mib_areas(f_abs)[0], abs=1e-12)
    assert m["cmd_signed"] == pytest.approx(mib_areas(f_signed)[1], abs=1e-12)
    assert curves.table().column("ranking").to_pylist() == ["signed"] * 10 + ["abs"] * 10


def test_block_scores_match_the_per_edge_definition():
    """score(u -> port) = sum over batch, positions and d_model of delta[u] * dL/d(port)."""
    import torch

    from headdb.attribution.eap import block_scores

    g = build_layout((3, 4, 2))
    B, S, D = 2, 5, 8
    gen = torch.Generator().manual_seed(0)
    delta = torch.randn(g.n_nodes - 1, B, S, D, generator=gen)
    grads = {"l": torch.randn(B, S, D, generator=gen)}
    for L in range(g.n_layers):
        grads[("q", L)] = torch.randn(B, S, g.n_heads, D, generator=gen)
        for kind in ("k", "v"):
            grads[(kind, L)] = torch.randn(B, S, g.n_kv_heads, D, generator=gen)
        grads[("m", L)] = torch.randn(B, S, D, generator=gen)
    ref = np.empty(g.n_edges)
    for e in range(g.n_edges):
        dst, port = int(g.edge_dst[e]), g.edge_port[e]
        if g.node_kind[dst] == "logits":
            grad = grads["l"]
        elif port == "":
            grad = grads[("m", int(g.node_layer[dst]))]
        else:  # q: query head h; k/v: kv head g (the node named in the edge carries it)
            grad = grads[(port, int(g.node_layer[dst]))][:, :, int(g.node_head[dst])]
        ref[e] = float((delta[int(g.edge_src[e])].double() * grad.double()).sum())
    got = block_scores(g, delta, grads)
    assert got.dtype == torch.float32 and got.shape == (g.n_edges,)
    np.testing.assert_allclose(got.numpy(), ref, rtol=1e-5, atol=1e-4)
