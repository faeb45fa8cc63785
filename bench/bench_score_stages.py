"""Benchmark: where scoring spends its time, stage by stage.

Scores an extract with :func:`hivcomorb.score.score_extract` in one thread:
chunks are ingested and scored one after another, and estimators predict on
one thread each. Wrappers around the functions of each stage add up their wall
and CPU time, so the table shows the CPU seconds each stage costs and the rows
per CPU second it would reach alone. On 2 cores, a run whose stages overlap
takes at least half the total CPU time.

Great Expectations is imported before the timed run; its import (several
seconds, once per process) is printed separately.

Usage::

    .venv/bin/python bench/bench_score_stages.py EXTRACT [--model BUNDLE] [--ood DETECTOR]

``BUNDLE`` is a bundle file (default: the demo run's aware champion).
``DETECTOR`` is a joblib file of an :class:`hivcomorb.pyfunc.OutOfDistributionDetector`,
such as ``ood_detector.joblib`` among the artifacts of a registered model.
"""

from __future__ import annotations

import argparse
import collections
from concurrent.futures import Future
import functools
import importlib
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from benchlib import ROOT, publish

# (module, attribute, stage): the functions each stage runs. An attribute that a
# version of hivcomorb lacks is skipped, so the script also profiles older code.
STAGES = [
    ("hivcomorb.score.reader:ExtractSource", "id_census", "id census (first pass)"),
    ("hivcomorb.score", "file_sha256", "extract SHA-256"),
    ("hivcomorb.ingest", "ingest_frame", "ingest: other"),
    ("hivcomorb.ingest.canonical", "_parse_ids", "ingest: ids"),
    ("hivcomorb.ingest.canonical", "_parse_number_column", "ingest: numbers (parse, units, rules)"),
    ("hivcomorb.ingest.canonical", "parse_clean_numbers", "ingest: numbers (parse, units, rules)"),
    ("hivcomorb.ingest.canonical", "parse_category", "ingest: categories"),
    ("hivcomorb.ingest.canonical", "_assemble", "ingest: assemble and quarantine"),
    ("hivcomorb.ingest.canonical", "_quarantine_frame", "ingest: assemble and quarantine"),
    ("hivcomorb.ingest.canonical", "content_hash", "ingest: content hash"),
    ("hivcomorb.ingest.canonical", "_to_pandas", "ingest: to pandas"),
    ("hivcomorb.ingest.canonical", "_summarise", "ingest: summary"),
    ("hivcomorb.ingest.canonical", "_run_validation", "validation: Great Expectations per chunk"),
    ("hivcomorb.ingest.validate", "deciding_rows", "validation: deciding rows"),
    ("hivcomorb.ingest.validate:CompactCohort", "add", "validation: deciding rows"),
    ("hivcomorb.ingest.validate:CompactCohort", "validate", "validation: Great Expectations once"),
    ("hivcomorb.score", "_quarantine_repeated_ids", "score: other"),
    ("hivcomorb.score", "score_chunk", "score: other"),
    ("hivcomorb.bundle:ModelBundle", "features", "score: feature matrix"),
    ("hivcomorb.score", "single_block", "score: feature matrix"),
    ("hivcomorb.bundle:ModelBundle", "predict_proba_matrix", "score: model predict"),
    ("hivcomorb.score", "predict_label", "score: model predict"),
    ("hivcomorb.score.model", "predict_label", "score: model predict"),
    ("hivcomorb.score.linear:LinearLabels", "predict", "score: model predict"),
    ("hivcomorb.score", "range_flags", "score: out-of-distribution range flags"),
    ("hivcomorb.score", "isolation_flags", "score: out-of-distribution detector"),
    ("hivcomorb.score", "detector_flags", "score: out-of-distribution detector"),
    ("hivcomorb.score", "join_reasons", "score: out-of-distribution range flags"),
    ("hivcomorb.score.writer:ChunkWriter", "write", "write"),
    ("hivcomorb.score.writer:ChunkWriter", "commit", "write"),
    ("hivcomorb.score.summary:ScoreCounts", "add_chunk", "summary counts"),
    ("hivcomorb.score.summary:ScoreCounts", "add_quarantine", "summary counts"),
]


