"""Schema v2 (schemas/0002_score_sign.sql): a v1 warehouse's native attribution scores are
negated into EAP-IG's sign, imported ones are kept, and every run says which convention it holds."""

from __future__ import annotations

import re
import shutil

import numpy as np
import pyarrow as pa
import pytest

import headdb
from headdb.resources import schemas_dir
from warehouse_builders import MODEL_KEY, attribution_run, register_tiny_model

V1_METRICS = {
    "metric_clean": 0.1,
    "metric_corrupted": 0.7,
    "metric_diff": -0.6,
    "input_edge_sum": -0.58,
    "completeness_residual": 0.02,
    "completeness_relative": 0.0333,
    "cpr": 0.8,
    "cmd": 0.3,
    "n_examples": 16.0,
}


def _scores(values) -> pa.Table:
    return pa.table({"edge_id": pa.array(range(len(values)), pa.int32()), "score": pa.array(values, pa.float32())})


def _head_scores(values) -> pa.Table:
    return pa.table(
        {
            "layer": pa.array([0, 1], pa.int32()),
            "head": pa.array([0, 2], pa.int32()),
            "score": pa.array(values, pa.float32()),
            "importance": pa.array([0.75, 0.25], pa.float32()),
        }
    )


@pytest.fixture
def v1(tmp_path):
    """A v1 warehouse written through the public API: a native attribution run (v1 sign and
    run_metrics names, a v1 faithfulness curve), an import run, a generation run."""
    folder = tmp_path / "v1"
    folder.mkdir()
    shutil.copy(schemas_dir() / "0001_init.sql", folder)
    db = headdb.connect(tmp_path / "w.duckdb", schemas=folder)
    assert db.schema_version() == 1
    register_tiny_model(db)
    ck = db.register_checkpoint(model_key=MODEL_KEY, path="/ckpt/a", weights_digest="a")
    native = attribution_run(
        db,
        ck,
        None,
        heads=[(0, 0)],
        config={"method": "eap-ig"},
        edge_scores=_scores([0.5, -0.25, 0.0]),
        metrics=V1_METRICS,
    )
    run = db.start_run("attribution", config={"curve": 1}, checkpoint_id=ck)
    with run:
        run.add("head_scores", _head_scores([0.4, -0.1]))
        run.add(
            "faithfulness_curve",
            pa.table(
                {
                    "percent": pa.array([0.1, 100.0]),
                    "n_edges": pa.array([1, 3], pa.int32()),
                    "faithfulness": pa.array([0.2, 1.0]),
                }
            ),
        )
    imported = db.start_run("import", config={"source": "eap-ig-json"}, checkpoint_id=ck)
    with imported:
        imported.add("edge_scores", _scores([0.5, -0.25, 0.0]))
        imported.add("head_scores", _head_scores([0.4, -0.1]))
        imported.metric("imported_edges", 3)
    generation = db.start_run("generation", config={"g": 1}, checkpoint_id=ck)
    with generation:
        pass
    return db, {"native": native, "curve": run.run_id, "import": imported.run_id, "generation": generation.run_id}


def test_v1_native_scores_are_negated_and_imports_kept(v1):
    db, runs = v1
    from headdb.warehouse.migrations import code_version

    assert headdb.Warehouse(db.sink).migrate() == list(range(2, code_version() + 1))
    db = headdb.connect(db.location)  # opens without complaint at the code's version

    def edge(run):
        return db.sql("SELECT score FROM edge_scores WHERE run_id = ? ORDER BY edge_id", [run])["score"].to_list()

    def heads(run):
        return db.sql("SELECT score, importance FROM head_scores WHERE run_id = ? ORDER BY layer", [run]).rows()

    assert edge(runs["native"]) == [-0.5, 0.25, 0.0]
    assert edge(runs["import"]) == [0.5, -0.25, 0.0]
    assert heads(runs["curve"]) == [(-0.4000000059604645, 0.75), (0.10000000149011612, 0.25)]
    assert heads(runs["import"]) == [(0.4000000059604645, 0.75), (-0.10000000149011612, 0.25)]
    metrics = dict(db.sql("SELECT key, value FROM run_metrics WHERE run_id = ?", [runs["native"]]).rows())
    assert metrics == {
        "metric_clean": 0.1,
        "metric_corrupted": 0.7,
        "metric_delta": 0.6,
        "input_edge_sum": 0.58,
        "completeness_residual": -0.02,
        "completeness_relative": 0.0333,
        "cpr_abs": 0.8,
        "cmd": 0.3,
        "n_examples": 16.0,
    }
    # the v2 identities hold on migrated numbers: residual = input_edge_sum - metric_delta
    assert metrics["completeness_residual"] == pytest.approx(metrics["input_edge_sum"] - metrics["metric_delta"])
    assert metrics["metric_delta"] == pytest.approx(metrics["metric_corrupted"] - metrics["metric_clean"])
    assert dict(db.sql("SELECT key, value FROM run_metrics WHERE run_id = ?", [runs["import"]]).rows()) == {
        "imported_edges": 3.0
    }
    signs = {
        r: db.sql("SELECT score_sign, score_sign_converted FROM runs WHERE run_id = ?", [i]).row(0)
        for r, i in runs.items()
    }
    assert signs == {
        "native": ("corrupted-clean", True),
        "curve": ("corrupted-clean", True),
        "import": ("corrupted-clean", False),
        "generation": ("corrupted-clean", False),
    }
    assert db.sql("SELECT ranking FROM faithfulness_curve")["ranking"].to_list() == ["abs", "abs"]
    # New runs say they were computed in the new convention.
    run = db.start_run("attribution", config={"new": 1})
    with run:
        run.add("edge_scores", _scores([1.0]))
    assert db.sql("SELECT score_sign, score_sign_converted FROM runs WHERE run_id = ?", [run.run_id]).row(0) == (
        "corrupted-clean",
        False,
    )
    assert np.array_equal(edge(run.run_id), [1.0])


def test_the_migration_uses_only_what_a_ducklake_catalog_accepts():
    text = (schemas_dir() / "0002_score_sign.sql").read_text()
    code = "\n".join(line.split("--")[0] for line in text.splitlines()).upper()
    for banned in ("PRIMARY KEY", "UNIQUE", "SEQUENCE", "INDEX", "ENUM", "CHECK", "REFERENCES"):
        assert not re.search(rf"\b{banned}\b", code), banned
