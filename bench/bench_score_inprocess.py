"""Benchmark: scoring throughput in one process, without start-up costs.

Generates a synthetic extract of ``--rows`` patients (labels removed, as in a
monthly extract), then scores it with :func:`hivcomorb.score.score_extract`
from a saved champion bundle, without and with reasons, and prints patients
per second and peak memory. Run ``make run`` (or ``make run QUICK=1``) first
so that the bundle exists.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from benchlib import ROOT, measure, publish


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000, help="patients in the extract (default: 1000000)")
    parser.add_argument(
        "--bundle",
        default=str(ROOT / "artifacts" / "demo" / "train" / "models" / "aware.joblib"),
        help="saved champion bundle (default: the demo run's aware champion)",
    )
    args = parser.parse_args(argv)

    from hivcomorb.cli import configure_logging
    from hivcomorb.config import load_config
    from hivcomorb.context import RunContext
    from hivcomorb.contract import load_contract
    from hivcomorb.score import score_extract
    from hivcomorb.synth import generate

    configure_logging("WARNING")
    bundle = Path(args.bundle)
    if not bundle.is_file():
        print(f"bundle {bundle} not found; run 'make run' first or pass --bundle", file=sys.stderr)
        return 1
    ctx = RunContext.from_config(load_config("demo", {"score": {"progress": False}}))
    rows = []
    with tempfile.TemporaryDirectory(prefix="hivcomorb-score-bench-") as tmp:
        extract = Path(tmp) / "extract.parquet"
        generate(args.rows, 3).extract.drop(columns=load_contract().labels).to_parquet(extract, index=False)
        for reasons in (False, True):
            with measure() as m:
                score_extract(ctx, extract, Path(tmp) / "scores.parquet", model=str(bundle), reasons=reasons, track=False)
            rows.append(["with reasons" if reasons else "without reasons", args.rows, m.seconds, args.rows / m.seconds, m.peak_mib])
    publish(
        "score-inprocess",
        "Scoring in one process",
        ["case", "patients", "seconds", "patients/s", "peak RSS MiB"],
        rows,
        notes=[f"bundle: {bundle.name}", "peak RSS includes the generated extract held before scoring"],
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
