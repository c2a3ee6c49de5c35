"""The named-query catalogue: known answers on a hand-made warehouse (tests/warehouse_builders.py)."""

from __future__ import annotations

import re


import numpy as np
import polars as pl
import pytest

from headdb.errors import UserError
from headdb.warehouse.queries import catalogue, list_queries, parse_query, run_query
from warehouse_builders import CIRCUITS, IMPORTANCE, REWARD, THINK_OFF, THINK_ON, shared_study


@pytest.fixture(scope="module")
def st():
    return shared_study()


def q(st, name, **params) -> pl.DataFrame:
    return run_query(st.db, name, params)


def heads(df: pl.DataFrame, **where) -> set[tuple[int, int]]:
    for col, value in where.items():
        df = df.filter(pl.col(col) == value)
    return set(zip(df["layer"].to_list(), df["head"].to_list()))


# -- the catalogue itself ------------------------------------------------------------------------

STUDY_QUERIES = {
    "heads_gained",
    "regime_compare",
    "regime_overlap",
    "regime_layers",
    "head_frequency",
    "head_cohorts",
    "head_dynamics",
    "dynamics_correlation",
    "effect_map",
    "think_compensatory",
    "think_sizes",
    "ablation_table",
    "benchmark_trajectory",
    "passk_curve",
    "newly_solved_missed",
    "circuit_faithfulness",
    "faithfulness_curve",
    "top_heads",
    "circuit_graph",
    "model_shape",
}


def test_catalogue_lists_every_study_query_with_params():
    listing = list_queries()
    assert STUDY_QUERIES <= set(listing["name"])
    row = listing.filter(pl.col("name") == "heads_gained").row(0, named=True)
    assert row["params"] == (
        "base: str, target: str, task: str = NULL, selection: str = 'threshold', min_confidence: float = NULL"
    )
    assert row["description"].startswith("Heads in the target")
    query = catalogue().get("regime_compare")
    assert query.param("scope").choices == ("final", "union")


# -- analysis 1: emergent heads ------------------------------------------------------------------


def test_heads_gained_and_lost(st):
    df = q(st, "heads_gained", base="qwen-math", target="grpo-gsm8k@400")
    assert heads(df, change="gained") == {(3, 1)}
    assert heads(df, change="lost") == {(1, 1), (2, 2)}
    assert df["change"].to_list() == ["gained", "lost", "lost"]
    assert set(df["task"]) == {"math"}  # trivia: only the base has a circuit there
    gained = df.filter(pl.col("change") == "gained").row(0, named=True)
    assert gained["target_importance"] == pytest.approx(0.5) and gained["base_importance"] == 0.0


def test_the_circuit_is_the_latest_ok_plain_run(st):
    # grpo@400 has an older run (L1H2), a newer ablated run (L2H2) and a failed run (L0H2).
    df = q(st, "heads_gained", base="qwen-math", target=st.ck["grpo@400"], task="math")
    assert heads(df, change="gained") == {(3, 1)}
    # ids work as well as names and lineage@step, as int or str
    assert q(st, "heads_gained", base=str(st.ck["base"]), target=st.ck["grpo@400"]).height == 3


def test_lineage_at_last_names_the_highest_step(st):
    last = q(st, "heads_gained", base="qwen-math", target="grpo-gsm8k@last", task="math")
    assert last.equals(q(st, "heads_gained", base="qwen-math", target="grpo-gsm8k@400", task="math"))
    with pytest.raises(UserError, match="no checkpoint 'nosuch@last' in the warehouse"):
        q(st, "heads_gained", base="qwen-math", target="nosuch@last")


def test_heads_gained_selection(st):
    df = q(st, "heads_gained", base="qwen-math", target="grpo-gsm8k@400", selection="topn")
    assert heads(df, change="gained") == {(1, 2)} and heads(df, change="lost") == set()


