"""SHAP values of one label's classifier: one column per model feature.

Each model kind that training can make a champion has an explainer here:

* XGBoost and LightGBM: TreeSHAP as the libraries compute it natively
  (``pred_contribs`` and ``pred_contrib``). This gives the same values as
  ``shap.TreeExplainer`` on these models and runs multi-threaded in C++.
  Other tree ensembles, such as the random forest, go through
  ``shap.TreeExplainer``. For a scikit-learn forest it explains the
  predicted probability, not the log-odds.
* Logistic regression: exact linear SHAP against the training mean
  (:func:`linear_values`).
* Stacked label models: the second stage's values are propagated through the
  first stage (:func:`stacked_values`).
* Any other model (MLP, k-nearest neighbours, SVM): Shapley values sampled
  over feature permutations against a reference patient
  (:func:`permutation_values`).

Values are in log-odds of the model before calibration, except for the
random forest. A calibrator maps log-odds to probability monotonically, so
the direction of each value holds for the calibrated probability too.
Reasons compare values within one row and label only, so the units of two
models are never compared.

The zoo's scikit-learn pipelines impute a lab and add a missing-value
indicator column for it. The indicator's value is added to the lab's, so each
returned column is an input feature of the bundle, never an internal column.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import pandas as pd
from sklearn.dummy import DummyClassifier
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler

from hivcomorb.errors import ModelError
from hivcomorb.models import ConstantModel, StackedLabelModel, stack_features

DEFAULT_MAX_EVALS = 256
"""Default maximum of model evaluations per explained row for :func:`permutation_values`."""

RESCALE_FLOOR = 0.25
"""Smallest denominator of the rescale rule, as a share of the first stage's total absolute attribution."""

PERMUTATION_SEED = 0

# Probabilities are clipped to this distance from 0 and 1 before taking log-odds.
_PROBABILITY_CLIP = 1e-6

# Maximum cells of the masked-row array evaluated in one model call (about 32 MB of float64).
_BATCH_CELLS = 4_000_000


