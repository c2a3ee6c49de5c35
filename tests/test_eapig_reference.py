"""headdb against an independent EAP-IG (tests/eapig_reference.py: plain HF hooks, no
TransformerLens, no headdb engine code) on tiny Qwen2 models with and without grouped-query
attention: same scores, same sign, and EAP-IG JSON files of those scores import under the
right edge names (issue 12)."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
from transformers import AutoModelForCausalLM

import headdb
import eapig_format
from eapig_reference import as_array, eap_ig_inputs, grouped
from headdb.attribution import attribute, build_layout
from headdb.attribution.tasks import EncodedPairs, encode_pairs, load_task
from headdb.errors import UserError
from headdb.interop.graph_json import export_graph_json, import_graph_json, new_import_checkpoint, new_import_task
from headdb.jobs.registration import register_shape
from warehouse_builders import layout_tables


def _pairs(tokenizer, n=6, seed=0) -> EncodedPairs:
    """a+b= vs a+b'= as token ids (equal length, no padding), answers' first tokens."""
    rng = random.Random(seed)
    clean, corr, ans, wrong = [], [], [], []
    first = lambda s: tokenizer(s, add_special_tokens=False).input_ids[0]  # noqa: E731
    while len(clean) < n:
        a, b, b2 = rng.randint(10, 49), rng.randint(10, 49), rng.randint(10, 49)
        c, k = tokenizer(f"{a}+{b}=").input_ids, tokenizer(f"{a}+{b2}=").input_ids
        good, bad = str(a + b)[0], str(a + b2)[0]
        if len(c) != len(k) or good == bad:
            continue
        clean.append(c), corr.append(k), ans.append(first(good)), wrong.append(first(bad))
    return EncodedPairs(item_ids=[f"q{i}" for i in range(n)], clean=clean, corrupted=corr, answer=ans, wrong=wrong)


@pytest.fixture(scope="module", params=[2, 4], ids=["gqa", "mha"])
def model(request, tmp_path_factory, load_tiny):
    from headdb.demo.tiny import build_tiny_model

    path = build_tiny_model(
        tmp_path_factory.mktemp(f"ref{request.param}") / "m",
        arch="qwen2",
        n_layers=2,
        n_heads=4,
        n_kv_heads=request.param,
        d_model=64,
        init_std=0.1,
        seed=0,
    )
    loaded = load_tiny(path)
    hf = AutoModelForCausalLM.from_pretrained(path, local_files_only=True, attn_implementation="eager")
    return loaded, hf, _pairs(loaded.tokenizer)


def _reference(hf, pairs, metric, **kw):
    return eap_ig_inputs(hf, pairs.clean, pairs.corrupted, pairs.answer, pairs.wrong, metric=metric, **kw)


def _assert_same(ours: np.ndarray, ref: np.ndarray):
    scale = np.abs(ref).max()
    assert scale > 1e-3  # a real signal
    np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-6 * scale)
    assert np.corrcoef(ours, ref)[0, 1] >= 0.99999
    big = np.abs(ref) > 1e-4 * scale
    assert (np.sign(ours[big]) == np.sign(ref[big])).all()


@pytest.mark.parametrize("metric", ["logit-diff", "kl"])
def test_left_rule_scores_equal_eap_ig(model, metric):
    """ig_rule="left" is EAP-IG's rule: every edge score equals the reference's (its sign too);
    GQA k/v ports equal the sums of EAP-IG's per-query-head ports."""
    loaded, hf, pairs = model
    ours = attribute(loaded, pairs, method="eap-ig", metric=metric, steps=5, ig_rule="left", batch_size=4)
    g = ours.layout
    ref = grouped(_reference(hf, pairs, metric, steps=5), g.n_heads, g.n_kv_heads)
    _assert_same(ours.edge_scores.astype(np.float64), as_array(ref, g.edge_names))
    # edges leaving input sum to ~ L(corrupted) - L(clean) (EAP-IG's sign)
    assert np.sign(ours.input_sum) == np.sign(ours.metric_delta)