def test_heads_gained_empty_results(st):
    assert q(st, "heads_gained", base="qwen-math", target="qwen-math").height == 0
    assert q(st, "heads_gained", base="qwen-math", target="grpo-gsm8k@400", task="trivia").height == 0
    empty = q(st, "heads_gained", base="qwen-math", target="grpo-gsm8k@400", task="trivia")
    assert empty.height == 0 and "change" in empty.columns


def test_a_reference_that_names_nothing_is_refused_with_the_closest_names(st):
    """A typo is an error that names what exists, never an empty answer read as "none"."""
    cases = [
        (
            dict(base="qwen-math", target="grpo-gsm8k@300"),  # the missing step
            "no checkpoint 'grpo-gsm8k@300'; grpo-gsm8k has steps 100..400 (100, 200, 400); "
            "did you mean grpo-gsm8k@200 or grpo-gsm8k@last?",
        ),
        (dict(base="qwen-math", target="no-such-checkpoint"), "no checkpoint 'no-such-checkpoint' in the warehouse"),
        (dict(base="qwen-mth", target="sft@100"), "did you mean qwen-math"),
        (
            dict(base="qwen-math", target="sft"),
            "'sft' is a lineage, not a checkpoint; name one of its checkpoints: "
            "sft@last, or sft@STEP with a step of 100, 200",
        ),
        (
            dict(base="qwen-math", target="sft@100", task="mat"),
            "no task 'mat' in the warehouse (param task); did you mean math",
        ),
        (
            dict(base="qwen-math", target="sft@100", selection="tpn"),
            "no circuit in the warehouse was selected by 'tpn' (param selection); did you mean topn?",
        ),
    ]
    for params, message in cases:
        with pytest.raises(UserError, match=re.escape(message)):
            q(st, "heads_gained", **params)
    with pytest.raises(
        UserError, match=re.escape("no lineage 'grpo-gsm8' in the warehouse (param lineage); did you mean grpo-gsm8k")
    ):
        q(st, "head_dynamics", lineage="grpo-gsm8")
    with pytest.raises(UserError, match=re.escape("no run '999' in the warehouse (param run)")):
        q(st, "top_heads", run=999)
    with pytest.raises(UserError, match=re.escape("no lineage 'nope' in the warehouse (param lineages)")):
        q(st, "regime_compare", base="qwen-math", lineages="sft,nope")


def test_a_checkpoint_folder_names_its_checkpoint(tmp_path):
    import headdb
    from warehouse_builders import MODEL_KEY, register_tiny_model

    db = headdb.connect(tmp_path / "w.duckdb")
    register_tiny_model(db)
    folders = {}
    for step in (10, 20):
        folders[step] = tmp_path / "run" / f"checkpoint-{step}"
        folders[step].mkdir(parents=True)
        db.register_checkpoint(
            model_key=MODEL_KEY,
            path=str(folders[step].resolve()),
            weights_digest=f"d{step}",
            name=f"checkpoint-{step}",
            lineage="run",
            regime="sft",
            step=step,
        )
    by_folder = run_query(db, "model_shape", {"checkpoint": str(folders[20])})
    assert by_folder.equals(run_query(db, "model_shape", {"checkpoint": "run@20"})) and by_folder.height == 1
    other = tmp_path / "elsewhere"
    other.mkdir()
    with pytest.raises(UserError, match="is not a registered checkpoint"):
        run_query(db, "model_shape", {"checkpoint": str(other)})


def test_ambiguous_checkpoint_name_is_a_user_error(st):
    with pytest.raises(UserError, match="checkpoint-100 matches 2 checkpoints; name it by id or lineage@step"):
        q(st, "heads_gained", base="qwen-math", target="checkpoint-100")
    assert q(st, "heads_gained", base="qwen-math", target="sft@100").height == 1


