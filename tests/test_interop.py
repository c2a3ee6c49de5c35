"""Parquet export and EAP-IG JSON import/export round trips."""

from __future__ import annotations

import json

import duckdb
import numpy as np
import polars as pl
import pytest

import headdb
from headdb.errors import UserError
from headdb.interop.graph_json import (
    export_graph_json,
    import_graph_json,
    new_import_checkpoint,
    new_import_task,
    resolve_checkpoint,
    resolve_task,
)
from headdb.warehouse.export import export_parquet
from headdb.warehouse.migrations import code_version
from headdb.warehouse.queries import run_query
from warehouse_builders import MODEL_KEY, N_HEADS, N_LAYERS, layout_tables, register_tiny_model, shared_study


def eapig_graph(
    n_layers=N_LAYERS, n_heads=N_HEADS, *, seed=0, circuit_heads=((0, 1), (2, 0)), node_dicts=False
) -> dict:
    """An EAP-IG JSON graph: every edge scored (heavy-tailed), a small circuit marked in_graph."""
    layout, _, _ = layout_tables(n_layers, n_heads)
    rng = np.random.default_rng(seed)
    scores = (rng.standard_t(2, layout.n_edges) * 0.01).astype(np.float32)
    chain = ["input"] + [f"a{l}.h{h}" for l, h in circuit_heads] + ["logits"]
    wanted = set()
    for a, b in zip(chain, chain[1:]):
        wanted.add(f"{a}->{b}<q>" if b.startswith("a") else f"{a}->{b}")
    edges = {name: {"score": float(s), "in_graph": name in wanted} for name, s in zip(layout.edge_names, scores)}
    nodes = {}
    for name in layout.node_names:
        flag = name in chain
        nodes[name] = {"in_graph": flag, "score": None} if node_dicts else flag
    return {
        "cfg": {"n_layers": n_layers, "n_heads": n_heads, "d_model": 16, "parallel_attn_mlp": False},
        "nodes": nodes,
        "edges": edges,
    }


@pytest.fixture
def db(tmp_path):
    db = headdb.connect(tmp_path / "w.duckdb")
    register_tiny_model(db)
    return db


def _checkpoint(db, name="ck", lineage="l", step=0, parent=None):
    return db.register_checkpoint(
        model_key=MODEL_KEY,
        path=f"/ckpt/{lineage}/{name}",
        weights_digest=name,
        name=name,
        lineage=lineage,
        step=step,
        parent_id=parent,
    )


def _write(tmp_path, graph, name="g.json"):
    path = tmp_path / name
    path.write_text(json.dumps(graph))
    return path


def test_import_stores_scores_circuit_heads_and_importance(db, tmp_path):
    graph = eapig_graph()
    ck = _checkpoint(db)
    task = new_import_task(db, name="ioi")
    run = import_graph_json(db, _write(tmp_path, graph), ck, task)
    layout, _, _ = layout_tables()
    got = db.sql(
        "SELECT e.name, s.score FROM edge_scores s JOIN graph_edges e USING (edge_id) "
        "WHERE s.run_id = ? ORDER BY s.edge_id",
        [run.run_id],
    )
    assert got.height == layout.n_edges == len(graph["edges"])
    expected = np.array([graph["edges"][n]["score"] for n in got["name"]], dtype=np.float32)
    assert np.array_equal(got["score"].to_numpy(), expected)
    circuit = db.sql("SELECT * FROM circuits WHERE run_id = ?", [run.run_id]).row(0, named=True)
    assert circuit["selection"] == "threshold" and circuit["n_edges"] == 3 and circuit["n_nodes"] == 4
    heads = db.sql("SELECT layer, head FROM circuit_heads ORDER BY 1, 2").rows()
    assert heads == [(0, 1), (2, 0)]
    imp = db.sql("SELECT layer, head, importance FROM head_scores WHERE run_id = ? ORDER BY 1, 2", [run.run_id])
    assert imp.height == N_LAYERS * N_HEADS and imp["importance"].sum() == pytest.approx(1.0, abs=1e-5)
    # I(l,h) = sum |score| of the edges leaving a{l}.h{h}, normalised over heads
    out = {f"a{l}.h{h}": 0.0 for l in range(N_LAYERS) for h in range(N_HEADS)}
    for name, e in graph["edges"].items():
        src = name.split("->")[0]
        if src in out:
            out[src] += abs(np.float32(e["score"]))
    total = sum(out.values())
    for l, h, value in imp.rows():
        assert value == pytest.approx(out[f"a{l}.h{h}"] / total, rel=1e-4)
    # the catalogue sees the imported circuit as the checkpoint's circuit
    top = run_query(db, "top_heads", {"run": run.run_id, "n": 1})
    assert top.height >= 1 and top["importance"][0] == pytest.approx(imp["importance"].max())


