"""Generations made by another engine: a JSONL written the way a vLLM script writes its
`LLM.generate` outputs, imported onto a checkpoint, graded by headdb's grader, with known
accuracy and pass@k; re-import skipped; a file that does not match the benchmark refused."""
from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from dataclasses import dataclass, field

import pytest

import headdb

BENCH = "synthetic-arithmetic:n=4"
# arith-0000: 4 + 2 = 6, arith-0001: 85 + 99 = 184, arith-0002: 695 + 749 = 1444, arith-0003: 2 * 8 - 21 = -5
GOLD = {"arith-0000": "6", "arith-0001": "184", "arith-0002": "1444", "arith-0003": "-5"}
CORRECT = {"arith-0000": [1, 1, 1, 1], "arith-0001": [1, 0, 1, 0], "arith-0002": [0, 0, 0, 0],
           "arith-0003": [0, 0, 1, 0]}


# The shape of vLLM's offline results (vllm.outputs.RequestOutput / CompletionOutput), which a
# script turns into one JSON line per request; vLLM itself needs a GPU, so the objects are built here.
@dataclass
class CompletionOutput:
    index: int
    text: str
    token_ids: list[int]
    finish_reason: str | None = "stop"


@dataclass
class RequestOutput:
    request_id: str
    prompt: str
    outputs: list[CompletionOutput] = field(default_factory=list)


def vllm_line(out: RequestOutput, sampling: dict) -> str:
    """What a vLLM script writes per request: json.dumps of the output's fields."""
    return json.dumps({"id": out.request_id, "prompt": out.prompt,
                       "outputs": [{"text": o.text, "token_ids": o.token_ids, "finish_reason": o.finish_reason}
                                   for o in out.outputs],
                       "sampling_params": sampling, "engine": "vllm", "engine_version": "0.9.2"})


SAMPLING = {"n": 4, "temperature": 0.6, "top_p": 0.95, "max_tokens": 64, "seed": 0}


def samples_file(path, ids=GOLD):
    lines = []
    for item in ids:
        outs = [CompletionOutput(i, (f"The answer is \\boxed{{{GOLD[item]}}}." if ok else "The answer is \\boxed{7}."),
                                 list(range(5 + i)))
                for i, ok in enumerate(CORRECT.get(item, [0, 0, 0, 0]))]
        lines.append(vllm_line(RequestOutput(item, f"Q: {item}", outs), SAMPLING))
    path.write_text("\n".join(lines) + "\n")
    return path


def cli(db, *args):
    return subprocess.run([sys.executable, "-m", "headdb", "--db", str(db), *map(str, args)], capture_output=True,
                          text=True, timeout=300)


@pytest.fixture(scope="module")
def model(tiny_checkpoint):
    return tiny_checkpoint(arch="qwen2", seed=5)


def test_vllm_samples_are_graded_and_stored_with_their_provenance(model, tmp_path):
    db_path = tmp_path / "w.duckdb"
    file = samples_file(tmp_path / "vllm.jsonl")
    out = cli(db_path, "ingest", "samples", file, "--bench", BENCH, "--checkpoint", model, "--k", "1,4")
    assert out.returncode == 0, out.stderr
    db = headdb.connect(db_path, create=False)
    metrics = dict(((m, k), v) for m, k, v in db.sql("SELECT metric, k, value FROM eval_metrics").rows())
    assert metrics[("accuracy", None)] == pytest.approx(7 / 16)
    assert metrics[("pass@k", 1)] == pytest.approx(7 / 16)
    assert metrics[("pass@k", 4)] == pytest.approx(3 / 4)
    graded = db.sql("SELECT item_id, sample_idx, correct, n_tokens, finish_reason FROM generations "
                    "ORDER BY item_id, sample_idx").rows()
    assert [(i, s, int(c)) for i, s, c, _, _ in graded] == [(i, s, c) for i, cs in CORRECT.items()
                                                            for s, c in enumerate(cs)]
    assert {(n, f) for _, s, _, n, f in graded if s == 0} == {(5, "stop")}
    config = json.loads(db.sql("SELECT config FROM runs").item())
    assert config["engine"] == "vllm" and config["engine_version"] == "0.9.2" and config["sampling"] == SAMPLING
    assert config["sha256"] == hashlib.sha256(file.read_bytes()).hexdigest() and config["source"] == "imported"
    # the same file again: nothing new
    again = cli(db_path, "ingest", "samples", file, "--bench", BENCH, "--checkpoint", model, "--k", "1,4")
    assert again.returncode == 0 and "already in the warehouse" in again.stderr
    assert db.sql("SELECT count(*) AS n FROM runs").item() == 1
    # matched by problem text, plain completions: another file, another run, the same grades
    items = {"arith-0000": "What is 4 + 2?", "arith-0001": "What is 85 + 99?"}
    by_text = tmp_path / "by_text.jsonl"
    by_text.write_text("".join(json.dumps({"problem": items[i], "completions": [
        f"\\boxed{{{GOLD[i]}}}" if ok else "\\boxed{7}" for ok in CORRECT[i]]}) + "\n" for i in items))
    out = cli(db_path, "ingest", "samples", by_text, "--bench", BENCH, "--ref", model.name, "--k", "1,4")
    assert out.returncode == 0, out.stderr
    run = db.sql("SELECT max(run_id) FROM runs").item()
    assert db.sql("SELECT value FROM eval_metrics WHERE run_id = ? AND metric = 'accuracy'", [run]).item() == 6 / 8


@pytest.mark.parametrize("lines, message", [
    (lambda f: samples_file(f, ["arith-0000", "arith-0099"]), "line 2: item 'arith-0099' is not in benchmark"),
    (lambda f: f.write_text(json.dumps({"id": "arith-0000", "completions": ["a"]}) + "\n"
                            + json.dumps({"id": "arith-0000", "completions": ["b"]}) + "\n"), "line 2: item 'arith-0000' again"),
    (lambda f: f.write_text(json.dumps({"id": "arith-0000", "completions": ["a", "b"]}) + "\n"
                            + json.dumps({"id": "arith-0001", "completions": ["b"]}) + "\n"), "line 2: 1 samples"),
    (lambda f: f.write_text(json.dumps({"id": "arith-0000", "completions": ["a"], "engine": "vllm"}) + "\n"
                            + json.dumps({"id": "arith-0001", "completions": ["b"], "engine": "sglang"}) + "\n"),
     "line 2: engine differs"),
    (lambda f: f.write_text("{not json\n"), "line 1: not JSON"),
])
def test_a_file_that_does_not_match_is_refused_and_nothing_is_written(model, tmp_path, lines, message):
    db_path = tmp_path / "w.duckdb"
    headdb.connect(db_path)
    before = db_path.read_bytes()
    file = tmp_path / "bad.jsonl"
    lines(file)
    out = cli(db_path, "ingest", "samples", file, "--bench", BENCH, "--checkpoint", model)
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
    assert len([x for x in out.stderr.splitlines() if x.strip()]) == 1 and message in out.stderr, out.stderr
    assert db_path.read_bytes() == before
