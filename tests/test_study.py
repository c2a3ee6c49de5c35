"""Study manifests: validation messages, --check of the paper's manifest, a small study run."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import headdb
from headdb.errors import UserError
from headdb.jobs.manifest import load_manifest

ROOT = Path(__file__).resolve().parents[1]


def cli(*args, db=None):
    prefix = ["--db", str(db)] if db else []
    return subprocess.run([sys.executable, "-m", "headdb", *prefix, *args], capture_output=True, text=True, timeout=600)


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


TASK = [
    {"clean": "12+35=", "corrupted": "19+38=", "answer": "4", "wrong_answer": "5"},
    {"clean": "21+13=", "corrupted": "29+17=", "answer": "3", "wrong_answer": "4"},
]


@pytest.fixture(scope="module")
def paper_root(tmp_path_factory, tiny_checkpoint):
    """The folder layout ingest/thinking-sparks.toml expects, filled with tiny stand-ins."""
    root = tmp_path_factory.mktemp("paper")
    base = tiny_checkpoint(arch="qwen2", seed=1, at=root / "models" / "Qwen2.5-Math-1.5B")
    shutil.copytree(base, root / "models" / "DeepSeek-R1-Distill-Qwen-1.5B")
    tiny_checkpoint(arch="qwen3", seed=2, at=root / "models" / "Qwen3-8B")
    for run in ("sft-openr1", "grpo-openr1", "grpo-gsm8k"):
        for step in (100, 200):
            shutil.copytree(base, root / "runs" / run / f"checkpoint-{step}")
    for name in ("math-circuit", "math-circuit-qwen3", "trivia-circuit"):
        write_jsonl(root / "tasks" / f"{name}.jsonl", TASK)
    write_jsonl(
        root / "bench" / "aime24.jsonl", [{"ID": "2024-I-1", "Problem": "1+1?", "Answer": "2", "Solution": "."}]
    )
    write_jsonl(
        root / "bench" / "aime25.jsonl",
        [{"id": 1, "problem": "2+2?", "answer": "4", "solution": ".", "url": "u", "year": 2025}],
    )
    write_jsonl(root / "bench" / "amc.jsonl", [{"question": "3+3?", "answer": 6.0}])
    write_jsonl(
        root / "bench" / "math500.jsonl",
        [{"problem": "4+4?", "answer": "8", "level": 1, "subject": "Algebra", "unique_id": "a"}],
    )
    write_jsonl(root / "bench" / "gsm8k.jsonl", [{"question": "5+5?", "answer": "5 and 5 is 10\n#### 10"}])
    write_jsonl(
        root / "bench" / "triviaqa.jsonl",
        [{"question": "Capital of France?", "answer": {"value": "Paris", "aliases": ["Paris", "paris"]}}],
    )
    (root / "bench" / "gpqa_diamond.csv").write_text(
        "Question,Correct Answer,Incorrect Answer 1,Incorrect Answer 2,Incorrect Answer 3\nWhich?,a,b,c,d\n"
    )
    return root


def test_the_papers_manifest_passes_check(paper_root):
    out = cli("study", "--check", str(ROOT / "ingest" / "thinking-sparks.toml"), "--root", str(paper_root))
    assert out.returncode == 0, out.stderr
    assert "manifest ok" in out.stderr and "run grpo-gsm8k (grpo): 2 checkpoint(s)" in out.stderr


def test_the_demo_manifest_parses():
    m = load_manifest(ROOT / "ingest" / "demo.toml", root="/nonexistent")
    assert {r.regime for r in m.runs} == {"sft", "grpo"} and m.ablations[0].control


@pytest.mark.parametrize(
    "text, message",
    [
        (
            "[[models]]\nname='a'\npath='x'\nregime='rlhf'\n",
            "models[0].regime: Input should be 'base', 'sft', 'grpo', 'distill' or 'other' (got 'rlhf')",
        ),
        ("[[models]]\nname='a'\nregime='base'\n", "models[0].path: is required"),
        (
            "[[models]]\nname='a'\npath='x'\nregime='base'\nstep='ten'\n",
            "models[0].step: Input should be a valid integer",
        ),
        ("[[runs]]\nname='r'\ndir='d'\nregime='sft'\nbase='nope'\n", "runs[0].base: 'nope' is not the name"),
        ("[attribution]\nsteps=5\nmetod='eap'\n", "attribution.metod: unknown key"),
        ("[[ablations]]\ncheckpoint='a@last'\nkind='scale'\nheads='L0H1'\n", "ablations[0].factor: is required"),
        ("[[ablations]]\ncheckpoint='a@last'\n", "ablations[0]: give exactly one of heads"),
        (
            "[[ablations]]\ncheckpoint='a@last'\nheads='L0H1'\nlabel='control'\n",
            "ablations[0].label: 'control' is how headdb marks its own head sets",
        ),
        (
            "[[ablations]]\ncheckpoint='a@last'\nheads='L0H1'\ncontrol=true\ncontrol_avoid={name='top_heads', fallback={}}\n",
            "ablations[0].control_avoid.fallback: unknown key",
        ),
        ("[studdy]\nname='x'\n", "studdy: unknown section"),
        ("[generation]\nsamples=0\n", "generation.samples: Input should be greater than or equal to 1 (got 0)"),
        ("[generation]\ntemprature=0.6\n", "generation.temprature: unknown key (allowed: batch_size, chat, k,"),
        ("[generation]\nk=[1, 0]\n", "generation.k: must be positive integers"),
        ("[attribution]\nmethod='exact'\nbootstrap=10\n", "exact patching keeps no per-example scores"),
        (
            "[[ablations]]\ncheckpoint='a@last'\nheads_query={name='top_heads', limit=0}\n",
            "ablations[0].heads_query.limit: Input should be greater than or equal to 1",
        ),
        ("[[tasks]]\nname='t'\nfile='a'\n[[tasks]]\nname='t'\nfile='b'\n", "tasks[1].name: 't (plain)' is used twice"),
        ("name = [", "not valid TOML"),
    ],
)
def test_validation_names_the_key_and_the_problem(tmp_path, text, message):
    path = tmp_path / "m.toml"
    path.write_text(text)
    with pytest.raises(UserError) as err:
        load_manifest(path)
    assert message in str(err.value) and str(path) in str(err.value)
    out = cli("study", "--check", str(path))
    assert out.returncode == 2 and "Traceback" not in out.stderr and message in out.stderr.replace("\n", "")


def test_check_reports_a_missing_model_directory(tmp_path):
    path = tmp_path / "m.toml"
    path.write_text("[[models]]\nname='a'\npath='models/a'\nregime='base'\n")
    out = cli("study", "--check", str(path))
    assert out.returncode == 2 and "models[0].path" in out.stderr


def test_a_small_study_runs_and_resumes(tmp_path, tiny_checkpoint):
    tiny_checkpoint(arch="qwen2", init_std=0.2, seed=3, at=tmp_path / "models" / "base")
    tiny_checkpoint(arch="qwen2", init_std=0.2, seed=4, at=tmp_path / "models" / "distilled")
    write_jsonl(tmp_path / "tasks" / "t.jsonl", TASK)
    (tmp_path / "study.toml").write_text("""