def test_round_trip_keeps_rows_and_values(db, tmp_path):
    graph = eapig_graph(node_dicts=True)
    ck, task = _checkpoint(db), new_import_task(db, name="ioi")
    run = import_graph_json(db, _write(tmp_path, graph), ck, task)
    out = tmp_path / "back.json"
    counts = export_graph_json(db, run.run_id, out)
    back = json.loads(out.read_text())
    assert counts["edges"] == len(graph["edges"]) == len(back["edges"])
    assert back["edges"].keys() == graph["edges"].keys()
    for name, e in graph["edges"].items():
        assert np.float32(back["edges"][name]["score"]) == np.float32(e["score"])
        assert back["edges"][name]["in_graph"] == e["in_graph"]
    # EAP-IG's current format: {"in_graph": b} per node (bare booleans are rejected by from_json)
    assert back["nodes"] == {name: {"in_graph": v["in_graph"]} for name, v in graph["nodes"].items()}
    assert back["cfg"]["n_layers"] == N_LAYERS and back["cfg"]["n_heads"] == N_HEADS
    # and back in again: same rows, same values
    ck2 = _checkpoint(db, "ck2")
    again = import_graph_json(db, out, ck2, task)
    a = db.sql("SELECT edge_id, score FROM edge_scores WHERE run_id = ? ORDER BY edge_id", [run.run_id])
    b = db.sql("SELECT edge_id, score FROM edge_scores WHERE run_id = ? ORDER BY edge_id", [again.run_id])
    assert a.equals(b)
    same_heads = run_query(db, "heads_gained", {"base": str(ck), "target": str(ck2)})
    assert same_heads.height == 0


def test_repeat_import_is_skipped_and_force_replaces(db, tmp_path):
    path = _write(tmp_path, eapig_graph())
    ck, task = _checkpoint(db), new_import_task(db, name="ioi")
    first = import_graph_json(db, path, ck, task)
    assert import_graph_json(db, path, ck, task).skipped
    forced = import_graph_json(db, path, ck, task, force=True)
    assert not forced.skipped and forced.run_id != first.run_id
    assert db.sql("SELECT count(DISTINCT run_id) AS n FROM edge_scores")["n"][0] == 1


def test_import_onto_an_unregistered_model_builds_the_layout_from_cfg(tmp_path):
    db = headdb.connect(tmp_path / "w.duckdb")
    graph = eapig_graph(3, 2, seed=4, circuit_heads=((1, 1),))
    ck = new_import_checkpoint(db, name="checkpoint-100", lineage="grpo", step=100, regime="grpo", data=graph)
    task = new_import_task(db, name="gsm8k-circuit")
    run = import_graph_json(db, _write(tmp_path, graph), ck, task)
    model = db.sql("SELECT * FROM models").row(0, named=True)
    assert (model["model_key"], model["n_layers"], model["n_heads"], model["n_kv_heads"]) == (
        "eapig-L3-H2-KV2",
        3,
        2,
        2,
    )
    n = db.sql("SELECT count(*) AS n FROM edge_scores WHERE run_id = ?", [run.run_id])["n"][0]
    assert n == len(graph["edges"]) == db.sql("SELECT count(*) AS n FROM graph_edges")["n"][0]
    assert resolve_checkpoint(db, "grpo@100") == ck and resolve_task(db, "gsm8k-circuit") == task
    # a second graph of the same checkpoint lands on the same checkpoint row
    assert new_import_checkpoint(db, name="checkpoint-100", lineage="grpo", step=100, regime="grpo", data=graph) == ck


