"""``hivcomorb score``: score a new extract with a registered model.

The extract goes through the ingestion code path of training
(:func:`hivcomorb.ingest.ingest_frame`: mapping, unit harmonisation, value
parsing, validation and quarantine) chunk by chunk, so memory stays bounded
whatever the file size. Every row read is either scored or quarantined, and
the run stops without writing anything if the counts do not reconcile. By
default the Great Expectations suite runs once, after the last chunk, on the
rows that decide each of its expectations (``score.validate: compact``), and a
failed expectation also stops the run before anything is written.

Outputs, for ``--out scores.parquet`` (or ``scores.csv``):

``scores.parquet``
    One row per scored patient: ``patient_id``, ``source_row``, ``p_<label>``
    (probability), ``flag_<label>`` (probability at or above the model's
    threshold), ``reason1_<label>`` to ``reason3_<label>`` for flagged labels
    (the input columns with the largest SHAP values, e.g. ``hba1c=58.1
    mmol/mol raises risk``), ``ood_flag``, ``ood_score`` and ``ood_reasons``
    (out-of-distribution checks), and the stamps ``model_name``,
    ``model_version``, ``model_run_id``, ``setting``, ``contract_version``,
    ``extract_sha256`` and ``scored_at``. Parquet files also carry the stamps
    in their key-value metadata under ``hivcomorb``.
``scores.parquet.quarantine.csv``
    Rejected rows: ``source_row``, ``column``, ``raw_value``, ``rule``; never a
    patient id.
``scores.parquet.summary.html`` and ``scores.parquet.summary.json``
    Reconciliation, flags per label and by group with small-cell
    suppression, and the stamps, for an analyst to forward.

Each file is written under a temporary name and renamed when complete. Each
run is tracked as its own MLflow run with counts, the model version and the
extract hash, and no patient data.
"""

from __future__ import annotations

import dataclasses

import argparse
import collections
import contextlib
import datetime as dt
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from typing import Any, Callable, Iterable, Iterator, Mapping

import numpy as np
import pandas as pd
import pyarrow as pa
from threadpoolctl import threadpool_limits

from hivcomorb.config import exceeds_share, nested_get, share_or_none
from hivcomorb.contract import Contract
from hivcomorb.context import RunContext
from hivcomorb.disclosure import min_group_size
from hivcomorb.errors import EXIT_TOO_MANY_QUARANTINED, ConfigError, ExtractError
from hivcomorb.files import file_sha256, write_json_atomic, write_text_atomic
from hivcomorb.pyfunc import probability_column
from hivcomorb.score.checks import check_input_columns, detector_flags, join_reasons, range_flags
from hivcomorb.score.model import ScoringModel, load_scoring_model, place_on_device, single_block
from hivcomorb.score.reasons import ValueTexts, column_groups, shap_values, top_reasons
from hivcomorb.score.reader import open_extract
from hivcomorb.score.summary import ScoreCounts, render_html, summary_sentences
from hivcomorb.score.writer import QUARANTINE_SCHEMA, ChunkWriter, output_format

logger = logging.getLogger(__name__)

VALIDATE_CHOICES = ("compact", "every_chunk", "first_chunk", "off")
STAMP_COLUMNS = ("model_name", "model_version", "model_run_id", "setting", "contract_version", "extract_sha256", "scored_at")

__all__ = ["ScoreOptions", "output_paths", "score_extract", "register_cli"]