def test_sql_injection_through_a_param_is_inert(st):
    evil = "x'; DROP TABLE runs; --"
    with pytest.raises(UserError, match="no checkpoint"):
        q(st, "heads_gained", base=evil, target="grpo-gsm8k@400")
    with pytest.raises(UserError, match="no lineage"):
        q(st, "head_frequency", lineage=evil)
    with pytest.raises(UserError, match="no task"):
        q(st, "head_frequency", lineage="grpo-gsm8k", task="math' OR '1'='1")
    assert st.db.sql("SELECT count(*) AS n FROM runs")["n"][0] > 0


# -- regimes -------------------------------------------------------------------------------------


def test_regime_compare_final_and_union(st):
    df = q(st, "regime_compare", base="qwen-math")
    rows = {r["lineage"]: r for r in df.iter_rows(named=True)}
    assert set(rows) == {"grpo-gsm8k", "sft", "distill"}
    assert (rows["grpo-gsm8k"]["emergent"], rows["grpo-gsm8k"]["kept"], rows["grpo-gsm8k"]["lost"]) == (1, 1, 2)
    assert rows["grpo-gsm8k"]["last_step"] == 400 and rows["grpo-gsm8k"]["emergent_heads"] == "L3H1"
    assert rows["sft"]["emergent_heads"] == "L1H0,L2H0" and rows["sft"]["heads"] == 5
    assert rows["distill"]["base_heads"] == 3
    union = {r["lineage"]: r for r in q(st, "regime_compare", base="qwen-math", scope="union").iter_rows(named=True)}
    assert union["grpo-gsm8k"]["emergent_heads"] == "L2H1,L3H0,L3H1" and union["grpo-gsm8k"]["checkpoints"] == 3
    only = q(st, "regime_compare", base="qwen-math", lineages="sft, distill")
    assert set(only["lineage"]) == {"sft", "distill"}


def test_regime_overlap_jaccard(st):
    df = q(st, "regime_overlap", base="qwen-math")
    pairs = {(r["lineage_a"], r["lineage_b"]): r for r in df.iter_rows(named=True)}
    assert set(pairs) == {("distill", "grpo-gsm8k"), ("distill", "sft"), ("grpo-gsm8k", "sft")}
    assert pairs[("distill", "sft")]["jaccard"] == pytest.approx(1 / 3)
    assert pairs[("distill", "sft")]["shared_heads"] == "L2H0"
    assert pairs[("grpo-gsm8k", "sft")]["jaccard"] == 0.0


def test_regime_layers_cover_every_layer(st):
    df = q(st, "regime_layers", base="qwen-math", task="math")
    assert df.height == 3 * 4
    sft = df.filter(pl.col("lineage") == "sft")
    assert sft["layer"].to_list() == [0, 1, 2, 3] and sft["emergent"].to_list() == [0, 1, 1, 0]


# -- analysis 2: frequency and cohorts -------------------------------------------------------------


def test_head_frequency_with_ties_in_order(st):
    df = q(st, "head_frequency", lineage="grpo-gsm8k")
    got = [(r["layer"], r["head"], r["n_in_circuit"]) for r in df.iter_rows(named=True)]
    assert got == [(0, 0, 3), (3, 0, 2), (3, 1, 2), (1, 1, 1), (2, 1, 1)]
    assert set(df["n_checkpoints"]) == {3}
    assert df["frequency"][0] == 1.0


def test_head_cohorts(st):
    df = q(st, "head_cohorts", lineage="grpo-gsm8k")
    rows = {(r["layer"], r["head"]): r for r in df.iter_rows(named=True)}
    assert rows[(3, 1)]["first_step"] == 200 and rows[(3, 1)]["first_checkpoint"] == "checkpoint-200"
    assert rows[(3, 1)]["still_active"] and not rows[(3, 0)]["still_active"]
    assert rows[(0, 0)]["in_base"] and not rows[(3, 0)]["in_base"]
    assert [r["first_step"] for r in df.iter_rows(named=True)] == sorted(df["first_step"].to_list())


# -- analysis 3: dynamics beside the reward ------------------------------------------------------


