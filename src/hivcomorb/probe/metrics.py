"""Probe metrics, bootstrap confidence intervals and permutation statistics.

Every metric here accepts a matrix of patient weights with one row per
bootstrap replicate, so that a whole bootstrap is one vectorised call: weight
``w[b, i]`` is how many times patient ``i`` was drawn in replicate ``b``.
Observed values use a single row of ones.

Classification scores are ``(n, K)`` arrays with one column per class. A binary
target has two columns, and its AUROC uses the column of class 1.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy import sparse
from scipy.stats import rankdata

# Metric that decides whether a target is recoverable, by target kind.
PRIMARY_METRIC = {"binary": "auroc", "multiclass": "macro_auroc", "regression": "mae"}

# Metrics where a lower value means better recovery.
LOWER_IS_BETTER = frozenset({"mae"})


def bootstrap_weights(n: int, replicates: int, rng: np.random.Generator) -> np.ndarray:
    """Draw patient resampling counts, shape ``(replicates, n)``, for a nonparametric bootstrap."""
    draws = rng.integers(0, n, size=(replicates, n))
    flat = (draws + n * np.arange(replicates)[:, None]).ravel()
    return np.bincount(flat, minlength=replicates * n).reshape(replicates, n).astype(np.float64)


def weighted_auroc(scores: np.ndarray, positive: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Compute the area under the ROC curve for each row of ``weights``.

    Ties between a positive and a negative count one half, as in the
    Mann-Whitney statistic. A row without positives or without negatives
    returns NaN.
    """
    _, value_index = np.unique(scores, return_inverse=True)
    n_values = int(value_index.max()) + 1 if value_index.size else 0
    is_positive = np.asarray(positive, dtype=np.float64)
    patients = np.arange(scores.shape[0])
    # Sparse (distinct score x patient) indicators sum each replicate's weights per distinct score.
    positive_map = sparse.csr_matrix((is_positive, (value_index, patients)), shape=(n_values, patients.size))
    negative_map = sparse.csr_matrix((1.0 - is_positive, (value_index, patients)), shape=(n_values, patients.size))
    positive_by_value = np.asarray(positive_map @ weights.T).T
    negative_by_value = np.asarray(negative_map @ weights.T).T
    negatives_below = np.cumsum(negative_by_value, axis=1) - negative_by_value

    concordant = (positive_by_value * (negatives_below + 0.5 * negative_by_value)).sum(axis=1)
    pairs = positive_by_value.sum(axis=1) * negative_by_value.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(pairs > 0, concordant / pairs, np.nan)