def test_import_errors_are_one_line(db, tmp_path):
    ck, task = _checkpoint(db), new_import_task(db, name="ioi")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(UserError, match="is not JSON"):
        import_graph_json(db, bad, ck, task)
    with pytest.raises(UserError, match="needs top-level 'cfg' and 'edges'"):
        import_graph_json(db, _write(tmp_path, {"edges": {}}), ck, task)
    with pytest.raises(UserError, match="graph has 5 layers x 3 heads but model tiny-L4-H3 has 4 x 3"):
        import_graph_json(db, _write(tmp_path, eapig_graph(5, 3)), ck, task)
    graph = eapig_graph()
    graph["edges"]["a9.h9->logits"] = {"score": 1.0, "in_graph": False}
    with pytest.raises(UserError, match="edge 'a9.h9->logits' is not in the graph of model tiny-L4-H3"):
        import_graph_json(db, _write(tmp_path, graph), ck, task)
    with pytest.raises(UserError, match="does not exist"):
        import_graph_json(db, tmp_path / "missing.json", ck, task)
    assert db.sql("SELECT count(*) AS n FROM runs")["n"][0] == 0


def test_export_graph_json_errors(db, tmp_path):
    with pytest.raises(UserError, match="no run 42"):
        export_graph_json(db, 42, tmp_path / "x.json")
    run = db.start_run("attribution", config={}, checkpoint_id=_checkpoint(db))
    with run:
        pass
    with pytest.raises(UserError, match="has no edge scores"):
        export_graph_json(db, run.run_id, tmp_path / "x.json")


# -- Parquet ----------------------------------------------------------------------------------------


def test_parquet_export_round_trips_every_table(tmp_path):
    st = shared_study()
    out = tmp_path / "export"
    counts = export_parquet(st.db, out)
    assert counts["edge_scores"] > 0 and counts["runs"] > 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["rows"] == counts and manifest["schema_version"] == code_version()
    for table, n in counts.items():
        glob = str(out / table / "**" / "*.parquet")
        assert pl.scan_parquet(glob, hive_partitioning=True).select(pl.len()).collect().item() == n, table
        assert duckdb.sql(f"SELECT count(*) FROM read_parquet('{glob}', hive_partitioning=true)").fetchone()[0] == n
    # edge_scores: partitioned by model_key and run_id, values kept exactly
    parts = sorted(p.relative_to(out / "edge_scores").parts[:2] for p in (out / "edge_scores").rglob("*.parquet"))
    assert parts == [(f"model_key={'tiny-L4-H3'}", f"run_id={st.run['grpo@400']}")]
    exported = (
        pl.scan_parquet(str(out / "edge_scores" / "**" / "*.parquet"), hive_partitioning=True)
        .select("run_id", "edge_id", "score", "model_key")
        .collect()
        .sort("edge_id")
    )
    stored = st.db.sql("SELECT run_id, edge_id, score FROM edge_scores ORDER BY edge_id")
    assert exported.select("run_id", "edge_id", "score").equals(
        stored.select(pl.col("run_id"), pl.col("edge_id"), pl.col("score"))
    )
    assert set(exported["model_key"]) == {MODEL_KEY}
    # empty tables keep their columns
    empty = pl.read_parquet(out / "faithfulness_curve" / "data_0.parquet")
    assert empty.height == 0 and "percent" in empty.columns


def test_parquet_export_refuses_a_non_empty_folder_and_overwrites_on_request(tmp_path):
    db = headdb.connect(tmp_path / "w.duckdb")
    out = tmp_path / "export"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    with pytest.raises(UserError, match="add --overwrite"):
        export_parquet(db, out)
    assert (out / "keep.txt").exists()
    export_parquet(db, out, overwrite=True)
    assert not (out / "keep.txt").exists() and (out / "manifest.json").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".export.tmp")]


