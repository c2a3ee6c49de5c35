"""benchmarks/gpu_check.sh in its dry mode (CPU, tiny shapes): the one-command GPU check runs end
to end and its JSON holds every section with meaningful values."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_gpu_check_dry_run_writes_every_section(tmp_path):
    out = tmp_path / "check.json"
    env = {**os.environ, "HEADDB_PYTHON": sys.executable, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [str(ROOT / "benchmarks" / "gpu_check.sh"), "--dry", "--json", str(out), "--threads", "1"],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "DRY RUN on CPU" in proc.stdout
    res = json.loads(out.read_text())
    assert res["dry"] is True and res["device"] == "cpu" and not res["skipped"]
    # the same CPU call twice: equal scores (on a GPU this compares CUDA with CPU)
    assert {r["arch"] for r in res["scores"]} == {"qwen2", "qwen3"}
    assert all(r["ok"] and r["max_rel_diff"] <= 1e-6 and r["pearson"] > 0.999999 for r in res["scores"])
    points = {(r["shape"], r["seq"], r["scoring"]) for r in res["shapes"]}
    scorings = ("per-step", "summed", "planned", "circuits")
    assert points == {("tiny3", n, scoring) for n in (32, 64) for scoring in scorings}
    # "planned" ran what the plan takes at the point with memory to spare
    assert all(r["model"]["planned"] for r in res["shapes"] if r["scoring"] == "planned")
    for r in res["shapes"]:
        assert r["engine"]["fits"] and r["baseline"]["fits"], r
        for key in ("time_ratio", "peak_ratio", "model_error_total"):
            assert math.isfinite(r[key]), (key, r)
        if r["scoring"] != "circuits":  # a faithfulness evaluation (no backward) may hold less
            assert r["peak_ratio"] > 1  # the engine holds more than one plain pass
        assert abs(r["weights_error"]) < 1e-9  # the model counts the loaded parameters exactly
    for r in res["largest"]:
        assert r["predicted_batch"] >= r["run_batch"] >= 1 and r["fits"] is True
        assert r["plan"] == "per-step" or r["plan"].startswith("factored:")
    gen = res["generation"]
    assert gen["plain_tokens_per_s"] > 0 and gen["ablated_tokens_per_s"] > 0 and gen["ablated_heads"] > 0
    # timed after a warm-up of the same shape, in alternating rounds; the ratio is their median
    assert len(gen["plain_tokens_per_s_all"]) == len(gen["ablated_tokens_per_s_all"]) == gen["rounds"] == 3


def test_gpu_check_runs_only_the_parts_asked_and_refuses_an_unknown_one(tmp_path):
    out = tmp_path / "check.json"
    env = {**os.environ, "HEADDB_PYTHON": sys.executable, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    script = str(ROOT / "benchmarks" / "gpu_check.sh")
    bad = subprocess.run([script, "--dry", "--parts", "scores,shape"], capture_output=True, text=True, env=env)
    assert bad.returncode == 2 and "unknown --parts shape; choose from scores, shapes" in bad.stderr, bad.stderr
    proc = subprocess.run(
        [script, "--dry", "--json", str(out), "--threads", "1", "--parts", "generate"],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    res = json.loads(out.read_text())
    assert res["parts"] == ["generate"] and "scores" not in res and res["shapes"] == res["largest"] == []
    assert res["generation"]["plain_tokens_per_s"] > 0
