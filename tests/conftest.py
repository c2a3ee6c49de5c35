"""Shared fixtures: tiny local models and circuit tasks, built once per test session.

Everything is built from scratch in temporary directories (no hub, HF_HUB_OFFLINE=1) and is
deterministic under fixed seeds, so the numbers the tests check never change between runs.
"""

from __future__ import annotations

import json
import os
import random
import signal
import warnings

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# CLI subprocesses started by tests inherit this: one OpenMP thread per tiny-model process.
os.environ.setdefault("OMP_NUM_THREADS", "1")


def pytest_configure(config):
    # Tiny models gain nothing from intra-op threads, and on a loaded 2-core machine OpenMP's
    # spinning threads make a 1.5 ms forward pass take 100+ ms. One thread keeps tests fast.
    import torch

    torch.set_num_threads(1)


def _arith_items(n: int, seed: int) -> list[dict]:
    """a+b= vs a+b'= (one operand changed, equal token length); answer = first digit of a+b."""
    rng = random.Random(seed)
    items = []
    for i in range(n):
        a, b, b2 = rng.randint(10, 49), rng.randint(10, 49), rng.randint(10, 49)
        ans, alt = str(a + b)[0], str(a + b2)[0]
        if alt == ans:
            alt = str((int(ans) + 1) % 10)
        items.append(
            {"id": f"q{i}", "clean": f"{a}+{b}=", "corrupted": f"{a}+{b2}=", "answer": ans, "wrong_answer": alt}
        )
    return items


@pytest.fixture(scope="session")
def arith_task_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("tasks") / "arith.jsonl"
    path.write_text("".join(json.dumps(it) + "\n" for it in _arith_items(16, seed=0)))
    return path


@pytest.fixture(scope="session")
def ragged_task_file(tmp_path_factory):
    """Items of different token lengths (exercises right padding inside a batch)."""
    items = [
        {"clean": "12+35=", "corrupted": "19+38=", "answer": "4", "wrong_answer": "5"},
        {"clean": "7+2=", "corrupted": "9+5=", "answer": "9", "wrong_answer": "1"},
        {"clean": "Step 1: 21+14=", "corrupted": "Step 1: 28+17=", "answer": "3", "wrong_answer": "4"},
        {"clean": "40+27=", "corrupted": "47+29=", "answer": "6", "wrong_answer": "7"},
        {"clean": "3+5=", "corrupted": "6+7=", "answer": "8", "wrong_answer": "1"},
    ]
    path = tmp_path_factory.mktemp("tasks") / "ragged.jsonl"
    path.write_text("".join(json.dumps(it) + "\n" for it in items))
    return path


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    """tiny_checkpoint(arch=..., seed=..., ..., at=None): a tiny local checkpoint built once per set
    of arguments for the whole session (headdb.demo.tiny.build_tiny_model); with `at`, a copy at
    that path, for tests that need a folder layout of their own."""
    import shutil
    from pathlib import Path

    from headdb.demo.tiny import build_tiny_model

    built = {}

    def make(at=None, **kw):
        key = tuple(sorted(kw.items()))
        if key not in built:
            built[key] = build_tiny_model(tmp_path_factory.mktemp("tiny") / "model", **kw)
        if at is None:
            return built[key]
        shutil.copytree(built[key], at)
        return Path(at)

    return make


@pytest.fixture(scope="session")
def two_checkpoint_study(tmp_path_factory, tiny_checkpoint):
    """two_checkpoint_study(manifest_text): a folder with tiny checkpoints `base` and `tuned`, a
    three-item circuit task `t.jsonl` and the manifest as `study.toml`; returns the folder."""

    def make(manifest: str):
        root = tmp_path_factory.mktemp("study")
        tiny_checkpoint(arch="qwen2", n_layers=2, n_heads=4, n_kv_heads=2, d_model=32, seed=3, at=root / "base")
        tiny_checkpoint(arch="qwen2", n_layers=2, n_heads=4, n_kv_heads=2, d_model=32, seed=4, at=root / "tuned")
        (root / "t.jsonl").write_text(
            "".join(
                json.dumps({"clean": f"1{i}+2{i}=", "corrupted": f"1{i}+3{i}=", "answer": "3"}) + "\n" for i in range(3)
            )
        )
        (root / "study.toml").write_text(manifest)
        return root

    return make


def _build(tiny_checkpoint, name, **kw):
    return tiny_checkpoint(**kw)


@pytest.fixture(scope="session")
def qwen2_gqa_dir(tiny_checkpoint):
    """Qwen2, 2 layers, 8 query heads sharing 2 kv heads; small init (near-linear regime)."""
    return _build(
        tiny_checkpoint,
        "qwen2_gqa",
        arch="qwen2",
        n_layers=2,
        n_heads=8,
        n_kv_heads=2,
        d_model=64,
        init_std=0.03,
        seed=1,
    )