def test_parquet_export_of_runs_without_checkpoint_and_several_models(tmp_path):
    import pyarrow as pa

    db = headdb.connect(tmp_path / "w.duckdb")
    register_tiny_model(db)
    register_tiny_model(db, model_key="tiny-L2-H2", n_layers=2, n_heads=2)
    a = _checkpoint(db, "a")
    b = db.register_checkpoint(model_key="tiny-L2-H2", path="/ckpt/b", weights_digest="b", name="b")
    for ck, n in ((a, 30), (b, 20), (None, 10)):
        run = db.start_run("attribution", config={"n": n}, checkpoint_id=ck)
        with run:
            run.add(
                "edge_scores",
                pa.table(
                    {"edge_id": pa.array(range(n), pa.int32()), "score": pa.array(np.linspace(-1, 1, n), pa.float32())}
                ),
            )
    export_parquet(db, tmp_path / "out")
    df = pl.scan_parquet(str(tmp_path / "out" / "edge_scores" / "**" / "*.parquet"), hive_partitioning=True).collect()
    counts = dict(df.group_by("model_key").len().iter_rows())
    assert counts == {MODEL_KEY: 30, "tiny-L2-H2": 20, None: 10}
    edges = pl.scan_parquet(str(tmp_path / "out" / "graph_edges" / "**" / "*.parquet"), hive_partitioning=True)
    assert set(edges.select("model_key").unique().collect()["model_key"]) == {MODEL_KEY, "tiny-L2-H2"}


# -- EAP-IG's current JSON format, grouped-query attention, signs (issue 12) ---------------------

import eapig_format  # noqa: E402

GQA_DIMS = (2, 4, 2)  # layers, query heads, kv heads


def _shape(n_layers, n_heads, n_kv):
    from headdb.checkpoints.loading import ModelShape

    return ModelShape(
        architecture="Qwen2ForCausalLM",
        n_layers=n_layers,
        n_heads=n_heads,
        n_kv_heads=n_kv,
        d_model=16,
        d_head=4,
        d_mlp=64,
        vocab_size=50,
    )


def _real_checkpoint(db, shape, name="ck"):
    """What ingesting a checkpoint does first: its shape from its config, then the checkpoint."""
    from headdb.jobs.registration import register_shape

    register_shape(db, shape)
    return db.register_checkpoint(model_key=shape.model_key, path=f"/ckpt/{name}", weights_digest=name, name=name)


def _reference_file(n_layers, n_heads, seed=0):
    """An EAP-IG graph file written to the format's description (k/v ports per query head)."""
    rng = np.random.default_rng(seed)
    names = eapig_format.edge_names(n_layers, n_heads)
    scores = dict(zip(names, (rng.standard_t(3, len(names)) * 0.01).astype(np.float32).tolist()))
    keep = {"input->a0.h1<q>", "input->a0.h3<k>", "a0.h1->a1.h2<v>", "a1.h2->logits", "a0.h1->logits"}
    keep = {e for e in keep if e in scores}
    return eapig_format.graph(n_layers, n_heads, scores, keep, {"input", "a0.h1", "a1.h2"})


def test_bug1_an_import_cannot_register_a_real_model_key_and_a_wrong_layout_is_refused(tmp_path):
    """Issue 12, bug 1: `--new --model-key K` used to register K's shape from the file (per-query-
    head k/v ports), and ingesting the real GQA checkpoint later stored its scores under that
    layout's names."""
    db = headdb.connect(tmp_path / "w.duckdb")
    shape = _shape(*GQA_DIMS)
    data = _reference_file(2, 4)
    with pytest.raises(UserError, match=f"model {shape.model_key} is not registered"):
        new_import_checkpoint(db, name="ck", lineage="l", step=0, model_key=shape.model_key, data=data)
    assert db.sql("SELECT count(*) AS n FROM models")["n"][0] == 0
    # A warehouse where an older headdb did exactly that: the real checkpoint is refused.
    wrong, _, _ = layout_tables(2, 4, 4)
    db.register_model(
        {
            "model_key": shape.model_key,
            "architecture": "unknown",
            "n_layers": 2,
            "n_heads": 4,
            "n_kv_heads": 4,
            "d_model": 16,
            "d_head": 4,
            "vocab_size": 0,
        },
        wrong.nodes_table(),
        wrong.edges_table(),
    )
    with pytest.raises(UserError, match=f"model {shape.model_key} is registered with another graph layout"):
        _real_checkpoint(db, shape)
    assert db.sql("SELECT count(*) AS n FROM checkpoints")["n"][0] == 0


