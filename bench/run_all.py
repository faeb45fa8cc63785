"""Run every benchmark in this folder in turn (``make bench``).

Each benchmark prints its table and writes it to ``reports/bench/``.
``--fast`` scales the sizes down for a smoke run.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--fast", action="store_true", help="smaller sizes, for a smoke run")
    args = parser.parse_args(argv)
    python = sys.executable
    plans = [
        ["bench_pipeline.py", "--quick"],
        ["bench_pipeline.py"],
        ["bench_train_scaling.py"] + (["--sizes", "2200", "22000"] if args.fast else []),
        ["bench_ingest.py"] + (["--rows", "100000"] if args.fast else []),
        ["bench_score.py"] + (["--rows", "100000", "--stream-rows", "0"] if args.fast else []),
        ["bench_score_inprocess.py"] + (["--rows", "100000"] if args.fast else []),
    ]
    failed = []
    for plan in plans:
        script = HERE / plan[0]
        if not script.is_file():
            print(f"skipping {plan[0]}: not found", file=sys.stderr)
            continue
        print(f"\n# {' '.join(plan)}", flush=True)
        if subprocess.run([python, str(script), *plan[1:]], cwd=HERE).returncode != 0:
            failed.append(plan[0])
    if failed:
        print(f"benchmarks failed: {failed}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