@pytest.fixture(scope="session")
def qwen2_strong_dir(tiny_checkpoint):
    """Qwen2 with a larger init: clean and corrupted outputs differ clearly (KL ~ 0.4)."""
    return _build(
        tiny_checkpoint,
        "qwen2_strong",
        arch="qwen2",
        n_layers=2,
        n_heads=4,
        n_kv_heads=2,
        d_model=64,
        init_std=0.1,
        seed=0,
    )


@pytest.fixture(scope="session")
def llama_dir(tiny_checkpoint):
    return _build(
        tiny_checkpoint, "llama", arch="llama", n_layers=2, n_heads=4, n_kv_heads=2, d_model=64, init_std=0.05, seed=2
    )


@pytest.fixture(scope="session")
def qwen3_dir(tiny_checkpoint):
    return _build(
        tiny_checkpoint, "qwen3", arch="qwen3", n_layers=2, n_heads=4, n_kv_heads=2, d_model=64, init_std=0.05, seed=3
    )


PLANTED_HEADS = {(0, 3), (1, 5)}


@pytest.fixture(scope="session")
def planted_dir(tiny_checkpoint):
    """Qwen2 (8 heads, 2 kv heads) where only heads a0.h3 and a1.h5 write to the residual:
    every other head's o_proj columns and every MLP's down_proj are zeroed, the planted heads'
    o_proj columns are scaled up. Any answer-relevant signal must flow through them."""
    import torch
    from transformers import AutoModelForCausalLM

    path = _build(
        tiny_checkpoint, "planted", arch="qwen2", n_layers=2, n_heads=8, n_kv_heads=2, d_model=64, init_std=0.05, seed=3
    )
    model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True)
    d_head = model.config.hidden_size // model.config.num_attention_heads
    with torch.no_grad():
        for L, layer in enumerate(model.model.layers):
            w = layer.self_attn.o_proj.weight  # [d_model, n_heads * d_head]
            for h in range(model.config.num_attention_heads):
                cols = slice(h * d_head, (h + 1) * d_head)
                if (L, h) in PLANTED_HEADS:
                    w[:, cols] *= 4.0
                else:
                    w[:, cols] = 0.0
            layer.mlp.down_proj.weight.zero_()
    model.save_pretrained(path)
    return path


def _load(path, **kw):
    from headdb.checkpoints.loading import load_model

    return load_model(path, device="cpu", **kw)


@pytest.fixture(scope="session")
def planted_heads():
    return set(PLANTED_HEADS)


@pytest.fixture(scope="session")
def load_tiny():
    """load_model(path, device="cpu", **kw), as a fixture (tests need not import conftest)."""
    return _load


@pytest.fixture(scope="session")
def qwen2_gqa(qwen2_gqa_dir):
    return _load(qwen2_gqa_dir)


@pytest.fixture(scope="session")
def qwen2_strong(qwen2_strong_dir):
    return _load(qwen2_strong_dir)


# -- PostgreSQL for the DuckLake tests (tests/postgres_server.py, tests/test_lake.py) ----------


@pytest.fixture(scope="session")
def postgres_server():
    """One PostgreSQL server for the session, on a unix socket only; stopped and deleted after."""
    from postgres_server import PostgresServer, find_bin

    bin_dir = find_bin()
    if bin_dir is None:
        pytest.fail(
            "PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb); "
            "`make test` installs it: apt-get install -y postgresql"
        )
    server = PostgresServer(bin_dir).start()
    yield server
    server.stop()


@pytest.fixture
def lake(postgres_server, tmp_path):
    """A new, empty lake: its --db spec and data path (a database of its own on the server)."""
    from types import SimpleNamespace

    spec = "ducklake:postgres:" + postgres_server.create_database()
    return SimpleNamespace(spec=spec, data_path=tmp_path / "lake-data")


@pytest.fixture
def default_sigint():
    """For the Ctrl-C tests: Python's own SIGINT handler, unblocked in the main thread, whatever an
    earlier test in this worker process left (a library that installed its own handler, a mask
    inherited from a helper thread): the test checks headdb's response to KeyboardInterrupt, not
    the process's history. What it found is reported, so the culprit can be traced."""
    found = signal.getsignal(signal.SIGINT)
    blocked = signal.SIGINT in signal.pthread_sigmask(signal.SIG_BLOCK, [])
    if found is not signal.default_int_handler or blocked:
        warnings.warn(f"SIGINT was {found!r}{' and blocked' if blocked else ''} before this test; reset", stacklevel=1)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, [signal.SIGINT])
    yield
    signal.signal(signal.SIGINT, found)
