"""The attribution engine on tiny local models: meaning, not just shape."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

from headdb.attribution import (
    MIB_PERCENTS,
    attribute,
    build_layout,
    discover,
    evaluate_circuits,
    exact_scores,
    select_threshold,
    select_topn,
)
from headdb.attribution.probe import LOGITS_IN, Probe, per_row_keep
from headdb.errors import UserError
from headdb.attribution.tasks import encode_pairs, load_task


@pytest.fixture(scope="module")
def arith(arith_task_file):
    return load_task(arith_task_file)


def test_completeness_eap_ig_64_steps(qwen2_strong, ragged_task_file):
    """Edges leaving `input` sum to metric(corrupted) - metric(clean) (IG completeness)."""
    pairs = encode_pairs(load_task(ragged_task_file), qwen2_strong.tokenizer)
    for metric in ("kl", "logit-diff"):
        r = attribute(qwen2_strong, pairs, method="eap-ig", metric=metric, steps=64, batch_size=5)
        assert abs(r.metric_delta) > 0.3  # a clear effect, not numerical noise
        assert r.completeness_relative < 0.05, (metric, r.input_sum, r.metric_delta)
        assert r.run_metrics()["completeness_residual"] == pytest.approx(r.input_sum - r.metric_delta)
    # With few steps the IG sum is only approximate: the residual shrinks as m grows.
    coarse = attribute(qwen2_strong, pairs, method="eap-ig", metric="kl", steps=2, batch_size=5)
    assert coarse.completeness_relative > r.completeness_relative


def test_residual_is_the_sum_of_node_outputs(qwen2_gqa, arith):
    """The graph is complete: the final residual equals input + all head and MLP writes."""
    probe = Probe(qwen2_gqa)
    ids = torch.tensor(encode_pairs(arith, qwen2_gqa.tokenizer).clean[:3])
    seen = {}

    def keep(t, hook):
        seen["x"] = t.clone()

    with probe.graph_mode(), torch.no_grad():
        outs, _, _ = probe.capture(ids)
        probe.run(ids, [(LOGITS_IN, keep)])
    assert outs.shape[0] == probe.layout.n_nodes - 1
    torch.testing.assert_close(outs.sum(0), seen["x"].float(), atol=1e-5, rtol=1e-5)


def test_eap_ig_agrees_with_exact_patching(qwen2_gqa, arith):
    """EAP-IG head scores rank like exact per-head activation patching (logit-diff)."""
    pairs = encode_pairs(arith, qwen2_gqa.tokenizer)
    ig = attribute(qwen2_gqa, pairs, method="eap-ig", metric="logit-diff", steps=16)
    ex = exact_scores(qwen2_gqa, pairs, metric="logit-diff", edges=True)
    rho_heads = spearmanr(np.abs(ig.head_scores).ravel(), np.abs(ex.head_scores).ravel())[0]
    rho_edges = spearmanr(np.abs(ig.edge_scores), np.abs(ex.edge_scores))[0]
    assert rho_heads >= 0.8, rho_heads
    assert rho_edges >= 0.7, rho_edges
    # Same sign convention: exact `input` effect is exactly the metric difference.
    assert ex.node_scores[0] == pytest.approx(ex.metric_delta, rel=1e-5)
    assert ig.metric_delta == pytest.approx(ex.metric_delta, rel=1e-5)


def test_planted_heads_rank_on_top_and_form_the_circuit(planted_dir, planted_heads, load_tiny, arith):
    PLANTED_HEADS = planted_heads
    loaded = load_tiny(planted_dir)
    pairs = encode_pairs(arith, loaded.tokenizer)
    d = discover(loaded, pairs, method="eap-ig", metric="logit-diff", steps=8, topn=40, curve=False)
    imp = d.result.head_importance
    top2 = {tuple(int(v) for v in np.unravel_index(i, imp.shape)) for i in np.argsort(-imp.ravel())[:2]}
    assert top2 == PLANTED_HEADS
    others = [imp[L, h] for L in range(imp.shape[0]) for h in range(imp.shape[1]) if (L, h) not in PLANTED_HEADS]
    assert max(others) == 0.0 and imp.sum() == pytest.approx(1.0)
    topn, threshold = d.circuits
    assert set(topn.heads) == PLANTED_HEADS
    assert set(threshold.heads) <= PLANTED_HEADS and threshold.n_edges > 0
    assert topn.faithfulness == pytest.approx(1.0, abs=0.05)


def test_faithfulness_full_graph_is_one_and_empty_graph_is_zero(qwen2_strong, ragged_task_file):
    pairs = encode_pairs(load_task(ragged_task_file), qwen2_strong.tokenizer)
    g = build_layout(qwen2_strong.shape)
    full, empty = np.ones(g.n_edges, bool), np.zeros(g.n_edges, bool)
    for metric in ("kl", "logit-diff"):
        ev = evaluate_circuits(qwen2_strong, pairs, [full, empty], metric=metric, batch_size=2)
        f_full, f_empty = ev.faithfulness()
        assert f_full == pytest.approx(1.0, abs=1e-4)
        assert f_empty == pytest.approx(0.0, abs=1e-4)


def test_discover_outputs_match_the_schema(qwen2_gqa, arith):
    pairs = encode_pairs(arith, qwen2_gqa.tokenizer)
    calls = []
    d = discover(
        qwen2_gqa,
        pairs,
        method="eap-ig",
        metric="kl",
        steps=3,
        topn=60,
        greedy=30,
        batch_size=8,
        progress=lambda done, total: calls.append((done, total)),
    )
    g = d.result.layout
    assert calls and calls[-1][0] == calls[-1][1] and [c[0] for c in calls] == sorted(c[0] for c in calls)
    edges = d.result.edges_table()
    assert edges.column_names == ["edge_id", "score"] and edges.num_rows == g.n_edges
    assert str(edges.schema.field("score").type) == "float"
    heads = d.result.heads_table()
    assert heads.num_rows == g.n_layers * g.n_heads
    assert sum(heads.column("importance").to_pylist()) == pytest.approx(1.0, abs=1e-5)
    assert [c.selection for c in d.circuits] == ["topn", "threshold", "greedy"]
    for c in d.circuits:
        assert c.n_edges == len(c.edge_ids) <= {"topn": 60, "threshold": 60, "greedy": 30}[c.selection]
        assert set(c.edges_table().column("edge_id").to_pylist()) == set(c.edge_ids.tolist())
        assert c.faithfulness is not None
    for curve in (d.curve.signed, d.curve.absolute):
        assert curve.percents == list(MIB_PERCENTS) and curve.n_edges[-1] == g.n_edges
        assert curve.faithfulness[-1] == pytest.approx(1.0)
    assert d.curve.table().num_rows == 2 * len(MIB_PERCENTS)
    m = d.run_metrics()
    for key in (
        "metric_clean",
        "metric_corrupted",
        "completeness_residual",
        "completeness_relative",
        "cpr",
        "cmd",
        "cpr_abs",
        "cmd_signed",
    ):
        assert np.isfinite(m[key]), key
    assert 0.0 <= m["cmd"] and m["cpr"] <= 1.5


def test_scores_are_deterministic_and_batch_independent(qwen2_strong, ragged_task_file):
    """Bit-identical on a repeat; right padding does not change the per-example numbers."""
    pairs = encode_pairs(load_task(ragged_task_file), qwen2_strong.tokenizer)
    a = attribute(qwen2_strong, pairs, method="eap-ig", metric="logprob", steps=4, batch_size=3)
    b = attribute(qwen2_strong, pairs, method="eap-ig", metric="logprob", steps=4, batch_size=3)
    assert np.array_equal(a.edge_scores, b.edge_scores) and a.edge_scores.dtype == np.float32
    one = attribute(qwen2_strong, pairs, method="eap-ig", metric="logprob", steps=4, batch_size=1)
    np.testing.assert_allclose(one.edge_scores, a.edge_scores, rtol=1e-4, atol=1e-6)
    assert one.metric_clean == pytest.approx(a.metric_clean, rel=1e-5)


def test_eap_is_the_clean_point_gradient(qwen2_strong, ragged_task_file):
    pairs = encode_pairs(load_task(ragged_task_file), qwen2_strong.tokenizer)
    eap = attribute(qwen2_strong, pairs, method="eap", metric="logit-diff")
    assert eap.steps == 1 and np.abs(eap.edge_scores).max() > 0
    # KL(clean || current) has its minimum at the clean point: its gradient, and so EAP, vanish.
    kl = attribute(qwen2_strong, pairs, method="eap", metric="kl")
    assert np.abs(kl.edge_scores).max() < 1e-5


@pytest.mark.parametrize("arch_dir", ["llama_dir", "qwen3_dir"])
def test_other_architectures_run(request, arch_dir, arith, load_tiny):
    loaded = load_tiny(request.getfixturevalue(arch_dir))
    assert loaded.shape.n_kv_heads < loaded.shape.n_heads  # grouped-query attention
    pairs = encode_pairs(arith, loaded.tokenizer)
    r = attribute(loaded, pairs, method="eap-ig", metric="kl", steps=16)
    assert np.isfinite(r.edge_scores).all()
    assert r.completeness_relative < 0.05


def test_bf16_on_cpu_runs_and_accumulates_in_float32(qwen2_strong_dir, ragged_task_file, load_tiny):
    loaded = load_tiny(qwen2_strong_dir, dtype="bfloat16")
    assert loaded.dtype == torch.bfloat16
    pairs = encode_pairs(load_task(ragged_task_file), loaded.tokenizer)
    r = attribute(loaded, pairs, method="eap-ig", metric="kl", steps=8)
    assert r.edge_scores.dtype == np.float32 and np.isfinite(r.edge_scores).all()
    assert r.completeness_relative < 0.1
    ev = evaluate_circuits(loaded, pairs, [np.ones(r.layout.n_edges, bool)], metric="kl")
    assert ev.faithfulness()[0] == pytest.approx(1.0)


def test_half_precision_differences_score_like_float32_ones(qwen2_strong_dir, ragged_task_file, load_tiny, monkeypatch):
    """A bf16 model's node-output differences are held (and scored) in bf16, as hannamw/EAP-IG
    holds them: against the same run with float32 differences, the scores agree to bf16's
    rounding and the top edges are the same ones."""
    import headdb.attribution.eap as eap

    assert eap.delta_dtype(torch.bfloat16) == torch.bfloat16 and eap.delta_dtype(torch.float32) == torch.float32
    loaded = load_tiny(qwen2_strong_dir, dtype="bfloat16")
    pairs = encode_pairs(load_task(ragged_task_file), loaded.tokenizer)
    kw = dict(method="eap-ig", metric="kl", steps=4, batch_size=3)
    half = eap.eap_scores(loaded, pairs, **kw).edge_scores
    monkeypatch.setattr(eap, "delta_dtype", lambda dtype: torch.float32)
    full = eap.eap_scores(loaded, pairs, **kw).edge_scores
    scale = float(np.abs(full).max())
    err = float(np.abs(half - full).max())
    assert scale > 0 and err <= 5e-3 * scale, err / scale  # measured: 1.1e-3
    top = 20
    assert len(set(np.argsort(-np.abs(half))[:top]) & set(np.argsort(-np.abs(full))[:top])) >= top - 2


def test_bad_requests_are_user_errors(qwen2_gqa, arith, tmp_path):
    pairs = encode_pairs(arith, qwen2_gqa.tokenizer)
    # the settings' own rules (headdb.settings.AttributionSettings), named by field
    with pytest.raises(UserError, match="^method: Input should be 'eap-ig', 'eap' or 'exact' \\(got 'magic'\\)$"):
        attribute(qwen2_gqa, pairs, method="magic")
    with pytest.raises(UserError, match="^metric: Input should be 'kl', 'logit-diff' or 'logprob'"):
        attribute(qwen2_gqa, pairs, metric="accuracy")
    with pytest.raises(UserError, match="^steps: Input should be greater than or equal to 1"):
        attribute(qwen2_gqa, pairs, steps=0)
    no_wrong = tmp_path / "nw.jsonl"
    no_wrong.write_text('{"clean": "1+1=", "corrupted": "1+2=", "answer": "2"}\n')
    p2 = encode_pairs(load_task(no_wrong), qwen2_gqa.tokenizer)
    with pytest.raises(UserError, match="wrong_answer"):
        attribute(qwen2_gqa, p2, metric="logit-diff")


def test_threshold_circuit_is_within_topn(qwen2_gqa, arith):
    pairs = encode_pairs(arith, qwen2_gqa.tokenizer)
    r = attribute(qwen2_gqa, pairs, method="eap-ig", metric="logit-diff", steps=4)
    g = r.layout
    top = select_topn(g, r.edge_scores, 50)
    thr = select_threshold(g, r.edge_scores, 0.1, 50)
    assert set(thr.edge_ids) <= set(top.edge_ids)
    peak = np.abs(r.edge_scores).max()
    assert (np.abs(r.edge_scores[thr.edge_ids]) >= 0.1 * peak).all()


def test_chat_mode_pairs_run_through_the_engine(qwen3_dir, arith_task_file, load_tiny):
    loaded = load_tiny(qwen3_dir)
    task = load_task(arith_task_file, mode="think_off")
    pairs = encode_pairs(task, loaded.tokenizer)
    assert "</think>" in loaded.tokenizer.decode(pairs.clean[0])
    r = attribute(loaded, pairs, method="eap-ig", metric="kl", steps=4, batch_size=16)
    assert np.isfinite(r.edge_scores).all() and r.metric_corrupted > 0


def test_logits_are_computed_only_at_each_rows_last_token(qwen2_strong, ragged_task_file):
    """Every engine pass asks the model for one logit row per example (`logits_to_keep`), and
    on a ragged, right-padded batch that row is the example's own last real token."""
    from headdb.attribution.batches import make_batches, pad_id_of

    pairs = encode_pairs(load_task(ragged_task_file), qwen2_strong.tokenizer)
    batch = make_batches(pairs, 5, pad_id_of(qwen2_strong.tokenizer), torch.device("cpu"))[0]
    assert len(set(batch.last.tolist())) > 1  # ragged: last tokens at different positions
    probe = Probe(qwen2_strong)
    with probe.graph_mode(), torch.no_grad():
        full_out, _, full = probe.capture(batch.clean)
        kept_out, _, kept = probe.capture(batch.clean, last=batch.last)
    assert full.shape[:2] == batch.clean.shape and kept.shape == (5, full.shape[-1])
    torch.testing.assert_close(kept, full[torch.arange(5), batch.last], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(kept_out, full_out)  # node outputs do not depend on it

    bridge = qwen2_strong.bridge
    seen = []
    forward = bridge.forward

    def spy(*args, **kwargs):
        seen.append(kwargs.get("logits_to_keep"))
        out = forward(*args, **kwargs)
        seen.append(tuple(out.shape))
        return out

    bridge.forward = spy
    try:
        attribute(qwen2_strong, pairs, method="eap-ig", metric="kl", steps=2, batch_size=3)
        exact_scores(qwen2_strong, pairs, metric="logit-diff", batch_size=3, edges=False)
        g = build_layout(qwen2_strong.shape)
        evaluate_circuits(qwen2_strong, pairs, [np.arange(g.n_edges) % 2 == 0], metric="kl", batch_size=3)
    finally:
        del bridge.forward
    keeps, shapes = seen[0::2], seen[1::2]
    assert keeps and all(k is not None for k in keeps)
    if per_row_keep():  # [B, 1] positions, [B, 1, V] logits: one logit row per example
        assert all(k.ndim == 2 and k.shape[1] == 1 for k in keeps)
        assert all(s[1] == 1 for s in shapes)
    else:  # an older transformers: the distinct last positions of the batch, in every row
        assert all(k.ndim == 1 and s[1] == len(k) <= s[0] for k, s in zip(keeps, shapes))
        assert any(len(k) > 1 for k in keeps)


@pytest.mark.parametrize("metric", ["kl", "logit-diff"])
def test_ragged_batches_score_like_single_examples(qwen2_strong, ragged_task_file, metric):
    """Batch size 3 (ragged rows, logits kept at each row's own last token) gives the scores,
    metrics and circuit metrics of batch size 1."""
    pairs = encode_pairs(load_task(ragged_task_file), qwen2_strong.tokenizer)
    one = attribute(qwen2_strong, pairs, method="eap-ig", metric=metric, steps=3, batch_size=1)
    three = attribute(qwen2_strong, pairs, method="eap-ig", metric=metric, steps=3, batch_size=3)
    np.testing.assert_allclose(three.edge_scores, one.edge_scores, rtol=1e-4, atol=1e-6)
    assert three.metric_clean == pytest.approx(one.metric_clean, rel=1e-5, abs=1e-7)
    assert three.metric_corrupted == pytest.approx(one.metric_corrupted, rel=1e-5)
    mask = [select_topn(one.layout, one.edge_scores, 40).edge_ids]
    masks = [np.isin(np.arange(one.layout.n_edges), m) for m in mask]
    e1 = evaluate_circuits(qwen2_strong, pairs, masks, metric=metric, batch_size=1)
    e3 = evaluate_circuits(qwen2_strong, pairs, masks, metric=metric, batch_size=3)
    assert e3.metric_circuits[0] == pytest.approx(e1.metric_circuits[0], rel=1e-4, abs=1e-6)