def test_head_dynamics_with_a_missing_step(st):
    df = q(st, "head_dynamics", lineage="grpo-gsm8k", metric="reward")
    assert df["step"].to_list() == [100, 200, 400]
    assert df["previous"].to_list() == ["qwen-math", "checkpoint-100", "checkpoint-200"]
    assert df["prev_step"].to_list() == [None, 100, 200]
    assert df["active"].to_list() == [3, 4, 2]
    assert df["new"].to_list() == [1, 2, 0]
    assert df["pruned"].to_list() == [1, 1, 2]
    assert df["kept"].to_list() == [2, 2, 2]
    assert df["cumulative"].to_list() == [3, 5, 5]
    assert df["metric_step"].to_list() == [100, 150, 390]
    assert df["metric_value"].to_list() == pytest.approx([0.2, 0.3, 0.6])
    assert df["window_mean"].to_list() == pytest.approx([0.15, 0.3, 0.55])


def test_head_dynamics_without_a_previous_circuit(st):
    # sft@100's parent (the base) has a circuit; a lineage whose first parent has none gets NULLs.
    df = q(st, "head_dynamics", lineage="distill", metric="reward")
    assert df["new"].to_list() == [2] and df["metric_value"].to_list() == [None]
    df = q(st, "head_dynamics", lineage="qwen3")
    assert df.height == 2 and df["new"].to_list() == [None, None]


def test_dynamics_correlation_matches_numpy(st):
    df = q(st, "dynamics_correlation", lineage="grpo-gsm8k")
    row = df.row(0, named=True)
    metric = [REWARD[100], REWARD[150], REWARD[390]]
    assert row["n"] == 3
    assert row["corr_new"] == pytest.approx(np.corrcoef([1, 2, 0], metric)[0, 1])
    assert row["corr_pruned"] == pytest.approx(np.corrcoef([1, 1, 2], metric)[0, 1])
    assert row["corr_new_window"] == pytest.approx(np.corrcoef([1, 2, 0], [0.15, 0.3, 0.55])[0, 1])
    assert q(st, "dynamics_correlation", lineage="grpo-gsm8k", metric="no-such-key")["corr_new"].to_list() == [None]


# -- analysis 5: effect maps ---------------------------------------------------------------------


def _effect(post, pre):
    return (post - pre) / (post + pre + 1e-6)


@pytest.mark.parametrize("pairing", ["base", "parent"])
def test_effect_map(st, pairing):
    df = q(st, "effect_map", lineage="grpo-gsm8k", pairing=pairing)
    assert df.height == 12 and set(df["n_pairs"]) == {3}
    pre_of = (
        {"grpo@100": "base", "grpo@200": "base", "grpo@400": "base"}
        if pairing == "base"
        else {"grpo@100": "base", "grpo@200": "grpo@100", "grpo@400": "grpo@200"}
    )
    for row in df.iter_rows(named=True):
        key = (row["layer"], row["head"])
        expected = np.mean(
            [_effect(IMPORTANCE[post].get(key, 0.0), IMPORTANCE[pre].get(key, 0.0)) for post, pre in pre_of.items()]
        )
        assert row["effect"] == pytest.approx(expected, abs=1e-6), key


def test_effect_map_with_explicit_base_and_unknown_base(st):
    same = q(st, "effect_map", lineage="grpo-gsm8k", base="qwen-math")
    assert same.equals(q(st, "effect_map", lineage="grpo-gsm8k"))
    with pytest.raises(UserError, match="no checkpoint 'nope'"):
        q(st, "effect_map", lineage="grpo-gsm8k", base="nope")
    assert q(st, "effect_map", lineage="sft").height == 0  # no head scores in that lineage


# -- analysis 6: thinking on / off ---------------------------------------------------------------


