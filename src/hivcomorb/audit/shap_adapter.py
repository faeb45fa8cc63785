"""One shape for SHAP attributions, whatever the model and SHAP version.

The shape of SHAP's output depends on the model and the release. SHAP 0.54.1
returns a (patients, features) array for binary XGBoost and LightGBM models,
although for LightGBM it warns that the output changed to a list. Other
releases return a list of two arrays for LightGBM, some explainers return
(patients, features, 2) for a binary classifier, and multi-output models give
(patients, features, outputs). :func:`attributions` always returns
(patients, features, labels) in log-odds, the positive class's margin.
"""

from __future__ import annotations

import logging
import warnings
from typing import Any, Sequence

import numpy as np
import pandas as pd
import shap
from sklearn.pipeline import Pipeline

from hivcomorb.bundle import ModelBundle
from hivcomorb.errors import ModelError

logger = logging.getLogger(__name__)

TREE = "tree"
LINEAR = "linear"
AGNOSTIC = "permutation"

_TREE_MODULES = ("xgboost", "lightgbm", "catboost")
_TREE_CLASSES = (
    "RandomForestClassifier",
    "ExtraTreesClassifier",
    "GradientBoostingClassifier",
    "HistGradientBoostingClassifier",
    "DecisionTreeClassifier",
)


def unwrap(estimator: Any) -> tuple[Any, bool]:
    """Return the model inside a wrapper with ``estimator`` and ``calibrator`` attributes.

    Training may wrap each label's classifier with an optional probability
    calibrator. The second value is True when a calibrator is present. The
    attributions then explain the classifier's log-odds before calibration,
    whose order a monotone calibrator keeps.
    """
    inner = getattr(estimator, "estimator", None)
    if inner is not None and hasattr(estimator, "calibrator") and hasattr(inner, "predict_proba"):
        return inner, getattr(estimator, "calibrator") is not None
    return estimator, False


def _split_pipeline(estimator: Any) -> tuple[Any, Any]:
    """Return (preprocessing or None, final estimator)."""
    estimator, _ = unwrap(estimator)
    if isinstance(estimator, Pipeline):
        steps = estimator.steps
        if len(steps) == 1:
            return None, steps[0][1]
        return estimator[:-1], steps[-1][1]
    return None, estimator


def explainer_kind(estimator: Any) -> str:
    """Return which explainer suits ``estimator``: ``tree``, ``linear`` or ``permutation``."""
    _, final = _split_pipeline(estimator)
    module = type(final).__module__.split(".")[0]
    if module in _TREE_MODULES or type(final).__name__ in _TREE_CLASSES:
        return TREE
    if hasattr(final, "coef_") and hasattr(final, "decision_function"):
        return LINEAR
    return AGNOSTIC


def positive_class(values: Any, n_rows: int, n_features: int) -> np.ndarray:
    """Normalise one binary model's SHAP output to (patients, features, outputs).

    Accepts a list ``[negative, positive]``, a (patients, features, 2) array,
    a (patients, features) array, or the (patients, features, outputs) array
    of a multi-output model.
    """
    if isinstance(values, shap.Explanation):
        values = values.values
    if isinstance(values, list):
        arrays = [np.asarray(v, dtype=np.float64) for v in values]
        if len(arrays) == 2 and arrays[1].shape == (n_rows, n_features):
            return arrays[1][:, :, None]
        return np.stack(arrays, axis=2)
    values = np.asarray(values, dtype=np.float64)
    if values.shape == (n_rows, n_features):
        return values[:, :, None]
    if values.ndim == 3 and values.shape[:2] == (n_rows, n_features):
        if values.shape[2] == 2:
            return values[:, :, 1:2]
        return values
    raise ModelError(f"SHAP returned values of shape {values.shape} for {n_rows} patients and {n_features} features")


def _framed(rows: np.ndarray, columns: list[str] | None, model: Any) -> pd.DataFrame | np.ndarray:
    """Give rows their feature names when ``model`` was fitted with names, because scikit-learn checks them."""
    if columns is not None and hasattr(model, "feature_names_in_"):
        return pd.DataFrame(rows, columns=columns)
    return rows


def _tree_values(estimator: Any, matrix: pd.DataFrame | np.ndarray, n_features: int) -> np.ndarray | None:
    pre, final = _split_pipeline(estimator)
    if pre is None and isinstance(matrix, pd.DataFrame) and not hasattr(final, "feature_names_in_"):
        # A model fitted on a plain array must be explained on one, because
        # XGBoost rejects feature names that its booster does not have.
        matrix = matrix.to_numpy(dtype=np.float32)
    data = matrix if pre is None else np.asarray(pre.transform(matrix), dtype=np.float64)
    if data.shape[1] != n_features:
        return None
    explainer = shap.TreeExplainer(final)
    with warnings.catch_warnings():
        # SHAP warns on every LightGBM binary call that the output shape
        # changed, and positive_class accepts every shape it has had.
        warnings.filterwarnings("ignore", message="LightGBM binary classifier")
        values = explainer.shap_values(data)
    return positive_class(values, matrix.shape[0], n_features)