def macro_auroc(scores: np.ndarray, y: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Average the one-vs-rest AUROC of every class, per weight row.

    Classes that a bootstrap replicate happens to lack are left out of that
    replicate's average.
    """
    per_class = np.stack([weighted_auroc(scores[:, k], y == k, weights) for k in range(scores.shape[1])], axis=1)
    return _nanmean_rows(per_class)


def balanced_accuracy(predicted: np.ndarray, y: np.ndarray, n_classes: int, weights: np.ndarray) -> np.ndarray:
    """Average the per-class recall of predicted classes, per weight row."""
    truth = np.eye(n_classes)[y]
    correct = truth * (predicted == y)[:, None]
    with np.errstate(invalid="ignore", divide="ignore"):
        recall = (weights @ correct) / (weights @ truth)
    return _nanmean_rows(recall)


def mean_absolute_error(predicted: np.ndarray, y: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Mean absolute error per weight row, in the unit of ``y``."""
    return (weights @ np.abs(predicted - y)) / weights.sum(axis=1)


def r_squared(predicted: np.ndarray, y: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Coefficient of determination per weight row."""
    total = weights.sum(axis=1)
    mean = (weights @ y) / total
    residual = weights @ (predicted - y) ** 2
    spread = weights @ (y**2) - total * mean**2
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(spread > 0, 1.0 - residual / spread, np.nan)


def age_band_index(age: np.ndarray, edges: Sequence[float]) -> np.ndarray:
    """Return the band of each age: 0 below the first edge, ``len(edges)`` at or above the last."""
    return np.digitize(age, np.asarray(edges, dtype=np.float64), right=False)


def age_band_names(edges: Sequence[float]) -> list[str]:
    """Name the bands cut at ``edges`` (years), e.g. ``<40``, ``40-49``, ``50-59``, ``60+``."""
    edges = [int(e) if float(e).is_integer() else float(e) for e in edges]
    if not edges:
        return ["all ages"]
    names = [f"<{edges[0]}"]
    for low, high in zip(edges[:-1], edges[1:]):
        upper = high - 1 if isinstance(high, int) else high
        names.append(f"{low}-{upper}" if isinstance(high, int) else f"{low} to <{high}")
    names.append(f"{edges[-1]}+")
    return names


def band_accuracy(predicted: np.ndarray, y: np.ndarray, edges: Sequence[float], weights: np.ndarray) -> np.ndarray:
    """Share of patients whose predicted age falls in their true age band, per weight row."""
    correct = (age_band_index(predicted, edges) == age_band_index(y, edges)).astype(np.float64)
    return (weights @ correct) / weights.sum(axis=1)


def predicted_classes(scores: np.ndarray, priors: np.ndarray) -> np.ndarray:
    """Pick the class whose score most exceeds its training-fold frequency.

    For a binary target this predicts class 1 when its probability is above
    the training prevalence, which suits balanced accuracy on unbalanced
    targets better than a fixed 0.5 threshold.
    """
    return np.argmax(scores - priors, axis=1)


def classification_metrics(scores: np.ndarray, priors: np.ndarray, y: np.ndarray, kind: str, weights: np.ndarray) -> dict[str, np.ndarray]:
    """Return AUROC (binary) or macro AUROC (multiclass) and balanced accuracy per weight row."""
    n_classes = scores.shape[1]
    out: dict[str, np.ndarray] = {}
    if kind == "binary":
        out["auroc"] = weighted_auroc(scores[:, 1], y == 1, weights)
    else:
        out["macro_auroc"] = macro_auroc(scores, y, weights)
    out["balanced_accuracy"] = balanced_accuracy(predicted_classes(scores, priors), y, n_classes, weights)
    return out


def regression_metrics(predicted: np.ndarray, y: np.ndarray, edges: Sequence[float], weights: np.ndarray) -> dict[str, np.ndarray]:
    """Return MAE (years), R2 and age-band accuracy per weight row."""
    return {
        "mae": mean_absolute_error(predicted, y, weights),
        "r2": r_squared(predicted, y, weights),
        "band_accuracy": band_accuracy(predicted, y, edges, weights),
    }


def summarise(observed: float, replicates: np.ndarray, confidence: float) -> dict[str, float]:
    """Return the estimate and the percentile bootstrap interval at ``confidence``."""
    finite = replicates[np.isfinite(replicates)]
    if finite.size == 0 or not np.isfinite(observed):
        return {"estimate": float(observed), "ci_low": float("nan"), "ci_high": float("nan")}
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(finite, [tail, 1.0 - tail])
    return {"estimate": float(observed), "ci_low": float(low), "ci_high": float(high)}


def permutation_p_value(observed: float, null: np.ndarray, metric: str) -> float:
    """Return the permutation p-value ``(1 + #{null at least as good}) / (1 + permutations)``.

    "At least as good" means at or above the observed value, or at or below
    it for a metric where lower is better (MAE). The added one counts the
    observed labelling itself, so the p-value is never zero.
    """
    null = null[np.isfinite(null)]
    if not np.isfinite(observed) or null.size == 0:
        return float("nan")
    if metric in LOWER_IS_BETTER:
        extreme = np.count_nonzero(null <= observed)
    else:
        extreme = np.count_nonzero(null >= observed)
    return float((1 + extreme) / (1 + null.size))


def best_of_models_p_value(observed: dict[str, float], nulls: dict[str, np.ndarray], metric: str) -> float:
    """Return the permutation p-value of the best model's metric, corrected for picking the best.

    Every model's null must come from the same permutations. For each
    permutation the best value over the models is taken (the max statistic),
    and the best observed value is compared with that distribution, so
    choosing the better model afterwards does not make chance findings
    look significant.
    """
    stacked = np.stack([nulls[name] for name in observed], axis=0)
    values = np.array([observed[name] for name in observed])
    if metric in LOWER_IS_BETTER:
        return permutation_p_value(float(np.nanmin(values)), np.nanmin(stacked, axis=0), metric)
    return permutation_p_value(float(np.nanmax(values)), np.nanmax(stacked, axis=0), metric)


def rank_auroc_columns(scores: np.ndarray, positive: np.ndarray) -> np.ndarray:
    """Compute the AUROC of each column pair of ``scores`` and ``positive``, both ``(n, P)``.

    Used for permutation nulls, where each column is one permuted labelling.
    """
    ranks = rankdata(scores, axis=0)
    n_positive = positive.sum(axis=0)
    n_negative = positive.shape[0] - n_positive
    rank_sum = (ranks * positive).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (rank_sum - n_positive * (n_positive + 1) / 2.0) / (n_positive * n_negative)


def primary_metric_columns(kind: str, scores: np.ndarray, labels: np.ndarray, n_classes: int) -> np.ndarray:
    """Compute the primary metric of each permuted labelling.

    Parameters
    ----------
    kind : {"binary", "multiclass", "regression"}
    scores : ndarray
        ``(n, P)`` predictions for a regression or a binary target (score of
        class 1), ``(n, K, P)`` for a multiclass target. A single prediction
        set shared by every permutation may be passed with ``P = 1``.
    labels : ndarray
        ``(n, P)`` permuted labels (class codes or ages in years).
    n_classes : int
        Number of classes; ignored for a regression target.
    """
    if kind == "regression":
        return np.mean(np.abs(scores - labels), axis=0)
    if kind == "binary":
        scores = np.broadcast_to(scores, labels.shape)
        return rank_auroc_columns(scores, (labels == 1).astype(np.float64))
    per_class = []
    for k in range(n_classes):
        class_scores = np.broadcast_to(scores[:, k, :], labels.shape)
        per_class.append(rank_auroc_columns(class_scores, (labels == k).astype(np.float64)))
    return _nanmean_rows(np.stack(per_class, axis=1))


def _nanmean_rows(values: np.ndarray) -> np.ndarray:
    """Average each row over its finite entries, or return NaN for a row without any."""
    finite = np.isfinite(values)
    counts = finite.sum(axis=1)
    totals = np.where(finite, values, 0.0).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, totals / counts, np.nan)
