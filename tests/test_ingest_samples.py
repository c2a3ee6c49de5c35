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
CORRECT = {
    "arith-0000": [1, 1, 1, 1],
    "arith-0001": [1, 0, 1, 0],
    "arith-0002": [0, 0, 0, 0],
    "arith-0003": [0, 0, 1, 0],
}


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
    return json.dumps(
        {
            "id": out.request_id,
            "prompt": out.prompt,
            "outputs": [
                {"text": o.text, "token_ids": o.token_ids, "finish_reason": o.finish_reason} for o in out.outputs
            ],
            "sampling_params": sampling,
            "engine": "vllm",
            "engine_version": "0.9.2",
        }
    )


SAMPLING = {"n": 4, "temperature": 0.6, "top_p": 0.95, "max_tokens": 64, "seed": 0}


def samples_file(path, ids=GOLD):
    lines = []
    for item in ids:
        outs = [
            CompletionOutput(
                i,
                (f"The answer is \\boxed{{{GOLD[item]}}}." if ok else "The answer is \\boxed{7}."),
                list(range(5 + i)),
            )
            for i, ok in enumerate(CORRECT.get(item, [0, 0, 0, 0]))
        ]
        lines.append(vllm_line(RequestOutput(item, f"Q: {item}", outs), SAMPLING))
    path.write_text("\n".join(lines) + "\n")
    return path


def cli(db, *args):
    return subprocess.run(
        [sys.executable, "-m", "headdb", "--db", str(db), *map(str, args)], capture_output=True, text=True, timeout=300
    )


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
    graded = db.sql(
        "SELECT item_id, sample_idx, correct, n_tokens, finish_reason FROM generations ORDER BY item_id, sample_idx"
    ).rows()
    assert [(i, s, int(c)) for i, s, c, _, _ in graded] == [
        (i, s, c) for i, cs in CORRECT.items() for s, c in enumerate(cs)
    ]
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
    by_text.write_text(
        "".join(
            json.dumps(
                {
                    "problem": items[i],
                    "completions": [f"\\boxed{{{GOLD[i]}}}" if ok else "\\boxed{7}" for ok in CORRECT[i]],
                }
            )
            + "\n"
            for i in items
        )
    )
    out = cli(db_path, "ingest", "samples", by_text, "--bench", BENCH, "--ref", model.name, "--k", "1,4")
    assert out.returncode == 0, out.stderr
    run = db.sql("SELECT max(run_id) FROM runs").item()
    assert db.sql("SELECT value FROM eval_metrics WHERE run_id = ? AND metric = 'accuracy'", [run]).item() == 6 / 8


@pytest.mark.parametrize(
    "lines, message",
    [
        (lambda f: samples_file(f, ["arith-0000", "arith-0099"]), "line 2: item 'arith-0099' is not in benchmark"),
        (
            lambda f: f.write_text(
                json.dumps({"id": "arith-0000", "completions": ["a"]})
                + "\n"
                + json.dumps({"id": "arith-0000", "completions": ["b"]})
                + "\n"
            ),
            "line 2: item 'arith-0000' again",
        ),
        (
            lambda f: f.write_text(
                json.dumps({"id": "arith-0000", "completions": ["a", "b"]})
                + "\n"
                + json.dumps({"id": "arith-0001", "completions": ["b"]})
                + "\n"
            ),
            "line 2: 1 samples",
        ),
        (
            lambda f: f.write_text(
                json.dumps({"id": "arith-0000", "completions": ["a"], "engine": "vllm"})
                + "\n"
                + json.dumps({"id": "arith-0001", "completions": ["b"], "engine": "sglang"})
                + "\n"
            ),
            "line 2: engine differs",
        ),
        (lambda f: f.write_text("{not json\n"), "line 1: not JSON"),
    ],
)
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


def test_lm_evaluation_harness_samples_are_imported_from_the_real_thing(model, tmp_path):
    """lm-evaluation-harness itself (offline, a local task file over a local JSONL) samples a
    tiny local model with --log_samples; headdb imports what it wrote: the checkpoint found from
    the results JSON, every completion as lm_eval wrote it, each graded by headdb's grader."""
    import os

    from headdb.evals.grading import grade
    from headdb.jobs.generations import Benchmark

    bench = Benchmark.load(BENCH, seed=0)
    data = tmp_path / "arith.jsonl"
    data.write_text(
        "".join(
            json.dumps({"id": r["item_id"], "problem": r["problem"], "answer": r["answer"]}) + "\n"
            for r in bench.items.iter_rows(named=True)
        )
    )
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "headdb_arith.yaml").write_text(
        "task: headdb_arith\ndataset_path: json\ndataset_kwargs:\n  data_files:\n"
        f"    test: {data}\ntest_split: test\noutput_type: generate_until\n"
        'doc_to_text: "{{problem}}"\ndoc_to_target: "{{answer}}"\n'
        'generation_kwargs:\n  until: ["\\n\\n"]\n  max_gen_toks: 8\n  do_sample: false\n'
        "metric_list:\n  - metric: exact_match\n"
    )
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "HF_DATASETS_CACHE": str(tmp_path / "hf-datasets"),
        "OMP_NUM_THREADS": "1",
    }
    ran = subprocess.run(
        [
            sys.executable,
            "-m",
            "lm_eval",
            "--model",
            "hf",
            "--model_args",
            f"pretrained={model},dtype=float32",
            "--tasks",
            "headdb_arith",
            "--include_path",
            str(tasks),
            "--log_samples",
            "--output_path",
            str(tmp_path / "out"),
            "--device",
            "cpu",
            "--batch_size",
            "4",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert ran.returncode == 0, ran.stderr[-3000:]
    [samples] = list((tmp_path / "out").rglob("samples_headdb_arith_*.jsonl"))
    written = [json.loads(line) for line in samples.read_text().splitlines()]
    db_path = tmp_path / "w.duckdb"
    out = cli(db_path, "ingest", "samples", samples, "--bench", BENCH)  # the checkpoint: from the results JSON
    assert out.returncode == 0, out.stderr
    db = headdb.connect(db_path, create=False)
    assert db.sql("SELECT path FROM checkpoints").item() == str(model.resolve())
    stored = {r[0]: r[1:] for r in db.sql("SELECT item_id, completion, correct FROM generations").rows()}
    assert set(stored) == set(GOLD)
    for line in written:
        completion, correct = stored[line["doc"]["id"]]
        assert completion == line["resps"][0][0]
        assert correct == grade(GOLD[line["doc"]["id"]], completion).correct
    config = json.loads(db.sql("SELECT config FROM runs").item())
    assert config["engine"] == "lm-evaluation-harness" and config["task"] == "headdb_arith"
    assert config["sampling"]["max_gen_toks"] == 8 and config["engine_version"]
    # a results JSON naming a model that is not a local directory: the checkpoint is unknown
    [results] = list(samples.parent.glob("results_*.json"))
    r = json.loads(results.read_text())
    r["config"]["model_args"]["pretrained"] = "Qwen/Qwen2.5-Math-1.5B"
    results.write_text(json.dumps(r))
    other = cli(tmp_path / "other.duckdb", "ingest", "samples", samples, "--bench", BENCH)
    assert other.returncode == 2 and "is not a local directory here" in other.stderr
    assert not (tmp_path / "other.duckdb").exists()