def _linear_values(
    estimator: Any, matrix: np.ndarray, background: np.ndarray, n_features: int, columns: list[str] | None
) -> np.ndarray | None:
    # Imported here because the scoring package imports this module.
    from hivcomorb.score.explainers import output_sources, sum_by_source

    pre, final = _split_pipeline(estimator)
    data = matrix if pre is None else np.asarray(pre.transform(_framed(matrix, columns, pre)), dtype=np.float64)
    base = background if pre is None else np.asarray(pre.transform(_framed(background, columns, pre)), dtype=np.float64)
    sources = np.arange(n_features) if pre is None else output_sources(pre, n_features)
    if sources is None or sources.size != data.shape[1] or np.isnan(data).any():
        # A preprocessing step whose output columns cannot be traced to one
        # input feature each, or that leaves missing values, is not explained here.
        return None
    explainer = shap.LinearExplainer(final, base)
    values = positive_class(explainer.shap_values(data), matrix.shape[0], data.shape[1])
    # A missing-value indicator's attribution is added to its lab's, so each column is an input feature.
    return np.stack([sum_by_source(values[:, :, k], sources, n_features) for k in range(values.shape[2])], axis=2)


def _agnostic_values(estimator: Any, matrix: np.ndarray, background: np.ndarray, seed: int, columns: list[str] | None) -> np.ndarray:
    def log_odds(rows: np.ndarray) -> np.ndarray:
        prob = np.clip(estimator.predict_proba(_framed(rows, columns, estimator))[:, 1], 1e-9, 1 - 1e-9)
        return np.log(prob / (1 - prob))

    masker = shap.maskers.Independent(background, max_samples=background.shape[0])
    explainer = shap.PermutationExplainer(log_odds, masker, seed=seed)
    # One forward and reverse pass over one permutation costs 2 x features + 1
    # evaluations per patient and already gives exactly additive values.
    # More permutations only reduce the variance, at a proportional cost.
    explanation = explainer(matrix, max_evals=2 * matrix.shape[1] + 1, silent=True)
    return positive_class(explanation.values, matrix.shape[0], matrix.shape[1])


def estimator_attributions(
    estimator: Any,
    matrix: pd.DataFrame | np.ndarray,
    background: np.ndarray | None = None,
    seed: int = 0,
) -> tuple[np.ndarray, str]:
    """Return one estimator's attributions, (patients, features, outputs), and the explainer used.

    A classifier wrapped with a calibrator is explained before calibration
    (see :func:`unwrap`). Tree ensembles use TreeExplainer, which gives exact
    path-dependent values.
    Linear models use LinearExplainer on the preprocessed features when the
    preprocessing keeps one column per feature. Any other model uses SHAP's
    permutation explainer on the log-odds of ``predict_proba``. All three
    return log-odds contributions.
    """
    frame = matrix if isinstance(matrix, pd.DataFrame) else None
    columns = [str(c) for c in frame.columns] if frame is not None else None
    values = np.asarray(matrix, dtype=np.float64)
    n_features = values.shape[1]
    background = values if background is None else np.asarray(background, dtype=np.float64)
    kind = explainer_kind(estimator)
    result = None
    if kind == TREE:
        result = _tree_values(estimator, frame if frame is not None else values, n_features)
    elif kind == LINEAR:
        result = _linear_values(estimator, values, background, n_features, columns)
    if result is None:
        kind = AGNOSTIC
        result = _agnostic_values(estimator, values, background, seed, columns)
    return result, kind


def attributions(
    model: ModelBundle | Any,
    matrix: pd.DataFrame | np.ndarray,
    labels: Sequence[str] | None = None,
    background: np.ndarray | None = None,
    seed: int = 0,
) -> np.ndarray:
    """Return SHAP attributions with shape (patients, features, labels), in log-odds.

    Parameters
    ----------
    model : ModelBundle or estimator
        A bundle (one binary estimator per label) or one fitted estimator,
        binary or multi-output.
    matrix : DataFrame or ndarray of shape (patients, features)
        Encoded features, e.g. from :meth:`ModelBundle.features`.
    labels : sequence of str, optional
        Labels of a bundle to explain, in order; all of them by default.
    background : ndarray, optional
        Reference patients for linear and permutation explainers; ``matrix``
        itself by default.
    seed : int
        Seed of the permutation explainer.

    Returns
    -------
    ndarray of shape (patients, features, labels)
        The third axis has length 1 for a single binary estimator.
    """
    if isinstance(model, ModelBundle):
        names = list(labels) if labels is not None else list(model.labels)
        parts = [estimator_attributions(model.estimators[name], matrix, background, seed)[0] for name in names]
        return np.concatenate(parts, axis=2)
    return estimator_attributions(model, matrix, background, seed)[0]
