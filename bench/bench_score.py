"""Benchmark: score large synthetic extracts with a registered model.

Fits a demographic-aware XGBoost bundle (one classifier per contract label)
on a synthetic cohort and registers it, with its out-of-distribution
detector, in a temporary MLflow store. Then it writes synthetic extracts of
the requested sizes as Parquet, block by block so that writing needs little
memory. Each case scores an extract through
:func:`hivcomorb.score.score_extract` in a fresh process and reports wall
time, rows per second and the peak resident memory of that process:

1. ``--rows`` patients without reasons;
2. the same extract with the top 3 SHAP reasons per flagged label (skip it
   with ``--no-reasons-case``);
3. ``--stream-rows`` patients, with reasons unless ``--no-stream-reasons``,
   to show that memory stays bounded by the chunk size (skip it with
   ``--stream-rows 0``).

Usage::

    .venv/bin/python bench/bench_score.py [--rows 1000000] [--stream-rows 10000000] [--chunk-rows 100000]
        [--no-reasons-case] [--no-stream-reasons]

The table goes to standard output and ``reports/bench/score.md``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from benchlib import measure, publish  # noqa: E402

MODEL_SEED = 7
BLOCK_ROWS = 250_000


def write_extract(path: Path, n_rows: int, seed: int) -> None:
    """Write ``n_rows`` synthetic patients without labels to Parquet, one block at a time."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from hivcomorb.contract import load_contract
    from hivcomorb.synth import generate

    contract = load_contract()
    writer = None
    written = 0
    block = 0
    try:
        while written < n_rows:
            size = min(BLOCK_ROWS, n_rows - written)
            frame = generate(size, seed + block).extract.drop(columns=contract.labels)
            # Each block restarts its ids at P0000001; number them across the file instead.
            frame[contract.id_column] = [f"P{i:09d}" for i in range(written + 1, written + size + 1)]
            table = pa.Table.from_pandas(frame, preserve_index=False)
            if writer is None:
                writer = pq.ParquetWriter(path, table.schema, compression="zstd")
            writer.write_table(table)
            written += size
            block += 1
    finally:
        if writer is not None:
            writer.close()


def register_model(root: Path) -> str:
    """Fit and register the benchmark's aware model under ``root`` and return its URI."""
    import mlflow
    from xgboost import XGBClassifier

    from hivcomorb import registry, tracking
    from hivcomorb.bundle import ModelBundle
    from hivcomorb.config import load_config
    from hivcomorb.context import RunContext
    from hivcomorb.device import xgboost_params
    from hivcomorb.features import build_matrix, input_columns
    from hivcomorb.synth import generate

    config = load_config("demo", {"paths": {"artifacts": str(root / "artifacts"), "reports": str(root / "reports")}})
    ctx = RunContext.from_config(config)
    contract = ctx.contract
    cohort = generate(2200, MODEL_SEED).extract
    columns = input_columns(contract, cohort.columns, "aware")
    matrix = build_matrix(cohort, contract, columns)
    estimators, thresholds = {}, {}
    for label in contract.labels:
        known = cohort[label].notna().to_numpy()
        target = cohort.loc[known, label].astype(int)
        estimators[label] = XGBClassifier(n_estimators=200, max_depth=4, learning_rate=0.05, **xgboost_params("cpu")).fit(matrix[known], target)
        thresholds[label] = float(target.mean())
    ranges = {c: (float(cohort[c].min()), float(cohort[c].max())) for c in columns if contract.column(c).dtype != "category"}
    bundle = ModelBundle("aware", "xgboost", contract.labels, columns, list(matrix.columns), estimators, thresholds, contract.version, ranges)
    bundle.save(registry.bundle_path(ctx, "aware"))
    (ctx.artifacts / "ingest").mkdir(parents=True, exist_ok=True)
    cohort.to_parquet(ctx.artifacts / "ingest" / "cohort.parquet", index=False)

    tracking.configure()
    # With MLFLOW_TRACKING_URI set, MLflow would put artifacts in ./mlruns; keep them under root.
    experiment_id = mlflow.create_experiment("bench", artifact_location=(root / "mlflow" / "artifacts").as_uri())
    mlflow.set_experiment(experiment_id=experiment_id)
    with mlflow.start_run(run_name="register"):
        entry = registry.log_and_register(ctx, bundle, registry.bundle_path(ctx, "aware"))
    return entry["uri"]


