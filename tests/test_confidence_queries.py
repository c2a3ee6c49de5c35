"""Bootstrap confidence in the named queries: known answers on a hand-made warehouse.

Every circuit below is a `threshold` circuit on task `math` (items m1..m4) with 4 replicates
drawn with seed 7, unless said otherwise. A mask is a replicate bitmask: character b is '1'
when replicate b's circuit has the head.

  checkpoint     lineage  step  full-data heads      masks
  base           base        0  L0H0 L1H1            L0H0 1111, L1H1 1100, L2H2 0010
  grpo@100       grpo      100  L0H0 L3H0            L0H0 1111, L3H0 0110, L3H1 1000
  grpo@200       grpo      200  L0H0 L3H1            L0H0 1111, L3H1 1010, L1H1 0100, L2H2 0011
  seed8          other       0  L0H0 L3H1            seed 8: L0H0 1111, L3H1 1111
  six            six         0  L0H0 L3H1            6 replicates: L0H0 111111, L3H1 111100
  plain          plain       0  L0H0 L3H1            no replicates

Think on/off (checkpoint qwen3, tasks gsm-think on/off with items g1 g2; seed 7):
  on  L1H0 1111, L2H1 1101, L0H2 0001 (full: L1H0 L2H1)
  off L1H0 1111, L2H1 1111, L0H2 1110 (full: L1H0 L2H1 L0H2)
and gsm-other, whose think_off variant has other item ids (h1 h2): no pairing.
"""

from __future__ import annotations

import numpy as np
import polars as pl
import pyarrow as pa
import pytest

import headdb
from headdb.warehouse.queries import run_query
from warehouse_builders import MODEL_KEY, heads_table, register_tiny_model

R = 4


def _items(ids):
    return pa.table({"item_id": ids, "problem": ids, "answer": ["1"] * len(ids), "level": ["easy"] * len(ids)})


def _run(db, ck, task, heads, masks, *, seed=7, importance=None, tag="main"):
    """An attribution run with one threshold circuit; masks None = no replicates."""
    n_rep = len(next(iter(masks.values()))) if masks else None
    run = db.start_run("attribution", config={"tag": tag}, checkpoint_id=ck, task_id=task)
    with run:
        run.add(
            "circuits",
            pa.table(
                {
                    "circuit_id": pa.array([0], pa.int64()),
                    "selection": ["threshold"],
                    "param": pa.array([0.1]),
                    "n_edges": pa.array([5], pa.int32()),
                    "n_nodes": pa.array([len(heads) + 2], pa.int32()),
                    "faithfulness": pa.array([0.9]),
                    "n_replicates": pa.array([n_rep], pa.int32()),
                    "stability": pa.array([0.5 if masks else None], pa.float64()),
                    "bootstrap_seed": pa.array([seed if masks else None], pa.int64()),
                }
            ),
        )
        run.add("circuit_heads", heads_table(heads, 0))
        if masks:
            keys = sorted(masks)
            run.add(
                "circuit_head_replicates",
                pa.table(
                    {
                        "circuit_id": pa.array([0] * len(keys), pa.int64()),
                        "layer": pa.array([k[0] for k in keys], pa.int32()),
                        "head": pa.array([k[1] for k in keys], pa.int32()),
                        "n_in": pa.array([masks[k].count("1") for k in keys], pa.int32()),
                        "replicates": [masks[k] for k in keys],
                    }
                ),
            )
        if importance is not None:
            keys = sorted(importance)
            cols = {
                "layer": pa.array([k[0] for k in keys], pa.int32()),
                "head": pa.array([k[1] for k in keys], pa.int32()),
                "score": pa.array([0.0] * len(keys), pa.float32()),
                "importance": pa.array([importance[k][0] for k in keys], pa.float32()),
            }
            run.add("head_scores", pa.table(cols))
            run.add(
                "head_importance_interval",
                pa.table(
                    {
                        "layer": cols["layer"],
                        "head": cols["head"],
                        "importance_lo": pa.array([importance[k][1] for k in keys], pa.float32()),
                        "importance_hi": pa.array([importance[k][2] for k in keys], pa.float32()),
                    }
                ),
            )
    return run.run_id


