"""`headdb export checkpoint`: a plain HF checkpoint whose weights carry a head intervention.

Its logits, loaded by plain transformers (no headdb code), equal headdb's hooks on the source to
float32 round-off; its tensors are the source's except the ablated heads' o_proj columns; the
means of a mean ablation agree with means the test takes itself. Samples imported for it are
stored as an intervened run of the source and pair with the source's plain run in ablation_table.
"""

from __future__ import annotations

import json
import sys

import pytest
import torch

import headdb
from headdb.evals.interventions import Intervention, applied

TASK = [
    {"clean": "12+35=", "corrupted": "12+45=", "answer": "4"},
    {"clean": "7+2=", "corrupted": "9+5=", "answer": "9"},
    {"clean": "Step 1: 21+14=", "corrupted": "Step 1: 28+17=", "answer": "3"},
]
TEXTS = ["12+35=47", "What is 7 + 2?", "Step 1: 21+14="]


def run_cli(db, *args) -> tuple[int, str]:
    import io
    from contextlib import redirect_stderr, redirect_stdout

    from headdb.cli.app import main

    argv, sys.argv = sys.argv, ["headdb", "--db", str(db), *map(str, args)]
    err = io.StringIO()
    try:
        with redirect_stderr(err), redirect_stdout(io.StringIO()):
            try:
                main()
                code = 0
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else 1
    finally:
        sys.argv = argv
    return code, err.getvalue()


def plain_logits(directory, texts=TEXTS):
    """Logits of a folder loaded by plain transformers (default attention, no headdb code)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(directory, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(directory, local_files_only=True).eval()
    with torch.no_grad():
        return [model(**tok(t, return_tensors="pt")).logits for t in texts]


def hooked_logits(directory, intervention, texts=TEXTS):
    """Logits of the source under headdb's own hooks (headdb.evals.interventions)."""
    from headdb.checkpoints.loading import load_model

    loaded = load_model(directory, device="cpu", dtype="float32")
    with torch.no_grad(), applied(loaded.hf_model, intervention):
        return [loaded.hf_model(**loaded.tokenizer(t, return_tensors="pt")).logits for t in texts]


def tensors(directory):
    from safetensors.torch import load_file

    return load_file(str(directory / "model.safetensors"))


@pytest.fixture(scope="module")
def qwen2(tiny_checkpoint, tmp_path_factory):
    return tiny_checkpoint(
        arch="qwen2", n_layers=2, n_heads=4, n_kv_heads=2, d_model=64, init_std=0.1, seed=7,
        at=tmp_path_factory.mktemp("export") / "src",
    )  # fmt: skip


@pytest.mark.parametrize(
    "flags, kind, factor", [(["--ablate", "L0H1,L1H3"], "zero", None), (["--scale", "L0H2,L1H0=1.3"], "scale", 1.3)]
)
def test_zero_and_scale_exports_compute_what_the_hooks_compute(qwen2, tmp_path, flags, kind, factor):
    dst = tmp_path / "dst"
    code, err = run_cli(tmp_path / "w.duckdb", "export", "checkpoint", "--checkpoint", qwen2, *flags, "--out", dst)
    assert code == 0, err
    heads = [(0, 1), (1, 3)] if kind == "zero" else [(0, 2), (1, 0)]
    intervention = Intervention(kind, heads, factor=factor)
    for exported, hooked, plain in zip(plain_logits(dst), hooked_logits(qwen2, intervention), plain_logits(qwen2)):
        assert torch.allclose(exported, hooked, atol=2e-5, rtol=0), (exported - hooked).abs().max()
        assert (exported - plain).abs().max() > 1e-2  # the intervention changes the output
    # independently: every tensor is the source's, but the heads' o_proj input columns
    before, after = tensors(qwen2), tensors(dst)
    assert set(before) == set(after)
    d_head = 64 // 4
    for name, w in before.items():
        expected = w.clone()
        layer = int(name.split(".")[2]) if name.endswith("self_attn.o_proj.weight") else None
        for l, h in heads:
            if l == layer:
                cols = slice(h * d_head, (h + 1) * d_head)
                expected[:, cols] = 0 if kind == "zero" else w[:, cols] * factor
        assert torch.equal(after[name], expected), name
    config = json.loads((dst / "config.json").read_text())
    assert config["headdb_export"]["intervention"]["kind"] == kind
    assert config["headdb_export"]["source"]["path"] == str(qwen2.resolve())
    assert {f.name for f in qwen2.iterdir()} <= {f.name for f in dst.iterdir()}  # tokenizer files, chat template


