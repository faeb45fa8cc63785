"""Great Expectations validation of the canonical cohort, and its HTML page for auditors.

The suite comes from :func:`hivcomorb.schema.build_suite`. Validation runs in
an ephemeral context with progress bars off. Results keep counts and
percentages only: the lists of unexpected values that Great Expectations can
return are never requested and never stored, so no patient value leaves this
module.

A large extract can be validated once, on its deciding rows
(:func:`deciding_rows`): for each expectation, the rows that would break it
if any row does. Each expectation then succeeds or fails as it would on
every row, at the cost of one small validation. The ingest stage does this
when ``ingest.validate`` asks for it (:class:`RowsSetting`,
:func:`validate_kept_rows`), and scoring does it over all chunks of an
extract (:class:`CompactCohort`). The counts that Great Expectations reports
per expectation then refer to the deciding rows, so the ingest stage adds
the same counts over every kept row, computed with polars
(:func:`all_rows_counts`), and labels each set with its origin.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import threading
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
import pandas as pd
import polars as pl

from hivcomorb import htmlkit
from hivcomorb.contract import Contract
from hivcomorb.errors import ConfigError, ExtractError
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

# Values of ingest.validate: which kept rows the ingest stage gives Great Expectations.
VALIDATE_AUTO = "auto"
VALIDATE_ALL_ROWS = "all_rows"
VALIDATE_COMPACT = "compact"
VALIDATE_CHOICES = (VALIDATE_AUTO, VALIDATE_ALL_ROWS, VALIDATE_COMPACT)

# Expectations that all_rows_counts counts, with the arguments it understands. Any other argument
# (mostly, strict_min and the like) changes what Great Expectations counts, so such an expectation
# gets no count.
_COUNTED_ARGUMENTS = {
    "expect_column_values_to_not_be_null": {"column"},
    "expect_column_values_to_be_unique": {"column"},
    "expect_column_values_to_be_between": {"column", "min_value", "max_value"},
    "expect_column_values_to_be_in_set": {"column", "value_set"},
}

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


@dataclass(frozen=True)
class RowsSetting:
    """The kept rows that the ingest stage gives Great Expectations, as the ``ingest`` settings choose them.

    Attributes
    ----------
    mode : {"auto", "all_rows", "compact"}
        ``ingest.validate``. ``all_rows`` gives Great Expectations every kept
        row, ``compact`` the deciding rows only (:func:`deciding_rows`), and
        ``auto`` chooses by the number of kept rows.
    all_rows_up_to : int or None
        ``ingest.validate_all_rows_up_to``. With ``auto``, the largest number
        of kept rows validated row by row; more kept rows are validated on
        their deciding rows.
    """

    mode: str
    all_rows_up_to: int | None = None

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> "RowsSetting":
        """Read the two settings from the ``ingest`` block of the configuration.

        Without ``validate``, every kept row is validated.

        Raises
        ------
        ConfigError
            If ``validate`` is not one of :data:`VALIDATE_CHOICES`, or is
            ``auto`` while ``validate_all_rows_up_to`` is not a whole number
            of rows, 0 or more.
        """
        mode = options.get("validate", VALIDATE_ALL_ROWS)
        if not isinstance(mode, str) or mode not in VALIDATE_CHOICES:
            raise ConfigError(
                f"ingest.validate must be one of {', '.join(repr(c) for c in VALIDATE_CHOICES)}, got {mode!r}; "
                "set it in conf/stages/ingest.yaml or in the ingest block of the dataset configuration"
            )
        limit = options.get("validate_all_rows_up_to")
        valid_limit = isinstance(limit, int) and not isinstance(limit, bool) and limit >= 0
        if (limit is not None or mode == VALIDATE_AUTO) and not valid_limit:
            raise ConfigError(
                f"ingest.validate_all_rows_up_to must be a whole number of kept rows, 0 or more (required when "
                f"ingest.validate is 'auto'), got {limit!r}; set it in conf/stages/ingest.yaml or in the ingest block "
                "of the dataset configuration"
            )
        return cls(mode=mode, all_rows_up_to=limit)

    def mode_for(self, rows_kept: int) -> str:
        """Return ``all_rows`` or ``compact`` for a cohort of ``rows_kept`` kept rows."""
        if self.mode != VALIDATE_AUTO:
            return self.mode
        return VALIDATE_ALL_ROWS if rows_kept <= self.all_rows_up_to else VALIDATE_COMPACT


def validate_kept_rows(
    cohort: pd.DataFrame, contract: Contract, mode: str, rows: pl.DataFrame | None = None
) -> dict[str, Any]:
    """Validate the kept rows of one extract, row by row or on their deciding rows.

    Parameters
    ----------
    cohort : pandas.DataFrame
        The canonical cohort, as :func:`validate_cohort` takes it.
    contract : Contract
    mode : {"all_rows", "compact"}
        ``all_rows`` runs the suite on every row of ``cohort``. ``compact``
        runs it on the rows of :func:`deciding_rows`, so that each
        expectation succeeds or fails as on every row. Each result then also
        gets ``all_rows``: the counts of :func:`all_rows_counts` over every
        row, where that function counts the expectation.
    rows : polars.DataFrame, optional
        The same rows in polars, as ingestion builds them, which saves a
        conversion of ``cohort`` in compact mode.

    Returns
    -------
    dict
        The result of :func:`validate_cohort`, plus ``mode``,
        ``rows_validated`` (the rows Great Expectations checked) and
        ``rows_represented`` (the kept rows). In compact mode the counts of
        each result other than ``all_rows`` refer to the deciding rows.
    """
    if mode == VALIDATE_ALL_ROWS:
        validation = validate_cohort(cohort, contract)
        validation.update(mode=VALIDATE_ALL_ROWS, rows_validated=len(cohort), rows_represented=len(cohort))
        return validation
    if mode != VALIDATE_COMPACT:
        raise ValueError(f"mode must be {VALIDATE_ALL_ROWS!r} or {VALIDATE_COMPACT!r}, got {mode!r}")

    rows = rows if rows is not None else pl.from_pandas(cohort)
    suite = build_suite(contract, columns=rows.columns)
    positions = deciding_rows(rows, suite)
    logger.info(
        "Validation: Great Expectations checks the %d rows that decide each expectation for all %d kept rows",
        positions.size,
        rows.height,
    )
    validation = validate_cohort(cohort.iloc[positions].reset_index(drop=True), contract)
    counts = all_rows_counts(rows, suite)
    for result in validation["results"]:
        counted = counts.get((result["expectation"], result["column"]))
        if counted is not None:
            result["all_rows"] = counted
    validation.update(mode=VALIDATE_COMPACT, rows_validated=int(positions.size), rows_represented=rows.height)
    return validation


def coverage_text(validation: Mapping[str, Any]) -> str | None:
    """Return the sentences that state which kept rows Great Expectations checked, or None when no mode is recorded."""
    mode = validation.get("mode")
    checked, kept = validation.get("rows_validated"), validation.get("rows_represented")
    if mode == VALIDATE_ALL_ROWS:
        return f"Great Expectations checked all {kept:,} kept rows."
    if mode != VALIDATE_COMPACT:
        return None
    return (
        f"Great Expectations checked {checked:,} deciding rows, which represent all {kept:,} kept rows. These are the "
        "rows that would break an expectation if any kept row did: each column's minimum, maximum and first missing "
        "value, the first row of each distinct value, and every row whose value repeats in a column that must be "
        "unique. Each expectation therefore succeeded or failed exactly as it would on all kept rows. The counts that "
        "Great Expectations reports per expectation (element_count, missing_count, unexpected_count) refer to the "
        f"{checked:,} deciding rows."
    )


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


def deciding_frame(cohort: pd.DataFrame, contract: Contract) -> pd.DataFrame:
    """Return the rows of the pandas ``cohort`` that decide each expectation of its suite (:func:`deciding_rows`)."""
    positions = deciding_rows(pl.from_pandas(cohort), build_suite(contract, columns=cohort.columns))
    return cohort.iloc[positions].reset_index(drop=True)


def all_rows_counts(cohort: pl.DataFrame, suite: Mapping[str, Any]) -> dict[tuple[str, str | None], dict[str, int]]:
    """Count with polars, over every row of ``cohort``, what Great Expectations reports per expectation.

    The row count gets ``observed_value``. A not-null, unique, range or
    allowed-set expectation gets ``element_count`` (every row) and
    ``unexpected_count``. All but not-null also get ``missing_count``, the
    null or NaN values. The unexpected values are the missing ones for
    not-null, present values that repeat for unique, present values below
    ``min_value`` or above ``max_value`` for a range, and present values
    outside ``value_set`` for an allowed set. Great Expectations 1.24.1, the
    version in requirements.lock, gives the same counts on the same rows in
    pandas, which tests/test_ingest_validate.py checks. Other expectations,
    an expectation with other arguments (such as ``mostly``) and a column
    that ``cohort`` lacks get no entry.

    Parameters
    ----------
    cohort : polars.DataFrame
        Canonical rows, as ingestion keeps them.
    suite : mapping
        The suite from :func:`hivcomorb.schema.build_suite` for these columns.

    Returns
    -------
    dict
        ``(expectation type, column)`` to a dict of counts; the column is
        None for the row count.
    """
    n_rows = cohort.height
    counts: dict[tuple[str, str | None], dict[str, int]] = {}
    # One select computes every count, so polars reads each column once for all of them.
    expressions: list[pl.Expr] = []
    targets: list[tuple[tuple[str, str | None], str]] = []
    for expectation in suite["expectations"]:
        kind = expectation["type"]
        kwargs = expectation["kwargs"]
        column = kwargs.get("column")
        key = (kind, column)
        if kind == "expect_table_row_count_to_be_between":
            counts[key] = {"observed_value": n_rows}
            continue
        understood = _COUNTED_ARGUMENTS.get(kind)
        if understood is None or set(kwargs) - understood or column not in cohort.columns:
            continue
        dtype = cohort.schema[column]
        values = pl.col(column).fill_nan(None) if dtype.is_float() else pl.col(column)
        present = values.is_not_null()
        if kind == "expect_column_values_to_not_be_null":
            unexpected = ~present
        elif kind == "expect_column_values_to_be_unique":
            unexpected = present & values.is_duplicated()
        elif kind == "expect_column_values_to_be_between":
            if not dtype.is_numeric():
                continue
            outside = pl.lit(False)
            if kwargs.get("min_value") is not None:
                outside = outside | (values < kwargs["min_value"])
            if kwargs.get("max_value") is not None:
                outside = outside | (values > kwargs["max_value"])
            unexpected = present & outside
        else:
            unexpected = present & ~values.is_in(list(kwargs["value_set"]))
        counts[key] = {"element_count": n_rows}
        if kind != "expect_column_values_to_not_be_null":
            expressions.append((~present).sum().alias(f"count{len(expressions)}"))
            targets.append((key, "missing_count"))
        expressions.append(unexpected.fill_null(False).sum().alias(f"count{len(expressions)}"))
        targets.append((key, "unexpected_count"))
    if expressions:
        found = cohort.select(expressions).row(0)
        for (key, field_name), value in zip(targets, found):
            counts[key][field_name] = int(value)
    return counts


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
        self.rows = deciding_frame(combined, self.contract)

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

    The page names the source file, mapping, contract version and suite,
    states which kept rows Great Expectations checked, then lists each
    expectation with its arguments, outcome and counts. After a compact
    validation the table has two sets of counts, each labelled with the rows
    it covers and with who counted them: Great Expectations on the deciding
    rows, and hivcomorb on every kept row. The page contains no patient
    identifier and no patient value.
    """
    stats = validation.get("statistics") or {}
    when = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    outcome = {True: "all expectations met", False: "some expectations failed", None: "not validated"}[validation.get("success")]
    compact = validation.get("mode") == VALIDATE_COMPACT
    facts = [
        ("Source file", summary.get("source")),
        ("Mapping", summary.get("mapping")),
        ("Contract version", validation.get("contract_version")),
        ("Expectation suite", validation.get("suite")),
        ("Great Expectations version", validation.get("great_expectations_version") or "not run"),
        ("Cohort content hash (SHA-256)", summary.get("content_hash")),
        ("Reconciliation", summary.get("reconciliation")),
    ]
    if validation.get("mode"):
        facts.extend(
            [
                ("Validation mode", validation["mode"]),
                ("Kept rows", validation.get("rows_represented")),
                ("Rows checked by Great Expectations", validation.get("rows_validated")),
            ]
        )
    facts.extend(
        [
            ("Outcome", outcome),
            ("Expectations evaluated", stats.get("evaluated_expectations")),
            ("Expectations met", stats.get("successful_expectations")),
            ("Expectations failed", stats.get("unsuccessful_expectations")),
            ("Generated", when),
        ]
    )
    if validation.get("skipped"):
        facts.append(("Reason not validated", validation["skipped"]))

    introduction = [
        "Great Expectations checked the cohort that ingestion kept against the suite derived from the data contract."
    ]
    coverage = coverage_text(validation)
    if coverage:
        introduction.append(coverage)
    if compact:
        introduction.append(
            "Great Expectations did not compute the three columns marked \"all kept rows, counted by hivcomorb\". "
            f"hivcomorb counted them with polars over all {validation.get('rows_represented'):,} kept rows, and counts "
            "missing and unexpected values as Great Expectations does. They are blank where no such count applies, "
            "as for expectations about columns and types."
        )
    introduction.append(
        "Rows that broke a rule before validation are in quarantine.csv and are counted in the reconciliation line. "
        "Counts only: no patient identifier or value appears on this page."
    )
    header = ["column", "role", "expectation", "arguments", "result"]
    if compact:
        header += [
            "rows checked or observed (deciding rows, Great Expectations)",
            "missing (deciding rows, Great Expectations)",
            "unexpected (deciding rows, Great Expectations)",
            "rows or observed (all kept rows, counted by hivcomorb)",
            "missing (all kept rows, counted by hivcomorb)",
            "unexpected (all kept rows, counted by hivcomorb)",
        ]
    else:
        header += ["rows checked or observed", "missing", "unexpected"]
    header.append("error")
    body = "\n".join(
        [
            f"<h1>Validation of the canonical cohort from {htmlkit.escape(summary.get('source', ''))}</h1>",
            htmlkit.paragraph(" ".join(introduction)),
            htmlkit.table(["", ""], facts, caption="Run"),
            htmlkit.table(header, _expectation_rows(validation.get("results") or (), compact), caption="Expectations"),
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


def _expectation_rows(results: Any, compact: bool) -> list[list[Any]]:
    """Return one table row per expectation result; with ``compact``, hivcomorb's all-rows counts follow the deciding-row counts."""
    rows = []
    for r in results:
        status = htmlkit.Raw('<span class="ok">met</span>' if r["success"] else '<span class="fail">failed</span>')
        row = [
            r.get("column") or "(table)",
            r.get("role") or "",
            r["expectation"],
            _describe_arguments(r.get("kwargs") or {}),
            status,
            r.get("element_count", r.get("observed_value", "")),
            r.get("missing_count", ""),
            r.get("unexpected_count", ""),
        ]
        if compact:
            counted = r.get("all_rows") or {}
            row += [
                counted.get("element_count", counted.get("observed_value", "")),
                counted.get("missing_count", ""),
                counted.get("unexpected_count", ""),
            ]
        row.append(r.get("exception", ""))
        rows.append(row)
    return rows
