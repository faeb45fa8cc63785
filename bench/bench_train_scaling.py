"""Benchmarks (b) and (d): XGBoost training time and memory against cohort size.

For each size, a fresh process generates the synthetic cohort, builds the
aware feature matrix and fits one XGBoost model per label (rows with a known
label only) with the parameters of ``conf/stages/train.yaml``. The growth
exponent is the slope of log(time) on log(size) from 22,000 patients up.
With a usable CUDA device the same fits run on the GPU too, and the table
adds the agreement between CPU and GPU predicted probabilities.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from benchlib import measure, publish

SIZES = (2_200, 22_000, 220_000, 1_000_000)


def fit_all_labels(n_patients: int, device: str, seed: int = 1) -> dict:
    """Generate a cohort of ``n_patients`` and fit every label; return timings."""
    from hivcomorb.config import load_config
    from hivcomorb.contract import load_contract
    from hivcomorb.features import build_matrix, input_columns, label_matrix
    from hivcomorb.models import xgboost_estimator
    from hivcomorb.synth import generate

    config = load_config("demo")
    contract = load_contract()
    cohort = generate(n_patients, seed, options=config.get("synth"), contract=contract).extract
    columns = input_columns(contract, cohort.columns, "aware")
    with measure() as fit:
        matrix = build_matrix(cohort, contract, columns)
        labels = label_matrix(cohort, contract.labels)
        probabilities = []
        for label in contract.labels:
            known = labels[label].notna().to_numpy()
            estimator = xgboost_estimator(config, device=device)
            estimator.fit(matrix[known], labels[label][known].to_numpy().astype(int))
            probabilities.append(estimator.predict_proba(matrix.iloc[:2000])[:, 1])
    return {"seconds": fit.seconds, "peak_mib": fit.peak_mib, "probabilities": np.concatenate(probabilities).tolist()}


def run_one_in_subprocess(n_patients: int, device: str) -> dict:
    command = [sys.executable, str(Path(__file__).resolve()), "--one", str(n_patients), "--device", device]
    completed = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(completed.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES), help="cohort sizes (patients)")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--device", default="cpu", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.one:
        print(json.dumps(fit_all_labels(args.one, args.device)))
        return 0

    from hivcomorb.device import cuda_status

    gpu, reason = cuda_status()
    rows, times = [], []
    for size in args.sizes:
        cpu = run_one_in_subprocess(size, "cpu")
        times.append(cpu["seconds"])
        row = [size, cpu["seconds"], cpu["peak_mib"]]
        if gpu:
            cuda = run_one_in_subprocess(size, "cuda")
            diff = np.abs(np.asarray(cpu["probabilities"]) - np.asarray(cuda["probabilities"]))
            row += [cuda["seconds"], cuda["peak_mib"], float(diff.max())]
        rows.append(row)
        print(f"{size:>10,} patients: {cpu['seconds']:.1f} s", file=sys.stderr, flush=True)

    sizes = np.asarray(args.sizes, dtype=float)
    upper = sizes >= 22_000
    notes = []
    if upper.sum() >= 2:
        slope = np.polyfit(np.log(sizes[upper]), np.log(np.asarray(times)[upper]), 1)[0]
        notes.append(f"growth exponent from 22,000 patients up: {slope:.2f} (1.0 is linear)")
    notes.append("GPU: " + ("present" if gpu else f"absent ({reason}), so no CPU-GPU comparison"))
    header = ["patients", "CPU fit s", "CPU peak RSS MiB"]
    if gpu:
        header += ["GPU fit s", "GPU peak RSS MiB", "max |p_cpu - p_gpu|"]
    publish("train-scaling", "XGBoost training, aware setting, all labels", header, rows, notes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
