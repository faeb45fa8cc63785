"""Benchmark: ingest a large synthetic extract with a mix of real-world defects.

Writes a semicolon-delimited CSV with every contract lab, demographic, social
and label column, where a share of cells carry the defects ingestion must
handle: censored results, detection-limit words, decimal commas, stray units,
missing-value words, unparseable text, impossible values, out-of-range ages,
duplicate ids and yes/no labels. It then runs :func:`hivcomorb.ingest.ingest_file`
with Great Expectations validation and prints rows per second and peak memory.

Usage::

    .venv/bin/python bench/bench_ingest.py [--rows 1000000] [--seed 7] [--keep FILE]
"""

from __future__ import annotations

import argparse
import logging
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl

from hivcomorb.contract import load_contract
from hivcomorb.ingest import ingest_file


def make_extract(n_rows: int, seed: int) -> pl.DataFrame:
    """Return a synthetic extract as text columns, with about 1% of cells defective per kind.

    Object arrays go to polars as lists, because polars 2 cannot cast a NumPy
    object array that mixes strings and ``None``.
    """
    rng = np.random.default_rng(seed)
    contract = load_contract()
    columns: dict[str, pl.Series] = {}
    ids = np.char.add("P", np.arange(n_rows).astype(str))
    duplicates = rng.choice(n_rows, size=max(1, n_rows // 2000), replace=False)
    ids[duplicates] = ids[(duplicates + 1) % n_rows]
    columns["patient_id"] = pl.Series(ids)

    ages = rng.uniform(18, 90, n_rows).round(1).astype(str).astype(object)
    ages[rng.random(n_rows) < 0.002] = "16"
    columns["age"] = pl.Series(ages.astype(str))
    for name in contract.demographics + contract.social:
        column = contract.column(name)
        if column.dtype == "category":
            values = rng.choice(list(column.categories), n_rows).astype(object)
            values[rng.random(n_rows) < 0.01] = "Not stated"
            values[rng.random(n_rows) < 0.01] = None
            columns[name] = pl.Series(values.tolist(), dtype=pl.String)
        elif column.dtype == "integer":
            columns[name] = pl.Series(rng.integers(1, 6, n_rows).astype(str))

    for name in contract.labs:
        column = contract.column(name)
        low, high = column.usual
        values = rng.uniform(max(low, column.possible[0]), high * 1.2, n_rows)
        text = np.char.mod("%.2f", values).astype(object)
        draw = rng.random(n_rows)
        text[draw < 0.01] = np.char.replace(text[draw < 0.01].astype(str), ".", ",")
        text[(draw >= 0.01) & (draw < 0.02)] = np.char.add(text[(draw >= 0.01) & (draw < 0.02)].astype(str), f" {column.unit}")
        text[(draw >= 0.02) & (draw < 0.03)] = "NA"
        text[(draw >= 0.03) & (draw < 0.04)] = None
        text[(draw >= 0.04) & (draw < 0.0405)] = "haemolysed"
        text[(draw >= 0.0405) & (draw < 0.041)] = "-5"
        if column.detection_limit is not None:
            text[(draw >= 0.05) & (draw < 0.15)] = "TND"
            text[(draw >= 0.15) & (draw < 0.25)] = "<20"
        columns[name] = pl.Series(text.tolist(), dtype=pl.String)

    for name in contract.labels:
        values = rng.choice(["1", "0", "yes", "no", "Y", "N", "", "TRUE"], n_rows).astype(object)
        values[rng.random(n_rows) < 0.001] = "maybe"
        columns[name] = pl.Series(values.tolist(), dtype=pl.String)
    return pl.DataFrame(columns)


def main(argv: list[str] | None = None) -> int:
    """Write the synthetic extract, ingest it and print throughput and peak memory."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows in the synthetic extract (default: 1000000)")
    parser.add_argument("--seed", type=int, default=7, help="random seed (default: 7)")
    parser.add_argument("--keep", default=None, help="write the extract here instead of a temporary folder")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    contract = load_contract()
    started = time.perf_counter()
    extract = make_extract(args.rows, args.seed)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(args.keep) if args.keep else Path(folder) / "extract.csv"
        extract.write_csv(path, separator=";")
        del extract
        size_mb = path.stat().st_size / 1e6
        generated = time.perf_counter() - started

        started = time.perf_counter()
        result = ingest_file(path, contract)
        elapsed = time.perf_counter() - started

    # ru_maxrss is in KiB on Linux and in bytes on macOS.
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    peak_mb = peak / 1e6 if sys.platform == "darwin" else peak / 1024
    summary = result.summary
    print(f"extract: {args.rows:,} rows, {size_mb:.0f} MB CSV, generated in {generated:.1f} s")
    print(f"ingest: {elapsed:.1f} s, {args.rows / elapsed:,.0f} rows/s, peak resident memory {peak_mb:,.0f} MB")
    print(f"{summary['reconciliation']}; quarantined by rule: {summary['quarantine_by_rule']}")
    print(f"validation: {summary['validation']['statistics']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