MASKS = {
    "base": {(0, 0): "1111", (1, 1): "1100", (2, 2): "0010"},
    "grpo@100": {(0, 0): "1111", (3, 0): "0110", (3, 1): "1000"},
    "grpo@200": {(0, 0): "1111", (3, 1): "1010", (1, 1): "0100", (2, 2): "0011"},
}
HEADS = {"base": [(0, 0), (1, 1)], "grpo@100": [(0, 0), (3, 0)], "grpo@200": [(0, 0), (3, 1)]}
# (importance, lo, hi); the grpo@200 run has no intervals in the `nobounds` lineage variant.
IMPORTANCE = {
    "base": {(0, 0): (0.6, 0.5, 0.7), (1, 1): (0.4, 0.3, 0.5)},
    "grpo@100": {(0, 0): (0.5, 0.4, 0.6), (3, 0): (0.5, 0.3, 0.7)},
    "grpo@200": {(0, 0): (0.7, 0.6, 0.8), (3, 1): (0.3, 0.2, 0.4)},
}


@pytest.fixture(scope="module")
def db(tmp_path_factory):
    db = headdb.connect(tmp_path_factory.mktemp("conf") / "w.duckdb")
    register_tiny_model(db)
    ck = {}

    def checkpoint(label, lineage, step, parent=None):
        ck[label] = db.register_checkpoint(
            model_key=MODEL_KEY,
            path=f"/ck/{label}",
            weights_digest=f"d-{label}",
            name=label,
            lineage=lineage,
            regime="grpo",
            step=step,
            parent_id=ck[parent] if parent else None,
        )

    checkpoint("base", "base", 0)
    checkpoint("grpo@100", "grpo", 100, "base")
    checkpoint("grpo@200", "grpo", 200, "grpo@100")
    for label in ("seed8", "six", "plain"):
        checkpoint(label, label, 0, "base")
    checkpoint("qwen3", "qwen3", 0)
    math = db.register_task(name="math", kind="circuit", digest="t-math", items=_items(["m1", "m2", "m3", "m4"]))
    for label in ("base", "grpo@100", "grpo@200"):
        _run(db, ck[label], math, HEADS[label], MASKS[label], importance=IMPORTANCE[label])
    _run(db, ck["seed8"], math, [(0, 0), (3, 1)], {(0, 0): "1111", (3, 1): "1111"}, seed=8)
    _run(db, ck["six"], math, [(0, 0), (3, 1)], {(0, 0): "111111", (3, 1): "111100"})
    _run(db, ck["plain"], math, [(0, 0), (3, 1)], None)
    on = db.register_task(
        name="gsm-think", kind="circuit", digest="t-think", items=_items(["g1", "g2"]), mode="think_on"
    )
    off = db.register_task(
        name="gsm-think", kind="circuit", digest="t-think", items=_items(["g1", "g2"]), mode="think_off"
    )
    _run(db, ck["qwen3"], on, [(1, 0), (2, 1)], {(1, 0): "1111", (2, 1): "1101", (0, 2): "0001"}, tag="on")
    _run(db, ck["qwen3"], off, [(1, 0), (2, 1), (0, 2)], {(1, 0): "1111", (2, 1): "1111", (0, 2): "1110"}, tag="off")
    on2 = db.register_task(name="gsm-other", kind="circuit", digest="t-o", items=_items(["g1", "g2"]), mode="think_on")
    off2 = db.register_task(
        name="gsm-other", kind="circuit", digest="t-o2", items=_items(["h1", "h2"]), mode="think_off"
    )
    _run(db, ck["qwen3"], on2, [(1, 0)], {(1, 0): "1111"}, tag="on2")
    _run(db, ck["qwen3"], off2, [(1, 0), (0, 2)], {(1, 0): "1111", (0, 2): "1100"}, tag="off2")
    return db


