"""`make bench`: every benchmark, one after the other (never side by side: the numbers are ratios
measured on a shared machine), with its default sizes or, with --quick, small ones for a smoke run.

    python benchmarks/run_all.py [--quick] [--only attribution,warehouse,...]

Each benchmark prints its table; copy the numbers you keep into benchmarks/RESULTS.md with the
machine, the command and the date.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
# name -> (script, full arguments, quick arguments)
BENCHMARKS = {
    "attribution": (
        "bench_attribution.py",
        ["--threads", "1"],
        ["--shape", "tiny", "--repeats", "1", "--threads", "1"],
    ),
    "generation": ("bench_generation.py", [], ["--prompts", "16", "--new-tokens", "8"]),
    "warehouse": (
        "bench_warehouse.py",
        [],
        ["--checkpoints", "3", "--layers", "8", "--heads", "8", "--repeat", "1", "--skip-baseline"],
    ),
}
EXTRA = sorted(
    p.stem.removeprefix("bench_") for p in HERE.glob("bench_*.py") if p.stem.removeprefix("bench_") not in BENCHMARKS
)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes: checks that every benchmark runs")
    ap.add_argument("--only", default=None, help="comma-separated names: " + ", ".join([*BENCHMARKS, *EXTRA]))
    args = ap.parse_args()
    names = args.only.split(",") if args.only else [*BENCHMARKS, *EXTRA]
    failed = []
    for name in names:
        script, full, quick = BENCHMARKS.get(name, (f"bench_{name}.py", [], ["--quick"]))
        if not (HERE / script).is_file():
            print(f"unknown benchmark {name!r}", file=sys.stderr)
            return 2
        cmd = [sys.executable, str(HERE / script), *(quick if args.quick else full)]
        print(f"\n=== {name}: {' '.join(cmd[1:])}", flush=True)
        started = time.monotonic()
        code = subprocess.call(cmd)
        print(f"=== {name}: exit {code} after {time.monotonic() - started:.0f} s", flush=True)
        if code:
            failed.append(name)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