def test_think_compensatory_and_sizes(st):
    off = q(st, "think_compensatory")
    assert heads(off) == set(THINK_OFF) - set(THINK_ON) and set(off["side"]) == {"off_only"}
    everything = q(st, "think_compensatory", side="all", checkpoint="qwen3", task="gsm-think")
    assert heads(everything, side="both") == set(THINK_ON)
    assert q(st, "think_compensatory", side="on_only").height == 0
    sizes = q(st, "think_sizes").row(0, named=True)
    assert (sizes["heads_on"], sizes["heads_off"], sizes["off_only"], sizes["both"]) == (2, 4, 2, 2)
    assert sizes["faithfulness_on"] == 0.9 and sizes["faithfulness_off"] == 0.6
    assert q(st, "think_sizes", checkpoint="qwen-math").height == 0


# -- analysis 7 and 8: interventions ---------------------------------------------------------------


def test_ablation_table_pairs_each_run_with_its_matching_baseline(st):
    df = q(st, "ablation_table", checkpoint="grpo-gsm8k@400")
    rows = {r["run_id"]: r for r in df.iter_rows(named=True)}
    zero, scale, orphan = rows[st.run["abl-zero"]], rows[st.run["abl-scale"]], rows[st.run["abl-orphan"]]
    assert zero["baseline_run"] == st.run["gen-400-A"] and zero["delta"] == pytest.approx(-0.2)
    assert zero["head_set"] == "emergent" and zero["heads"] == "L0H0,L3H1" and zero["n_heads"] == 2
    assert scale["baseline_run"] == st.run["gen-400-B"] and scale["delta"] == pytest.approx(0.05)
    assert scale["kind"] == "scale" and scale["factor"] == 1.3 and scale["head_set"] == "scale L3H1"
    assert orphan["baseline_run"] is None and orphan["baseline"] is None
    passk = q(st, "ablation_table", metric="pass@k", k=2)
    assert passk.height == 1 and passk["delta"][0] == pytest.approx(-0.3)


def test_passk_curve(st):
    df = q(st, "passk_curve", checkpoint="grpo-gsm8k@400")
    curves = {label: g.sort("k")["value"].to_list() for (label,), g in df.group_by(["intervention"])}
    assert curves == {"none": [0.6, 0.8], "emergent": [0.4, 0.5]}
    assert q(st, "passk_curve", lineage="sft").height == 0


# -- analysis 4 and 9: benchmarks and failures -------------------------------------------------------


def test_benchmark_trajectory(st):
    df = q(st, "benchmark_trajectory", lineage="grpo-gsm8k", task="gsm8k")
    assert df["step"].to_list() == [0, 100, 200, 400] and df["is_base"].to_list() == [True, False, False, False]
    # grpo@400 has two plain runs; the latest (sampling A, 0.6) wins over the older (B, 0.7).
    assert df["value"].to_list() == [0.5, 0.55, 0.6, 0.6]
    no_base = q(st, "benchmark_trajectory", lineage="grpo-gsm8k", include_base="false")
    assert set(no_base["task"]) == {"gsm8k", "aime"} and not any(no_base["is_base"])


def test_newly_solved_and_missed_with_failure_tags(st):
    df = q(st, "newly_solved_missed", lineage="grpo-gsm8k")
    got = {(r["item_id"], r["change"], r["failure_tag"]) for r in df.iter_rows(named=True)}
    # q1: tie between repetition and truncated -> alphabetical; q2: the base's tag (tie again).
    assert got == {
        ("q1", "newly_missed", "repetition"),
        ("q2", "newly_solved", "truncated"),
        ("q3", "newly_missed", "no_answer"),
    }
    strict = q(st, "newly_solved_missed", lineage="grpo-gsm8k", solved_at=1.0)
    assert {(r["item_id"], r["change"]) for r in strict.iter_rows(named=True)} == {
        ("q1", "newly_missed"),
        ("q2", "newly_solved"),
    }
    assert q(st, "newly_solved_missed", lineage="sft").height == 0


# -- faithfulness, top heads, circuit graph ----------------------------------------------------------