def q(db, name, **params) -> pl.DataFrame:
    return run_query(db, name, params)


def by_head(df: pl.DataFrame) -> dict:
    return {(r["layer"], r["head"]): r for r in df.iter_rows(named=True)}


def bits(mask: str, n: int = R) -> np.ndarray:
    return np.array([c == "1" for c in (mask or "0" * n)[:n]])


def paired(a: str | None, b: str | None, n: int = R, both: bool = False) -> float:
    """Fraction of replicates < n with a and not b (or a and b): the independent reference."""
    x, y = bits(a, n), bits(b, n)
    return float(np.mean(x & y if both else x & ~y))


def test_heads_gained_confidence(db):
    rows = by_head(q(db, "heads_gained", base="base", target="grpo@200"))
    assert set(rows) == {(3, 1), (1, 1)}
    gained, lost = rows[(3, 1)], rows[(1, 1)]
    base, target = MASKS["base"], MASKS["grpo@200"]
    assert gained["change"] == "gained" and lost["change"] == "lost"
    assert gained["p_target"] == 0.5 and gained["p_base"] == 0.0
    assert gained["p_gained"] == paired(target[(3, 1)], None) == 0.5
    assert lost["p_base"] == 0.5 and lost["p_target"] == 0.25
    assert lost["p_lost"] == paired(base[(1, 1)], target[(1, 1)]) == 0.25
    assert lost["p_gained"] == 0.0


def test_heads_gained_min_confidence_filters_by_the_changes_own_p(db):
    kept = q(db, "heads_gained", base="base", target="grpo@200", min_confidence=0.5)
    assert kept["head_label"].to_list() == ["L3H1"]
    assert q(db, "heads_gained", base="base", target="grpo@200", min_confidence="0.2").height == 2
    assert q(db, "heads_gained", base="base", target="grpo@200", min_confidence=0.6).height == 0


def test_heads_gained_without_pairing_gives_nulls(db):
    # Another seed: marginal p are known, paired p are not.
    row = by_head(q(db, "heads_gained", base="base", target="seed8"))[(3, 1)]
    assert row["p_target"] == 1.0 and row["p_base"] == 0.0 and row["p_gained"] is None
    # No replicates at all: every confidence NULL, and min_confidence drops the rows.
    rows = q(db, "heads_gained", base="base", target="plain")
    assert rows.height == 2 and rows["p_target"].null_count() == 2 and rows["p_gained"].null_count() == 2
    assert q(db, "heads_gained", base="base", target="plain", min_confidence=0.0).height == 0


def test_heads_gained_pairs_the_common_replicates(db):
    # 6 replicates against 4: the first 4 pair; p_target uses all 6 of its own.
    row = by_head(q(db, "heads_gained", base="base", target="six"))[(3, 1)]
    assert row["p_target"] == pytest.approx(4 / 6)
    assert row["p_gained"] == paired("111100", None, n=4) == 1.0


def test_regime_compare_interval_of_emergent_counts(db):
    rows = {r["lineage"]: r for r in q(db, "regime_compare", base="base", min_confidence=0.5).iter_rows(named=True)}
    grpo = rows["grpo"]
    assert grpo["emergent_heads"] == "L3H1"
    # Per replicate b: heads in grpo@200's replicate-b circuit and not in the base's.
    base, target = MASKS["base"], MASKS["grpo@200"]
    heads = set(base) | set(target)
    counts = [sum(bits(target.get(h))[b] and not bits(base.get(h))[b] for h in heads) for b in range(R)]
    assert counts == [1, 0, 1, 1]
    assert grpo["emergent_lo"] == pytest.approx(np.percentile(counts, 2.5))
    assert grpo["emergent_hi"] == pytest.approx(np.percentile(counts, 97.5))
    assert grpo["emergent_confident"] == 1  # L3H1, p_gained 0.5 >= 0.5
    assert q(db, "regime_compare", base="base", lineages="grpo")["emergent_confident"].to_list() == [0]
    assert rows["plain"]["emergent_lo"] is None and rows["plain"]["emergent_confident"] is None
    assert rows["seed8"]["emergent_hi"] is None