def run_case(extract: Path, model: str, out: Path, reasons: bool, chunk_rows: int) -> dict[str, Any]:
    """Score one extract in this process and return time, memory and counts."""
    from hivcomorb.config import load_config
    from hivcomorb.context import RunContext
    from hivcomorb.score import score_extract

    config = load_config("demo", {"score": {"progress": False}})
    ctx = RunContext.from_config(config)
    with measure() as took:
        result = score_extract(ctx, extract, out, model=model, reasons=reasons, chunk_rows=chunk_rows, track=False)
    counts = result["counts"]
    return {
        "seconds": took.seconds,
        "cpu_seconds": took.cpu_seconds,
        "peak_mib": took.peak_mib,
        "load_average": took.load_average,
        "rows_read": counts["rows_read"],
        "rows_scored": counts["rows_scored"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000, help="patients in the first two cases (default: 1000000)")
    parser.add_argument("--stream-rows", type=int, default=10_000_000, help="patients in the streaming case; 0 skips it (default: 10000000)")
    parser.add_argument("--chunk-rows", type=int, default=100_000, help="rows per chunk (default: 100000)")
    parser.add_argument(
        "--reasons-case",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also score the --rows extract with reasons (default: on)",
    )
    parser.add_argument(
        "--stream-reasons",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="write reasons in the streaming case (default: on)",
    )
    parser.add_argument("--workdir", default=None, help="folder for the extracts, store and outputs (default: a temporary folder)")
    parser.add_argument("--case", nargs=5, metavar=("EXTRACT", "MODEL", "OUT", "REASONS", "CHUNK_ROWS"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    if args.case:
        extract, model, out, reasons, chunk_rows = args.case
        print(json.dumps(run_case(Path(extract), model, Path(out), reasons == "1", int(chunk_rows))))
        return 0

    with tempfile.TemporaryDirectory(prefix="hivcomorb-bench-score-", dir=args.workdir) as tmp:
        root = Path(tmp)
        store = root / "mlflow"
        store.mkdir()
        env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{(store / 'mlflow.db').as_posix()}"}
        os.environ.update(env)
        print("Registering the benchmark model ...", flush=True)
        model = register_model(root)

        plans = [("no reasons", args.rows, False)]
        if args.reasons_case:
            plans.append(("with reasons", args.rows, True))
        if args.stream_rows:
            plans.append((f"streaming, {'with' if args.stream_reasons else 'no'} reasons", args.stream_rows, args.stream_reasons))
        extracts: dict[int, Path] = {}
        rows = []
        for name, n_rows, reasons in plans:
            if n_rows not in extracts:
                print(f"Writing a {n_rows:,}-row extract ...", flush=True)
                extracts[n_rows] = root / f"extract-{n_rows}.parquet"
                write_extract(extracts[n_rows], n_rows, seed=1000)
            print(f"Scoring: {name}, {n_rows:,} rows ...", flush=True)
            command = [sys.executable, __file__, "--case", str(extracts[n_rows]), model, str(root / f"scores-{name.replace(' ', '_').replace(',', '')}.parquet"), "1" if reasons else "0", str(args.chunk_rows)]
            completed = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
            if completed.returncode != 0:
                print(completed.stderr[-4000:], file=sys.stderr)
                return 1
            case = json.loads(completed.stdout.strip().splitlines()[-1])
            rows.append(
                [name, case["rows_read"], case["seconds"], case["rows_read"] / case["seconds"], case["cpu_seconds"], case["peak_mib"], case["load_average"]]
            )
            extracts_done = {n for _, n, _ in plans[len(rows):]}
            if n_rows not in extracts_done:
                extracts.pop(n_rows).unlink()

    publish(
        "score",
        "Scoring new extracts (hivcomorb score)",
        ["case", "rows", "seconds", "rows/s", "CPU s", "peak RSS MiB", "load average"],
        rows,
        notes=[
            f"chunks of {args.chunk_rows:,} rows; Parquet input; XGBoost, 9 labels x 200 trees of depth 4; "
            "isolation-forest out-of-distribution check; Great Expectations once per extract on the deciding rows",
            "each case runs in its own process; peak RSS covers that process and its children",
            "load average: 1-minute load average when the case ended; above the core count, other jobs shared the cores",
        ],
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