def test_a_stored_layout_that_differs_from_the_code_is_refused(tmp_path):
    db = headdb.connect(tmp_path / "w.duckdb")
    shape = _shape(*GQA_DIMS)
    ck = _real_checkpoint(db, shape)
    db.sql("UPDATE graph_edges SET name = 'x' WHERE edge_id = 3", write=True)
    fresh = headdb.connect(db.location)  # a new session verifies again
    with pytest.raises(UserError, match="registered with another graph layout .*: use another warehouse"):
        _real_checkpoint(fresh, shape)
    with pytest.raises(UserError, match="registered with another graph layout"):
        import_graph_json(fresh, _write(tmp_path, _reference_file(2, 4)), ck, new_import_task(fresh, name="t"))


def test_bug2_a_reference_gqa_file_imports_onto_the_real_checkpoint(tmp_path):
    """Issue 12, bug 2: EAP-IG indexes k/v ports by query head; headdb's layout of a GQA model
    has one per kv head. Import sums each kv group (exact by linearity), ORs in_graph."""
    db = headdb.connect(tmp_path / "w.duckdb")
    shape = _shape(*GQA_DIMS)
    ck = _real_checkpoint(db, shape)
    data = _reference_file(2, 4)
    run = import_graph_json(db, _write(tmp_path, data), ck, new_import_task(db, name="ioi"))
    got = db.sql(
        "SELECT e.name, s.score FROM edge_scores s JOIN graph_edges e ON e.edge_id = s.edge_id "
        "AND e.model_key = ? WHERE s.run_id = ?",
        [shape.model_key, run.run_id],
    )
    stored = dict(zip(got["name"], got["score"]))
    layout, _, _ = layout_tables(*GQA_DIMS)
    assert set(stored) == set(layout.edge_names)
    edges = data["edges"]
    for src in ("input", "a0.h1", "m0"):
        for port in "kv":
            # kv head 1 of layer 1 serves query heads 2 and 3
            want = np.float64(edges[f"{src}->a1.h2<{port}>"]["score"]) + edges[f"{src}->a1.h3<{port}>"]["score"]
            assert stored[f"{src}->a1.h1<{port}>"] == pytest.approx(want, rel=1e-6)
        assert stored[f"{src}->a1.h3<q>"] == np.float32(edges[f"{src}->a1.h3<q>"]["score"])
    assert stored["m0->logits"] == np.float32(edges["m0->logits"]["score"])
    circuit = db.sql(
        "SELECT e.name FROM circuit_edges c JOIN circuits USING (circuit_id) JOIN graph_edges e "
        "ON e.edge_id = c.edge_id AND e.model_key = ? WHERE run_id = ? ORDER BY 1",
        [shape.model_key, run.run_id],
    )["name"].to_list()
    # input->a0.h3<k> is kv head 1's port; a0.h1->a1.h2<v> is kv head 1's too.
    assert circuit == sorted(
        ["input->a0.h1<q>", "input->a0.h1<k>", "a0.h1->a1.h1<v>", "a1.h2->logits", "a0.h1->logits"]
    )
    assert db.sql("SELECT layer, head FROM circuit_heads ORDER BY 1, 2").rows() == [(0, 1), (1, 2)]
    # without node flags: heads that in_graph edges enter (q port, or their kv group's k/v port) and leave
    del data["nodes"]
    bare = import_graph_json(db, _write(tmp_path, data, "bare.json"), ck, new_import_task(db, name="ioi2"))
    assert db.sql(
        "SELECT layer, head FROM circuit_heads JOIN circuits USING (circuit_id) WHERE run_id = ? ORDER BY 1, 2",
        [bare.run_id],
    ).rows() == [(0, 1), (1, 2)]
    config = json.loads(db.sql("SELECT config FROM runs WHERE run_id = ?", [run.run_id])["config"][0])
    assert config["kv_ports"] == "per query head, summed per kv group of 2"
    metrics = dict(db.sql("SELECT key, value FROM run_metrics WHERE run_id = ?", [run.run_id]).rows())
    assert metrics["kv_edges_summed"] == 2 * 4 * (1 + 6)  # k and v x 4 query heads x (1 + 6) sources