def test_regime_compare_union_takes_the_union_per_replicate(db):
    grpo = q(db, "regime_compare", base="base", scope="union", lineages="grpo").row(0, named=True)
    base = MASKS["base"]
    heads = set(MASKS["grpo@100"]) | set(MASKS["grpo@200"])
    union = {h: bits(MASKS["grpo@100"].get(h)) | bits(MASKS["grpo@200"].get(h)) for h in heads}
    counts = [sum(bool(union[h][b]) and not bits(base.get(h))[b] for h in heads) for b in range(R)]
    assert counts == [1, 1, 2, 1]
    assert grpo["emergent_lo"] == pytest.approx(np.percentile(counts, 2.5))
    assert grpo["emergent_hi"] == pytest.approx(np.percentile(counts, 97.5))


def test_head_frequency_expected_frequency_and_interval(db):
    rows = by_head(q(db, "head_frequency", lineage="grpo"))
    assert set(rows) == {(0, 0), (3, 0), (3, 1)}
    assert rows[(0, 0)]["p_mean"] == 1.0
    assert rows[(3, 0)]["p_mean"] == pytest.approx((0.5 + 0.0) / 2)
    assert rows[(3, 1)]["p_mean"] == pytest.approx((0.25 + 0.5) / 2)
    counts = [int(bits("1000")[b]) + int(bits("1010")[b]) for b in range(R)]
    assert counts == [2, 0, 1, 0]
    assert rows[(3, 1)]["n_in_circuit_lo"] == pytest.approx(np.percentile(counts, 2.5))
    assert rows[(3, 1)]["n_in_circuit_hi"] == pytest.approx(np.percentile(counts, 97.5))
    assert rows[(0, 0)]["n_in_circuit_lo"] == 2.0
    plain = q(db, "head_frequency", lineage="plain")
    assert plain.height == 2 and plain["p_mean"].null_count() == 2 and plain["n_in_circuit_lo"].null_count() == 2


def test_head_cohorts_confidences(db):
    rows = by_head(q(db, "head_cohorts", lineage="grpo"))
    assert (rows[(3, 0)]["p_first"], rows[(3, 0)]["p_still_active"], rows[(3, 0)]["p_base"]) == (0.5, 0.0, 0.0)
    assert (rows[(3, 1)]["p_first"], rows[(3, 1)]["p_still_active"], rows[(3, 1)]["p_base"]) == (0.5, 0.5, 0.0)
    assert (rows[(0, 0)]["p_first"], rows[(0, 0)]["p_base"]) == (1.0, 1.0)


def _effect(post, pre):
    return (post - pre) / (post + pre + 1e-6)


def test_effect_map_interval(db):
    rows = by_head(q(db, "effect_map", lineage="grpo"))
    for key, row in rows.items():
        lo, hi = [], []
        for post in ("grpo@100", "grpo@200"):
            p = IMPORTANCE[post].get(key, (0.0, 0.0, 0.0))
            b = IMPORTANCE["base"].get(key, (0.0, 0.0, 0.0))
            lo.append(_effect(p[1], b[2]))
            hi.append(_effect(p[2], b[1]))
        assert row["effect_lo"] == pytest.approx(np.mean(lo), abs=1e-6), key
        assert row["effect_hi"] == pytest.approx(np.mean(hi), abs=1e-6), key
        assert row["effect_lo"] <= row["effect"] <= row["effect_hi"]


