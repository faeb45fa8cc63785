"""Great Expectations validation of the canonical cohort, and its HTML page for auditors.

The suite comes from :func:`hivcomorb.schema.build_suite`. Validation runs in
an ephemeral context with progress bars off. Results keep counts and
percentages only: the lists of unexpected values that Great Expectations can
return are never requested and never stored, so no patient value leaves this
module.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
from typing import Any, Mapping

import pandas as pd

from hivcomorb import htmlkit
from hivcomorb.contract import Contract
from hivcomorb.schema import build_suite

logger = logging.getLogger(__name__)

# Result fields copied from Great Expectations results; everything else
# (partial_unexpected_list, unexpected_index_list and the like) is dropped.
_COUNT_FIELDS = ("element_count", "missing_count", "unexpected_count", "unexpected_percent")
# Expectations whose observed_value is a count or a dtype name, never a patient value.
_SAFE_OBSERVED = {"expect_table_row_count_to_be_between", "expect_column_values_to_be_in_type_list"}
_RESULT_FORMAT = {"result_format": "BASIC", "partial_unexpected_count": 0, "include_unexpected_rows": False}

_batch_definition: Any = None


def _get_batch_definition() -> Any:
    """Return a whole-dataframe batch definition in an ephemeral context, made once per process."""
    global _batch_definition
    if _batch_definition is not None:
        return _batch_definition
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    source = context.data_sources.add_pandas("hivcomorb_ingest")
    asset = source.add_dataframe_asset("canonical_cohort")
    _batch_definition = asset.add_batch_definition_whole_dataframe("whole_cohort")
    return _batch_definition


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
    # TODO: validation dominates large extracts (bench/bench_ingest.py on a shared 2-core machine, 100,000 rows:
    # parsing 2.9 s, validation 4.8 s); validate in chunks in parallel once a 1,000,000-row run must stay under a minute.
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
