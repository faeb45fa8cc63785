"""Checks before and during scoring: required columns and out-of-distribution rows."""

from __future__ import annotations

import logging
from typing import Iterable, Sequence

import numpy as np
import pandas as pd
import polars as pl

from hivcomorb.bundle import ModelBundle
from hivcomorb.contract import Contract
from hivcomorb.errors import ModelError
from hivcomorb.pyfunc import OutOfDistributionDetector
from hivcomorb.score.reasons import number_texts

logger = logging.getLogger(__name__)


def check_input_columns(
    bundle: ModelBundle,
    contract: Contract,
    present: Iterable[str],
    *,
    extract_name: str,
    model_uri: str,
    allow_missing_labs: bool = False,
) -> list[str]:
    """Check that an extract has every column the model was trained on.

    Parameters
    ----------
    bundle : ModelBundle
    contract : Contract
    present : iterable of str
        Canonical columns the ingested extract contains (columns the extract
        lacks entirely must not be listed, even if ingestion adds them empty).
    extract_name : str
        File name, for the error message.
    model_uri : str
        The model reference, for the error message.
    allow_missing_labs : bool
        If true, absent lab columns are scored as missing values, the way a
        missing lab value is handled in training; otherwise they are an error.

    Returns
    -------
    list of str
        The absent lab columns that are scored as missing (empty unless
        ``allow_missing_labs``).

    Raises
    ------
    ModelError
        If a demographic-aware model meets an extract without its demographic
        columns, or any other input column is absent and not allowed to be.
    """
    present = set(present)
    absent = [c for c in bundle.input_columns if c not in present]
    if not absent:
        return []
    demographic = [c for c in absent if contract.column(c).role == "demographic"]
    if demographic:
        raise ModelError(
            f"{extract_name} lacks the demographic columns {demographic}, which the demographic-aware model "
            f"{model_uri} needs. Add them to the extract (or map them with --mapping), or score with the "
            "demographic-unaware model (--model champion-unaware)"
        )
    labs = [c for c in absent if contract.column(c).role == "lab"]
    others = [c for c in absent if c not in labs]
    if others or (labs and not allow_missing_labs):
        fix = "Add them to the extract or map them with --mapping"
        if labs and not others:
            fix += ", or set score.allow_missing_labs: true to score absent labs as missing values"
        raise ModelError(f"{extract_name} lacks the columns {absent}, which the model {model_uri} was trained on. {fix}")
    logger.warning("The extract lacks labs %s, so every row is scored with them missing", labs)
    return labs


def range_flags(frame: pd.DataFrame, ranges: dict[str, tuple[float, float]], units: dict[str, str | None]) -> tuple[np.ndarray, pl.Series]:
    """Flag rows with a value outside the training data's range.

    Returns
    -------
    flags : ndarray of bool
        True where at least one column is outside its training range.
    reasons : polars Series of str
        For flagged rows, e.g. ``hba1c above training maximum 120 mmol/mol``,
        several joined by ``; ``; null elsewhere.
    """
    n_rows = len(frame)
    parts: list[tuple[np.ndarray, str]] = []
    flags = np.zeros(n_rows, dtype=bool)
    columns = [column for column in ranges if column in frame.columns]
    # Every limit is formatted in one call, the way reasons print values (293812.0 reads 293,800).
    limits = pl.Series([float(limit) for column in columns for limit in ranges[column]], dtype=pl.Float64)
    limit_texts = number_texts(limits).to_list()
    for column, low_text, high_text in zip(columns, limit_texts[0::2], limit_texts[1::2]):
        low, high = ranges[column]
        values = pd.to_numeric(frame[column]).astype("float64").to_numpy(na_value=np.nan)
        unit = f" {units[column]}" if units.get(column) else ""
        below = values < low
        above = values > high
        if below.any():
            parts.append((below, f"{column} below training minimum {low_text}{unit}"))
        if above.any():
            parts.append((above, f"{column} above training maximum {high_text}{unit}"))
        flags |= below | above
    # Only flagged rows get a text, so the texts are built for those rows alone.
    rows = np.flatnonzero(flags)
    texts = _join([_text_where(mask[rows], text) for mask, text in parts], rows.size)
    reasons = pl.repeat(None, n_rows, dtype=pl.String, eager=True)
    if rows.size:
        reasons = reasons.scatter(rows, texts)
    return flags, reasons


def detector_flags(detector: OutOfDistributionDetector | None, matrix: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, pl.Series]:
    """Flag rows unlike the training cohort by the out-of-distribution detector.

    Returns
    -------
    scores : ndarray of float
        The detector's score per row (lower is less typical); NaN without a detector.
    flags : ndarray of bool
    reasons : polars Series of str
        For flagged rows, the detector's description; null elsewhere.
    """
    n_rows = len(matrix)
    if detector is None:
        return np.full(n_rows, np.nan), np.zeros(n_rows, dtype=bool), pl.Series([None] * n_rows, dtype=pl.String)
    scores, flags = detector.is_outlier(matrix)
    rows = np.flatnonzero(flags)
    reasons = pl.repeat(None, n_rows, dtype=pl.String, eager=True)
    if rows.size:
        # Texts are built for the flagged rows only, about one in two hundred.
        reasons = reasons.scatter(rows, pl.Series(detector.describe(matrix.iloc[rows], scores[rows]), dtype=pl.String))
    return scores, flags, reasons


def _text_where(mask: np.ndarray, text: str) -> pl.Series:
    return pl.select(pl.when(pl.Series(mask)).then(pl.lit(text)).otherwise(None)).to_series()


def _join(parts: Sequence[pl.Series], n_rows: int) -> pl.Series:
    if not parts:
        return pl.Series([None] * n_rows, dtype=pl.String)
    frame = pl.DataFrame({f"part{i}": p for i, p in enumerate(parts)})
    joined = frame.select(pl.concat_str(pl.all(), separator="; ", ignore_nulls=True).alias("joined")).to_series()
    # concat_str with ignore_nulls turns an all-null row into "", which means no reason.
    return joined.replace("", None)


def join_reasons(first: pl.Series, second: pl.Series) -> pl.Series:
    """Join two reason columns row by row with ``; ``, keeping null where both are null."""
    rows = (first.is_not_null() | second.is_not_null()).arg_true()
    joined = pl.repeat(None, len(first), dtype=pl.String, eager=True)
    if rows.len() == 0:
        return joined
    # Few rows have a reason, so only those are joined.
    return joined.scatter(rows, _join([first.gather(rows), second.gather(rows)], rows.len()))