def test_think_compensatory_confidences(db):
    rows = by_head(q(db, "think_compensatory", side="all", task="gsm-think"))
    on = {(1, 0): "1111", (2, 1): "1101", (0, 2): "0001"}
    off = {(1, 0): "1111", (2, 1): "1111", (0, 2): "1110"}
    comp = rows[(0, 2)]
    assert comp["side"] == "off_only" and comp["p_side"] == paired(off[(0, 2)], on[(0, 2)]) == 0.75
    assert (comp["p_on"], comp["p_off"]) == (0.25, 0.75)
    both = rows[(2, 1)]
    assert both["side"] == "both" and both["p_side"] == paired(on[(2, 1)], off[(2, 1)], both=True) == 0.75
    # Other item ids in the off variant: replicate b resamples other prompts, so no pairing.
    other = by_head(q(db, "think_compensatory", task="gsm-other"))[(0, 2)]
    assert other["p_off"] == 0.5 and other["p_side"] is None


def test_circuit_faithfulness_and_top_heads_carry_stability_and_intervals(db):
    df = q(db, "circuit_faithfulness", lineage="grpo")
    assert df["n_replicates"].to_list() == [4, 4] and df["stability"].to_list() == [0.5, 0.5]
    top = by_head(q(db, "top_heads", checkpoint="base"))
    assert top[(0, 0)]["importance_lo"] == pytest.approx(0.5) and top[(0, 0)]["importance_hi"] == pytest.approx(0.7)


# -- reports show it -------------------------------------------------------------------------------


def _report(db, name, params) -> str:
    from rich.console import Console

    from headdb.reports import run_report

    console = Console(record=True, color_system=None, width=140)
    run_report(db, name, params, console)
    return console.export_text()


def test_reports_show_confidence_or_say_there_is_none(db):
    text = _report(db, "heads_gained", {"base": "base", "target": "grpo@200"})
    assert "p_gained" in text and "0 of 2 with p_change >= 0.95" in text
    assert "+?" in text and "-?" in text  # both changes are unsure (p 0.5 and 0.25): marked cells
    text = _report(db, "heads_gained", {"base": "base", "target": "plain"})
    assert "no bootstrap replicates" in text
    assert "f" in _report(db, "think_compensatory", {"task": "gsm-think"}).split("compensatory heads")[1]
    for name, params in [("head_frequency", {"lineage": "grpo"}), ("head_cohorts", {"lineage": "grpo"})]:
        text = _report(db, name, params)
        assert "no bootstrap replicates" not in text and " with " in text, name
    assert "heads whose effect interval excludes 0: 3 of 4" in _report(db, "effect_map", {"lineage": "grpo"})
    text = _report(db, "regime_compare", {"base": "base"})
    assert "grpo 0/1" in text and "six 1/1" in text and "plain (no paired bootstrap replicates)" in text
    assert "no bootstrap replicates" in _report(db, "head_frequency", {"lineage": "plain"})


def test_an_older_warehouse_migrates_and_reads_as_without_replicates(tmp_path):
    import shutil

    from headdb.resources import schemas_dir
    from warehouse_builders import attribution_run

    v1 = tmp_path / "v1"
    v1.mkdir()
    shutil.copy(schemas_dir() / "0001_init.sql", v1)
    old = headdb.connect(tmp_path / "w.duckdb", schemas=v1)
    register_tiny_model(old)
    ck = {n: old.register_checkpoint(model_key=MODEL_KEY, path=f"/ck/{n}", weights_digest=n, name=n) for n in "ab"}
    task = old.register_task(name="t", kind="circuit", digest="t", items=_items(["x"]))
    attribution_run(old, ck["a"], task, heads=[(0, 0)], config={"v": 1}, importance={(0, 0): 1.0})
    attribution_run(old, ck["b"], task, heads=[(0, 0), (1, 1)], config={"v": 1}, importance={(1, 1): 1.0})
    db = headdb.Warehouse(old.sink)
    assert db.migrate()[-1] == db.schema_version() > 1
    row = q(db, "heads_gained", base="a", target="b").row(0, named=True)
    assert (row["head_label"], row["p_target"], row["p_gained"]) == ("L1H1", None, None)
    assert q(db, "top_heads", checkpoint="b")["importance_lo"].to_list() == [None] * 12