@pytest.mark.parametrize(
    "rule, alphas", [("midpoint", [0.125, 0.375, 0.625, 0.875]), ("right", [0.25, 0.5, 0.75, 1.0])]
)
def test_other_rules_integrate_at_their_points(model, rule, alphas):
    loaded, hf, pairs = model
    ours = attribute(loaded, pairs, method="eap-ig", metric="logit-diff", steps=4, ig_rule=rule, batch_size=6)
    g = ours.layout
    ref = grouped(_reference(hf, pairs, "logit-diff", alphas=alphas), g.n_heads, g.n_kv_heads)
    _assert_same(ours.edge_scores.astype(np.float64), as_array(ref, g.edge_names))


def test_midpoint_is_closest_to_the_converged_scores(model):
    """At m = 5 the midpoint rule is far closer to the m -> infinity scores than either end rule."""
    loaded, _, pairs = model
    conv = attribute(loaded, pairs, metric="kl", steps=256, batch_size=6).edge_scores.astype(np.float64)
    err = {
        rule: np.linalg.norm(
            attribute(loaded, pairs, metric="kl", steps=5, ig_rule=rule, batch_size=6).edge_scores - conv
        )
        / np.linalg.norm(conv)
        for rule in ("midpoint", "left", "right")
    }
    assert err["midpoint"] < 0.02 and err["left"] > 3 * err["midpoint"] and err["right"] > 3 * err["midpoint"], err


def test_a_reference_json_file_imports_under_the_right_names_and_sign(model, tmp_path):
    """An EAP-IG JSON file of the reference's scores (k/v ports per query head, as EAP-IG writes
    them for an ungrouped GQA model) lands on the real checkpoint with every score under the
    right edge name: equal to headdb's own left-rule scores (bugs 2 and 3 of issue 12)."""
    loaded, hf, pairs = model
    ref = _reference(hf, pairs, "logit-diff", steps=5)
    L, H = loaded.shape.n_layers, loaded.shape.n_heads
    top = set(sorted(ref, key=lambda e: -abs(ref[e]))[:12])
    data = eapig_format.graph(L, H, ref, top, {"input"} | {e.split("->")[0] for e in top})
    eapig_format.check_loadable(data)
    file = tmp_path / "ref.json"
    file.write_text(json.dumps(data))

    db = headdb.connect(tmp_path / "w.duckdb")
    register_shape(db, loaded.shape)
    ck = db.register_checkpoint(model_key=loaded.model_key, path=loaded.path, weights_digest="w")
    run = import_graph_json(db, file, ck, new_import_task(db, name="arith"))
    stored = db.sql("SELECT edge_id, score FROM edge_scores WHERE run_id = ? ORDER BY edge_id", [run.run_id])
    ours = attribute(loaded, pairs, method="eap-ig", metric="logit-diff", steps=5, ig_rule="left", batch_size=6)
    assert stored["edge_id"].to_list() == list(range(ours.layout.n_edges))
    _assert_same(stored["score"].to_numpy().astype(np.float64), ours.edge_scores.astype(np.float64))
    g = ours.layout
    in_circuit = set(db.sql("SELECT edge_id FROM circuit_edges")["edge_id"].to_list())
    names = grouped({e: 1.0 for e in top}, g.n_heads, g.n_kv_heads)
    assert {g.edge_names[e] for e in in_circuit} == set(names)
    # and back out: EAP-IG-loadable, reference names and values (GQA: split over query heads)
    out = tmp_path / "back.json"
    export_graph_json(db, run.run_id, out, gqa_split=True)
    back = json.loads(out.read_text())
    eapig_format.check_loadable(back)
    assert back["edges"].keys() == data["edges"].keys()
    if g.n_rep == 1:
        assert all(back["edges"][e]["score"] == float(np.float32(ref[e])) for e in ref)


def test_the_mislabelling_sequence_is_refused(model, tmp_path):
    """Issue 12, bug 1, with a real checkpoint: a file cannot register the checkpoint's model_key,
    and a warehouse where an older headdb let it do so refuses to store the checkpoint's runs."""
    loaded, _, _ = model
    L, H = loaded.shape.n_layers, loaded.shape.n_heads
    data = eapig_format.graph(L, H, {e: 0.1 for e in eapig_format.edge_names(L, H)}, set(), set())
    db = headdb.connect(tmp_path / "w.duckdb")
    with pytest.raises(UserError, match=f"model {loaded.model_key} is not registered"):
        new_import_checkpoint(db, name="ck", lineage="l", step=0, model_key=loaded.model_key, data=data)
    if loaded.shape.n_kv_heads == H:
        return  # without GQA the file's layout is the model's: nothing to mislabel
    wrong, _, _ = layout_tables(L, H, H)
    db.register_model({**loaded.shape.models_row(), "n_kv_heads": H}, wrong.nodes_table(), wrong.edges_table())
    with pytest.raises(UserError, match="registered with another graph layout"):
        register_shape(db, loaded.shape)
    assert build_layout(loaded.shape).n_edges != wrong.n_edges


