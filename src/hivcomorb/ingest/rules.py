"""Quarantine rules: the reasons a source row is kept out of the canonical cohort.

Each quarantine entry names one rule below, the canonical column it concerns,
the source row number and the raw cell text. A row breaking several rules
gets one entry per rule and column, and counts once as quarantined.
"""

from __future__ import annotations

import numpy as np
import polars as pl

MISSING_ID = "missing_id"
DUPLICATE_ID = "duplicate_id"
UNPARSEABLE_VALUE = "unparseable_value"
UNKNOWN_UNIT = "unknown_unit"
NO_DETECTION_LIMIT = "no_detection_limit"
CENSORED_NOT_ALLOWED = "censored_not_allowed"
INVALID_CENSOR_FLAG = "invalid_censor_flag"
OUTSIDE_POSSIBLE_RANGE = "outside_possible_range"
NOT_AN_INTEGER = "not_an_integer"
UNKNOWN_CATEGORY = "unknown_category"
INVALID_LABEL = "invalid_label"

DESCRIPTIONS = {
    MISSING_ID: "the patient id is empty",
    DUPLICATE_ID: "the patient id occurs on more than one row; every such row is quarantined",
    UNPARSEABLE_VALUE: "the cell is not a number, a censored result or a missing-value word",
    UNKNOWN_UNIT: "the unit written in the cell or unit column is not a known unit of the lab",
    NO_DETECTION_LIMIT: "a below-detection-limit word in a lab column without a detection limit",
    CENSORED_NOT_ALLOWED: "a censored result (<, >) in a column that is not a lab",
    INVALID_CENSOR_FLAG: "the censoring-flag column holds something other than <, > or empty",
    OUTSIDE_POSSIBLE_RANGE: "the value, in canonical units, is outside the physiologically possible range",
    NOT_AN_INTEGER: "a whole number is expected",
    UNKNOWN_CATEGORY: "the value is neither a contract category nor recoded to one by the mapping",
    INVALID_LABEL: "a label must be 1/0, yes/no, Y/N, TRUE/FALSE or empty",
}

QUARANTINE_COLUMNS = ("source_row", "column", "raw_value", "rule", "detail")


def entries(
    positions: pl.Series | np.ndarray,
    column: str,
    raw_values: pl.Series | None,
    rule: str | pl.Series,
    detail: str | pl.Series | None = None,
) -> pl.DataFrame:
    """Return quarantine entries for ``positions`` (0-based row positions in the frame).

    ``raw_values`` is the full source column, and its cells at ``positions``
    are copied as text. ``None`` leaves the raw value empty. The id column
    passes ``None``, so a patient id never enters the quarantine file.
    """
    positions = pl.Series("position", positions, dtype=pl.Int64)
    n = positions.len()
    if raw_values is None:
        raw = pl.repeat(None, n, dtype=pl.String, eager=True).alias("raw_value")
    else:
        raw = raw_values.gather(positions).cast(pl.String).alias("raw_value")
    rule_series = rule.alias("rule") if isinstance(rule, pl.Series) else pl.repeat(rule, n, dtype=pl.String, eager=True).alias("rule")
    if isinstance(detail, pl.Series):
        detail_series = detail.alias("detail").cast(pl.String)
    elif detail is None and isinstance(rule, pl.Series):
        detail_series = rule.replace_strict(DESCRIPTIONS, default=None, return_dtype=pl.String).alias("detail")
    else:
        detail_series = pl.repeat(detail or DESCRIPTIONS.get(str(rule), None), n, dtype=pl.String, eager=True).alias("detail")
    return pl.DataFrame(
        [positions, pl.repeat(column, n, dtype=pl.String, eager=True).alias("column"), raw, rule_series.cast(pl.String), detail_series]
    )


def empty_entries() -> pl.DataFrame:
    """Return an empty quarantine entry frame with the right columns."""
    return pl.DataFrame(
        schema={"position": pl.Int64, "column": pl.String, "raw_value": pl.String, "rule": pl.String, "detail": pl.String}
    )


def outside_range(values: pl.Series, bounds: tuple[float, float] | None) -> pl.Series:
    """Return a boolean mask of finite values outside ``bounds`` (inclusive); null counts as inside."""
    if bounds is None:
        return pl.Series([False] * values.len(), dtype=pl.Boolean)
    low, high = bounds
    return ((values < low) | (values > high)).fill_null(False)


def format_range(bounds: tuple[float, float], unit: str | None) -> str:
    """Return ``"low-high unit"`` with integral bounds written without decimals."""
    low, high = (int(b) if float(b).is_integer() else b for b in bounds)
    return f"{low}-{high} {unit}" if unit else f"{low}-{high}"