@dataclass
class ScoreOptions:
    """Scoring settings from ``score`` in the configuration, with command-line overrides.

    See ``conf/stages/score.yaml`` for what each key sets.
    """

    model: str = "champion-aware"
    chunk_rows: int = 100_000
    reasons: bool = True
    n_reasons: int = 3
    device: str = "cpu"
    n_jobs: int = 0
    allow_missing_labs: bool = False
    validate: str = "compact"
    max_quarantined_share: float | None = 0.25
    progress: bool | None = None
    groups: list[str] = field(default_factory=lambda: ["gender", "ethnicity", "age_band", "hiv_exposure", "deprivation_quintile"])
    age_bands: list[float] = field(default_factory=lambda: [18, 30, 40, 50, 60, 70])
    experiment: str = "hivcomorb-scoring"

    @classmethod
    def from_config(cls, config: Mapping[str, Any], **overrides: Any) -> "ScoreOptions":
        """Read ``config['score']``; overrides that are not None win."""
        block = dict(nested_get(config, "score", {}) or {})
        summary = dict(block.get("summary") or {})
        progress = block.get("progress", "auto")
        options = cls(
            model=str(block.get("model", cls.model)),
            chunk_rows=int(block.get("chunk_rows", cls.chunk_rows)),
            reasons=bool(block.get("reasons", cls.reasons)),
            n_reasons=int(block.get("n_reasons", cls.n_reasons)),
            device=str(block.get("device", cls.device)),
            n_jobs=int(block.get("n_jobs", cls.n_jobs)),
            allow_missing_labs=bool(block.get("allow_missing_labs", cls.allow_missing_labs)),
            validate=str(block.get("validate", cls.validate)),
            max_quarantined_share=block.get("max_quarantined_share", cls.max_quarantined_share),
            progress=None if progress == "auto" else bool(progress),
            groups=list(summary.get("groups") or cls().groups),
            age_bands=[float(x) for x in summary.get("age_bands") or cls().age_bands],
            experiment=str(nested_get(config, "score.tracking.experiment", cls.experiment)),
        )
        for key, value in overrides.items():
            if value is not None:
                setattr(options, key, value)
        if options.validate not in VALIDATE_CHOICES:
            raise ConfigError(f"score.validate must be one of {VALIDATE_CHOICES}, got {options.validate!r}")
        if options.n_jobs <= 0:
            options.n_jobs = os.cpu_count() or 1
        options.max_quarantined_share = share_or_none(
            options.max_quarantined_share, "score.max_quarantined_share (or --max-quarantined-share)"
        )
        return options


def repeated_texts(schema: pa.Schema) -> list[str]:
    """Return the text columns of the scores file other than ``patient_id``: stamps and reasons, whose values repeat."""
    return [f.name for f in schema if pa.types.is_string(f.type) and f.name != "patient_id"]


def output_paths(out: str | Path) -> dict[str, Path]:
    """Return the paths of the scores, quarantine and summary files for ``--out``."""
    out = Path(out)
    output_format(out)
    return {
        "scores": out,
        "quarantine": out.with_name(out.name + ".quarantine.csv"),
        "summary_html": out.with_name(out.name + ".summary.html"),
        "summary_json": out.with_name(out.name + ".summary.json"),
    }


def score_schema(model: ScoringModel, n_reasons: int, with_reasons: bool) -> pa.Schema:
    """Return the column types of the scores file."""
    fields = [pa.field("patient_id", pa.string()), pa.field("source_row", pa.int64())]
    for label in model.bundle.labels:
        fields.append(pa.field(probability_column(label), pa.float64()))
        fields.append(pa.field(f"flag_{label}", pa.bool_()))
        if with_reasons:
            fields.extend(pa.field(f"reason{k}_{label}", pa.string()) for k in range(1, n_reasons + 1))
    fields += [pa.field("ood_flag", pa.bool_()), pa.field("ood_score", pa.float64()), pa.field("ood_reasons", pa.string())]
    fields += [pa.field(name, pa.string()) for name in STAMP_COLUMNS]
    return pa.schema(fields)


@dataclass
class ChunkScores:
    """Scores of one chunk, and the arrays the counts need."""

    frame: pd.DataFrame
    flags: dict[str, np.ndarray]
    ood: np.ndarray
    range_ood: np.ndarray
    detector_ood: np.ndarray


