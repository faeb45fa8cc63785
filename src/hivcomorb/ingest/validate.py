"""Great Expectations validation of the canonical cohort, and its HTML page for auditors.

The suite comes from :func:`hivcomorb.schema.build_suite`. Validation runs in
an ephemeral context with progress bars off. Results keep counts and
percentages only: the lists of unexpected values that Great Expectations can
return are never requested and never stored, so no patient value leaves this
module.

A large extract can be validated once, on its deciding rows
(:func:`deciding_rows`, :class:`CompactCohort`): for each expectation, the
rows that would break it if any row does. Each expectation then succeeds or
fails as it would on every row, at the cost of one small validation.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import threading
from typing import Any, Mapping

import numpy as np
import pandas as pd
import polars as pl

from hivcomorb import htmlkit
from hivcomorb.contract import Contract
from hivcomorb.errors import ExtractError
from hivcomorb.schema import build_suite

logger = logging.getLogger(__name__)

# Result fields copied from Great Expectations results; everything else
# (partial_unexpected_list, unexpected_index_list and the like) is dropped.
_COUNT_FIELDS = ("element_count", "missing_count", "unexpected_count", "unexpected_percent")
# Expectations whose observed_value is a count or a dtype name, never a patient value.
_SAFE_OBSERVED = {"expect_table_row_count_to_be_between", "expect_column_values_to_be_in_type_list"}
_RESULT_FORMAT = {"result_format": "BASIC", "partial_unexpected_count": 0, "include_unexpected_rows": False}

# Expectations about columns and dtypes, which no particular row decides.
_SCHEMA_EXPECTATIONS = {"expect_column_to_exist", "expect_column_values_to_be_in_type_list"}

_batch_definition: Any = None
_batch_definition_lock = threading.Lock()


def prepare() -> None:
    """Import Great Expectations and create its context, which takes seconds once per process.

    A caller can run this in a background thread while it does other work,
    so that the first validation does not wait for the import.
    """
    _get_batch_definition()


def _get_batch_definition() -> Any:
    """Return a whole-dataframe batch definition in an ephemeral context, made once per process."""
    with _batch_definition_lock:
        if _batch_definition is None:
            _create_batch_definition()
    return _batch_definition


def _create_batch_definition() -> None:
    global _batch_definition
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    source = context.data_sources.add_pandas("hivcomorb_ingest")
    asset = source.add_dataframe_asset("canonical_cohort")
    _batch_definition = asset.add_batch_definition_whole_dataframe("whole_cohort")


def validate_cohort(cohort: pd.DataFrame, contract: Contract) -> dict[str, Any]:
    """Validate a canonical cohort against the suite for the columns it has.

    Parameters
    ----------
    cohort : pandas.DataFrame
        The canonical cohort (id column, contract columns present, censoring
        flags and ``source_row``).
    contract : Contract

    Returns
    -------
    dict
        ``success``, ``statistics`` (evaluated, successful and unsuccessful
        expectations, success percent), ``suite``, ``great_expectations_version``
        and ``results``: one entry per expectation with its type, column,
        arguments, success and counts.
    """
    import great_expectations as gx
    from great_expectations.core.expectation_suite import ExpectationSuite
    from great_expectations.expectations.expectation_configuration import ExpectationConfiguration

    suite_data = build_suite(contract, columns=cohort.columns)
    suite = ExpectationSuite(
        name=suite_data["name"],
        expectations=[
            ExpectationConfiguration(type=e["type"], kwargs=e["kwargs"], meta=e["meta"]).to_domain_obj()
            for e in suite_data["expectations"]
        ],
    )
    # TODO: on every kept row, validation dominates large extracts: about 42 of 55 s for the 1,000,000-row
    # extract of bench/bench_ingest.py on 2 cores. Scoring validates the deciding rows instead (CompactCohort,
    # about a second). Do the same in the ingest stage once validation.html may count deciding rows, not all rows.
    batch = _get_batch_definition().get_batch(batch_parameters={"dataframe": cohort})
    outcome = batch.validate(suite, result_format=_RESULT_FORMAT).to_json_dict()

    results = [_safe_result(r) for r in outcome["results"]]
    results.sort(key=lambda r: (r["column"] or "", r["expectation"]))
    keys = ("evaluated_expectations", "successful_expectations", "unsuccessful_expectations", "success_percent")
    statistics = {k: outcome["statistics"][k] for k in keys}
    failed = [f"{r['expectation']} on {r['column']}" for r in results if not r["success"]]
    if failed:
        logger.warning("Validation: %d of %d expectations failed: %s", len(failed), len(results), "; ".join(failed[:10]))
    else:
        logger.info("Validation: all %d expectations met", len(results))
    return {
        "success": bool(outcome["success"]),
        "suite": suite_data["name"],
        "contract_version": contract.version,
        "great_expectations_version": gx.__version__,
        "statistics": statistics,
        "results": results,
    }


def check_validation(validation: Mapping[str, Any], *, fail: bool) -> None:
    """Raise ExtractError naming the failed expectations when ``validation`` failed and ``fail`` is true."""
    if validation["success"] is False and fail:
        failed = [f"{r['expectation']} on {r['column']}" for r in validation["results"] if not r["success"]]
        raise ExtractError(
            f"the ingested cohort failed {len(failed)} expectations of the contract suite: {'; '.join(failed[:10])}. "
            "This points to an ingestion rule that let a value through; report it with the validation results"
        )


def deciding_rows(cohort: pl.DataFrame, suite: Mapping[str, Any]) -> np.ndarray:
    """Return the sorted positions of the rows of ``cohort`` that decide each expectation of ``suite``.

    The first row decides the row count. A not-null column adds its first
    missing value, and a unique column every row whose value repeats. A range
    adds the rows of the column's minimum and maximum, and an allowed set the
    first row of each distinct value. A missing value is null or NaN, as Great
    Expectations counts missing values in pandas. Expectations on columns and
    dtypes need no row. Each of these expectations succeeds on the deciding
    rows exactly when it succeeds on every row. An expectation of another
    kind, or a range over a column that is not numeric, keeps every row.

    Parameters
    ----------
    cohort : polars.DataFrame
        Canonical rows, as ingestion keeps them.
    suite : mapping
        The suite from :func:`hivcomorb.schema.build_suite` for these columns.

    Returns
    -------
    numpy.ndarray of int64
    """
    n_rows = cohort.height
    every_row = np.arange(n_rows, dtype=np.int64)
    if n_rows == 0:
        return every_row
    # Row marks flag rows one by one. A minimum, a maximum or a first null is
    # one row, which comes back as a position because that is cheaper.
    row_marks: list[pl.Expr] = []
    single_rows: list[pl.Expr] = []
    for expectation in suite["expectations"]:
        kind = expectation["type"]
        kwargs = expectation["kwargs"]
        column = kwargs.get("column")
        if kind in _SCHEMA_EXPECTATIONS:
            continue
        if kind == "expect_table_row_count_to_be_between" and kwargs.get("max_value") is None:
            # The first row, always kept, decides it.
            continue
        if column is not None and column not in cohort.columns:
            # expect_column_to_exist fails whatever rows are kept.
            continue
        dtype = cohort.schema[column] if column is not None else None
        values = pl.col(column).fill_nan(None) if dtype is not None and dtype.is_float() else pl.col(column)
        if kind == "expect_column_values_to_not_be_null":
            # The first null, or the first row when there is none.
            single_rows.append(values.is_null().arg_max())
        elif kind == "expect_column_values_to_be_unique":
            row_marks.append(values.is_not_null() & values.is_duplicated())
        elif kind == "expect_column_values_to_be_between" and dtype.is_numeric():
            single_rows.extend([values.arg_min(), values.arg_max()])
        elif kind == "expect_column_values_to_be_in_set":
            row_marks.append(values.is_not_null() & values.is_first_distinct())
        else:
            return every_row
    keep = np.zeros(n_rows, dtype=bool)
    keep[0] = True
    if row_marks:
        keep |= cohort.select(pl.any_horizontal(row_marks).fill_null(False)).to_series().to_numpy()
    if single_rows:
        found = cohort.select([expr.alias(f"row{i}") for i, expr in enumerate(single_rows)]).row(0)
        keep[[position for position in found if position is not None]] = True
    return np.flatnonzero(keep).astype(np.int64)


class CompactCohort:
    """The deciding rows of a cohort that arrives chunk by chunk, for one validation of all of it.

    :meth:`add` keeps the deciding rows of the rows seen so far (see
    :func:`deciding_rows`), so memory grows with the number of distinct
    values, not with the number of rows. Every expectation is then decided as
    on all rows, except one case: a value that repeats across chunks in a
    unique column is caught only when both rows also decide another
    expectation. Scoring looks for patient ids repeated anywhere in the
    extract before it reads the chunks, and ``source_row`` cannot repeat.

    Parameters
    ----------
    contract : Contract
    """

    def __init__(self, contract: Contract):
        self.contract = contract
        self.rows: pd.DataFrame | None = None
        self.rows_represented = 0

    def add(self, rows: pd.DataFrame, represented: int) -> None:
        """Merge the deciding rows of a chunk of ``represented`` kept rows (``IngestResult.deciding_rows``)."""
        self.rows_represented += represented
        if len(rows) == 0:
            return
        combined = rows if self.rows is None else pd.concat([self.rows, rows], ignore_index=True)
        suite = build_suite(self.contract, columns=combined.columns)
        positions = deciding_rows(pl.from_pandas(combined), suite)
        self.rows = combined.iloc[positions].reset_index(drop=True)

    def validate(self) -> dict[str, Any]:
        """Validate the deciding rows with Great Expectations; see :func:`validate_cohort` for the result.

        The result also gives ``rows_validated`` (the deciding rows) and
        ``rows_represented`` (the kept rows they stand for). Counts per
        expectation refer to the deciding rows.
        """
        if self.rows is None:
            return skipped_validation(self.contract, "no rows were kept")
        validation = validate_cohort(self.rows, self.contract)
        validation["rows_validated"] = len(self.rows)
        validation["rows_represented"] = self.rows_represented
        logger.info(
            "Validation covered all %d kept rows through the %d rows that decide each expectation",
            self.rows_represented,
            len(self.rows),
        )
        return validation


def _safe_result(result: Mapping[str, Any]) -> dict[str, Any]:
    config = result["expectation_config"]
    kwargs = {k: v for k, v in config["kwargs"].items() if k not in ("batch_id", "result_format")}
    raw = result.get("result") or {}
    entry: dict[str, Any] = {
        "expectation": config["type"],
        "column": kwargs.get("column"),
        "kwargs": kwargs,
        "role": (config.get("meta") or {}).get("role"),
        "success": bool(result["success"]),
    }
    for field in _COUNT_FIELDS:
        if field in raw:
            entry[field] = raw[field]
    if config["type"] in _SAFE_OBSERVED and "observed_value" in raw:
        entry["observed_value"] = raw["observed_value"]
    info = result.get("exception_info") or {}
    if info.get("raised_exception"):
        entry["exception"] = str(info.get("exception_message", "raised an exception"))[:300]
    return entry


def skipped_validation(contract: Contract, reason: str) -> dict[str, Any]:
    """Return a validation record for a cohort that was not validated, with the reason."""
    return {
        "success": None,
        "suite": build_suite(contract)["name"],
        "contract_version": contract.version,
        "great_expectations_version": None,
        "statistics": {"evaluated_expectations": 0, "successful_expectations": 0, "unsuccessful_expectations": 0, "success_percent": None},
        "results": [],
        "skipped": reason,
    }


def _describe_arguments(kwargs: Mapping[str, Any]) -> str:
    parts = []
    for key, value in kwargs.items():
        if key == "column":
            continue
        if isinstance(value, list):
            value = ", ".join(str(v) for v in value)
        parts.append(f"{key}: {value}")
    return "; ".join(parts)


def render_validation_html(summary: Mapping[str, Any], validation: Mapping[str, Any]) -> str:
    """Return a self-contained HTML page of the validation results and the reconciliation.

    The page names the source file, mapping, contract version and suite, then
    lists each expectation with its arguments, outcome and counts. It contains no
    patient identifier and no patient value.
    """
    stats = validation.get("statistics") or {}
    when = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    outcome = {True: "all expectations met", False: "some expectations failed", None: "not validated"}[validation.get("success")]
    facts = [
        ("Source file", summary.get("source")),
        ("Mapping", summary.get("mapping")),
        ("Contract version", validation.get("contract_version")),
        ("Expectation suite", validation.get("suite")),
        ("Great Expectations version", validation.get("great_expectations_version") or "not run"),
        ("Cohort content hash (SHA-256)", summary.get("content_hash")),
        ("Reconciliation", summary.get("reconciliation")),
        ("Outcome", outcome),
        ("Expectations evaluated", stats.get("evaluated_expectations")),
        ("Expectations met", stats.get("successful_expectations")),
        ("Expectations failed", stats.get("unsuccessful_expectations")),
        ("Generated", when),
    ]
    if validation.get("skipped"):
        facts.append(("Reason not validated", validation["skipped"]))
    rows = []
    for r in validation.get("results") or ():
        status = htmlkit.Raw('<span class="ok">met</span>' if r["success"] else '<span class="fail">failed</span>')
        rows.append(
            [
                r.get("column") or "(table)",
                r.get("role") or "",
                r["expectation"],
                _describe_arguments(r.get("kwargs") or {}),
                status,
                r.get("element_count", r.get("observed_value", "")),
                r.get("missing_count", ""),
                r.get("unexpected_count", ""),
                r.get("exception", ""),
            ]
        )
    body = "\n".join(
        [
            f"<h1>Validation of the canonical cohort from {htmlkit.escape(summary.get('source', ''))}</h1>",
            htmlkit.paragraph(
                "Great Expectations checked the cohort that ingestion kept against the suite derived from the data "
                "contract. Rows that broke a rule before validation are in quarantine.csv and are counted in the "
                "reconciliation line. Counts only: no patient identifier or value appears on this page."
            ),
            htmlkit.table(["", ""], facts, caption="Run"),
            htmlkit.table(
                ["column", "role", "expectation", "arguments", "result", "rows checked or observed", "missing", "unexpected", "error"],
                rows,
                caption="Expectations",
            ),
        ]
    )
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"/>"
        "<title>hivcomorb ingestion validation</title>"
        "<style>body{font-family:sans-serif;margin:2em;max-width:75em}table{border-collapse:collapse;margin:1em 0}"
        "td,th{border:1px solid #bbb;padding:0.25em 0.5em;text-align:left;vertical-align:top}"
        "caption{font-weight:bold;text-align:left}.ok{color:#176117}.fail{color:#b00020;font-weight:bold}</style>"
        f"</head><body>\n{body}\n</body></html>\n"
    )
