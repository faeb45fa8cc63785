"""Benchmark: scoring throughput in one process, without start-up costs.

Generates a synthetic extract of ``--rows`` patients (labels removed, as in a
monthly extract) as Parquet (numeric columns) or CSV (text), then scores it
with :func:`hivcomorb.score.score_extract` without and with reasons, and
prints patients per second, CPU time, peak memory and the load average.
Run ``make run`` (or ``make run QUICK=1``) first so that the model exists.
The table's notes state whether the target of 200,000 patients per second
without reasons is met.

``--model`` takes a bundle file, which has no out-of-distribution detector,
or a registered model (``models:/...``), which has one. ``--repeat`` runs
each case several times and keeps the fastest, because the timings of a
shared machine vary from run to run.

Usage::

    .venv/bin/python bench/bench_score_inprocess.py [--rows 1000000] [--format parquet]
        [--model models:/hivcomorb-demo-aware@champion-aware] [--cases without-reasons] [--repeat 3]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from benchlib import ROOT, measure, publish

CASES = {"without-reasons": False, "with-reasons": True}


# Scoring without reasons must reach this many patients per second on an extract of TARGET_ROWS.
TARGET_PER_SECOND = 200_000
TARGET_ROWS = 1_000_000
WARM_UP_ROWS = 1_000


def write_head(source: Path, target: Path, n_rows: int) -> None:
    """Write the first ``n_rows`` of the extract ``source`` to ``target``, in the same format."""
    import polars as pl

    if source.suffix == ".parquet":
        pl.scan_parquet(source).head(n_rows).collect().write_parquet(target)
    else:
        pl.read_csv(source, infer_schema=False, n_rows=n_rows).write_csv(target)


def write_extract(path: Path, n_rows: int, file_format: str) -> None:
    """Write ``n_rows`` synthetic patients without labels to ``path`` as Parquet or CSV."""
    from hivcomorb.contract import load_contract
    from hivcomorb.synth import generate

    frame = generate(n_rows, 3).extract.drop(columns=load_contract().labels)
    if file_format == "parquet":
        frame.to_parquet(path, index=False)
    else:
        frame.to_csv(path, index=False)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000, help="patients in the extract (default: 1000000)")
    parser.add_argument("--format", choices=("parquet", "csv"), default="parquet", help="extract file format (default: parquet)")
    parser.add_argument(
        "--model",
        "--bundle",
        dest="model",
        default="models:/hivcomorb-demo-aware@champion-aware",
        help=(
            "bundle file or models:/ URI (default: the demo run's registered aware champion, which analysts score "
            "with, out-of-distribution detector included)"
        ),
    )
    parser.add_argument("--cases", nargs="+", choices=list(CASES), default=list(CASES), help="cases to run (default: both)")
    parser.add_argument("--repeat", type=int, default=1, help="runs per case; the fastest is reported (default: 1)")
    parser.add_argument("--extract", default=None, help="extract file to reuse, or to write when it does not exist (default: a temporary file)")
    args = parser.parse_args(argv)

    from hivcomorb.cli import configure_logging
    from hivcomorb.config import load_config
    from hivcomorb.context import RunContext
    from hivcomorb.errors import ModelError
    from hivcomorb.score import score_extract

    configure_logging("WARNING")
    if not args.model.startswith(("models:/", "runs:/")) and not Path(args.model).is_file():
        print(f"model bundle {args.model} not found; run 'make run' first or pass --model", file=sys.stderr)
        return 1
    ctx = RunContext.from_config(load_config("demo", {"score": {"progress": False}}))
    rows = []
    with tempfile.TemporaryDirectory(prefix="hivcomorb-score-bench-") as tmp:
        extract = Path(args.extract) if args.extract else Path(tmp) / f"extract.{args.format}"
        if not extract.is_file():
            write_extract(extract, args.rows, args.format)
        # An untimed run on a few rows pays the one-off costs of the process (Great Expectations'
        # import takes about 4 s, SHAP's about 1 s), which the timed runs would otherwise include.
        warm_up = Path(tmp) / f"warm-up{extract.suffix}"
        write_head(extract, warm_up, WARM_UP_ROWS)
        try:
            for reasons in sorted({CASES[case] for case in args.cases}):
                score_extract(ctx, warm_up, Path(tmp) / "warm-up-scores.parquet", model=args.model, reasons=reasons, track=False)
        except ModelError as exc:
            print(exc, file=sys.stderr)
            return 1
        for case in args.cases:
            runs = []
            for _ in range(args.repeat):
                with measure() as m:
                    result = score_extract(ctx, extract, Path(tmp) / "scores.parquet", model=args.model, reasons=CASES[case], track=False)
                runs.append(m)
            best = min(runs, key=lambda run: run.seconds)
            n_rows = result["counts"]["rows_read"]
            loads = ", ".join(f"{run.load_average:.1f}" for run in runs)
            rows.append([case, n_rows, best.seconds, n_rows / best.seconds, best.cpu_seconds, best.peak_mib, loads])
    target = []
    for case, n_rows, _, rate, *_ in rows:
        if case != "without-reasons":
            continue
        if n_rows >= TARGET_ROWS:
            verdict = "met" if rate >= TARGET_PER_SECOND else "not met"
        else:
            verdict = f"not judged, because it applies to {TARGET_ROWS:,} rows"
        target.append(f"target without reasons: {TARGET_PER_SECOND:,} patients/s on 2 cores; {verdict} ({rate:,.0f})")
    publish(
        "score-inprocess",
        "Scoring in one process",
        ["case", "patients", "seconds", "patients/s", "CPU s", "peak RSS MiB", "load average per run"],
        rows,
        notes=[
            f"model: {args.model}; {args.format} extract; fastest of {args.repeat} run(s) per case",
            "CPU s: user and system time of the process; on 2 cores the seconds are at least half of it",
            "peak RSS: the whole process, including what generating the extract in it left allocated",
            "load average: 1-minute load average at the end of each run; above the core count, other jobs shared the cores",
            *target,
        ],
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
