"""Group metrics of binary predictions, as point estimates and bootstrap replicates.

The same six metrics feed the fairness audit and the mitigation candidates.
Point estimates go through fairlearn's :class:`~fairlearn.metrics.MetricFrame`.
The bootstrap evaluates every metric on all resamples at once: each patient's
weight is the number of times a resample drew them, so one matrix product
replaces a loop over resamples. An undefined metric (no positives for
the sensitivity, one class for the AUROC) is NaN in both paths, never 0.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd
from fairlearn.metrics import MetricFrame
from scipy.stats import rankdata

METRICS = ("selection_rate", "tpr", "fpr", "ppv", "auroc", "calibration_error")

METRIC_TITLES = {
    "selection_rate": "selection rate",
    "tpr": "sensitivity (TPR)",
    "fpr": "false-positive rate",
    "ppv": "PPV",
    "auroc": "AUROC",
    "calibration_error": "calibration error (ECE)",
}


def _bin_index(scores: np.ndarray, bins: int) -> np.ndarray:
    return np.clip((np.asarray(scores, dtype=np.float64) * bins).astype(np.int64), 0, bins - 1)


def selection_rate(y_true, y_pred) -> float:
    """Share of patients predicted positive; NaN for an empty group."""
    y_pred = np.asarray(y_pred, dtype=np.float64)
    return float(y_pred.mean()) if y_pred.size else float("nan")


def true_positive_rate(y_true, y_pred) -> float:
    """Sensitivity; NaN when the group has no positives."""
    y_true = np.asarray(y_true, dtype=np.float64)
    positives = y_true.sum()
    if positives == 0:
        return float("nan")
    return float((y_true * np.asarray(y_pred, dtype=np.float64)).sum() / positives)


def false_positive_rate(y_true, y_pred) -> float:
    """False-positive rate; NaN when the group has no negatives."""
    negatives = 1.0 - np.asarray(y_true, dtype=np.float64)
    if negatives.sum() == 0:
        return float("nan")
    return float((negatives * np.asarray(y_pred, dtype=np.float64)).sum() / negatives.sum())


def positive_predictive_value(y_true, y_pred) -> float:
    """PPV; NaN when no patient in the group is predicted positive."""
    y_pred = np.asarray(y_pred, dtype=np.float64)
    if y_pred.sum() == 0:
        return float("nan")
    return float((np.asarray(y_true, dtype=np.float64) * y_pred).sum() / y_pred.sum())


def auroc(y_true, y_pred, scores) -> float:
    """AUROC of ``scores``; NaN when the group contains one class only."""
    y_true = np.asarray(y_true, dtype=np.float64)
    if y_true.size == 0 or y_true.min() == y_true.max():
        return float("nan")
    # Mann-Whitney U from average ranks, equal to sklearn's roc_auc_score and
    # without its input validation, which dominates the audit's run time.
    ranks = rankdata(np.asarray(scores, dtype=np.float64))
    positives = y_true == 1
    n_pos = positives.sum()
    n_neg = y_true.size - n_pos
    return float((ranks[positives].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def calibration_error(y_true, y_pred, scores, bins: int = 10) -> float:
    """Expected calibration error over ``bins`` equal-width probability bins.

    The sum over bins of ``|sum of predicted probabilities - number of
    positives|``, divided by the number of patients; NaN for an empty group.
    """
    y_true = np.asarray(y_true, dtype=np.float64)
    if y_true.size == 0:
        return float("nan")
    scores = np.asarray(scores, dtype=np.float64)
    index = _bin_index(scores, bins)
    predicted = np.bincount(index, weights=scores, minlength=bins)
    observed = np.bincount(index, weights=y_true, minlength=bins)
    return float(np.abs(predicted - observed).sum() / y_true.size)


def all_metrics(y_true, y_pred, scores, bins: int = 10) -> np.ndarray:
    """Return the six metrics of one group, in :data:`METRICS` order."""
    return np.array(
        [
            selection_rate(y_true, y_pred),
            true_positive_rate(y_true, y_pred),
            false_positive_rate(y_true, y_pred),
            positive_predictive_value(y_true, y_pred),
            auroc(y_true, y_pred, scores),
            calibration_error(y_true, y_pred, scores, bins),
        ]
    )


def metric_frame(y_true, y_pred, scores, groups, bins: int = 10) -> pd.DataFrame:
    """Return the point estimate of every metric per group, from a fairlearn MetricFrame.

    Parameters
    ----------
    y_true, y_pred : array of 0/1
        Known labels and thresholded predictions.
    scores : array of float
        Predicted probabilities.
    groups : array of str
        Group of each patient.
    bins : int
        Probability bins of the calibration error.

    Returns
    -------
    DataFrame
        One row per group present, one column per name in :data:`METRICS`.
    """
    codes, names = pd.factorize(pd.Series(np.asarray(groups, dtype=object)), sort=True)
    # One metric function returns all six values: MetricFrame's cost is per
    # group and metric function, so this is six times faster than six functions.
    frame = MetricFrame(
        metrics={"all": lambda y, p, scores: all_metrics(y, p, scores, bins)},
        y_true=np.asarray(y_true, dtype=np.float64),
        y_pred=np.asarray(y_pred, dtype=np.float64),
        # Integer codes group much faster than pandas string arrays.
        sensitive_features=pd.Series(codes, name="group"),
        sample_params={"all": {"scores": np.asarray(scores, dtype=np.float64)}},
    )
    by_group = frame.by_group["all"]
    rows = {str(names[int(code)]): np.asarray(values, dtype=np.float64) for code, values in by_group.items()}
    return pd.DataFrame.from_dict(rows, orient="index", columns=list(METRICS))


def bootstrap_weights(n_patients: int, n_boot: int, seed: int) -> np.ndarray:
    """Return a (resamples, patients) matrix of how often each resample draws each patient.

    The counts are float32 because they and their sums over a cohort are
    small integers, which float32 represents exactly at half the memory
    traffic of float64.
    """
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, n_patients, size=(n_boot, n_patients))
    flat = (draws + np.arange(n_boot)[:, None] * n_patients).ravel()
    return np.bincount(flat, minlength=n_boot * n_patients).reshape(n_boot, n_patients).astype(np.float32)


def weighted_metrics(weights: np.ndarray, y_true, y_pred, scores, bins: int = 10, include=None) -> dict[str, np.ndarray]:
    """Evaluate every metric under each row of patient weights.

    Parameters
    ----------
    weights : ndarray of shape (resamples, patients)
        Multiplicity of each patient in each resample (all ones for the plain
        estimate).
    y_true, y_pred, scores : arrays of shape (patients,)
    bins : int
        Probability bins of the calibration error.
    include : array of bool, optional
        Patients to evaluate; the others get weight 0.

    Returns
    -------
    dict
        Metric name to an array of shape (resamples,); NaN where the metric is
        undefined in that resample.
    """
    return weighted_metrics_batch(weights, [(y_true, y_pred, scores, include)], bins)[0]


def weighted_metrics_batch(weights: np.ndarray, cases: Sequence[tuple], bins: int = 10) -> list[dict[str, np.ndarray]]:
    """Evaluate :func:`weighted_metrics` for several (y_true, y_pred, scores, include) cases.

    The cases share the weight matrix (for example every label and setting of
    one group), so their weighted sums come from a single matrix product.
    """
    weights = np.atleast_2d(weights)
    n_patients = weights.shape[1]
    prepared, blocks = [], []
    for y_true, y_pred, scores, include in cases:
        include = np.ones(n_patients, dtype=bool) if include is None else np.asarray(include, dtype=bool)
        y = np.where(include, np.asarray(y_true, dtype=np.float64), 0.0)
        pred = np.where(include, np.asarray(y_pred, dtype=np.float64), 0.0)
        score = np.where(include, np.asarray(scores, dtype=np.float64), 0.0)
        onehot = np.zeros((n_patients, bins))
        onehot[np.arange(n_patients), _bin_index(score, bins)] = 1.0
        blocks.append(np.column_stack([include, y, pred, y * pred, onehot * score[:, None], onehot * y[:, None]]))
        prepared.append((include, y, score))
    width = 4 + 2 * bins
    sums = (weights @ np.hstack(blocks).astype(weights.dtype)).astype(np.float64)

    results = []
    for k, (include, y, score) in enumerate(prepared):
        block = sums[:, k * width : (k + 1) * width]
        total, positives, predicted, true_pos = block[:, 0], block[:, 1], block[:, 2], block[:, 3]
        negatives = total - positives
        with np.errstate(divide="ignore", invalid="ignore"):
            out = {
                "selection_rate": predicted / total,
                "tpr": true_pos / positives,
                "fpr": (predicted - true_pos) / negatives,
                "ppv": true_pos / predicted,
                "auroc": _weighted_auroc(weights, include, y, score, positives, negatives),
                "calibration_error": np.abs(block[:, 4 : 4 + bins] - block[:, 4 + bins :]).sum(axis=1) / total,
            }
        results.append({name: np.where(np.isfinite(values), values, np.nan) for name, values in out.items()})
    return results


def _weighted_auroc(
    weights: np.ndarray,
    include: np.ndarray,
    y: np.ndarray,
    scores: np.ndarray,
    positives: np.ndarray,
    negatives: np.ndarray,
) -> np.ndarray:
    """Mann-Whitney AUROC with patient weights; tied scores count one half."""
    members = np.flatnonzero(include)
    if members.size == 0:
        return np.full(weights.shape[0], np.nan)
    order = members[np.argsort(scores[members], kind="stable")]
    sorted_scores = scores[order]
    sorted_weights = weights[:, order]
    sorted_y = y[order]
    pos_weights = sorted_weights * sorted_y
    neg_weights = sorted_weights - pos_weights
    starts = np.flatnonzero(np.r_[True, np.diff(sorted_scores) != 0])
    if starts.size < order.size:
        # Tied scores form one level each, so that ties count one half.
        pos_weights = np.add.reduceat(pos_weights, starts, axis=1)
        neg_weights = np.add.reduceat(neg_weights, starts, axis=1)
    negatives_below = np.cumsum(neg_weights, axis=1) - neg_weights
    concordant = (pos_weights * (negatives_below + 0.5 * neg_weights)).sum(axis=1, dtype=np.float64)
    return concordant / (positives * negatives)


def intervals(replicates: np.ndarray, confidence: float) -> tuple[np.ndarray, np.ndarray]:
    """Return the percentile interval of each row of bootstrap replicates, ignoring undefined ones.

    A row with fewer than half of its replicates defined gets NaN bounds,
    because the interval would then describe a biased subset of resamples.
    """
    replicates = np.atleast_2d(np.asarray(replicates, dtype=np.float64))
    defined = np.isfinite(replicates)
    enough = defined.sum(axis=1) >= max(1, 0.5 * replicates.shape[1])
    tail = (1.0 - confidence) / 2.0
    bounds = np.full((replicates.shape[0], 2), np.nan)
    if enough.any():
        bounds[enough] = np.nanquantile(np.where(defined, replicates, np.nan)[enough], [tail, 1.0 - tail], axis=1).T
    return bounds[:, 0], bounds[:, 1]


def interval(replicates: np.ndarray, confidence: float) -> tuple[float | None, float | None]:
    """Return the percentile interval of one metric's replicates, or ``(None, None)``; see :func:`intervals`."""
    low, high = intervals(np.asarray(replicates)[None, :], confidence)
    if not np.isfinite(low[0]):
        return None, None
    return float(low[0]), float(high[0])


def denominators(y_true, y_pred) -> dict[str, int]:
    """Return the number of patients behind each metric of one group."""
    y = np.asarray(y_true, dtype=np.float64)
    pred = np.asarray(y_pred, dtype=np.float64)
    positives = int(y.sum())
    negatives = int(y.size - positives)
    return {
        "selection_rate": int(y.size),
        "tpr": positives,
        "fpr": negatives,
        "ppv": int(pred.sum()),
        "auroc": min(positives, negatives),
        "calibration_error": int(y.size),
    }
