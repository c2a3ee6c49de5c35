"""Every mistake a user can make on the command line: one line on stderr, exit code 2, no
traceback, and the warehouse exactly as it was (same bytes, same table counts, no new runs).

The CLI runs in process (headdb.cli.app.main), so the whole list costs seconds.
"""

from __future__ import annotations

import hashlib
import json
import sys

import pytest

import headdb
from eapig_format import graph
from headdb.cli.app import main

TABLES = ("models", "checkpoints", "tasks", "task_items", "runs", "edge_scores", "generations", "training_metrics")


def run_cli(db, *args) -> tuple[int, str]:
    import io
    from contextlib import redirect_stderr, redirect_stdout

    argv, sys.argv = sys.argv, ["headdb", "--db", str(db), *map(str, args)]
    err, out = io.StringIO(), io.StringIO()
    try:
        with redirect_stderr(err), redirect_stdout(out):
            try:
                main()
                code = 0
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else 1
    finally:
        sys.argv = argv
    return code, err.getvalue()


def state(db_path) -> tuple[str, dict]:
    digest = hashlib.sha256(db_path.read_bytes()).hexdigest()
    w = headdb.connect(db_path, create=False)
    counts = {t: w.sql(f"SELECT count(*) AS n FROM {t}")["n"][0] for t in TABLES}
    return digest, counts


@pytest.fixture(scope="module")
def world(tmp_path_factory, tiny_checkpoint):
    root = tmp_path_factory.mktemp("mistakes")
    model = tiny_checkpoint(arch="qwen2", n_layers=2, n_heads=4, n_kv_heads=2, d_model=32, seed=1, at=root / "model")
    other = tiny_checkpoint(arch="qwen2", n_layers=2, n_heads=4, n_kv_heads=2, d_model=32, seed=2, at=root / "other")
    gone = tiny_checkpoint(arch="qwen2", n_layers=2, n_heads=4, n_kv_heads=2, d_model=32, seed=3, at=root / "gone")
    (root / "task.jsonl").write_text(
        "".join(
            json.dumps({"clean": f"1{i}+2{i}=", "corrupted": f"1{i}+3{i}=", "answer": "3", "wrong_answer": "4"}) + "\n"
            for i in range(4)
        )
    )
    (root / "nowrong.jsonl").write_text(json.dumps({"clean": "11+22=", "corrupted": "11+33=", "answer": "3"}) + "\n")
    (root / "ragged.jsonl").write_text(json.dumps({"clean": "1+2=", "corrupted": "11+22=", "answer": "3"}) + "\n")
    (root / "broken.jsonl").write_text('{"clean": "1+2=", "corrupted": "1+3=", "answer": "3"}\n{not json\n')
    (root / "bench.jsonl").write_text(json.dumps({"problem": "1+1", "answer": "2"}) + "\n")
    (root / "bad.toml").write_text("[study\nname = 1\n")
    (root / "broken.json").write_text('{"cfg": {"n_layers": 2}')
    (root / "wide.json").write_text(json.dumps(graph(3, 4, {}, set(), set())))  # 3 layers: another model
    (root / "narrow.json").write_text(json.dumps(graph(2, 4, {"input->a0.h0<q>": 0.5}, set(), set())))
    (root / "unknown_ref.toml").write_text(f"""
[[benchmarks]]
name = "b"
source = "{root / "bench.jsonl"}"
[[models]]
name = "base"
path = "{model}"
regime = "base"
[[ablations]]
checkpoint = "grpo@last"
heads = "L0H1"
""")
    (root / "bad_heads.toml").write_text(f"""
[[benchmarks]]
name = "b"
source = "{root / "bench.jsonl"}"
[[models]]
name = "base"
path = "{model}"
regime = "base"
[[ablations]]
checkpoint = "base"
heads = "L9H1"
""")
    (root / "gone_ablation.toml").write_text(f"""
[[benchmarks]]
name = "b"
source = "{root / "bench.jsonl"}"
[[models]]
name = "base"
path = "{model}"
regime = "base"
[[ablations]]
checkpoint = "gone@last"
heads_query = {{ name = "top_heads", params = {{ task = "t", n = 2 }} }}
""")
    db = root / "w.duckdb"
    code, err = run_cli(db, "checkpoints", "add", str(other), "--regime", "other", "--lineage", "other")
    assert code == 0, err
    code, err = run_cli(db, "checkpoints", "add", str(gone), "--regime", "sft", "--lineage", "gone")
    assert code == 0, err
    import shutil

    shutil.rmtree(gone)  # registered, then its directory deleted
    return root, model, db


