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

__all__ = ["LOWERS", "RAISES", "ValueTexts", "column_groups", "shap_values", "top_reasons"]

RAISES = "raises risk"
LOWERS = "lowers risk"


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
    """Cache of the value texts that reasons print, e.g. ``58.1 mmol/mol`` or ``<20 copies/mL``.

    A column's texts are built for all rows of a chunk when a reason first
    needs them, and every label and rank reuses them.
    """

    def __init__(self, frame: pd.DataFrame, contract: Contract):
        self.frame = frame
        self.contract = contract
        self._cache: dict[str, pl.Series] = {}

    def __call__(self, column: str) -> pl.Series:
        """Return the value text of ``column`` for every row of the frame."""
        if column not in self._cache:
            self._cache[column] = self._build(column)
        return self._cache[column]

    def _build(self, column: str) -> pl.Series:
        spec = self.contract.column(column)
        series = self.frame[column]
        if spec.dtype == "category":
            return _strings(series).fill_null(UNKNOWN)
        numbers = pl.Series(pd.to_numeric(series).astype("float64").to_numpy(na_value=np.nan)).fill_nan(None)
        text = numbers.round_sig_figs(4).cast(pl.String).str.strip_suffix(".0")
        censored_column = f"{column}_censored"
        if censored_column in self.frame.columns:
            flags = _strings(self.frame[censored_column])
            text = pl.select(pl.concat_str([flags.fill_null(""), text])).to_series()
        if spec.unit:
            text = text + f" {spec.unit}"
        return text.fill_null("missing")


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
    positions = pl.Series(rows, dtype=pl.Int64)
    reasons = []
    for rank in range(n_reasons):
        chosen = order[:, rank]
        value = per_column[np.arange(n_rows), chosen]
        direction = pl.Series(np.where(value > 0, f" {RAISES}", f" {LOWERS}"))
        out = pl.Series([None] * n_rows, dtype=pl.String)
        for j in np.unique(chosen):
            text = f"{names[j]}=" + texts(names[j]).gather(positions) + direction
            out = pl.select(pl.when(pl.Series(chosen == j)).then(text).otherwise(out)).to_series()
        out = pl.select(pl.when(pl.Series(value != 0)).then(out).otherwise(None)).to_series()
        reasons.append(out)
    return reasons