def score_chunk(
    cohort: pd.DataFrame,
    model: ScoringModel,
    stamps: Mapping[str, str],
    *,
    reasons: bool,
    n_reasons: int,
    absent_labs: Iterable[str] = (),
    pool: Executor | None = None,
) -> ChunkScores:
    """Score canonical rows: probabilities, flags, reasons and out-of-distribution checks.

    Parameters
    ----------
    cohort : DataFrame
        Canonical rows from :func:`hivcomorb.ingest.ingest_frame`.
    model : ScoringModel
    stamps : mapping
        Values of the stamp columns, the same for every row.
    reasons : bool
        Whether to explain flagged labels with SHAP values.
    n_reasons : int
        Reasons per flagged label.
    absent_labs : iterable of str
        Lab columns the extract lacks, scored as missing values.
    pool : Executor, optional
        Threads that predict the labels and the out-of-distribution scores side by
        side. Without one, they run in this thread, one after another.
    """
    bundle, contract = model.bundle, model.contract
    frame = cohort.reset_index(drop=True)
    for lab in absent_labs:
        frame[lab] = np.nan
    matrix = single_block(bundle.features(frame, contract))
    if pool is None:
        pool = _SAME_THREAD
    predicted = model.predictor.submit(pool, matrix)
    detector = pool.submit(detector_flags, model.ood_detector, matrix)

    range_ood, range_text = range_flags(frame, bundle.training_ranges, {c: contract.column(c).unit for c in bundle.training_ranges if c in frame.columns})
    probabilities = predicted()
    ood_score, detector_ood, detector_text = detector.result()
    ood = range_ood | detector_ood

    out: dict[str, Any] = {
        # Arrow-backed text goes to the scores file without a Python string per row.
        "patient_id": frame[contract.id_column].astype("string[pyarrow]").array,
        "source_row": frame["source_row"].astype("int64").to_numpy(),
    }
    flags: dict[str, np.ndarray] = {}
    groups = column_groups(bundle.feature_names, bundle.input_columns, contract) if reasons else []
    value_texts = ValueTexts(frame, contract)
    for label in bundle.labels:
        p = probabilities[label]
        flag = p >= float(bundle.thresholds[label])
        flags[label] = flag
        out[probability_column(label)] = p
        out[f"flag_{label}"] = flag
        if reasons:
            reason_texts = np.full((n_reasons, len(frame)), None, dtype=object)
            rows = np.flatnonzero(flag)
            if rows.size:
                values = shap_values(bundle.estimators[label], matrix.iloc[rows])
                for k, series in enumerate(top_reasons(values, value_texts, rows, groups, n_reasons)):
                    reason_texts[k, rows] = series.to_numpy()
            for k in range(n_reasons):
                out[f"reason{k + 1}_{label}"] = reason_texts[k]
    out["ood_flag"] = ood
    out["ood_score"] = ood_score
    out["ood_reasons"] = join_reasons(range_text, detector_text).to_numpy()
    for name in STAMP_COLUMNS:
        out[name] = stamps[name]
    return ChunkScores(pd.DataFrame(out), flags, ood, range_ood, detector_ood)


def _deciding_rows_without(result: Any, duplicated_ids: set[str], contract: Contract) -> tuple[pd.DataFrame, int]:
    """Return a chunk's deciding rows and kept-row count, leaving out rows whose id occurs elsewhere in the extract.

    Those rows are quarantined when the chunk is scored, so they must not reach
    the validation. Two of them in one chunk's deciding rows fail the suite's
    unique-id expectation.
    """
    cohort = result.cohort
    if not duplicated_ids:
        return result.deciding_rows, len(cohort)
    repeated = cohort[contract.id_column].isin(duplicated_ids).to_numpy()
    if not repeated.any():
        return result.deciding_rows, len(cohort)
    from hivcomorb.ingest.validate import deciding_frame

    # The rows that decide each expectation are found again without the repeated ones.
    kept = cohort[~repeated].reset_index(drop=True)
    return deciding_frame(kept, contract), len(kept)