def mistakes(root, model):
    ck = ["--checkpoint", model]
    task = ["--task", root / "task.jsonl"]
    bench = ["--bench", root / "bench.jsonl"]
    return {
        "checkpoint path does not exist": ["ingest", "attribution", "--checkpoint", root / "nope", *task],
        "checkpoint is a file": ["ingest", "attribution", "--checkpoint", root / "task.jsonl", *task],
        "checkpoint is a hub name": ["ingest", "generations", "--checkpoint", "Qwen/Qwen2.5-Math-1.5B", *bench],
        "task file missing": ["ingest", "attribution", *ck, "--task", root / "none.jsonl"],
        "task file malformed": ["ingest", "attribution", *ck, "--task", root / "broken.jsonl"],
        "unknown method": ["ingest", "attribution", *ck, *task, "--method", "magic"],
        "unknown metric": ["ingest", "attribution", *ck, *task, "--metric", "accuracy"],
        "steps below 1": ["ingest", "attribution", *ck, *task, "--steps", "0"],
        "steps not a number": ["ingest", "attribution", *ck, *task, "--steps", "five"],
        "threshold above 1": ["ingest", "attribution", *ck, *task, "--threshold", "2"],
        "unknown align": ["ingest", "attribution", *ck, *task, "--align", "pad"],
        "strict alignment on uneven pairs": [
            "ingest",
            "attribution",
            *ck,
            "--task",
            root / "ragged.jsonl",
            "--align",
            "strict",
        ],
        "logit-diff without wrong_answer": [
            "ingest",
            "attribution",
            *ck,
            "--task",
            root / "nowrong.jsonl",
            "--metric",
            "logit-diff",
        ],
        "layer out of range": ["ingest", "attribution", *ck, *task, "--ablate", "L9H0"],
        "head out of range": ["ingest", "generations", *ck, *bench, "--ablate", "L0H9"],
        "malformed head": ["ingest", "generations", *ck, *bench, "--ablate", "layer0"],
        "ablate and scale": ["ingest", "attribution", *ck, *task, "--ablate", "L0H0", "--scale", "L0H1=2"],
        "scale without factor": ["ingest", "generations", *ck, *bench, "--scale", "L0H1=big"],
        "unknown dtype": ["ingest", "attribution", *ck, *task, "--dtype", "float8"],
        "unknown regime": ["ingest", "attribution", *ck, *task, "--regime", "rlhf"],
        "unknown mode": ["ingest", "attribution", *ck, *task, "--mode", "thinking"],
        "benchmark missing": ["ingest", "generations", *ck, "--bench", root / "none.jsonl"],
        "k not integers": ["ingest", "generations", *ck, *bench, "--k", "1,x"],
        "samples below 1": ["ingest", "generations", *ck, *bench, "--samples", "0"],
        "top-p above 1": ["ingest", "generations", *ck, *bench, "--top-p", "2"],
        "unknown chat": ["ingest", "generations", *ck, *bench, "--chat", "maybe"],
        "ablation without heads": ["ingest", "ablation", *ck, *bench],
        "ablation scale without factor": ["ingest", "ablation", *ck, *bench, "--heads", "L0H1", "--kind", "scale"],
        "ablation unknown kind": ["ingest", "ablation", *ck, *bench, "--heads", "L0H1", "--kind", "drop"],
        "ablation unknown query": ["ingest", "ablation", *ck, *bench, "--heads-query", "heads_gainde"],
        "ablation query param missing": ["ingest", "ablation", *ck, *bench, "--heads-query", "heads_gained"],
        "run dir missing": ["ingest", "run", root / "nope", "--regime", "sft", "--lineage", "x"],
        "run regime base": ["ingest", "run", root, "--regime", "base", "--lineage", "x"],
        "study manifest missing": ["study", root / "nope.toml"],
        "study manifest malformed": ["study", root / "bad.toml"],
        "study ablation names no checkpoint": ["study", root / "unknown_ref.toml"],
        "study ablation head out of range": ["study", root / "bad_heads.toml"],
        "study ablation on a checkpoint whose directory is gone": ["study", root / "gone_ablation.toml"],
        "unknown report": ["report", "effect_mp"],
        "unknown query": ["query", "heads_gainde"],
        "query param of the wrong type": [
            "query",
            "head_frequency",
            "--param",
            "lineage=x",
            "--param",
            "task=t",
            "--param",
            "min_count=many",
        ],
        "unknown option": ["ingest", "attribution", *ck, *task, "--stepz", "3"],
        "checkpoints add its own base": [
            "checkpoints",
            "add",
            model,
            "--regime",
            "distill",
            "--lineage",
            "d",
            "--base",
            model,
        ],
        "checkpoints add unknown regime": ["checkpoints", "add", model, "--regime", "rlhf", "--lineage", "d"],
        "sql that writes": ["sql", "DELETE FROM runs"],
        "unknown rank": ["ingest", "attribution", *ck, *task, "--rank", "median"],
        "negative bootstrap": ["ingest", "attribution", *ck, *task, "--bootstrap", "-1"],
        "bootstrap with exact patching": [
            "ingest",
            "attribution",
            *ck,
            *task,
            "--method",
            "exact",
            "--bootstrap",
            "10",
        ],
        "unknown ig rule": ["ingest", "attribution", *ck, *task, "--ig-rule", "trapezoid"],
        # refused at plan time by the memory model (headdb.attribution.memory), before any write
        "attribution cannot fit --max-memory": ["ingest", "attribution", *ck, *task, "--max-memory", "200kB"],
        "max-memory not a size": ["ingest", "attribution", *ck, *task, "--max-memory", "lots"],
        "unknown executor": ["ingest", "attribution", *ck, *task, "--executor", "slurm"],
        "ray options without ray": ["study", root / "bad_heads.toml", "--gpus-per-job", "1"],
        "graph file malformed": ["ingest", "graph-json", root / "broken.json", *ck, "--task", "t", "--new"],
        "graph of another model": ["ingest", "graph-json", root / "wide.json", *ck, "--task", "t", "--new"],
        "graph onto an unknown task": ["ingest", "graph-json", root / "wide.json", *ck, "--task", "nope"],
        "graph checkpoint and ref": ["ingest", "graph-json", root / "wide.json", *ck, "--ref", "1", "--task", "t"],
        "graph onto an unknown ref": ["ingest", "graph-json", root / "wide.json", "--ref", "grpo@9", "--task", "t"],
        # a checkpoint known only through graphs is registered by the plan's execution, after every
        # file was checked: the second file's other shape refuses the import with nothing registered
        "graphs of two models onto a new ref": [
            "ingest",
            "graph-json",
            root / "narrow.json",
            root / "wide.json",
            "--ref",
            "imported-1",
            "--new",
            "--lineage",
            "imp",
            "--step",
            "1",
            "--task",
            "t2",
        ],
        "graph with no scored edge": [
            "ingest",
            "graph-json",
            root / "wide.json",
            "--ref",
            "imported-3",
            "--new",
            "--lineage",
            "imp",
            "--task",
            "t2",
        ],
        "graph onto an unknown parent": [
            "ingest",
            "graph-json",
            root / "narrow.json",
            "--ref",
            "imported-2",
            "--new",
            "--lineage",
            "imp",
            "--parent",
            "nope@3",
            "--task",
            "t2",
        ],
        "export of a missing run": ["export", "graph-json", "999"],
        "export of an unknown checkpoint": [
            "export",
            "checkpoint",
            "--checkpoint",
            "nope@3",
            "--ablate",
            "L0H0",
            "--out",
            root / "x",
        ],
        "export of a head out of range": ["export", "checkpoint", *ck, "--ablate", "L0H9", "--out", root / "x"],
        "export into a folder that is not empty": ["export", "checkpoint", *ck, "--ablate", "L0H0", "--out", root],
        "export of a mean without an o_proj bias": [
            "export",
            "checkpoint",
            *ck,
            "--ablate",
            "L0H0",
            "--mean-task",
            root / "task.jsonl",
            "--out",
            root / "x",
        ],
        "export ablate and scale": [
            "export",
            "checkpoint",
            *ck,
            "--ablate",
            "L0H0",
            "--scale",
            "L0H1=2",
            "--out",
            root / "x",
        ],
        "export without heads": ["export", "checkpoint", *ck, "--out", root / "x"],
    }


