"""Cross-validated probe models and their permutation tests.

Two probe models predict a demographic target from a feature matrix:

``linear``
    Median imputation, standardisation and ridge regression in one
    scikit-learn pipeline, fitted on the training folds only. A categorical
    target is fitted one-vs-rest on its one-hot indicator columns, so the
    scores are linear-probability scores, not calibrated probabilities.
``xgboost``
    Gradient-boosted trees (``XGBClassifier`` or ``XGBRegressor``) placed on
    the run's device, with missing values handled natively.

Both produce out-of-fold predictions for every row of the target. The
permutation tests differ because refitting boosting hundreds of times is too
slow for a routine run:

``refit`` (linear)
    For each permutation the labels are shuffled across all rows and the ridge
    model is refitted on every training fold. Imputation and scaling do not
    use the labels, so they are fitted once per fold, and ridge is linear in
    the labels, so every permutation is one matrix product. This is the full
    cross-validated permutation test.
``fixed_predictions`` (xgboost)
    The labels are shuffled against the model's fixed out-of-fold
    predictions. This tests whether those predictions are associated with the
    target, but not the training procedure itself.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
from sklearn.impute import SimpleImputer
from sklearn.linear_model import Ridge
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from hivcomorb.device import xgboost_params
from hivcomorb.errors import ModelError
from hivcomorb.probe import metrics as pm
from hivcomorb.probe.targets import ProbeTarget

logger = logging.getLogger(__name__)

MODELS = ("xgboost", "linear")

# TODO: refit boosting on every permutation where a GPU makes it affordable. Until then the
# boosting p-value tests its fixed out-of-fold predictions, not its training procedure.
PERMUTATION_SCHEMES = {"linear": "refit", "xgboost": "fixed_predictions"}

DEFAULT_XGBOOST = {"n_estimators": 100, "max_depth": 3, "learning_rate": 0.15, "subsample": 0.8, "colsample_bytree": 0.8}


@dataclass
class OutOfFold:
    """Out-of-fold predictions of one model for one target.

    ``predictions`` is ``(n,)`` ages in years for a regression target and
    ``(n, K)`` class scores otherwise. ``priors`` contains each row's
    training-fold class frequencies ``(n, K)`` or training-fold mean age
    ``(n,)``. ``importance`` maps each feature to its mean importance over
    the folds.
    """

    model: str
    predictions: np.ndarray
    priors: np.ndarray
    importance: pd.Series
    importance_method: str
    fold_ids: np.ndarray = field(default_factory=lambda: np.empty(0))


def linear_pipeline(alpha: float) -> Pipeline:
    """Return the unfitted linear probe: median imputation, scaling and ridge regression."""
    return make_pipeline(
        SimpleImputer(strategy="median", keep_empty_features=True),
        StandardScaler(),
        Ridge(alpha=alpha),
    )


def _one_hot(codes: np.ndarray, n_classes: int) -> np.ndarray:
    return np.eye(n_classes, dtype=np.float64)[codes]


def _fold_splits(fold_ids: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    splits = []
    for fold in np.unique(fold_ids):
        test = np.flatnonzero(fold_ids == fold)
        train = np.flatnonzero(fold_ids != fold)
        if test.size and train.size:
            splits.append((train, test))
    if len(splits) < 2:
        raise ModelError("the probe needs at least two folds with patients; set train.folds to 2 or more")
    return splits


def _fit_linear(x_train, y_train, x_test, target: ProbeTarget, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    model = linear_pipeline(alpha)
    if target.kind == "regression":
        model.fit(x_train, y_train)
        return model.predict(x_test), np.abs(model[-1].coef_)
    model.fit(x_train, _one_hot(y_train, len(target.classes)))
    return model.predict(x_test), np.abs(model[-1].coef_).mean(axis=0)


def _fit_xgboost(
    x_train, y_train, x_test, target: ProbeTarget, params: Mapping[str, Any], importance_rows: int
) -> tuple[np.ndarray, np.ndarray]:
    import xgboost as xgb

    if target.kind == "regression":
        model = xgb.XGBRegressor(**params)
        model.fit(x_train, y_train)
        predictions = model.predict(x_test).astype(np.float64)
    else:
        present = np.unique(y_train)
        local = np.searchsorted(present, y_train)
        model = xgb.XGBClassifier(**params)
        model.fit(x_train, local)
        local_scores = model.predict_proba(x_test)
        predictions = np.zeros((x_test.shape[0], len(target.classes)), dtype=np.float64)
        predictions[:, present] = local_scores

    booster = model.get_booster()
    # SHAP values of a fixed-size sample of the held-out fold keep the cost of multiclass targets bounded.
    sample = x_test
    if x_test.shape[0] > importance_rows:
        sample = x_test[np.random.default_rng(0).choice(x_test.shape[0], importance_rows, replace=False)]
    with warnings.catch_warnings():
        # XGBoost warns when a CUDA booster predicts from host memory and then predicts on the CPU.
        # NOTE: the probe has only been run on the CPU. Check the CUDA path on a GPU machine.
        warnings.simplefilter("ignore", UserWarning)
        contributions = booster.predict(xgb.DMatrix(sample), pred_contribs=True)
    contributions = np.abs(np.asarray(contributions))
    # Contributions are (n, F + 1) for one output and (n, K, F + 1) for several. The last column is the bias.
    if contributions.ndim == 3:
        importance = contributions[:, :, :-1].mean(axis=(0, 1))
    else:
        importance = contributions[:, :-1].mean(axis=0)
    return predictions, importance


def out_of_fold(
    model_name: str,
    features: pd.DataFrame,
    target: ProbeTarget,
    fold_ids: np.ndarray,
    settings: Mapping[str, Any],
    device: str = "cpu",
    seed: int = 0,
) -> OutOfFold:
    """Fit ``model_name`` on each training fold and predict the held-out fold.

    Parameters
    ----------
    model_name : {"xgboost", "linear"}
    features : DataFrame
        Feature matrix of the target's rows, in the order of ``target.rows``.
    target : ProbeTarget
    fold_ids : ndarray
        Fold of each of the target's rows.
    settings : mapping
        The ``probe`` configuration block (``linear.alpha``, ``xgboost.*``,
        ``n_jobs``, ``importance_rows``).
    device : {"cpu", "cuda"}
    seed : int

    Returns
    -------
    OutOfFold
    """
    if model_name not in MODELS:
        raise ModelError(f"probe model {model_name!r} is invalid; expected one of {MODELS} in probe.models")
    x = features.to_numpy(dtype=np.float64 if model_name == "linear" else np.float32)
    y = target.y
    n = y.shape[0]
    n_classes = len(target.classes)
    regression = target.kind == "regression"
    predictions = np.zeros(n) if regression else np.zeros((n, n_classes))
    priors = np.zeros(n) if regression else np.zeros((n, n_classes))
    importances = []

    alpha = float((settings.get("linear") or {}).get("alpha", 1.0))
    params = {**DEFAULT_XGBOOST, **(settings.get("xgboost") or {})}
    params.update(xgboost_params(device))
    params.update({"n_jobs": int(settings.get("n_jobs", 1)), "random_state": seed, "verbosity": 0})
    importance_rows = int(settings.get("importance_rows", 200))

    for train, test in _fold_splits(fold_ids):
        if model_name == "linear":
            fold_predictions, importance = _fit_linear(x[train], y[train], x[test], target, alpha)
        else:
            fold_predictions, importance = _fit_xgboost(x[train], y[train], x[test], target, params, importance_rows)
        predictions[test] = fold_predictions
        if regression:
            priors[test] = y[train].mean()
        else:
            priors[test] = np.bincount(y[train], minlength=n_classes) / train.size
        importances.append(importance)

    method = "mean |standardised coefficient|" if model_name == "linear" else "mean |SHAP value|"
    importance = pd.Series(np.mean(importances, axis=0), index=list(features.columns)).sort_values(ascending=False)
    return OutOfFold(model_name, predictions, priors, importance, method, fold_ids)


def _preprocessed_folds(x: np.ndarray, fold_ids: np.ndarray) -> list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """Impute and scale each fold as the linear pipeline does, returning (train, test, x_train, x_test)."""
    folds = []
    for train, test in _fold_splits(fold_ids):
        prep = make_pipeline(SimpleImputer(strategy="median", keep_empty_features=True), StandardScaler())
        x_train = prep.fit_transform(x[train]).astype(np.float64)
        x_test = prep.transform(x[test]).astype(np.float64)
        folds.append((train, test, x_train, x_test))
    return folds


def ridge_refit_predictions(x: np.ndarray, fold_ids: np.ndarray, labels: np.ndarray, alpha: float) -> np.ndarray:
    """Refit ridge regression on each training fold for many label columns at once.

    Parameters
    ----------
    x : ndarray
        ``(n, F)`` features, NaN for missing.
    fold_ids : ndarray
        ``(n,)`` fold of each row.
    labels : ndarray
        ``(n, C)`` label columns (permuted ages or one-hot indicators).
    alpha : float
        Ridge penalty, as in :class:`sklearn.linear_model.Ridge`.

    Returns
    -------
    ndarray
        ``(n, C)`` out-of-fold predictions, equal to what the linear pipeline
        predicts when fitted on each column separately.
    """
    out = np.zeros(labels.shape, dtype=np.float64)
    for train, test, x_train, x_test in _preprocessed_folds(x, fold_ids):
        y_train = labels[train]
        mean = y_train.mean(axis=0)
        # Scaled training columns have mean zero, so the intercept is the label mean.
        gram = x_train.T @ x_train + alpha * np.eye(x_train.shape[1])
        coef = np.linalg.solve(gram, x_train.T @ (y_train - mean))
        out[test] = x_test @ coef + mean
    return out


def permutation_orders(n: int, permutations: int, rng: np.random.Generator) -> np.ndarray:
    """Draw ``permutations`` shuffles of ``n`` rows as an ``(n, permutations)`` index array."""
    return np.stack([rng.permutation(n) for _ in range(permutations)], axis=1)


def permutation_null(
    model_name: str,
    features: pd.DataFrame,
    target: ProbeTarget,
    oof: OutOfFold,
    orders: np.ndarray,
    settings: Mapping[str, Any],
) -> np.ndarray:
    """Return the primary metric under each shuffle of the target in ``orders``.

    The linear model is refitted on every permutation; boosting keeps its
    out-of-fold predictions (see the module docstring). Passing the same
    ``orders`` to every model lets their nulls be combined permutation by
    permutation.
    """
    n = target.y.shape[0]
    n_classes = len(target.classes)
    permutations = orders.shape[1]
    permuted = target.y[orders]

    if model_name == "xgboost":
        if target.kind == "regression":
            scores = oof.predictions[:, None]
        elif target.kind == "binary":
            scores = oof.predictions[:, 1:2]
        else:
            scores = oof.predictions[:, :, None]
        return pm.primary_metric_columns(target.kind, scores, permuted, n_classes)

    alpha = float((settings.get("linear") or {}).get("alpha", 1.0))
    x = features.to_numpy(dtype=np.float64)
    if target.kind == "regression":
        predicted = ridge_refit_predictions(x, oof.fold_ids, permuted.astype(np.float64), alpha)
        return pm.primary_metric_columns("regression", predicted, permuted, 0)

    # One indicator column per class and permutation, in class-major order.
    indicators = np.concatenate([(permuted == k).astype(np.float64) for k in range(n_classes)], axis=1)
    predicted = ridge_refit_predictions(x, oof.fold_ids, indicators, alpha).reshape(n, n_classes, permutations)
    if target.kind == "binary":
        return pm.primary_metric_columns("binary", predicted[:, 1, :], permuted, n_classes)
    return pm.primary_metric_columns("multiclass", predicted, permuted, n_classes)


def evaluate(
    target: ProbeTarget,
    oof: OutOfFold,
    weights: np.ndarray,
    age_bands: Sequence[float],
    confidence: float,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Score out-of-fold predictions and the chance baseline, with bootstrap intervals.

    Returns
    -------
    metrics, baseline : dict
        Each maps a metric name to its estimate, ``ci_low`` and ``ci_high``.
        The baseline predicts the training-fold mean age or the majority
        class. Its AUROC is 0.5 by definition, because a constant score
        ranks no patient above another.
    """
    ones = np.ones((1, target.y.shape[0]))
    all_weights = np.vstack([ones, weights])
    if target.kind == "regression":
        values = pm.regression_metrics(oof.predictions, target.y, age_bands, all_weights)
        chance = pm.regression_metrics(oof.priors, target.y, age_bands, all_weights)
    else:
        values = pm.classification_metrics(oof.predictions, oof.priors, target.y, target.kind, all_weights)
        # Zero offsets make the baseline predict each fold's majority class.
        chance = pm.classification_metrics(oof.priors, np.zeros_like(oof.priors), target.y, target.kind, all_weights)
        chance[pm.PRIMARY_METRIC[target.kind]] = np.full(all_weights.shape[0], 0.5)

    metric_block = {name: pm.summarise(v[0], v[1:], confidence) for name, v in values.items()}
    baseline_block = {name: pm.summarise(v[0], v[1:], confidence) for name, v in chance.items()}
    return metric_block, baseline_block