[attribution]
steps = 3
topn = 50
[generation]
samples = 1
temperature = 0.0
max_new_tokens = 4
[[tasks]]
name = "t"
file = "tasks/t.jsonl"
[[benchmarks]]
name = "arith"
source = "synthetic-arithmetic:n=2"
[[models]]
name = "base"
path = "models/base"
regime = "base"
[[models]]
name = "distilled"
path = "models/distilled"
regime = "distill"
base = "base"
[[ablations]]
checkpoint = "distilled"
heads = "L0H1"
benchmarks = ["arith"]
[[ablations]]
checkpoint = "distilled"
heads = "L0H0"
label = "second set"
benchmarks = ["arith"]
[[reports]]
name = "heads_gained"
params = { base = "base", target = "distilled" }
""")
    db = tmp_path / "w.duckdb"
    out = cli("study", str(tmp_path / "study.toml"), db=db)
    assert out.returncode == 0, out.stderr
    # the two ablations of one checkpoint load it once (stage 1 loaded both checkpoints)
    assert "3 checkpoint(s) loaded" in out.stderr, out.stderr
    assert "heads gained and lost" in out.stdout or "heads_gained: no rows" in out.stdout
    w = headdb.connect(db, create=False)
    kinds = w.sql("SELECT kind, count(*) AS n FROM runs WHERE status = 'ok' GROUP BY 1 ORDER BY 1").rows()
    assert kinds == [("attribution", 2), ("generation", 4)]  # 2 plain + 2 ablated (their baseline reused)
    sets = w.query("ablation_table", checkpoint="distilled")["head_set"].unique().sort().to_list()
    assert sets == ["second set", "zero L0H1"]  # a manifest's label names its head set in the reports
    parent = w.sql(
        "SELECT p.name FROM checkpoints c JOIN checkpoints p ON p.checkpoint_id = c.parent_id "
        "WHERE c.name = 'distilled'"
    )["name"].to_list()
    assert parent == ["base"]
    again = cli("study", str(tmp_path / "study.toml"), "--no-reports", db=db)
    assert again.returncode == 0 and "0 run(s) added" in again.stderr
    assert "0 checkpoint(s) loaded" in again.stderr  # nothing missing: no model is loaded
    # a weights file cut short (an interrupted copy) is found by --check and by the study at plan
    # time, from its header; nothing is written
    before = w.sql("SELECT run_id, status FROM runs ORDER BY run_id").rows()
    weights = tmp_path / "models" / "distilled" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-64])
    for args in (("--check",), ()):
        cut = cli("study", str(tmp_path / "study.toml"), *args, db=db)
        assert cut.returncode == 2 and "Traceback" not in cut.stderr, cut.stderr
        assert "models/distilled/model.safetensors: truncated" in cut.stderr
    w = headdb.connect(db, create=False)
    assert w.sql("SELECT run_id, status FROM runs ORDER BY run_id").rows() == before


@pytest.mark.parametrize(
    "report, message",
    [
        (
            'name = "heads_gaind"\nparams = {}',
            "reports[0].name: unknown report 'heads_gaind'; did you mean heads_gained",
        ),
        (
            'name = "heads_gained"\nparams = { base = "base", targte = "base" }',
            "reports[0].params: report heads_gained has no param 'targte'",
        ),
    ],
)
def test_a_misspelt_report_is_refused_before_anything_is_written(tmp_path, tiny_checkpoint, report, message):
    tiny_checkpoint(arch="qwen2", seed=3, at=tmp_path / "models" / "base")
    write_jsonl(tmp_path / "tasks" / "t.jsonl", TASK)
    path = tmp_path / "study.toml"
    path.write_text(
        '[[tasks]]\nname = "t"\nfile = "tasks/t.jsonl"\n[[models]]\nname = "base"\npath = "models/base"\n'
        f'regime = "base"\n[[reports]]\n{report}\n'
    )
    for args in (["study", "--check", str(path)], ["study", str(path)]):
        out = cli(*args, db=tmp_path / "w.duckdb")
        assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
        assert message in " ".join(out.stderr.split()), out.stderr
    assert not (tmp_path / "w.duckdb").exists()  # validated before the warehouse was even created