def test_circuit_faithfulness(st):
    df = q(st, "circuit_faithfulness", lineage="grpo-gsm8k", selection="threshold")
    assert df["faithfulness"].to_list() == [0.7, 0.75, 0.9]
    assert df["n_heads"].to_list() == [len(CIRCUITS[k]) for k in ("grpo@100", "grpo@200", "grpo@400")]
    assert df["cpr"].to_list() == [None, None, 0.8]
    both = q(st, "circuit_faithfulness", checkpoint="grpo-gsm8k@400")
    assert both["selection"].to_list() == ["threshold", "topn"]


def test_top_heads_keeps_ties(st):
    df = q(st, "top_heads", checkpoint="grpo-gsm8k@100", n=1)
    assert heads(df) == {(0, 0), (3, 0)} and df["rank"].to_list() == [1, 1]
    df = q(st, "top_heads", run=st.run["grpo@100"], n=3)
    assert df["rank"].to_list() == [1, 1, 3] and df["in_circuit"].to_list() == [True, True, True]


def test_circuit_graph(st):
    df = q(st, "circuit_graph", run=st.run["grpo@400"])
    assert df["edge"].to_list() == ["input->a0.h0<q>", "input->a3.h1<k>", "a0.h0->a3.h1<v>", "a3.h1->logits"]
    assert df["port"].to_list() == ["q", "k", "v", ""]
    assert df["score"].null_count() == 0
    # by checkpoint and task: the circuit every other query uses (the latest plain run), not the
    # older run or the newer run under an intervention that grpo@400 also has
    by_ref = q(st, "circuit_graph", checkpoint="grpo-gsm8k@400", task="math")
    assert by_ref["edge"].to_list() == df["edge"].to_list() and set(by_ref["run_id"]) == {st.run["grpo@400"]}
    assert q(st, "circuit_graph", checkpoint="grpo-gsm8k@400").height == 0  # a task is needed too


# -- params: validation, coercion, errors ------------------------------------------------------------


def test_unknown_query(st):
    with pytest.raises(UserError, match="unknown query 'heads_gainde'; did you mean heads_gained"):
        q(st, "heads_gainde")


def test_missing_param(st):
    with pytest.raises(UserError, match=r"param target needs a value \(str\); give --param target="):
        q(st, "heads_gained", base="qwen-math")


def test_unknown_param(st):
    with pytest.raises(UserError, match="no param 'tsk'; did you mean task"):
        q(st, "heads_gained", base="a", target="b", tsk="math")


def test_bad_types_and_choices(st):
    with pytest.raises(UserError, match="param n must be an integer, got 'ten'"):
        q(st, "top_heads", n="ten")
    with pytest.raises(UserError, match="param solved_at must be a number"):
        q(st, "newly_solved_missed", lineage="x", solved_at="half")
    with pytest.raises(UserError, match="param include_base must be true or false"):
        q(st, "benchmark_trajectory", lineage="x", include_base="maybe")
    with pytest.raises(UserError, match="scope='all' is not one of final, union"):
        q(st, "regime_compare", base="x", scope="all")
    with pytest.raises(UserError, match="param base must be a string"):
        q(st, "heads_gained", base=1.5, target="x")
    # command-line strings are coerced
    assert q(st, "top_heads", checkpoint="grpo-gsm8k@100", n="1").height == 2


def test_user_query_directory(st, tmp_path):
    (tmp_path / "my_heads.sql").write_text(
        "-- name: my_heads\n-- description: Heads of one checkpoint's circuit.\n"
        "-- param: checkpoint: str\n-- param: selection: str = 'threshold'\n"
        "SELECT layer, head FROM hd_circuit_heads($selection) WHERE checkpoint_id = hd_checkpoint($checkpoint)\n"
        "ORDER BY layer, head\n"
    )
    df = run_query(st.db, "my_heads", {"checkpoint": "r1-distill"}, extra_dirs=[tmp_path])
    assert heads(df) == set(CIRCUITS["distill"])
    assert "my_heads" in set(list_queries([tmp_path])["name"])
    # from the command line: the global --queries, or HEADDB_QUERIES, one runtime setting
    import os
    import subprocess
    import sys

    args = ["query", "my_heads", "--param", "checkpoint=r1-distill", "--format", "csv"]
    env = {k: v for k, v in os.environ.items() if k != "HEADDB_QUERIES"}
    for extra, env_extra in ((["--queries", str(tmp_path)], {}), ([], {"HEADDB_QUERIES": str(tmp_path)})):
        out = subprocess.run(
            [sys.executable, "-m", "headdb", "--db", str(st.db.location), *extra, *args],
            capture_output=True,
            text=True,
            timeout=300,
            env={**env, **env_extra},
        )
        assert out.returncode == 0, out.stderr
        assert out.stdout.splitlines()[0] == "layer,head" and len(out.stdout.splitlines()) == 1 + len(df)