class _SameThreadExecutor(Executor):
    """An executor that runs each call at once, in the calling thread."""

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future:
        future: Future = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as exc:
            # Future.result() raises it in the caller, as a thread pool would.
            future.set_exception(exc)
        return future


_SAME_THREAD = _SameThreadExecutor()


def _quarantine_repeated_ids(
    cohort: pd.DataFrame, quarantine: pd.DataFrame, duplicated_ids: set[str], id_column: str
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Move rows whose patient id occurs elsewhere in the extract from ``cohort`` to ``quarantine``.

    ``ingest_frame`` already quarantines ids repeated within its chunk; this
    catches ids repeated across chunks. Entries follow ingestion's format and
    never carry the id.
    """
    from hivcomorb.ingest import rules

    if not duplicated_ids:
        return cohort, quarantine
    repeated = cohort[id_column].isin(duplicated_ids).to_numpy()
    if not repeated.any():
        return cohort, quarantine
    entries = pd.DataFrame(
        {
            "source_row": cohort["source_row"].to_numpy()[repeated].astype("int64"),
            "column": id_column,
            "raw_value": None,
            "rule": rules.DUPLICATE_ID,
            "detail": rules.DESCRIPTIONS[rules.DUPLICATE_ID],
        }
    )
    return cohort.loc[~repeated], pd.concat([quarantine, entries], ignore_index=True)


def score_extract(
    ctx: RunContext,
    extract: str | Path,
    out: str | Path,
    *,
    model: str | None = None,
    mapping: str | Path | None = None,
    reasons: bool | None = None,
    chunk_rows: int | None = None,
    sheet: str | None = None,
    encoding: str | None = None,
    delimiter: str | None = None,
    device: str | None = None,
    max_quarantined_share: float | None = None,
    track: bool = True,
) -> dict[str, Any]:
    """Score an extract and write the scores, quarantine and summary files.

    Parameters
    ----------
    ctx : RunContext
        Configuration (``score`` block, disclosure, dataset name for aliases).
    extract : str or Path
        CSV, Parquet or Excel file in the site's format.
    out : str or Path
        Scores file, ``.parquet`` or ``.csv``; the other outputs go beside it.
    model : str, optional
        ``models:/name@alias``, ``models:/name/version``, ``runs:/...``, a
        bare alias ``champion-<setting>`` or a bundle path; default
        ``score.model``.
    mapping : str or Path, optional
        Site mapping file; the identity mapping when omitted.
    reasons : bool, optional
        Explain flagged labels; default ``score.reasons``.
    chunk_rows : int, optional
        Rows per chunk; default ``score.chunk_rows``.
    sheet, encoding, delimiter : str, optional
        Read options, as for ``hivcomorb ingest``.
    device : {"cpu", "cuda"}, optional
        Where XGBoost predicts; default ``score.device``.
    max_quarantined_share : float, optional
        Share of rows read above which the result's ``too_many_quarantined``
        is true; default ``score.max_quarantined_share``. The outputs are
        written either way.
    track : bool
        Log the run to MLflow.

    Returns
    -------
    dict
        ``counts`` (reconciliation, flags per label and by group, suppressed),
        ``stamps``, ``labels``, ``thresholds``, ``outputs``, ``summary``,
        ``max_quarantined_share`` and ``too_many_quarantined``.

    Raises
    ------
    ModelError
        If the model cannot be loaded or the extract lacks its input columns.
    ExtractError, MappingError
        If the extract cannot be read or mapped, or the counts do not reconcile.
    """
    from hivcomorb.ingest import default_options, ingest_frame, load_mapping
    from hivcomorb.ingest import validate as validate_module
    from hivcomorb.ingest.mapping import plan_mapping

    options = ScoreOptions.from_config(
        ctx.config, model=model, reasons=reasons, chunk_rows=chunk_rows, device=device, max_quarantined_share=max_quarantined_share
    )
    started = time.perf_counter()
    extract = Path(extract)
    paths = output_paths(out)

    scoring_model = load_scoring_model(options.model, dataset=ctx.dataset, fallback_contract=ctx.contract)
    # Without reasons, each estimator predicts on one thread and the labels run side by side.
    # The OpenMP threads of one estimator wait for each other at every call, which costs
    # most when ingestion of the next chunk shares the cores. SHAP values use the
    # estimators' own threads, so with reasons (or on a GPU) labels run one after another.
    parallel_labels = not options.reasons and options.device == "cpu"
    place_on_device(scoring_model.bundle, options.device, 1 if parallel_labels else options.n_jobs)
    model_contract = scoring_model.contract
    full_mapping = load_mapping(mapping, model_contract)
    # Labels are not model inputs, so scoring ingests without them: a malformed
    # label cell never keeps a patient from being scored.
    contract = dataclasses.replace(model_contract, columns=tuple(c for c in model_contract.columns if c.role != "label"))
    site_mapping = {
        **full_mapping,
        "columns": {source: spec for source, spec in full_mapping["columns"].items() if spec["to"] not in model_contract.labels},
    }

    compact = validate_module.CompactCohort(contract) if options.validate == "compact" else None

    with open_extract(extract, chunk_rows=options.chunk_rows, sheet=sheet, encoding=encoding, delimiter=delimiter) as source:
        plan = plan_mapping(site_mapping, contract, source.columns, extract.name)
        absent_labs = check_input_columns(
            scoring_model.bundle,
            contract,
            plan.columns,
            extract_name=extract.name,
            model_uri=scoring_model.uri,
            allow_missing_labs=options.allow_missing_labs,
        )
        n_rows, duplicated_ids = source.id_census(plan.id_source)
        if n_rows == 0:
            raise ExtractError(f"extract file {extract} has a header but no rows. Export the extract again")
        if duplicated_ids:
            logger.warning("%d patient ids occur more than once, so every row with one of them is quarantined", len(duplicated_ids))
        logger.info("Hashing %s", extract.name)
        stamps = {
            **scoring_model.stamps(),
            "extract_sha256": file_sha256(extract),
            "scored_at": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
        counts = ScoreCounts(labels=list(scoring_model.bundle.labels), groups=options.groups, age_edges=options.age_bands)
        schema = score_schema(scoring_model, options.n_reasons, options.reasons)
        with (
            ChunkWriter(paths["scores"], schema, metadata=stamps, repeated=repeated_texts(schema)) as scores_out,
            ChunkWriter(paths["quarantine"], QUARANTINE_SCHEMA, file_format="csv") as quarantine_out,
            _progress(n_rows, options.progress) as progress,
            ThreadPoolExecutor(max_workers=options.n_jobs if parallel_labels else 1, thread_name_prefix="hivcomorb-predict") as pool,
            # With labels side by side, the matrix products of the linear labels and of the distance
            # detector also run on one BLAS thread each. OpenBLAS threads that spin while waiting for
            # each other cost 1.9 of 9.3 CPU s per 1,000,000 rows on 2 cores (bench_score_inprocess.py).
            threadpool_limits(limits=1 if parallel_labels else None, user_api="blas"),
        ):
            if options.validate != "off" and not options.reasons:
                # Great Expectations takes seconds to import, so it is imported while the chunks
                # are scored. With reasons, the first chunk imports the SHAP code in this thread,
                # and two threads importing modules of the same packages at once can receive
                # half-initialised modules, so the import then waits for the first validation.
                threading.Thread(target=validate_module.prepare, name="hivcomorb-gx-import", daemon=True).start()

            def ingest_one(frame: Any, offset: int) -> Any:
                # Every chunk goes through ingestion's parsing and quarantine rules. A run of
                # the Great Expectations suite costs about a second even on a few rows. So by
                # default (compact) each chunk only adds the rows that decide each expectation,
                # and the suite runs once on those after the last chunk.
                validate = options.validate == "every_chunk" or (options.validate == "first_chunk" and offset == 0)
                result = ingest_frame(
                    frame,
                    contract,
                    site_mapping,
                    source_name=extract.name,
                    row_offset=offset,
                    validate=validate,
                    allow_empty=True,
                    hash_content=False,
                    deciding_rows=compact is not None,
                    chunk=True,
                )
                if compact is not None:
                    compact.add(*_deciding_rows_without(result, duplicated_ids, contract))
                return result

            # With compact validation, the suite runs in the ingestion thread once the last chunk
            # is ingested, while that chunk is scored.
            validation: list[Future] = []
            suspected_units: dict[str, dict[str, Any]] = {}
            # Values per lab the model reads, to find a lab column the extract has but leaves empty.
            labs = set(contract.labs)
            input_labs = [c for c in scoring_model.bundle.input_columns if c in labs and c not in absent_labs]
            lab_values: collections.Counter[str] = collections.Counter()
            for frame, result in _ingest_ahead(source.chunks(), ingest_one, compact.validate if compact is not None else None, validation):
                counts.rows_read += frame.height
                for finding in result.summary.get("suspected_units") or ():
                    entry = suspected_units.setdefault(finding["column"], {**finding, "chunks": 0})
                    entry["chunks"] += 1
                cohort, quarantine = _quarantine_repeated_ids(result.cohort, result.quarantine, duplicated_ids, contract.id_column)
                if len(cohort):
                    lab_values.update(cohort[input_labs].notna().sum().to_dict())
                    scored = score_chunk(
                        cohort,
                        scoring_model,
                        stamps,
                        reasons=options.reasons,
                        n_reasons=options.n_reasons,
                        absent_labs=absent_labs,
                        pool=pool,
                    )
                    scores_out.write(scored.frame)
                    counts.add_chunk(cohort.reset_index(drop=True), scored.flags, scored.ood, scored.range_ood, scored.detector_ood)
                if len(quarantine):
                    quarantine_out.write(quarantine[list(QUARANTINE_SCHEMA.names)])
                    counts.add_quarantine(quarantine)
                progress.update(frame.height)

            if not counts.reconciles() or counts.rows_read != n_rows:
                raise ExtractError(
                    f"reconciliation failed for {extract}: read {counts.rows_read} (first pass {n_rows}) != scored "
                    f"{counts.rows_scored} + quarantined {counts.rows_quarantined}; nothing was written. "
                    "This is a bug in hivcomorb: report it with the hivcomorb version and the extract's shape"
                )
            if validation:
                validate_module.check_validation(validation[0].result(), fail=bool(default_options().get("fail_on_validation", True)))
            minimum = min_group_size(ctx.config)
            result_data: dict[str, Any] = {
                "counts": counts.as_dict(minimum),
                "stamps": stamps,
                "labels": list(scoring_model.bundle.labels),
                "thresholds": {k: float(v) for k, v in scoring_model.bundle.thresholds.items()},
                "model_uri": scoring_model.uri,
                "reasons": options.reasons,
                "absent_labs": list(absent_labs),
                "empty_labs": [lab for lab in input_labs if lab_values[lab] == 0] if counts.rows_scored else [],
                "outputs": {k: str(v) for k, v in paths.items()},
                "suspected_units": [
                    {key: entry[key] for key in ("column", "declared_unit", "suspected_unit", "chunks")} for entry in suspected_units.values()
                ],
                "max_quarantined_share": options.max_quarantined_share,
                "too_many_quarantined": exceeds_share(counts.rows_quarantined, counts.rows_read, options.max_quarantined_share),
            }
            if result_data["empty_labs"]:
                logger.warning(
                    "Extract %s: no scored row has a value of %s, so every patient was scored as if unmeasured; check the export",
                    extract.name,
                    ", ".join(result_data["empty_labs"]),
                )
            result_data["summary"] = summary_sentences(result_data)
            scores_out.commit()
            quarantine_out.commit()

    write_json_atomic(paths["summary_json"], result_data)
    write_text_atomic(paths["summary_html"], render_html(result_data, contract))
    elapsed = time.perf_counter() - started
    result_data["seconds"] = elapsed
    logger.info(
        "Scored %s: read %d = scored %d + quarantined %d in %.1f s (%.0f rows/s)",
        extract.name,
        counts.rows_read,
        counts.rows_scored,
        counts.rows_quarantined,
        elapsed,
        counts.rows_read / elapsed if elapsed else 0.0,
    )
    if track:
        _track(ctx, options, result_data, paths)
    return result_data


def _ingest_ahead(
    chunks: Iterator[tuple[Any, int]],
    ingest_one: Callable[[Any, int], Any],
    finish: Callable[[], Any] | None = None,
    finished: list[Future] | None = None,
) -> Iterator[tuple[Any, Any]]:
    """Yield ``(frame, ingest result)`` per chunk, ingesting the next chunk in a worker thread.

    XGBoost prediction and SHAP values release the GIL, as do most polars
    expressions, so ingestion of chunk k+1 overlaps scoring of chunk k. At
    most two chunks are in memory at a time. ``finish``, when given, runs in
    the worker after the last chunk is ingested, while the caller scores that
    chunk; its future is appended to ``finished``.
    """
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hivcomorb-ingest")
    try:
        pending: tuple[Any, Future] | None = None
        for frame, offset in chunks:
            future = pool.submit(ingest_one, frame, offset)
            if pending is not None:
                yield pending[0], pending[1].result()
            pending = (frame, future)
        if finish is not None and finished is not None:
            finished.append(pool.submit(finish))
        if pending is not None:
            yield pending[0], pending[1].result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


@contextlib.contextmanager
def _progress(total: int, enabled: bool | None):
    from tqdm import tqdm

    # disable=None lets tqdm show the bar only on a terminal.
    bar = tqdm(total=total, unit="rows", unit_scale=True, desc="Scoring", disable=None if enabled is None else not enabled)
    try:
        yield bar
    finally:
        bar.close()


def _track(ctx: RunContext, options: ScoreOptions, result: Mapping[str, Any], paths: Mapping[str, Path]) -> None:
    """Log one scoring run to MLflow: stamps as parameters, counts as metrics, the summary files."""
    import mlflow

    from hivcomorb import tracking

    tracking.configure()
    experiment_id = tracking.ensure_experiment(options.experiment)
    counts = result["counts"]
    stamps = result["stamps"]
    with mlflow.start_run(experiment_id=experiment_id, run_name="score", tags={"hivcomorb.stage": "score", "hivcomorb.dataset": ctx.dataset}):
        tracking.log_params(
            {
                **{k: v for k, v in stamps.items() if k != "scored_at"},
                "model_uri": result["model_uri"],
                "reasons": options.reasons,
                "chunk_rows": options.chunk_rows,
                "absent_labs": result["absent_labs"],
            }
        )
        mlflow.set_tag("hivcomorb.extract_sha256", stamps["extract_sha256"])
        tracking.log_metrics(
            {
                "rows_read": counts["rows_read"],
                "rows_scored": counts["rows_scored"],
                "rows_quarantined": counts["rows_quarantined"],
                "flagged": counts["flagged"],
                "out_of_distribution": counts["out_of_distribution"],
                "seconds": result["seconds"],
            }
        )
        # The summary files hold counts with small cells suppressed, and no patient row.
        mlflow.log_artifact(str(paths["summary_json"]))
        mlflow.log_artifact(str(paths["summary_html"]))


def _command(args: argparse.Namespace) -> int:
    from hivcomorb.cli import context_from_args

    ctx = context_from_args(args)
    out = args.out or ctx.reports / "scores" / f"{Path(args.extract).stem}.scores.parquet"
    result = score_extract(
        ctx,
        args.extract,
        out,
        model=args.model,
        mapping=args.mapping,
        reasons=args.reasons,
        chunk_rows=args.chunk_rows,
        sheet=args.sheet,
        encoding=args.encoding,
        delimiter=args.delimiter,
        device=ctx.device if args.device else None,
        max_quarantined_share=args.max_quarantined_share,
    )
    for sentence in result["summary"]:
        print(sentence)
    for name, path in result["outputs"].items():
        print(f"{name}: {path}")
    if result["too_many_quarantined"]:
        counts = result["counts"]
        scored = "The other rows are scored, but" if counts["rows_scored"] else "No row could be scored:"
        logger.error(
            "%d of %d rows (%.1f%%) were quarantined, more than score.max_quarantined_share (%.0f%%). %s this many "
            "rejected rows usually means a mapping or export problem: read the rules in %s, fix the mapping or the "
            "export, and score again. Exit status %d",
            counts["rows_quarantined"],
            counts["rows_read"],
            100.0 * counts["rows_quarantined"] / counts["rows_read"],
            100.0 * result["max_quarantined_share"],
            scored,
            result["outputs"]["quarantine"],
            EXIT_TOO_MANY_QUARANTINED,
        )
        return EXIT_TOO_MANY_QUARANTINED
    return 0


def register_cli(subparsers: Any) -> None:
    """Add ``hivcomorb score``."""
    from hivcomorb.cli import add_common_arguments, share_argument

    parser = subparsers.add_parser(
        "score",
        help="score a new extract with a registered model",
        description=(
            "Ingest EXTRACT with the same mapping, unit harmonisation and validation as training, score every "
            "valid row, and write OUT (Parquet or CSV) with per-label probabilities, flags, the top reasons for "
            "each flag and out-of-distribution flags; OUT.quarantine.csv with rejected rows; and "
            "OUT.summary.html / OUT.summary.json with counts an analyst can forward (small groups suppressed). "
            "Every row read is scored or quarantined. The run is tracked in MLflow without patient data."
        ),
    )
    parser.add_argument("extract", help="extract file: CSV (any delimiter, UTF-8, UTF-16 with a byte order mark, Windows-1252 or Latin-1), Parquet or Excel")
    parser.add_argument(
        "--model",
        default=None,
        help="models:/NAME@ALIAS, models:/NAME/VERSION, runs:/RUN_ID/PATH, a bare alias champion-aware or "
        "champion-unaware, or a bundle .joblib path (default: score.model, champion-aware)",
    )
    parser.add_argument("--mapping", default=None, help="site mapping YAML (see conf/mappings/example_site.yaml); default: canonical column names")
    parser.add_argument("--out", default=None, help="scores file, .parquet or .csv (default: reports/<dataset>/scores/<extract>.scores.parquet)")
    parser.add_argument(
        "--reasons",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="write the top SHAP reasons for each flagged label (default: score.reasons, on)",
    )
    parser.add_argument(
        "--max-quarantined-share",
        type=share_argument,
        default=None,
        metavar="SHARE",
        help=f"exit with status {EXIT_TOO_MANY_QUARANTINED} after writing the outputs when more than this share of rows "
        "(0 to 1, or none for no limit) is quarantined (default: score.max_quarantined_share, 0.25)",
    )
    parser.add_argument("--chunk-rows", type=int, default=None, help="rows read and scored at a time (default: score.chunk_rows, 100000)")
    parser.add_argument("--sheet", default=None, help="Excel sheet name (default: the first sheet)")
    parser.add_argument("--encoding", default=None, help="CSV text encoding, e.g. utf-8 or cp1252 (default: detected)")
    parser.add_argument("--delimiter", default=None, help="CSV delimiter, one character or 'tab' (default: detected)")
    add_common_arguments(parser)
    parser.set_defaults(func=_command)
