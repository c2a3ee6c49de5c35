"""Writer processes for crash and concurrency tests (run as scripts, not collected by pytest).

`path` is a DuckDB file or a lake spec (`ducklake:postgres:...`, its data path in $HEADDB_DATA_PATH).
"""

from __future__ import annotations

import json
import os
import sys
import time

import numpy as np
import pyarrow as pa

import headdb


def edge_table(n: int, seed: int) -> pa.Table:
    rng = np.random.default_rng(seed)
    return pa.table(
        {
            "edge_id": pa.array(np.arange(n, dtype=np.int32)),
            "score": pa.array(rng.standard_normal(n).astype(np.float32)),
        }
    )


def big_writer(path: str, n_rows: int, tag: str) -> None:
    """Start one run with n_rows edge scores; announce the commit so the parent can kill us in it."""
    db = headdb.connect(path, lock_timeout=60)
    run = db.start_run("attribution", config={"tag": tag})
    run.add("edge_scores", edge_table(n_rows, seed=1))
    run.metric("rows", n_rows)
    print("committing", flush=True)
    with run:
        pass
    print("done", flush=True)


def many_runs(path: str, worker: str, n_runs: int, n_rows: int) -> None:
    db = headdb.connect(path, lock_timeout=120)
    for i in range(n_runs):
        run = db.start_run("attribution", config={"worker": worker, "i": i})
        with run:
            run.add("edge_scores", edge_table(n_rows, seed=i))
    print("finished", flush=True)


# A one-layer, two-head graph layout written by hand (the real builder imports torch: slow to start).
LAKE_LAYOUT = (
    pa.table(
        {
            "node_id": pa.array([0, 1, 2, 3, 4], pa.int32()),
            "name": ["input", "a0.h0", "a0.h1", "m0", "logits"],
            "kind": ["input", "attn", "attn", "mlp", "logits"],
            "layer": pa.array([None, 0, 0, 0, None], pa.int32()),
            "head": pa.array([None, 0, 1, None, None], pa.int32()),
        }
    ),
    pa.table(
        {
            "edge_id": pa.array([0, 1, 2], pa.int32()),
            "src_node": pa.array([0, 1, 3], pa.int32()),
            "dst_node": pa.array([1, 3, 4], pa.int32()),
            "dst_port": ["q", "", ""],
            "name": ["input->a0.h0<q>", "a0.h0->m0", "m0->logits"],
        }
    ),
)


def lake_runs(spec: str, worker: str, n_runs: int, n_rows: int, go_file: str) -> None:
    """Register shared and own entities, then n_runs attribution runs with edge scores and two
    circuits each, all as fast as possible, starting together with the other writers."""
    from headdb.warehouse.lake import LakeSink

    # Writers named opt-* skip the turn (optimistic only): they race the others and must lose
    # some commits, which the test counts.
    sink = LakeSink(
        spec, data_path=os.environ["HEADDB_DATA_PATH"], retry_timeout=120, take_turns=not worker.startswith("opt-")
    )
    db = headdb.connect(sink=sink)
    print("ready", flush=True)
    while not os.path.exists(go_file):
        time.sleep(0.01)
    nodes, edges = LAKE_LAYOUT
    db.register_model(
        {
            "model_key": "m",
            "architecture": "Qwen2ForCausalLM",
            "n_layers": 1,
            "n_heads": 2,
            "n_kv_heads": 2,
            "d_model": 8,
            "d_head": 4,
            "vocab_size": 10,
        },
        nodes,
        edges,
    )
    shared = db.register_checkpoint(
        model_key="m",
        path="/ckpt/shared",
        weights_digest="d-shared",
        name="shared",
        lineage="shared",
        regime="base",
        step=0,
    )
    own = db.register_checkpoint(
        model_key="m",
        path=f"/ckpt/{worker}",
        weights_digest=f"d-{worker}",
        name=worker,
        lineage=worker,
        regime="sft",
        step=100,
        parent_id=shared,
    )
    task = db.register_task(
        name="math",
        kind="circuit",
        digest="t-math",
        items=pa.table({"item_id": ["m1", "m2"], "problem": ["1+1", "2+2"]}),
    )
    for i in range(n_runs):
        run = db.start_run(
            "attribution", config={"worker": worker, "i": i}, checkpoint_id=shared if i % 2 == 0 else own, task_id=task
        )
        with run:
            run.add("edge_scores", edge_table(n_rows, seed=i))
            run.add(
                "circuits",
                pa.table(
                    {
                        "circuit_id": pa.array([0, 1], pa.int64()),
                        "selection": ["threshold", "topn"],
                        "n_edges": pa.array([5, 3], pa.int32()),
                        "n_nodes": pa.array([4, 3], pa.int32()),
                    }
                ),
            )
            run.add(
                "circuit_heads",
                pa.table(
                    {
                        "circuit_id": pa.array([0, 1, 1], pa.int64()),
                        "layer": pa.array([0, 0, 0], pa.int32()),
                        "head": pa.array([i % 2, i % 2, 1 - i % 2], pa.int32()),
                    }
                ),
            )
    print(json.dumps({"conflicts": sink.conflicts, "turn_waits": sink.turn_waits}), flush=True)


if __name__ == "__main__":
    command, *args = sys.argv[1:]
    if command == "big":
        big_writer(args[0], int(args[1]), args[2])
    elif command == "many":
        many_runs(args[0], args[1], int(args[2]), int(args[3]))
    elif command == "lake-runs":
        lake_runs(args[0], args[1], int(args[2]), int(args[3]), args[4])