def test_bug3_imports_keep_the_reference_sign_and_old_headdb_exports_are_negated(db, tmp_path):
    """Issue 12, bug 3: headdb's scores used to be EAP-IG's negated; now both have EAP-IG's sign, so
    an EAP-IG file is stored as is, and a file exported by headdb before schema v2 is negated."""
    ck, task = _checkpoint(db), new_import_task(db, name="ioi")
    data = eapig_format.graph(
        N_LAYERS, N_HEADS, {e: 0.5 + i for i, e in enumerate(eapig_format.edge_names(N_LAYERS, N_HEADS))}, set(), set()
    )
    run = import_graph_json(db, _write(tmp_path, data), ck, task)
    assert db.sql("SELECT min(score) AS s FROM edge_scores WHERE run_id = ?", [run.run_id])["s"][0] == 0.5
    old = eapig_graph()  # bare-boolean nodes, as headdb's export wrote before v2
    old["cfg"].update({"n_key_value_heads": N_HEADS, "model_key": MODEL_KEY, "headdb_run": 7})
    run = import_graph_json(db, _write(tmp_path, old, "old.json"), ck, task)
    got = db.sql(
        "SELECT e.name, s.score FROM edge_scores s JOIN graph_edges e USING (edge_id) WHERE run_id = ?", [run.run_id]
    )
    assert all(s == -np.float32(old["edges"][n]["score"]) for n, s in got.iter_rows())
    config = json.loads(db.sql("SELECT config FROM runs WHERE run_id = ?", [run.run_id])["config"][0])
    assert config["score_sign"] == "negated: exported by headdb before schema v2 (clean-corrupted)"


def test_bug4_exports_are_in_the_current_format_and_round_trip(tmp_path):
    """Issue 12, bug 4: nodes used to be bare booleans (the current `from_json` rejects them)."""
    db = headdb.connect(tmp_path / "w.duckdb")
    shape = _shape(2, 4, 4)
    ck = _real_checkpoint(db, shape)
    data = _reference_file(2, 4, seed=3)
    run = import_graph_json(db, _write(tmp_path, data), ck, new_import_task(db, name="ioi"))
    out = tmp_path / "back.json"
    export_graph_json(db, run.run_id, out)
    back = json.loads(out.read_text())
    eapig_format.check_loadable(back)
    assert list(back["cfg"])[:4] == ["n_layers", "n_heads", "parallel_attn_mlp", "d_model"]
    assert back["edges"].keys() == data["edges"].keys()
    for name, edge in data["edges"].items():
        assert back["edges"][name] == {"score": float(np.float32(edge["score"])), "in_graph": edge["in_graph"]}
    assert back["nodes"] == data["nodes"]