@pytest.fixture(scope="module")
def cases(world):
    root, model, db = world
    return mistakes(root, model)


NAMES = list(mistakes(__import__("pathlib").Path("/r"), "/m"))


@pytest.mark.parametrize("name", NAMES)
def test_a_mistake_is_one_line_exit_2_and_changes_nothing(world, cases, name):
    root, model, db = world
    before = state(db)
    code, err = run_cli(db, *cases[name])
    assert code == 2, f"{name}: exit {code}\n{err}"
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("headdb: error:"), f"{name}:\n{err}"
    assert "Traceback" not in err
    assert state(db) == before, f"{name}: the warehouse changed"
    assert not (root / "x").exists(), f"{name}: wrote a checkpoint folder"


def test_a_mistake_creates_no_warehouse(world, tmp_path):
    root, model, _ = world
    fresh = tmp_path / "fresh.duckdb"
    code, err = run_cli(
        fresh, "ingest", "attribution", "--checkpoint", model, "--task", root / "ragged.jsonl", "--align", "strict"
    )
    assert code == 2 and "differ in token length" in err
    assert not fresh.exists()


def test_a_run_too_big_for_memory_says_what_it_needs(world):
    root, model, db = world
    code, err = run_cli(
        db, "ingest", "attribution", "--checkpoint", model, "--task", root / "task.jsonl", "--max-memory", "200kB"
    )
    assert code == 2
    # the tiny model needs ~242 kB at batch 1: its weights (151 kB) fit, its working memory does not
    assert "needs" in err and "at batch 1" in err and "more than --max-memory (195.3KiB)" in err, err
