"""Per-patient reasons for a flag: the input columns with the largest SHAP values.

SHAP values come from TreeSHAP as XGBoost (``pred_contribs``) and LightGBM
(``pred_contrib``) compute it natively, which gives the same values as
``shap.TreeExplainer`` on these models and runs multi-threaded in C++; other
tree ensembles go through ``shap.TreeExplainer``. Values are in log-odds of the
uncalibrated model. A calibrator maps log-odds to probability monotonically, so
the direction of each reason holds for the calibrated probability too.

The one-hot indicators of a category column are summed back into that column
(SHAP values are additive), so a reason reads ``ethnicity=black_african raises
risk`` rather than naming an indicator.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import pandas as pd
import polars as pl

from hivcomorb.contract import UNKNOWN, Contract
from hivcomorb.errors import ModelError

RAISES = "raises risk"
LOWERS = "lowers risk"


def shap_values(estimator: Any, matrix: pd.DataFrame) -> np.ndarray:
    """Return the SHAP values of the positive class, one column per feature, in log-odds.

    Parameters
    ----------
    estimator : fitted binary classifier
        XGBoost or LightGBM classifier, a scikit-learn tree ensemble, a
        :class:`~sklearn.calibration.CalibratedClassifierCV`, a
        :class:`~sklearn.pipeline.Pipeline` ending in one of those, or a
        wrapper whose ``estimator`` attribute is one of those.
    matrix : DataFrame
        Encoded features in the bundle's feature order.

    Raises
    ------
    ModelError
        If the estimator is of a kind that has no tree explainer.
    """
    module = type(estimator).__module__
    if module.startswith("xgboost"):
        import xgboost as xgb

        booster = estimator.get_booster()
        # A booster fitted on an array has no feature names and rejects a named matrix.
        features = matrix if booster.feature_names is not None else matrix.to_numpy(dtype=np.float32)
        data = xgb.DMatrix(features, missing=np.nan, nthread=int(estimator.get_params().get("n_jobs") or 0))
        return booster.predict(data, pred_contribs=True)[:, :-1]
    if module.startswith("lightgbm"):
        values = estimator.predict(matrix.to_numpy(dtype=np.float32), pred_contrib=True)
        return np.asarray(values)[:, :-1]
    if hasattr(estimator, "second_stage"):
        # TODO: explain stacked label models. Their second stage also reads the
        # other labels' first-stage probabilities, which are not input columns.
        raise ModelError(f"reasons are not available for a stacked {type(estimator).__name__} model; score with --no-reasons")
    inner = getattr(estimator, "estimator", None)
    if inner is not None and hasattr(inner, "predict_proba"):
        # A wrapper of one estimator, such as training's estimator-plus-calibrator.
        # Its calibrator maps probability monotonically, so directions still hold.
        return shap_values(inner, matrix)
    calibrated = getattr(estimator, "calibrated_classifiers_", None)
    if calibrated:
        return np.mean([shap_values(c.estimator, matrix) for c in calibrated], axis=0)
    steps = getattr(estimator, "steps", None)
    if steps:
        transformed: Any = matrix
        for _name, step in steps[:-1]:
            transformed = step.transform(transformed)
        transformed = np.asarray(transformed)
        if transformed.shape[1] != matrix.shape[1]:
            raise ModelError(
                f"the pipeline {[n for n, _ in steps]} changes the number of features, so its SHAP values "
                "cannot be mapped to input columns; score with --no-reasons"
            )
        return shap_values(steps[-1][1], pd.DataFrame(transformed, columns=matrix.columns, index=matrix.index))
    return _tree_explainer_values(estimator, matrix)


def _tree_explainer_values(estimator: Any, matrix: pd.DataFrame) -> np.ndarray:
    import shap

    try:
        explainer = shap.TreeExplainer(estimator)
    except Exception as exc:  # shap raises bare Exception for unsupported model types
        # TODO: explain linear and neural champions. They need a background sample
        # of the training cohort (shap.LinearExplainer, KernelExplainer), which the bundle lacks.
        raise ModelError(
            f"reasons are not available for a {type(estimator).__name__} model ({exc}); score with --no-reasons"
        ) from exc
    values = explainer.shap_values(matrix.to_numpy(dtype=np.float64), check_additivity=False)
    # shap returns a list per class or an (n, features, classes) array for
    # some classifiers, and one (n, features) array for others.
    if isinstance(values, list):
        values = values[-1]
    values = np.asarray(values)
    if values.ndim == 3:
        values = values[:, :, -1]
    return values


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
