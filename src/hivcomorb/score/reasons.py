"""Per-patient reasons for a flag: the input columns with the largest SHAP values.

SHAP values come from :func:`hivcomorb.score.explainers.shap_values`, which
explains every model kind the zoo can make a champion, in log-odds of the
model before calibration. A calibrator maps log-odds to probability
monotonically, so the direction of each reason holds for the calibrated
probability too.

The one-hot indicators of a category column are summed back into that column
(SHAP values are additive), so a reason reads ``ethnicity=black_african raises
risk`` rather than naming an indicator.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd
import polars as pl

from hivcomorb.contract import UNKNOWN, Contract
from hivcomorb.score.explainers import shap_values

__all__ = ["LOWERS", "RAISES", "SIGNIFICANT_FIGURES", "ValueTexts", "column_groups", "number_texts", "shap_values", "top_reasons"]

RAISES = "raises risk"
LOWERS = "lowers risk"
# Lab values and training limits are printed to this many significant figures.
SIGNIFICANT_FIGURES = 4
# A double represents 15 significant decimal digits exactly (DBL_DIG in C's float.h).
MAX_SIGNIFICANT_FIGURES = 15


def number_texts(values: pl.Series, significant: int = SIGNIFICANT_FIGURES) -> pl.Series:
    """Format numbers as plain decimals rounded to ``significant`` figures.

    The whole part has thousands separators, as the project's reports print
    counts, and trailing zeros after the decimal point are dropped:
    ``293812`` reads ``293,800``, ``0.0042`` reads ``0.0042`` and ``120.0``
    reads ``120``. Scientific notation is never used, so a very small value
    keeps its significant figures behind leading zeros (``0.00001234``).

    Parameters
    ----------
    values : polars Series of numbers
    significant : int
        Significant figures kept, from 1 to 15.

    Returns
    -------
    polars Series of str
        Null where a value is null or NaN; ``inf`` or ``-inf`` for an infinite value.
    """
    numbers = values.cast(pl.Float64).to_numpy()
    codes, texts = _number_table(numbers, significant)
    return texts.gather(codes).alias(values.name)


def _number_table(values: np.ndarray, significant: int) -> tuple[np.ndarray, pl.Series]:
    """Return each value's position in a series of distinct texts, and that series.

    Many rows share a rounded value, so each distinct one is formatted once.
    """
    if not 1 <= significant <= MAX_SIGNIFICANT_FIGURES:
        raise ValueError(f"significant must be from 1 to {MAX_SIGNIFICANT_FIGURES}, got {significant}")
    values = np.asarray(values, dtype=np.float64)
    # The texts start with zero, the two infinities and a null for NaN. Distinct rounded values follow.
    fixed = pl.Series(["0", "inf", "-inf", None], dtype=pl.String)
    codes = np.select([values == 0, values == np.inf, values == -np.inf], [0, 1, 2], default=3).astype(np.int64)

    regular = np.flatnonzero(np.isfinite(values) & (values != 0))
    magnitude = np.abs(values[regular])
    negative = values[regular] < 0
    # Each value is rounded to mantissa x 10**exponent, where the mantissa is a whole number of ``significant``
    # digits, or one more after a carry (9999.6 becomes 10000 at 4 figures).
    exponent = np.floor(np.log10(magnitude)).astype(np.int64) - (significant - 1)
    scaled = np.empty_like(magnitude)
    up = exponent >= 0
    scaled[up] = magnitude[up] / 10.0 ** exponent[up]
    # A negative exponent is applied in two factors, so that 10**-exponent does not overflow for subnormal values.
    half = -exponent[~up] // 2
    scaled[~up] = magnitude[~up] * 10.0**half * 10.0 ** (-exponent[~up] - half)
    mantissa = np.rint(scaled).astype(np.int64)
    _round_near_ties(magnitude, scaled, significant, mantissa, exponent)

    # One integer identifies each rounded value. It fits in int64 because the mantissa is at most
    # 10**significant and, for finite doubles, the exponent lies between -338 and 308.
    base = 10**significant + 1
    inverse, keys = pd.factorize((exponent * 2 + negative) * base + mantissa)
    codes[regular] = len(fixed) + inverse
    # Floor division and modulo take each key apart again, also for a negative exponent.
    exponent_and_sign = keys // base
    distinct = pl.DataFrame({"mantissa": keys % base, "exponent": exponent_and_sign // 2, "negative": (exponent_and_sign % 2).astype(bool)})
    formatted = distinct.select(_decimal_text(pl.col("mantissa"), pl.col("exponent"), pl.col("negative"))).to_series()
    return codes, pl.concat([fixed, formatted])


def _round_near_ties(magnitude: np.ndarray, scaled: np.ndarray, significant: int, mantissa: np.ndarray, exponent: np.ndarray) -> None:
    """Round again, in place, the values whose scaled form lies within float error of a tie between two mantissas.

    Scaling rounds too: the double nearest 15.605 lies slightly above it, but
    multiplying that double by 100 gives exactly 1560.5. Python's formatting
    rounds the double itself correctly, so it decides these few values.
    """
    near_tie = np.flatnonzero(np.abs(scaled - np.floor(scaled) - 0.5) <= 16 * np.finfo(np.float64).eps * scaled)
    if not near_tie.size:
        return
    distinct, inverse = np.unique(magnitude[near_tie], return_inverse=True)
    # Scientific notation with significant - 1 decimals gives the mantissa digits and the exponent, e.g. 1.561e+01.
    parts = [f"{value:.{significant - 1}e}".split("e") for value in distinct.tolist()]
    mantissa[near_tie] = np.array([int(digits.replace(".", "")) for digits, _ in parts], dtype=np.int64)[inverse]
    exponent[near_tie] = np.array([int(power) for _, power in parts], dtype=np.int64)[inverse] - (significant - 1)


def _decimal_text(mantissa: pl.Expr, exponent: pl.Expr, negative: pl.Expr) -> pl.Expr:
    """Write mantissa x 10**exponent in positional notation with thousands separators."""
    digits = mantissa.cast(pl.String)
    decimals = (-exponent).clip(lower_bound=0)
    # Zeros are appended for a positive exponent, and prepended so that at least one digit precedes the point.
    padded = (
        pl.when(exponent >= 0)
        .then(digits.str.pad_end(digits.str.len_chars() + exponent, "0"))
        .otherwise(digits.str.zfill(decimals + 1))
    )
    n_whole = padded.str.len_chars() - decimals
    whole = padded.str.slice(0, n_whole)
    fraction = padded.str.slice(n_whole).str.strip_chars_end("0")
    # Polars regular expressions (the Rust regex crate) have no lookahead, so the separators go into the reversed text.
    grouped = whole.str.reverse().str.replace_all(r"(\d{3})", "${1},").str.strip_suffix(",").str.reverse()
    return pl.concat_str(
        [
            pl.when(negative).then(pl.lit("-")).otherwise(pl.lit("")),
            grouped,
            pl.when(fraction.str.len_chars() > 0).then(pl.lit(".") + fraction).otherwise(pl.lit("")),
        ]
    )


def column_groups(feature_names: Sequence[str], input_columns: Sequence[str], contract: Contract) -> list[tuple[str, list[int]]]:
    """Map each input column to the positions of its features in ``feature_names``."""
    position = {name: i for i, name in enumerate(feature_names)}
    groups = []
    for column in input_columns:
        if contract.column(column).dtype == "category":
            indices = [i for name, i in position.items() if name.startswith(f"{column}=")]
        else:
            indices = [position[column]] if column in position else []
        if indices:
            groups.append((column, indices))
    return groups


class ValueTexts:
    """Value texts that reasons print, e.g. ``58.1 mmol/mol``, ``<20 copies/mL`` or ``293,800 copies/mL``.

    When a reason first needs a column of the chunk, each distinct value of
    that column is formatted once. Every label and rank then gathers the texts
    of the rows it explains.
    """

    def __init__(self, frame: pd.DataFrame, contract: Contract):
        self.frame = frame
        self.contract = contract
        self._tables: dict[str, tuple[np.ndarray | None, pl.Series, pl.Series | None]] = {}

    def gather(self, column: str, positions: np.ndarray) -> pl.Series:
        """Return the value texts of ``column`` at the row positions ``positions`` of the frame."""
        if column not in self._tables:
            self._tables[column] = self._build(column)
        codes, texts, flags = self._tables[column]
        text = texts.gather(positions if codes is None else codes[positions])
        if flags is not None:
            # A censored value reads e.g. <20 copies/mL. A missing one stays missing, flag or not.
            text = pl.select(pl.concat_str([flags.gather(positions).fill_null(""), text])).to_series()
        return text.fill_null("missing")

    def _build(self, column: str) -> tuple[np.ndarray | None, pl.Series, pl.Series | None]:
        """Return each row's position in the texts of ``column``, those texts, and the censoring flags (``<``, ``>``).

        A category column has one text per row, so its positions are None.
        """
        spec = self.contract.column(column)
        series = self.frame[column]
        if spec.dtype == "category":
            return None, _strings(series).fill_null(UNKNOWN), None
        codes, texts = _number_table(pd.to_numeric(series).astype("float64").to_numpy(na_value=np.nan), SIGNIFICANT_FIGURES)
        if spec.unit:
            texts = texts + f" {spec.unit}"
        censored_column = f"{column}_censored"
        flags = _strings(self.frame[censored_column]) if censored_column in self.frame.columns else None
        return codes, texts, flags


def _strings(series: pd.Series) -> pl.Series:
    return pl.Series(series.astype(object).where(series.notna(), None).tolist(), dtype=pl.String)


def top_reasons(
    contributions: np.ndarray,
    texts: ValueTexts,
    rows: np.ndarray,
    groups: Sequence[tuple[str, Sequence[int]]],
    n_reasons: int = 3,
) -> list[pl.Series]:
    """Return ``n_reasons`` text columns: the input columns with the largest absolute SHAP value per row.

    Parameters
    ----------
    contributions : ndarray of shape (len(rows), n_features)
        SHAP values of the rows ``rows`` of the chunk.
    texts : ValueTexts
        Value texts of the chunk.
    rows : ndarray of int
        Positions in the chunk of the explained rows.
    groups : sequence of (column, feature positions)
        From :func:`column_groups`.
    n_reasons : int

    Returns
    -------
    list of polars Series of str
        Reason ``k`` of each explained row, e.g. ``hba1c=58.1 mmol/mol raises
        risk``, or null where fewer than ``k`` columns have a non-zero SHAP value.
    """
    n_rows = contributions.shape[0]
    per_column = np.column_stack([contributions[:, list(idx)].sum(axis=1) for _, idx in groups]) if groups else np.zeros((n_rows, 0))
    n_reasons = min(n_reasons, per_column.shape[1])
    order = np.argsort(-np.abs(per_column), axis=1, kind="stable")[:, :n_reasons]
    names = [name for name, _ in groups]
    rows = np.asarray(rows, dtype=np.int64)
    reasons = []
    for rank in range(n_reasons):
        chosen = order[:, rank]
        value = per_column[np.arange(n_rows), chosen]
        direction = np.where(value > 0, f" {RAISES}", f" {LOWERS}")
        out = pl.repeat(None, n_rows, dtype=pl.String, eager=True)
        # A column's texts are gathered only for the rows whose reason of this rank it is.
        for j in np.unique(chosen):
            where = np.flatnonzero((chosen == j) & (value != 0))
            if where.size:
                text = f"{names[j]}=" + texts.gather(names[j], rows[where]) + pl.Series(direction[where])
                out = out.scatter(where, text)
        reasons.append(out)
    return reasons