def shap_values(estimator: Any, matrix: pd.DataFrame, *, max_evals: int = DEFAULT_MAX_EVALS) -> np.ndarray:
    """Compute the SHAP values of the positive class, one column per feature.

    Values are in log-odds before calibration, or in probability for a
    random forest (see the module docstring).

    Parameters
    ----------
    estimator : fitted binary classifier
        Any model the zoo fits, as saved in a bundle: XGBoost or LightGBM,
        a scikit-learn :class:`~sklearn.pipeline.Pipeline` (logistic
        regression, random forest, k-nearest neighbours, SVM, MLP), a
        :class:`~hivcomorb.models.StackedLabelModel`, a
        :class:`~hivcomorb.models.ConstantModel` or prevalence model, a
        :class:`~sklearn.calibration.CalibratedClassifierCV`, or a wrapper
        whose ``estimator`` attribute is one of those.
    matrix : DataFrame
        Encoded features in the bundle's feature order.
    max_evals : int
        Maximum model evaluations per row for models explained by
        :func:`permutation_values`; the other explainers ignore it.

    Returns
    -------
    ndarray of shape (n_rows, n_features)

    Raises
    ------
    ModelError
        If no explainer applies to the estimator.
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
    if isinstance(estimator, StackedLabelModel):
        return stacked_values(estimator, matrix, max_evals=max_evals)
    inner = getattr(estimator, "estimator", None)
    if inner is not None and hasattr(estimator, "calibrator") and hasattr(inner, "predict_proba"):
        # A wrapper of one estimator, such as training's estimator-plus-calibrator.
        # Its calibrator maps probability monotonically, so directions still hold.
        # The calibrator attribute distinguishes it from a random forest or
        # CalibratedClassifierCV, whose ``estimator`` is an unfitted template.
        return shap_values(inner, matrix, max_evals=max_evals)
    calibrated = getattr(estimator, "calibrated_classifiers_", None)
    if calibrated:
        return np.mean([shap_values(c.estimator, matrix, max_evals=max_evals) for c in calibrated], axis=0)
    if isinstance(estimator, (ConstantModel, DummyClassifier)):
        # A constant or prevalence model does not read its inputs.
        return np.zeros(matrix.shape, dtype=np.float64)
    if isinstance(estimator, Pipeline):
        return _pipeline_values(estimator, matrix, max_evals)
    return _tree_explainer_values(estimator, matrix)


def _tree_explainer_values(estimator: Any, matrix: pd.DataFrame) -> np.ndarray:
    import shap

    try:
        explainer = shap.TreeExplainer(estimator)
    except Exception as exc:  # shap raises bare Exception for unsupported model types
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


# ---------------------------------------------------------------------------
# Pipelines


def _pipeline_values(pipeline: Pipeline, matrix: pd.DataFrame, max_evals: int) -> np.ndarray:
    """Explain a pipeline's final model on its preprocessed features and sum them back to input features."""
    # Imported here because the audit package loads fairlearn and matplotlib,
    # which scoring a boosting model does not need.
    from hivcomorb.audit.shap_adapter import TREE, explainer_kind

    final = pipeline.steps[-1][1]
    if len(pipeline.steps) == 1:
        return shap_values(final, matrix, max_evals=max_evals)
    tree = explainer_kind(pipeline) == TREE
    if not tree and not _is_binary_logistic(final):
        return permutation_values(pipeline, matrix, max_evals=max_evals)

    preprocessing = pipeline[:-1]
    # LabelModel passes float32 features to its pipeline, so the same cast is used here.
    transformed = np.asarray(preprocessing.transform(matrix.to_numpy(dtype=np.float32)), dtype=np.float64)
    sources = output_sources(preprocessing, matrix.shape[1])
    if sources is None or sources.size != transformed.shape[1]:
        steps = [name for name, _ in pipeline.steps]
        raise ModelError(
            f"the pipeline {steps} has a preprocessing step whose output columns cannot be traced to its "
            "input features, so its SHAP values cannot name input columns; score with --no-reasons"
        )
    if tree:
        # Keep the input names where preprocessing keeps the columns, for a booster fitted with names.
        columns = matrix.columns if transformed.shape[1] == matrix.shape[1] else None
        values = shap_values(final, pd.DataFrame(transformed, columns=columns, index=matrix.index))
    else:
        mean = _training_mean(preprocessing)
        if mean is None:
            return permutation_values(pipeline, matrix, max_evals=max_evals)
        values = linear_values(final, transformed, mean)
    return sum_by_source(values, sources, matrix.shape[1])


def _is_binary_logistic(model: Any) -> bool:
    return isinstance(model, LogisticRegression) and model.coef_.shape[0] == 1


def output_sources(preprocessing: Pipeline, n_inputs: int) -> np.ndarray | None:
    """Return, for each output column of ``preprocessing``, the position of the input feature it derives from.

    Scaling and element-wise function transformers keep each column in
    place. A :class:`~sklearn.impute.SimpleImputer` may drop features that
    were empty in training and appends one indicator column per feature that
    had missing values. Returns None if a step is of another kind.
    """
    sources = np.arange(n_inputs)
    for _name, step in preprocessing.steps:
        if isinstance(step, SimpleImputer):
            kept_sources = sources
            if not step.keep_empty_features:
                # scikit-learn drops the features whose statistic is NaN, which were empty in training.
                kept_sources = sources[~np.isnan(np.asarray(step.statistics_, dtype=np.float64))]
            indicator = getattr(step, "indicator_", None)
            indicator_sources = sources[indicator.features_] if step.add_indicator and indicator is not None else sources[:0]
            sources = np.concatenate([kept_sources, indicator_sources])
        elif not isinstance(step, (StandardScaler, FunctionTransformer)):
            return None
    return sources


def sum_by_source(values: np.ndarray, sources: np.ndarray, n_inputs: int) -> np.ndarray:
    """Sum the columns of ``values`` that share an input feature in ``sources``; returns (n_rows, n_inputs)."""
    assignment = np.zeros((sources.size, n_inputs), dtype=np.float64)
    assignment[np.arange(sources.size), sources] = 1.0
    return values @ assignment