def test_gqa_export_is_refused_or_split_evenly_on_request(tmp_path):
    """EAP-IG reads k/v ports per query head; a kv head's score does not say how it divides among
    its query heads, so a plain export would be misread (bug 4). gqa_split=True writes each kv
    head's score split evenly over its query heads, in_graph on each; that re-imports exactly."""
    db = headdb.connect(tmp_path / "w.duckdb")
    shape = _shape(*GQA_DIMS)
    ck = _real_checkpoint(db, shape)
    task = new_import_task(db, name="ioi")
    data = _reference_file(*GQA_DIMS[:2], seed=5)
    run = import_graph_json(db, _write(tmp_path, data), ck, task)
    out = tmp_path / "back.json"
    with pytest.raises(UserError, match="grouped-query attention .* gqa_split"):
        export_graph_json(db, run.run_id, out)
    assert not out.exists()
    export_graph_json(db, run.run_id, out, gqa_split=True)
    back = json.loads(out.read_text())
    eapig_format.check_loadable(back)
    assert back["edges"].keys() == data["edges"].keys()
    first = db.sql("SELECT edge_id, score FROM edge_scores WHERE run_id = ? ORDER BY edge_id", [run.run_id])
    layout, _, _ = layout_tables(*GQA_DIMS)
    for name, value in zip(layout.edge_names, first["score"]):
        if name.endswith(("<k>", "<v>")):
            src, rest = name.split("->")
            layer, kv = rest[1:].split("<")[0].split(".h")
            for h in (2 * int(kv), 2 * int(kv) + 1):
                assert back["edges"][f"{src}->a{layer}.h{h}{name[-3:]}"]["score"] == float(np.float32(value)) / 2
    for name in ("input->a0.h2<k>", "input->a0.h3<k>", "a0.h1->a1.h2<v>", "a0.h1->a1.h3<v>"):
        assert back["edges"][name]["in_graph"]
    assert not back["edges"]["input->a0.h0<k>"]["in_graph"]
    again = import_graph_json(db, out, _real_checkpoint(db, shape, "ck2"), task)
    second = db.sql("SELECT edge_id, score FROM edge_scores WHERE run_id = ? ORDER BY edge_id", [again.run_id])
    assert first.equals(second)


@pytest.mark.parametrize("metric, negated", [("logit-diff", True), ("logprob", True), ("kl", False)])
def test_mib_sign_export_negates_a_metric_whose_loss_is_its_negative(db, tmp_path, metric, negated):
    """MIB attributes with a loss (-logit_diff, -logprob, KL): its files hold EAP-IG's scores negated
    for logit-diff and logprob. --mib-sign writes that sign, so the file's descending order is MIB's
    signed ranking, which headdb's own CPR uses (-score for logit-diff, docs/attribution.md); a
    re-import reads the file back into headdb's sign."""
    import pyarrow as pa

    layout, _, _ = layout_tables(N_LAYERS, N_HEADS)
    scores = np.random.default_rng(1).standard_normal(layout.n_edges).astype(np.float32)
    ck, task = _checkpoint(db), new_import_task(db, name="ioi")
    run = db.start_run("attribution", config={"method": "eap-ig", "metric": metric}, checkpoint_id=ck, task_id=task)
    with run:
        ids = pa.array(np.arange(layout.n_edges, dtype=np.int32))
        run.facts.add("edge_scores", pa.table({"edge_id": ids, "score": pa.array(scores)}))
    out = tmp_path / "mib.json"
    export_graph_json(db, run.run_id, out, mib_sign=True)
    back = json.loads(out.read_text())
    sign = -1.0 if negated else 1.0
    assert [back["edges"][n]["score"] for n in layout.edge_names] == [sign * float(s) for s in scores]
    mib_first = max(back["edges"], key=lambda n: back["edges"][n]["score"])
    signed_first = layout.edge_names[int(np.argmax(-scores if metric != "kl" else scores))]
    assert mib_first == signed_first  # the ranking MIB's scorer makes is headdb's signed (CPR) ranking
    assert back["cfg"]["headdb_score_sign"].startswith("clean-corrupted" if negated else "corrupted-clean")
    again = import_graph_json(db, out, _checkpoint(db, "ck2"), task)
    stored = db.sql("SELECT score FROM edge_scores WHERE run_id = ? ORDER BY edge_id", [again.run_id])
    assert stored["score"].to_list() == scores.tolist()


def test_mib_sign_needs_the_runs_metric(db, tmp_path):
    ck, task = _checkpoint(db), new_import_task(db, name="ioi")
    run = import_graph_json(db, _write(tmp_path, eapig_graph()), ck, task)
    with pytest.raises(UserError, match="records no metric"):
        export_graph_json(db, run.run_id, tmp_path / "x.json", mib_sign=True)
    assert not (tmp_path / "x.json").exists()