@pytest.mark.parametrize(
    "text, message",
    [
        ("-- name: other\n-- description: d\nSELECT 1", "differs from the file name"),
        ("-- name: bad\nSELECT 1", "no `-- description:`"),
        ("-- name: bad\n-- description: d\n-- param: x: list\nSELECT $x", "type 'list'"),
        ("-- name: bad\n-- description: d\nSELECT $x", "uses $x which the header does not declare"),
        ("-- name: bad\n-- description: d\n-- param: x: int\nSELECT 1", "never uses $x"),
        ("-- name: bad\n-- description: d\n-- param: x: int = 'a'\nSELECT $x", "default 'a' is not an integer"),
        ("-- name: bad\n-- description: d\n-- colour: red\nSELECT 1", "unknown header key 'colour'"),
    ],
)
def test_malformed_query_files(tmp_path, text, message):
    path = tmp_path / "bad.sql"
    path.write_text(text)
    with pytest.raises(UserError, match=message.replace("$", r"\$").replace("(", r"\(")):
        parse_query(path)


def test_user_query_cannot_shadow_a_packaged_one(tmp_path):
    (tmp_path / "heads_gained.sql").write_text("-- name: heads_gained\n-- description: d\nSELECT 1\n")
    with pytest.raises(UserError, match="same name as the packaged query; rename it"):
        catalogue([tmp_path])


def test_queries_are_read_only(st, tmp_path):
    (tmp_path / "sneaky.sql").write_text("-- name: sneaky\n-- description: d\nDELETE FROM runs\n")
    with pytest.raises(UserError, match="exactly one SELECT"):
        run_query(st.db, "sneaky", {}, extra_dirs=[tmp_path])
    assert st.db.sql("SELECT count(*) AS n FROM runs")["n"][0] > 0


def test_empty_warehouse_gives_empty_frames_and_refuses_references(tmp_path):
    import headdb

    db = headdb.connect(tmp_path / "empty.duckdb")
    for name in ("ablation_table", "circuit_faithfulness"):
        df = run_query(db, name, {})
        assert df.height == 0 and df.width > 0, name
    for name, params in [
        ("heads_gained", {"base": "a", "target": "b"}),
        ("head_dynamics", {"lineage": "x"}),
        ("effect_map", {"lineage": "x"}),
        ("regime_compare", {"base": "a"}),
    ]:
        with pytest.raises(UserError, match="the warehouse has no"):
            run_query(db, name, params)


def test_query_session_runs_many_queries_on_one_connection(st):
    from headdb.warehouse.queries import query_session

    with query_session(st.db) as session:
        a = session.run("heads_gained", {"base": "qwen-math", "target": "grpo-gsm8k@400"})
        b = session.run("head_frequency", {"lineage": "grpo-gsm8k"})
        with pytest.raises(UserError, match="unknown query"):
            session.run("nope")
        c = session.run("top_heads", {"run": st.run["grpo@100"], "n": 1})
    assert a.equals(q(st, "heads_gained", base="qwen-math", target="grpo-gsm8k@400"))
    assert b.height == 5 and c.height == 2
    with pytest.raises(RuntimeError, match="not open"):
        session.run("heads_gained", {"base": "a", "target": "b"})