def _text_task(tmp_path, tokenizer, n=6, seed=1):
    """A task file of a+b= vs a+b'= prompts (text), answers' first digits."""
    rng = random.Random(seed)
    lines = []
    while len(lines) < n:
        a, b, b2 = rng.randint(10, 49), rng.randint(10, 49), rng.randint(10, 49)
        good, bad = str(a + b)[0], str(a + b2)[0]
        if good != bad:
            lines.append({"clean": f"{a}+{b}=", "corrupted": f"{a}+{b2}=", "answer": good, "wrong_answer": bad})
    path = tmp_path / "arith.jsonl"
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    return load_task(path)


@pytest.mark.parametrize("metric", ["logit-diff", "kl"])
def test_prepend_bos_reproduces_eap_ig_on_the_same_task_file(model, metric, tmp_path):
    """EAP-IG's tokenize_plus prepends the tokenizer's BOS, or <|endoftext|> when it has none (as
    TransformerLens does: bos_token := eos_token, then bos_token + text is tokenised). With
    prepend_bos headdb's token ids and scores are EAP-IG's; without it the same file scores
    differently (issue 20: Pearson 0.978 on a tiny model)."""
    loaded, hf, _ = model
    tok = loaded.tokenizer
    task = _text_task(tmp_path, tok)
    bos_text = tok.bos_token or tok.eos_token
    assert bos_text == "<|endoftext|>"  # a Qwen-like tokenizer: no BOS of its own
    clean_text = task.items["clean"].to_list()
    corrupt_text = task.items["corrupted"].to_list()
    eap_clean = [tok(bos_text + t).input_ids for t in clean_text]  # TransformerLens' way, as text
    eap_corrupt = [tok(bos_text + t).input_ids for t in corrupt_text]

    pairs = encode_pairs(task, tok, prepend_bos=True)
    assert pairs.clean == eap_clean and pairs.corrupted == eap_corrupt
    assert encode_pairs(task, tok).clean == [ids[1:] for ids in eap_clean]  # the default: no BOS

    ref = grouped(
        eap_ig_inputs(hf, eap_clean, eap_corrupt, pairs.answer, pairs.wrong, metric=metric, steps=5),
        loaded.shape.n_heads,
        loaded.shape.n_kv_heads,
    )
    ours = attribute(loaded, pairs, method="eap-ig", metric=metric, steps=5, ig_rule="left", batch_size=6)
    expected = as_array(ref, ours.layout.edge_names)
    _assert_same(ours.edge_scores.astype(np.float64), expected)
    plain = attribute(
        loaded, encode_pairs(task, tok), method="eap-ig", metric=metric, steps=5, ig_rule="left", batch_size=6
    )
    r = np.corrcoef(plain.edge_scores.astype(np.float64), expected)[0, 1]
    assert r < 0.999  # the convention matters (0.13 to 0.96 here)


def test_prepend_bos_is_a_setting_with_an_option_and_a_manifest_key(tmp_path):
    """One definition (AttributionSettings.prepend_bos): the CLI option, the manifest key, and the
    run config (absent when off, so runs made before it keep their config_hash)."""
    from headdb.cli.ingest import PREPEND_BOS
    from headdb.jobs.manifest import load_manifest
    from headdb.settings import AttributionSettings

    assert "--prepend-bos" in PREPEND_BOS.param_decls[0] and PREPEND_BOS.default is False
    assert "prepend_bos" not in AttributionSettings().config("float32")
    assert AttributionSettings(prepend_bos=True).config("float32")["prepend_bos"] is True
    manifest = tmp_path / "s.toml"
    manifest.write_text('[study]\nname = "s"\n[attribution]\nprepend_bos = true\n')
    assert load_manifest(manifest).attribution.prepend_bos is True
    manifest.write_text('[study]\nname = "s"\n[attribution]\nprepend_bos = "maybe"\n')
    with pytest.raises(UserError, match="attribution.prepend_bos"):
        load_manifest(manifest)
