"""Writer processes for crash and concurrency tests (run as scripts, not collected by pytest)."""
from __future__ import annotations

import sys

import numpy as np
import pyarrow as pa

import headdb


def edge_table(n: int, seed: int) -> pa.Table:
    rng = np.random.default_rng(seed)
    return pa.table({"edge_id": pa.array(np.arange(n, dtype=np.int32)),
                     "score": pa.array(rng.standard_normal(n).astype(np.float32))})


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


if __name__ == "__main__":
    command, *args = sys.argv[1:]
    if command == "big":
        big_writer(args[0], int(args[1]), args[2])
    elif command == "many":
        many_runs(args[0], args[1], int(args[2]), int(args[3]))
