"""Per-example statistics and bootstrap confidence of the attribution engine: meaning, not shape.

Independent references: the engine run on ONE example at a time (per-example scores with no
batching at all), and the replicate weights applied to those by numpy.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from headdb.attribution import RANK_RULES, attribute, build_layout, discover, select_topn
from headdb.attribution.bootstrap import replicate_weights
from headdb.attribution.confidence import head_mask
from headdb.attribution.tasks import EncodedPairs, encode_pairs, load_task
from headdb.errors import UserError


def subset(pairs: EncodedPairs, idx) -> EncodedPairs:
    return EncodedPairs(
        item_ids=[pairs.item_ids[i] for i in idx],
        clean=[pairs.clean[i] for i in idx],
        corrupted=[pairs.corrupted[i] for i in idx],
        answer=[pairs.answer[i] for i in idx],
        wrong=[pairs.wrong[i] for i in idx],
    )


def one_at_a_time(loaded, pairs, **kw) -> np.ndarray:
    """[n, n_edges] float64: the engine on each example alone."""
    return np.stack(
        [
            attribute(loaded, subset(pairs, [i]), batch_size=1, **kw).edge_scores.astype(np.float64)
            for i in range(len(pairs))
        ]
    )


@pytest.fixture(scope="module")
def arith_pairs(qwen2_strong, arith_task_file):
    return encode_pairs(load_task(arith_task_file), qwen2_strong.tokenizer)


@pytest.fixture(scope="module")
def per_example(qwen2_strong, arith_pairs):
    return one_at_a_time(qwen2_strong, arith_pairs, method="eap-ig", metric="logit-diff", steps=3)


# -------------------------------------------------------------------------- the weights


def test_weights_are_a_function_of_seed_replicate_and_item_id():
    ids = [f"item-{i}" for i in range(40)]
    w = replicate_weights(ids, 30, seed=5)
    assert w.shape == (30, 40) and w.dtype == np.float32
    order = np.random.default_rng(0).permutation(40)
    shuffled = replicate_weights([ids[i] for i in order], 30, seed=5)
    np.testing.assert_array_equal(shuffled, w[:, order])  # item order does not matter
    np.testing.assert_array_equal(replicate_weights(ids[:25], 30, seed=5), w[:, :25])  # nor other items
    np.testing.assert_array_equal(replicate_weights(ids, 10, seed=5), w[:10])  # nor B
    assert not np.array_equal(replicate_weights(ids, 30, seed=6), w)


def test_weights_are_poisson_one():
    w = replicate_weights([str(i) for i in range(1000)], 200, seed=0).ravel().astype(np.float64)
    assert np.all(w == np.round(w)) and w.min() == 0
    assert w.mean() == pytest.approx(1.0, abs=0.01)  # sd of the mean: 1/sqrt(2e5) = 0.0022
    assert w.var() == pytest.approx(1.0, abs=0.02)
    for k in range(4):
        assert np.mean(w == k) == pytest.approx(math.exp(-1) / math.factorial(k), abs=0.005), k


def test_an_empty_replicate_is_redrawn():
    w = replicate_weights(["only"], 200, seed=1)
    assert (w > 0).all()  # a replicate needs at least one example
    assert replicate_weights(["only"], 200, seed=1).tobytes() == w.tobytes()


# -------------------------------------------------------------------------- the engine


def test_mean_abs_and_replicates_equal_a_one_example_at_a_time_computation(qwen2_strong, arith_pairs, per_example):
    r = attribute(
        qwen2_strong,
        arith_pairs,
        method="eap-ig",
        metric="logit-diff",
        steps=3,
        batch_size=5,
        rank="mean-abs",
        bootstrap=20,
        seed=3,
    )
    s = per_example
    np.testing.assert_allclose(r.edge_scores, s.mean(0), rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(r.mean_abs, np.abs(s).mean(0), rtol=1e-4, atol=1e-7)
    assert np.abs(r.mean_abs - np.abs(r.edge_scores)).max() > 1e-3 * np.abs(r.edge_scores).max()  # differ
    w = replicate_weights(arith_pairs.item_ids, 20, seed=3).astype(np.float64)
    np.testing.assert_allclose(r.replicates, w @ s / w.sum(1, keepdims=True), rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(r.replicates_abs, w @ np.abs(s) / w.sum(1, keepdims=True), rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(r.edge_se, (w @ s / w.sum(1, keepdims=True)).std(0, ddof=1), rtol=1e-3, atol=1e-7)
    # Exact identity: replicate means pooled with their total weights are the c-weighted mean
    # of the examples, c_i = sum_b w_bi.
    W = w.sum(1)
    c = w.sum(0)
    np.testing.assert_allclose((W[:, None] * r.replicates).sum(0) / W.sum(), c @ s / c.sum(), rtol=1e-4, atol=1e-7)


def test_replicate_means_average_to_the_plain_mean(qwen2_strong, arith_pairs, per_example):
    s = per_example
    sd = s.std(0)
    live = sd > 1e-3 * sd.max()
    n = len(arith_pairs)
    z, rel = {}, {}
    for B in (25, 1600):
        r = attribute(
            qwen2_strong, arith_pairs, method="eap-ig", metric="logit-diff", steps=3, batch_size=8, bootstrap=B, seed=11
        )
        dev = r.replicates.astype(np.float64).mean(0) - r.edge_scores
        # In units of the standard error of the plain mean itself, sd_i / sqrt(n) ...
        rel[B] = np.sqrt(np.mean((dev[live] / (sd[live] / np.sqrt(n))) ** 2))
        # ... and of the sd of an average of B replicate means, sd_i / sqrt(n B).
        z[B] = rel[B] * np.sqrt(B)
    assert rel[1600] < 0.06 and rel[1600] < rel[25] / 4, rel  # -> 0 as B grows
    assert 0.3 < z[25] < 3 and 0.3 < z[1600] < 3, z  # like 1/sqrt(B)


def test_bit_identical_under_a_seed_and_batch_size_independent(qwen2_strong, ragged_task_file):
    pairs = encode_pairs(load_task(ragged_task_file), qwen2_strong.tokenizer)
    kw = dict(
        method="eap-ig",
        metric="logprob",
        steps=3,
        topn=30,
        threshold=0.2,
        curve=False,
        bootstrap=40,
        seed=2,
        rank="mean-abs",
    )
    a = discover(qwen2_strong, pairs, batch_size=3, **kw)
    b = discover(qwen2_strong, pairs, batch_size=3, **kw)
    for name in ("edge_scores", "mean_abs", "replicates", "replicates_abs"):
        assert getattr(a.result, name).tobytes() == getattr(b.result, name).tobytes(), name
    for ca, cb in zip(a.circuits, b.circuits):
        assert np.array_equal(ca.membership, cb.membership) and ca.stability == cb.stability
        assert ca.replicates_table().equals(cb.replicates_table())
    one = discover(qwen2_strong, pairs, batch_size=1, **kw)
    np.testing.assert_allclose(one.result.replicates, a.result.replicates, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(one.result.replicates_abs, a.result.replicates_abs, rtol=1e-4, atol=1e-7)
    for ca, c1 in zip(a.circuits, one.circuits):
        assert np.array_equal(ca.membership, c1.membership), ca.selection
    other = attribute(qwen2_strong, pairs, method="eap-ig", metric="logprob", steps=3, bootstrap=40, seed=3)
    assert not np.allclose(other.replicates, a.result.replicates)


def test_replicate_circuits_equal_an_independent_resampling(qwen2_strong, arith_pairs, per_example):
    """What a hidden check does: resample the per-example scores itself, select, compare."""
    d = discover(
        qwen2_strong,
        arith_pairs,
        method="eap-ig",
        metric="logit-diff",
        steps=3,
        topn=25,
        threshold=None,
        curve=False,
        batch_size=8,
        bootstrap=50,
        seed=9,
    )
    g = d.result.layout
    w = replicate_weights(arith_pairs.item_ids, 50, seed=9).astype(np.float64)
    reps = w @ per_example / w.sum(1, keepdims=True)
    mine = np.stack([head_mask(g, select_topn(g, reps[b], 25)) for b in range(50)])
    (topn,) = d.circuits
    p_engine, p_mine = topn.membership.mean(0), mine.mean(0)
    assert ((p_engine > 0) & (p_engine < 1)).any()  # some heads are uncertain: a real test
    np.testing.assert_allclose(p_engine, p_mine, atol=0.04)  # float ties at the top-n cut may differ
    assert np.mean(topn.membership == mine) > 0.98


def test_rank_rule_changes_the_circuit_and_importance(qwen2_strong, arith_pairs):
    kw = dict(method="eap-ig", metric="logit-diff", steps=3, topn=25, threshold=None, curve=False)
    plain = discover(qwen2_strong, arith_pairs, **kw)
    study = discover(qwen2_strong, arith_pairs, rank="mean-abs", **kw)
    g = plain.result.layout
    np.testing.assert_array_equal(plain.circuits[0].edge_mask, select_topn(g, plain.result.edge_scores, 25).edge_mask)
    np.testing.assert_array_equal(study.circuits[0].edge_mask, select_topn(g, study.result.mean_abs, 25).edge_mask)
    assert not np.array_equal(plain.circuits[0].edge_mask, study.circuits[0].edge_mask)
    per_node = np.bincount(g.edge_src, weights=study.result.mean_abs, minlength=g.n_nodes)
    heads = per_node[[g.head_node(L, h) for L in range(g.n_layers) for h in range(g.n_heads)]]
    np.testing.assert_allclose(study.result.head_importance.ravel(), heads / heads.sum(), rtol=1e-5)
    assert RANK_RULES == ("abs-mean", "mean-abs")


def test_bad_requests_are_user_errors(qwen2_strong, arith_pairs):
    with pytest.raises(UserError, match="^rank: Input should be 'abs-mean' or 'mean-abs' \\(got 'median'\\)"):
        attribute(qwen2_strong, arith_pairs, rank="median")
    with pytest.raises(UserError, match="^bootstrap: Input should be greater than or equal to 0"):
        attribute(qwen2_strong, arith_pairs, bootstrap=-1)
    with pytest.raises(UserError, match="exact patching keeps no per-example scores"):
        attribute(qwen2_strong, arith_pairs, method="exact", bootstrap=10)
    with pytest.raises(UserError, match="exact patching keeps no per-example scores"):
        attribute(qwen2_strong, arith_pairs, method="exact", rank="mean-abs")


# ------------------------------------------------------- a planted and a partial head

PLANTED, PARTIAL = (0, 1), (0, 2)


@pytest.fixture(scope="module")
def partial_model(tmp_path_factory, load_tiny):
    """Layer 0 of a Qwen2 (4 heads, 2 kv heads) has two writing heads, each attending uniformly
    (zero q/k weights and biases): a0.h1 reads only residual dims 0..31 (its kv head's value
    weights are zero elsewhere), a0.h2 only dims 32..63. Digits embed in dims 0..31, lowercase
    letters in dims 32..63. Every other head, layer 1's attention and every MLP write nothing.
    So a0.h1 sees a changed digit (every prompt below), a0.h2 only a changed letter: on a prompt
    whose letters are unchanged its output, and so each of its edge scores, is exactly 0."""
    import torch
    from transformers import AutoModelForCausalLM

    from headdb.demo.tiny import build_tiny_model, build_tokenizer

    path = build_tiny_model(
        tmp_path_factory.mktemp("partial") / "model",
        arch="qwen2",
        n_layers=2,
        n_heads=4,
        n_kv_heads=2,
        d_model=64,
        init_std=0.1,
        seed=5,
    )
    model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True)
    tok = build_tokenizer()
    d_head, half = 16, 32
    with torch.no_grad():
        emb = model.model.embed_tokens.weight
        for ch in "0123456789":
            emb[tok.convert_tokens_to_ids(ch), half:] = 0.0
        for ch in "abcdefghijklmnopqrstuvwxyz":
            emb[tok.convert_tokens_to_ids(ch), :half] = 0.0
        for L, layer in enumerate(model.model.layers):
            attn = layer.self_attn
            layer.mlp.down_proj.weight.zero_()
            if L > 0:
                attn.o_proj.weight.zero_()
                continue
            for proj in (attn.q_proj, attn.k_proj):
                proj.weight.zero_()
                proj.bias.zero_()
            attn.v_proj.weight[:d_head, half:] = 0.0  # kv head 0 (query heads 0, 1): dims 0..31
            attn.v_proj.weight[d_head:, :half] = 0.0  # kv head 1 (query heads 2, 3): dims 32..63
            for h in range(4):
                cols = slice(h * d_head, (h + 1) * d_head)
                if (0, h) in (PLANTED, PARTIAL):
                    attn.o_proj.weight[:, cols] *= 4.0
                else:
                    attn.o_proj.weight[:, cols] = 0.0
    model.save_pretrained(path)
    return load_tiny(path)


@pytest.fixture(scope="module")
def partial_task(tmp_path_factory):
    """12 items; the digit changes in all, the letter only in q3, q7 and q10."""
    items = []
    for i in range(12):
        a, b, b2 = 1 + i % 7, 2 + i % 5, 9 - i % 4
        letters = ("a", "b") if i in (3, 7, 10) else ("c", "c")
        items.append(
            {
                "id": f"q{i}",
                "clean": f"{letters[0]}{a}+{b}=",
                "corrupted": f"{letters[1]}{a}+{b2}=",
                "answer": str(a + b)[-1],
            }
        )
    path = tmp_path_factory.mktemp("tasks") / "partial.jsonl"
    path.write_text("".join(json.dumps(it) + "\n" for it in items))
    return path


def test_planted_head_is_certain_and_partial_head_has_the_resampling_probability(partial_model, partial_task):
    pairs = encode_pairs(load_task(partial_task), partial_model.tokenizer)
    g = build_layout(partial_model.shape)
    R = 200
    d = discover(
        partial_model,
        pairs,
        method="eap-ig",
        metric="logprob",
        steps=4,
        topn=g.n_edges,
        threshold=1e-4,
        curve=False,
        batch_size=5,
        bootstrap=R,
        seed=0,
    )
    thr = d.circuits[1]
    assert thr.selection == "threshold" and set(thr.heads) == {PLANTED, PARTIAL}
    p = thr.head_confidence
    assert p[PLANTED] == 1.0
    # a0.h2 is in replicate b's circuit exactly when b draws one of the three lettered prompts.
    w = replicate_weights(pairs.item_ids, R, seed=0)
    lettered = [pairs.item_ids.index(i) for i in ("q3", "q7", "q10")]
    expected = np.mean(w[:, lettered].sum(1) > 0)
    assert 0.8 < expected < 0.99  # about 1 - e^-3 = 0.95
    assert p[PARTIAL] == expected
    others = [p[L, h] for L in range(g.n_layers) for h in range(g.n_heads) if (L, h) not in (PLANTED, PARTIAL)]
    assert max(others) == 0.0
    # Replicate head sets are {planted, partial} or {planted}: Jaccard 1 or 1/2 with the full set.
    assert thr.stability == pytest.approx(1 - 0.5 * (1 - expected))
    # The partial head's edges carry sampling error; a head that writes nothing has none.
    se = d.result.edge_se
    out_of = lambda head: g.edge_src == g.head_node(*head)  # noqa: E731
    assert se[out_of(PARTIAL)].max() > 0 and se[out_of((0, 0))].max() == 0.0
    lo, hi = d.result.importance_bounds
    assert lo[PARTIAL] < d.result.head_importance[PARTIAL] < hi[PARTIAL] and lo[PARTIAL] == 0.0


# ------------------------------------------------------- stored, then queried


def test_stored_confidence_round_trips_through_heads_gained(tmp_path, arith_task_file, load_tiny):
    import headdb
    from headdb.demo.tiny import build_tiny_model
    from headdb.jobs import execute, plan_attribution
    from headdb.jobs.job import Placement
    from headdb.settings import AttributionSettings, Execution
    from headdb.warehouse.queries import run_query

    db = headdb.connect(tmp_path / "w.duckdb")
    task = load_task(arith_task_file)
    settings = AttributionSettings(
        steps=3, metric="logit-diff", topn=25, threshold=0.2, curve=False, bootstrap=30, seed=4
    )
    found, paths = {}, {}
    for label, seed in (("base", 1), ("target", 2)):
        paths[label] = build_tiny_model(
            tmp_path / label, arch="qwen2", n_layers=2, n_heads=4, n_kv_heads=2, d_model=64, init_std=0.1, seed=seed
        )
        execute(
            db,
            plan_attribution(
                paths[label],
                task,
                settings,
                placement=Placement(lineage=label, name=label),
                execution=Execution(device="cpu"),
            ),
            say=lambda _: None,
        )
        (run_id,) = db.sql(
            "SELECT r.run_id FROM runs r JOIN checkpoints k USING (checkpoint_id) WHERE k.name = ? AND r.status = 'ok'",
            [label],
        )["run_id"].to_list()
        loaded = load_tiny(paths[label])
        found[label] = discover(
            loaded,
            encode_pairs(task, loaded.tokenizer),
            method="eap-ig",
            metric="logit-diff",
            steps=3,
            topn=25,
            threshold=0.2,
            curve=False,
            bootstrap=30,
            seed=4,
        )
        n_edges = found[label].result.layout.n_edges
        se = db.sql("SELECT se FROM edge_score_se WHERE run_id = ? ORDER BY edge_id", [run_id])["se"].to_numpy()
        np.testing.assert_allclose(se, found[label].result.edge_se, rtol=1e-6)
        assert len(se) == n_edges
        stored = db.sql(
            "SELECT selection, n_replicates, stability, bootstrap_seed FROM circuits WHERE run_id = ? "
            "ORDER BY circuit_id",
            [run_id],
        ).rows()
        assert stored == [(c.selection, 30, pytest.approx(c.stability), 4) for c in found[label].circuits]
        bounds = db.sql(
            "SELECT importance_lo, importance_hi FROM head_importance_interval WHERE run_id = ? ORDER BY layer, head",
            [run_id],
        )
        np.testing.assert_allclose(bounds["importance_lo"].to_numpy(), found[label].result.importance_bounds[0].ravel())
    df = run_query(db, "heads_gained", {"base": "base", "target": "target"})
    assert df.height > 0
    base, target = (found[k].circuits[1].membership for k in ("base", "target"))
    for r in df.iter_rows(named=True):
        h = (r["layer"], r["head"])
        assert r["p_base"] == pytest.approx(base[:, h[0], h[1]].mean())
        assert r["p_target"] == pytest.approx(target[:, h[0], h[1]].mean())
        assert r["p_gained"] == pytest.approx(np.mean(target[:, h[0], h[1]] & ~base[:, h[0], h[1]]))
        assert r["p_lost"] == pytest.approx(np.mean(base[:, h[0], h[1]] & ~target[:, h[0], h[1]]))
    # A forced rerun replaces the run's replicate rows too.
    n_rows = db.sql("SELECT count(*) AS n FROM circuit_head_replicates")["n"][0]
    execute(
        db,
        plan_attribution(
            paths["target"],
            task,
            settings,
            placement=Placement(lineage="target", name="target"),
            execution=Execution(device="cpu", force=True),
        ),
        say=lambda _: None,
    )
    assert db.sql("SELECT count(*) AS n FROM circuit_head_replicates")["n"][0] == n_rows
    assert db.sql("SELECT count(DISTINCT run_id) AS n FROM edge_score_se")["n"][0] == 2
    assert db.sql("SELECT count(*) AS n FROM runs WHERE status = 'ok'")["n"][0] == 2


def test_linear_time_topn_equals_the_sorted_ranking():
    """topn_mask (a partition) picks exactly the first n edges of rank() (a full sort), ties by id."""
    from headdb.attribution.circuit import rank, topn_mask

    rng = np.random.default_rng(1)
    for _ in range(300):
        E = int(rng.integers(1, 300))
        v = rng.integers(-4, 5, E).astype(np.float32)  # many ties
        if rng.random() < 0.5:
            v = v + rng.standard_normal(E).astype(np.float32)
        if rng.random() < 0.2:
            v[rng.integers(0, E)] = np.nan
        n = int(rng.integers(0, E + 3))
        expected = np.zeros(E, bool)
        expected[rank(v)[:n]] = True
        assert np.array_equal(topn_mask(v, n), expected), (E, n)