class StageClock:
    """Wall and CPU seconds per stage; time spent in a nested stage counts only for that stage."""

    def __init__(self) -> None:
        self.wall: collections.Counter = collections.Counter()
        self.cpu: collections.Counter = collections.Counter()
        self._open: list[str] = []

    def wrap(self, stage: str, function: Callable[..., Any]) -> Callable[..., Any]:
        """Return ``function`` with its time added to ``stage``."""

        @functools.wraps(function)
        def timed(*args: Any, **kwargs: Any) -> Any:
            wall, cpu = time.perf_counter(), time.process_time()
            self._open.append(stage)
            try:
                return function(*args, **kwargs)
            finally:
                self._open.pop()
                wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
                self.add(stage, wall, cpu)
                if self._open:
                    self.add(self._open[-1], -wall, -cpu)

        return timed

    def add(self, stage: str, wall: float, cpu: float) -> None:
        """Add seconds to ``stage``."""
        self.wall[stage] += wall
        self.cpu[stage] += cpu


def install(clock: StageClock) -> None:
    """Wrap every function of ``STAGES`` that this version of hivcomorb has, and run chunks in one thread."""
    import hivcomorb.score as score

    for target, attribute, stage in STAGES:
        module_name, _, class_name = target.partition(":")
        owner = importlib.import_module(module_name)
        if class_name:
            owner = getattr(owner, class_name, None)
        if owner is not None and hasattr(owner, attribute):
            setattr(owner, attribute, clock.wrap(stage, getattr(owner, attribute)))

    def one_after_another(
        chunks: Any, ingest_one: Callable[[Any, int], Any], finish: Callable[[], Any] | None = None, finished: list | None = None
    ) -> Any:
        iterator = iter(chunks)
        while True:
            wall, cpu = time.perf_counter(), time.process_time()
            try:
                frame, offset = next(iterator)
            except StopIteration:
                break
            clock.add("read chunks", time.perf_counter() - wall, time.process_time() - cpu)
            yield frame, ingest_one(frame, offset)
        if finish is not None and finished is not None:
            # Older versions of hivcomorb validate after the loop themselves and pass no finish.
            done: Future = Future()
            done.set_result(finish())
            finished.append(done)

    score._ingest_ahead = one_after_another
    validate = importlib.import_module("hivcomorb.ingest.validate")
    if hasattr(validate, "prepare"):
        # The import happens before the timed run instead.
        validate.prepare = lambda: None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("extract", help="extract file (Parquet or CSV) in canonical columns")
    parser.add_argument("--model", default=str(ROOT / "artifacts" / "demo" / "train" / "models" / "aware.joblib"), help="bundle file")
    parser.add_argument("--ood", default=None, help="joblib file of an out-of-distribution detector (default: none)")
    args = parser.parse_args(argv)

    import joblib

    import hivcomorb.score as score
    from hivcomorb.bundle import ModelBundle
    from hivcomorb.cli import configure_logging
    from hivcomorb.config import load_config
    from hivcomorb.context import RunContext
    from hivcomorb.score.model import ScoringModel

    configure_logging("WARNING")
    started = time.perf_counter()
    importlib.import_module("great_expectations")
    import_seconds = time.perf_counter() - started
    ctx = RunContext.from_config(load_config("demo", {"score": {"progress": False, "n_jobs": 1}}))
    detector = joblib.load(args.ood) if args.ood else None
    model = ScoringModel(ModelBundle.load(args.model), ctx.contract, detector, uri=args.model, name="bench", version="bench", run_id="")
    score.load_scoring_model = lambda *_, **__: model
    clock = StageClock()
    install(clock)

    with tempfile.TemporaryDirectory(prefix="hivcomorb-stage-bench-") as tmp:
        wall, cpu = time.perf_counter(), time.process_time()
        result = score.score_extract(ctx, args.extract, Path(tmp) / "scores.parquet", reasons=False, track=False)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    n_rows = result["counts"]["rows_read"]
    rows = [[stage, clock.wall[stage], clock.cpu[stage], n_rows / clock.cpu[stage] if clock.cpu[stage] > 0.01 else None] for stage in clock.cpu]
    rows.sort(key=lambda row: -row[2])
    rows.append(["other", wall - sum(clock.wall.values()), cpu - sum(clock.cpu.values()), None])
    rows.append(["total", wall, cpu, n_rows / cpu])
    publish(
        "score-stages",
        "Scoring, stage by stage, in one thread",
        ["stage", "wall s", "CPU s", "rows per CPU s"],
        [[cell if cell is not None else "" for cell in row] for row in rows],
        notes=[
            f"{n_rows:,} rows from {Path(args.extract).name}; model {Path(args.model).name}; "
            f"out-of-distribution detector: {Path(args.ood).name if args.ood else 'none'}; validate: {score.ScoreOptions.from_config(ctx.config).validate}",
            f"Great Expectations import before the run: {import_seconds:.1f} s",
        ],
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