def own_means(directory, task_file, heads_per_layer, d_head):
    """Each head's mean o_proj input over the task's clean prompts, one prompt at a time: the
    test's own computation, not headdb's head_means."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(directory, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(directory, local_files_only=True).eval()
    sums, count = {}, 0
    hooks = [
        layer.self_attn.o_proj.register_forward_pre_hook(
            lambda m, args, i=i: sums.__setitem__(i, sums.get(i, 0) + args[0][0].double().sum(0))
        )
        for i, layer in enumerate(model.model.layers)
    ]
    with torch.no_grad():
        for line in task_file.read_text().splitlines():
            ids = tok(json.loads(line)["clean"], return_tensors="pt")["input_ids"]
            model(input_ids=ids)
            count += ids.shape[1]
    for h in hooks:
        h.remove()
    return {i: (s / count).float().view(heads_per_layer, d_head) for i, s in sums.items()}


def test_mean_export_of_a_llama_carries_the_means_in_an_o_proj_bias(tiny_checkpoint, tmp_path):
    src = tiny_checkpoint(
        arch="llama", n_layers=2, n_heads=4, n_kv_heads=2, d_model=64, init_std=0.1, seed=2, at=tmp_path / "src"
    )
    task = tmp_path / "task.jsonl"
    task.write_text("".join(json.dumps(t) + "\n" for t in TASK))
    dst = tmp_path / "dst"
    flags = ["--ablate", "L0H1,L1H2", "--mean-task", task]
    code, err = run_cli(tmp_path / "w.duckdb", "export", "checkpoint", "--checkpoint", src, *flags, "--out", dst)
    assert code == 0, err
    config = json.loads((dst / "config.json").read_text())
    assert config["attention_bias"] is True and config["headdb_export"]["intervention"]["kind"] == "mean"
    means = own_means(src, task, 4, 16)
    intervention = Intervention("mean", [(0, 1), (1, 2)], means=means)
    for exported, hooked, plain in zip(plain_logits(dst), hooked_logits(src, intervention), plain_logits(src)):
        assert torch.allclose(exported, hooked, atol=2e-5, rtol=0), (exported - hooked).abs().max()
        assert (exported - plain).abs().max() > 1e-3
    after = tensors(dst)
    assert not after["model.layers.0.self_attn.q_proj.bias"].any()  # added as zeros: attention_bias is one flag
    assert after["model.layers.0.self_attn.o_proj.bias"].abs().max() > 0


def samples_file(path, correct, model):
    """A vLLM script's output (one line per item, 2 samples each) with the given correctness."""
    from headdb.jobs.generations import Benchmark

    items = Benchmark.load(BENCH).items
    lines = []
    for (item, gold), oks in zip(items.select("item_id", "answer").iter_rows(), correct):
        outs = [{"text": f"\\boxed{{{gold if ok else 'x'}}}", "finish_reason": "stop"} for ok in oks]
        sampling = {"n": 2, "temperature": 0.6, "top_p": 0.95, "max_tokens": 64, "seed": 0}
        lines.append(json.dumps({"id": item, "outputs": outs, "sampling_params": sampling, "model": str(model)}))
    path.write_text("\n".join(lines) + "\n")
    return path


BENCH = "synthetic-arithmetic:n=4,levels=1-2"
PLAIN = [(1, 1), (1, 0), (0, 0), (1, 1)]  # per item, per sample: correct?
ABLATED = [(1, 0), (0, 0), (0, 1), (1, 1)]


def test_samples_of_an_exported_checkpoint_are_an_intervened_run_of_its_source(qwen2, tmp_path):
    from headdb.warehouse.queries import run_query

    db_path, dst = tmp_path / "w.duckdb", tmp_path / "ablated"
    code, err = run_cli(db_path, "export", "checkpoint", "--checkpoint", qwen2, "--ablate", "L0H1", "--out", dst)
    assert code == 0, err
    for model, correct, name in [(qwen2, PLAIN, "plain.jsonl"), (dst, ABLATED, "ablated.jsonl")]:
        file = samples_file(tmp_path / name, correct, model)
        code, err = run_cli(db_path, "ingest", "samples", file, "--bench", BENCH, "--checkpoint", model)
        assert code == 0, err
    db = headdb.connect(db_path, create=False)
    src_id, dst_parent = db.sql(
        "SELECT s.checkpoint_id, d.parent_id FROM checkpoints s, checkpoints d WHERE s.path = ? AND d.path = ?",
        [str(qwen2.resolve()), str(dst.resolve())],
    ).row(0)
    assert dst_parent == src_id  # registered as derived from the source
    runs = db.sql("SELECT run_id, checkpoint_id, config FROM runs ORDER BY run_id").rows()
    assert [r[1] for r in runs] == [src_id, src_id]  # both runs are the source's
    spec = json.loads(runs[1][2])["intervention"]
    assert spec["kind"] == "zero" and spec["heads"] == "L0H1" and spec["exported"]["path"] == str(dst.resolve())
    table = run_query(db, "ablation_table", {"metric": "accuracy"})
    assert table.height == 1
    row = table.row(0, named=True)
    assert (row["baseline_run"], row["run_id"]) == (runs[0][0], runs[1][0])
    assert row["baseline"] == pytest.approx(5 / 8) and row["value"] == pytest.approx(4 / 8)
    assert row["delta"] == pytest.approx(-1 / 8) and row["heads"] == "L0H1" and row["kind"] == "zero"
    rates = run_query(db, "item_rates", {"runs": str(runs[1][0])})
    assert rates["rate"].to_list() == [sum(c) / 2 for c in ABLATED]
    # the same file again: skipped, like any import
    code, err = run_cli(db_path, "ingest", "samples", tmp_path / "ablated.jsonl", "--bench", BENCH, "--checkpoint", dst)
    assert code == 0 and "already in the warehouse" in err