def _training_mean(preprocessing: Pipeline) -> np.ndarray | None:
    """Return the training mean of the preprocessed features, or None if the last step is not a fitted scaler.

    A :class:`~sklearn.preprocessing.StandardScaler` stores the mean of the
    rows it was fitted on, which are the final model's training rows.
    """
    scaler = preprocessing.steps[-1][1]
    if not isinstance(scaler, StandardScaler) or getattr(scaler, "mean_", None) is None:
        return None
    mean = np.asarray(scaler.mean_, dtype=np.float64)
    center = mean if scaler.with_mean else np.zeros_like(mean)
    scale = np.asarray(scaler.scale_, dtype=np.float64) if scaler.with_std else np.ones_like(mean)
    return (mean - center) / scale


def linear_values(model: LogisticRegression, transformed: np.ndarray, mean: np.ndarray) -> np.ndarray:
    """Return exact linear SHAP values, coefficient x (value - training mean), in log-odds.

    These are the values of ``shap.LinearExplainer`` with the training rows as
    background, for independent features. A logistic regression's log-odds
    are linear in its inputs, so they sum to the row's log-odds minus the
    log-odds at the training mean. Cost: one matrix product.
    """
    return (transformed - mean) * np.asarray(model.coef_[0], dtype=np.float64)


# ---------------------------------------------------------------------------
# Model-agnostic: permutation sampling against a reference patient


def permutation_values(
    pipeline: Pipeline,
    matrix: pd.DataFrame,
    *,
    max_evals: int = DEFAULT_MAX_EVALS,
    seed: int = PERMUTATION_SEED,
) -> np.ndarray:
    """Estimate Shapley values of the log-odds by sampling permutations of the input columns.

    This is the estimator of ``shap.PermutationExplainer`` with one
    reference patient as background (baseline Shapley values), vectorised
    over rows. Each sampled order of the input columns is walked forwards
    and backwards. Column by column, a row's values replace the reference's,
    and each column gets the change in log-odds it causes. Every pass sums
    exactly to the row's log-odds minus the reference's. The values are
    exact for a model that is additive over input columns. For a model
    monotone in a column, a value never has the sign opposite to the row's
    difference from the reference in that column.

    The bundle stores no training rows, so the reference is taken from the
    fitted pipeline. It is the imputer's training median of each feature.
    Where a scaler follows the imputer, its stored means give the training
    frequencies, and each category column is set to its most frequent
    category. A category column's indicator columns (``ethnicity=white``,
    ...) are masked together, and its value is spread evenly over them.
    Only their sum, which reasons report, is meaningful.

    Parameters
    ----------
    pipeline : Pipeline
        A fitted pipeline with a :class:`~sklearn.impute.SimpleImputer`; the
        steps before it must work column by column.
    matrix : DataFrame
        Encoded features in the bundle's feature order.
    max_evals : int
        Maximum model evaluations per explained row. With ``C`` input
        columns (a category column counts once), ``P = max(1, (max_evals -
        1) // (2 (C - 1)))`` orders are sampled, and each row costs
        ``2 P (C - 1) + 1`` evaluations. At least one order is sampled, so
        a ``max_evals`` below ``2 C - 1`` still costs ``2 C - 1``. Every row
        uses the same orders, so its values do not depend on the other rows
        explained with it.
    seed : int
        Seed of the sampled orders.

    Returns
    -------
    ndarray of shape (n_rows, n_features)

    Notes
    -----
    Cost: with the 33 input columns of the synthetic cohort's unaware
    setting and the default ``max_evals=256``, 3 orders give 193 evaluations
    per row. An MLP evaluates them quickly. k-nearest neighbours and an SVM
    compare every evaluated row with their stored training rows or support
    vectors, so their cost also grows with the training cohort. Lower
    ``max_evals`` to bound the time. Rows are evaluated in batches of at
    most about 32 MB.
    """
    head, tail, reference = _reference(pipeline, matrix.columns)
    data = matrix.to_numpy(dtype=np.float32)
    if head is not None:
        data = head.transform(data)
    data = np.asarray(data, dtype=np.float64)
    players = column_players(matrix.columns)
    n_rows, n_features = data.shape
    n_players = len(players)
    if n_rows == 0 or n_players == 0:
        return np.zeros((n_rows, n_features), dtype=np.float64)

    def log_odds(rows: np.ndarray) -> np.ndarray:
        probability = np.clip(tail.predict_proba(rows)[:, 1], _PROBABILITY_CLIP, 1 - _PROBABILITY_CLIP)
        return np.log(probability / (1 - probability))

    player_values = np.zeros((n_rows, n_players), dtype=np.float64)
    row_values = log_odds(data)
    reference_value = float(log_odds(reference[None, :])[0])
    if n_players == 1:
        player_values[:, 0] = row_values - reference_value
        return _spread(player_values, players, n_features)

    rng = np.random.default_rng(seed)
    n_orders = max(1, (int(max_evals) - 1) // (2 * (n_players - 1)))
    orders = []
    for _ in range(n_orders):
        order = rng.permutation(n_players)
        orders.extend([order, order[::-1]])
    membership = np.zeros((n_players, n_features), dtype=bool)
    for p, indices in enumerate(players):
        membership[p, indices] = True
    # masks[k] marks the features of the first k + 1 columns of an order.
    masks = [np.cumsum(membership[order], axis=0)[:-1].astype(bool) for order in orders]

    batch = max(1, _BATCH_CELLS // ((n_players - 1) * n_features))
    for start in range(0, n_rows, batch):
        block = data[start : start + batch]
        size = block.shape[0]
        for order, mask in zip(orders, masks):
            states = np.where(mask[:, None, :], block[None, :, :], reference[None, None, :])
            inner = log_odds(states.reshape(-1, n_features)).reshape(n_players - 1, size)
            path = np.vstack([np.full(size, reference_value), inner, row_values[start : start + size]])
            player_values[start : start + size][:, order] += np.diff(path, axis=0).T
    player_values /= len(orders)
    return _spread(player_values, players, n_features)


def column_players(feature_names: Sequence[Any]) -> list[np.ndarray]:
    """Group feature positions by input column; a category's indicators ``column=category`` form one group."""
    groups: dict[str, list[int]] = {}
    for position, name in enumerate(feature_names):
        groups.setdefault(str(name).split("=", 1)[0], []).append(position)
    return [np.asarray(indices) for indices in groups.values()]


def _spread(player_values: np.ndarray, players: list[np.ndarray], n_features: int) -> np.ndarray:
    values = np.zeros((player_values.shape[0], n_features), dtype=np.float64)
    for p, indices in enumerate(players):
        values[:, indices] = player_values[:, [p]] / len(indices)
    return values


def _reference(pipeline: Pipeline, feature_names: Sequence[Any]) -> tuple[Pipeline | None, Pipeline, np.ndarray]:
    """Split ``pipeline`` at its imputer and return (steps before, steps from the imputer on, reference row).

    The reference row is in the imputer's input space: the training median
    of each feature, with each category column set to its most frequent
    category where the next step is a fitted scaler.
    """
    position = next((i for i, (_, step) in enumerate(pipeline.steps) if isinstance(step, SimpleImputer)), None)
    if position is None:
        raise ModelError(
            f"reasons are not available for a {type(pipeline.steps[-1][1]).__name__} model without an imputer, "
            "whose training medians give the reference patient; score with --no-reasons"
        )
    head = pipeline[:position] if position > 0 else None
    tail = pipeline[position:]
    imputer = pipeline.steps[position][1]
    reference = np.asarray(imputer.statistics_, dtype=np.float64).copy()
    n_features = len(feature_names)
    if reference.size != n_features:
        raise ModelError(
            f"the model's imputer was fitted on {reference.size} features, but the bundle lists {n_features}; "
            "retrain the model or score with --no-reasons"
        )

    following = pipeline.steps[position + 1][1] if position + 1 < len(pipeline.steps) else None
    mean = getattr(following, "mean_", None) if isinstance(following, StandardScaler) else None
    kept_all = imputer.keep_empty_features or not np.isnan(reference).any()
    if mean is not None and kept_all:
        # The scaler's first columns are the imputed features, so their means
        # are the category frequencies, up to the element-wise steps before.
        zeros_row = np.zeros((1, n_features), dtype=np.float32)
        ones_row = np.ones((1, n_features), dtype=np.float32)
        absent = head.transform(zeros_row)[0] if head is not None else zeros_row[0]
        present = head.transform(ones_row)[0] if head is not None else ones_row[0]
        for indices in column_players(feature_names):
            if indices.size > 1:
                mode = indices[np.argmax(np.asarray(mean)[indices])]
                reference[indices] = absent[indices]
                reference[mode] = present[mode]
    return head, tail, reference


# ---------------------------------------------------------------------------
# Stacked label models


def stacked_values(model: StackedLabelModel, matrix: pd.DataFrame, *, max_evals: int = DEFAULT_MAX_EVALS) -> np.ndarray:
    """Explain a stacked label model on its input features by propagating values through the first stage.

    The second stage reads the input features and the first stage's
    probability of each other label. Its SHAP values on the input features
    are kept as they are. Its value on another label's probability is shared
    among the input features in proportion to their SHAP values in that
    label's first-stage model (:func:`propagate`). This is the rescale rule
    for a series of models (G-DeepSHAP, in Chen, Lundberg and Lee,
    "Explaining a series of models by propagating Shapley values", Nature
    Communications 13, 4512, 2022), with each model explained against its
    own reference.

    Approximations:

    * Each stage is explained against its own reference (the expected value
      over its training rows, for TreeSHAP), not against a common reference
      patient, so the shares are approximate.
    * The first stage is explained in log-odds, and the second stage reads
      probabilities. The logistic link is monotone and has one input, so the
      rescale rule through it keeps each feature's share. But the expected
      probability is not the probability at the expected log-odds.
    * Where a label's first-stage values cancel out (their sum is below
      :data:`RESCALE_FLOOR` times the sum of their absolute values), the
      denominator is held at that floor (see :func:`propagate`).

    Without that floor, the values of a row sum to the second stage's
    log-odds minus its expected value. The cost is one explanation of the
    second stage and one of each other label's first-stage model.

    NOTE: the floor is often reached. For stacked XGBoost fitted to a
    3,000-patient synthetic cohort with nine labels, it was reached on 9% to
    35% of that cohort's rows, depending on the first-stage label. A row's
    values then fell short of the second stage's log-odds by at most 0.33.
    """
    n_inputs = matrix.shape[1]
    stacked = stack_features(matrix.to_numpy(dtype=np.float32), model.first_stage, model.other_labels)
    columns = [*(str(c) for c in matrix.columns), *(f"p_{label}" for label in model.other_labels)]
    second = shap_values(model.second_stage, pd.DataFrame(stacked, columns=columns, index=matrix.index), max_evals=max_evals)
    values = np.array(second[:, :n_inputs], dtype=np.float64)
    for k, label in enumerate(model.other_labels):
        first = shap_values(model.first_stage[label], matrix, max_evals=max_evals)
        values += propagate(second[:, n_inputs + k], first)
    return values


def propagate(stage_values: np.ndarray, first_values: np.ndarray) -> np.ndarray:
    """Share each row's ``stage_values`` among features in proportion to ``first_values`` (the rescale rule).

    Parameters
    ----------
    stage_values : ndarray of shape (n_rows,)
        The second stage's SHAP value on one first-stage output.
    first_values : ndarray of shape (n_rows, n_features)
        That first-stage model's SHAP values.

    Returns
    -------
    ndarray of shape (n_rows, n_features)
        ``stage_values * first_values / denominator``. The denominator is
        the row's sum of ``first_values``, with its magnitude raised to at
        least :data:`RESCALE_FLOOR` times the sum of their absolute values.
        Where the floor is not reached, a row's shares sum to its
        ``stage_values``. Where it is, the shares shrink, but each row's
        absolute shares sum to at most ``|stage_values| / RESCALE_FLOOR``,
        so cancelling first-stage values cannot inflate them without bound.
        A row whose first-stage values are all zero gets zeros.
    """
    stage_values = np.asarray(stage_values, dtype=np.float64)
    first_values = np.asarray(first_values, dtype=np.float64)
    total = first_values.sum(axis=1)
    magnitude = np.abs(first_values).sum(axis=1)
    denominator = np.where(total < 0, -1.0, 1.0) * np.maximum(np.abs(total), RESCALE_FLOOR * magnitude)
    factor = np.divide(stage_values, denominator, out=np.zeros_like(stage_values), where=denominator != 0)
    return first_values * factor[:, None]
