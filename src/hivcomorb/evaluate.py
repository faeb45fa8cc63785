"""Classification metrics with bootstrap confidence intervals over patients.

Every metric here accepts a matrix of bootstrap weights, whose row ``b`` is the
number of times each patient was drawn in resample ``b``. Resampling patients with
replacement is the same as weighting each patient by its draw count, so one
sort of the scores serves all resamples and the whole bootstrap is a few
vectorised numpy operations instead of a Python loop over resamples. A row of
ones gives the plain estimate on the data as observed.

Unknown labels are excluded, never counted as negatives, because a ``mask`` (or
NaN in ``y_true``) sets their weight to zero. A metric that is undefined on a
sample, such as AUROC on a sample without positives, is NaN there. Confidence
intervals are percentiles of the resamples where the metric is defined.

Used by training, the demographic recoverability probe and the fairness audit.
The public functions take ``y_true`` and ``y_prob`` (or ``y_pred``) arrays and
an optional ``mask``, and return plain dicts of floats.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
from scipy.special import expit, logit

DEFAULT_BOOTSTRAP = 1000
DEFAULT_ALPHA = 0.05
CALIBRATION_BINS = 10
# Probabilities are clipped this far from 0 and 1 before the logit in the
# calibration fits, so a model that outputs exactly 0 or 1 stays finite.
_PROB_EPSILON = 1e-6

BINARY_METRICS = (
    "auroc",
    "auprc",
    "f1",
    "sensitivity",
    "specificity",
    "brier",
    "calibration_slope",
    "calibration_intercept",
    "ece",
)
MULTILABEL_METRICS = ("macro_f1", "micro_f1", "hamming_loss", "subset_accuracy", "macro_auroc", "macro_auprc", "macro_brier")


# ---------------------------------------------------------------------------
# Bootstrap weights and summaries


def bootstrap_weights(n_samples: int, n_boot: int, seed: int) -> np.ndarray:
    """Draw bootstrap resamples of ``n_samples`` patients as a count matrix.

    Parameters
    ----------
    n_samples : int
        Number of patients.
    n_boot : int
        Number of resamples.
    seed : int
        Seed of the random draw. The same seed gives the same resamples.

    Returns
    -------
    numpy.ndarray of shape (n_boot, n_samples)
        ``weights[b, i]`` is how many times patient ``i`` appears in resample ``b``.
    """
    if n_samples < 1:
        raise ValueError(f"n_samples must be at least 1, got {n_samples}")
    if n_boot < 1:
        raise ValueError(f"n_boot must be at least 1, got {n_boot}")
    rng = np.random.default_rng(seed)
    return rng.multinomial(n_samples, np.full(n_samples, 1.0 / n_samples), size=n_boot).astype(np.float64)


def percentile_interval(samples: np.ndarray, alpha: float = DEFAULT_ALPHA) -> tuple[float, float]:
    """Return the percentile interval of the finite bootstrap ``samples``.

    Both bounds are NaN when fewer than 2 resamples give a finite value.
    """
    finite = np.asarray(samples, dtype=np.float64)
    finite = finite[np.isfinite(finite)]
    if finite.size < 2:
        return float("nan"), float("nan")
    low, high = np.percentile(finite, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return float(low), float(high)


def summarise(estimate: float, samples: np.ndarray, alpha: float = DEFAULT_ALPHA) -> dict[str, float]:
    """Return ``{"estimate", "ci_low", "ci_high"}`` for one metric."""
    low, high = percentile_interval(samples, alpha)
    return {"estimate": float(estimate), "ci_low": low, "ci_high": high}


def paired_difference(
    estimate_a: float,
    samples_a: np.ndarray,
    estimate_b: float,
    samples_b: np.ndarray,
    alpha: float = DEFAULT_ALPHA,
) -> dict[str, float]:
    """Compare two models scored on the same bootstrap resamples of the same patients.

    Parameters
    ----------
    estimate_a, estimate_b : float
        The metric of each model on the observed data.
    samples_a, samples_b : numpy.ndarray of shape (n_boot,)
        The metric of each model on the same resamples, in the same order.
    alpha : float
        One minus the confidence level of the interval.

    Returns
    -------
    dict
        ``diff`` (a minus b), ``ci_low`` and ``ci_high`` (percentile interval of
        the paired differences) and ``p_value``. The p-value is the two-sided
        bootstrap p-value for "no difference": twice the smaller share of
        resamples on either side of zero, with one added to numerator and
        denominator so it is never 0, capped at 1. NaN when fewer than 2
        resamples define both metrics.
    """
    a = np.asarray(samples_a, dtype=np.float64)
    b = np.asarray(samples_b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired samples must have the same shape, got {a.shape} and {b.shape}")
    diffs = a - b
    diffs = diffs[np.isfinite(diffs)]
    result = {"diff": float(estimate_a - estimate_b), "ci_low": float("nan"), "ci_high": float("nan"), "p_value": float("nan")}
    if diffs.size < 2:
        return result
    result["ci_low"], result["ci_high"] = percentile_interval(diffs, alpha)
    at_or_below = (np.count_nonzero(diffs <= 0) + 1) / (diffs.size + 1)
    at_or_above = (np.count_nonzero(diffs >= 0) + 1) / (diffs.size + 1)
    result["p_value"] = float(min(1.0, 2 * min(at_or_below, at_or_above)))
    return result


# ---------------------------------------------------------------------------
# Weighted binary metrics: each returns one value per weight row


def _as_weights(weights: np.ndarray | None, n_samples: int) -> np.ndarray:
    if weights is None:
        return np.ones((1, n_samples))
    weights = np.asarray(weights, dtype=np.float64)
    if weights.ndim == 1:
        weights = weights[None, :]
    if weights.shape[1] != n_samples:
        raise ValueError(f"weights have {weights.shape[1]} columns but there are {n_samples} samples")
    return weights


def _clean_inputs(
    y_true: np.ndarray, y_score: np.ndarray, weights: np.ndarray | None, mask: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return labels as 0/1, scores, and weights with unknown labels set to zero."""
    y_true = np.asarray(y_true, dtype=np.float64)
    y_score = np.asarray(y_score, dtype=np.float64)
    if y_true.shape != y_score.shape or y_true.ndim != 1:
        raise ValueError(f"y_true and the scores must be 1-D arrays of the same length, got {y_true.shape} and {y_score.shape}")
    known = np.isfinite(y_true)
    if mask is not None:
        known &= np.asarray(mask, dtype=bool)
    labels = np.where(known, y_true, 0.0)
    invalid = known & (labels != 0) & (labels != 1)
    if invalid.any():
        raise ValueError(f"y_true must contain only 0, 1 or NaN; found {np.unique(labels[invalid])[:5].tolist()}")
    if known.any() and not np.isfinite(y_score[known]).all():
        raise ValueError("scores are missing or infinite for patients whose label is known")
    scores = np.where(known, y_score, 0.0)
    return labels, scores, _as_weights(weights, labels.size) * known


def _tie_groups(sorted_scores: np.ndarray) -> np.ndarray:
    """Return the start position of each run of equal values in a sorted array."""
    if sorted_scores.size == 0:
        return np.zeros(0, dtype=np.intp)
    return np.flatnonzero(np.r_[True, sorted_scores[1:] != sorted_scores[:-1]])


def _divide(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    numerator = np.asarray(numerator, dtype=np.float64)
    denominator = np.asarray(denominator, dtype=np.float64)
    out = np.full(np.broadcast(numerator, denominator).shape, np.nan)
    np.divide(numerator, denominator, out=out, where=denominator > 0)
    return out


def _grouped_by_score(y_true: np.ndarray, y_score: np.ndarray, weights: np.ndarray, descending: bool) -> tuple[np.ndarray, np.ndarray]:
    """Return the weighted positives and negatives at each distinct score, in score order.

    Both arrays have shape (n_rows, n_distinct_scores). Patients with equal
    scores are summed into one column, so ties are handled as one threshold.
    """
    order = np.argsort(-y_score if descending else y_score, kind="mergesort")
    sorted_weights = weights[:, order]
    positive = sorted_weights * y_true[order]
    negative = sorted_weights - positive
    starts = _tie_groups(y_score[order])
    if starts.size < y_score.size:
        positive = np.add.reduceat(positive, starts, axis=1)
        negative = np.add.reduceat(negative, starts, axis=1)
    return positive, negative


def weighted_auroc(y_true: np.ndarray, y_score: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Return the area under the ROC curve for each row of ``weights``.

    Ties count one half, as in :func:`sklearn.metrics.roc_auc_score`. NaN
    where a row has no weighted positive or no weighted negative.
    """
    positive, negative = _grouped_by_score(y_true, y_score, weights, descending=False)
    negative_below = np.cumsum(negative, axis=1) - negative
    concordant = (positive * (negative_below + 0.5 * negative)).sum(axis=1)
    return _divide(concordant, positive.sum(axis=1) * negative.sum(axis=1))


def weighted_average_precision(y_true: np.ndarray, y_score: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Return the average precision (area under the precision-recall curve) per weight row.

    Uses the step-wise definition of :func:`sklearn.metrics.average_precision_score`:
    the precision at each distinct threshold weighted by the recall gained there.
    NaN where a row has no weighted positive.
    """
    positive, negative = _grouped_by_score(y_true, y_score, weights, descending=True)
    true_pos = np.cumsum(positive, axis=1)
    predicted_pos = true_pos + np.cumsum(negative, axis=1)
    precision = np.where(predicted_pos > 0, true_pos / np.where(predicted_pos > 0, predicted_pos, 1.0), 0.0)
    return _divide((positive * precision).sum(axis=1), positive.sum(axis=1))


def weighted_confusion(y_true: np.ndarray, y_pred: np.ndarray, weights: np.ndarray) -> dict[str, np.ndarray]:
    """Return the weighted true/false positive/negative counts (``tp``, ``fp``, ``fn``, ``tn``) per weight row."""
    predicted = np.asarray(y_pred, dtype=np.float64)
    return {
        "tp": weights @ (y_true * predicted),
        "fp": weights @ ((1.0 - y_true) * predicted),
        "fn": weights @ (y_true * (1.0 - predicted)),
        "tn": weights @ ((1.0 - y_true) * (1.0 - predicted)),
    }


def f1_from_counts(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> np.ndarray:
    """Return F1 = 2TP / (2TP + FP + FN), or NaN when there is no positive and no positive prediction."""
    return _divide(2.0 * tp, 2.0 * tp + fp + fn)


def weighted_brier(y_true: np.ndarray, y_prob: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Return the Brier score (mean squared error of the probability) per weight row."""
    return _divide(weights @ ((y_prob - y_true) ** 2), weights.sum(axis=1))


def weighted_ece(y_true: np.ndarray, y_prob: np.ndarray, weights: np.ndarray, n_bins: int = CALIBRATION_BINS) -> np.ndarray:
    """Return the expected calibration error over ``n_bins`` equal-width probability bins.

    ECE is the sum over bins of the bin's share of patients times the absolute
    gap between its observed event rate and its mean predicted probability.
    """
    bins = np.minimum((np.clip(y_prob, 0.0, 1.0) * n_bins).astype(np.intp), n_bins - 1)
    membership = np.zeros((y_prob.size, n_bins))
    membership[np.arange(y_prob.size), bins] = 1.0
    observed = weights @ (membership * y_true[:, None])
    predicted = weights @ (membership * y_prob[:, None])
    return _divide(np.abs(observed - predicted).sum(axis=1), weights.sum(axis=1))


def weighted_calibration_fit(
    y_true: np.ndarray, y_prob: np.ndarray, weights: np.ndarray, max_iter: int = 50, tol: float = 1e-7
) -> tuple[np.ndarray, np.ndarray]:
    """Fit the logistic recalibration model and return ``(slope, intercept)`` per weight row.

    The slope is ``b`` in ``logit P(y=1) = a + b logit(p)``; 1 is ideal, below 1
    means predictions are too extreme. The intercept is calibration-in-the-large:
    ``a`` in ``logit P(y=1) = a + logit(p)`` with the slope fixed at 1; 0 is
    ideal, above 0 means risks are underestimated. Both are fitted by Newton's
    method on all weight rows at once, starting from the fit to the mean
    weights so that resamples converge in a few steps. NaN where a row lacks
    positives or negatives, or where the fit does not converge (perfect separation).
    """
    x = logit(np.clip(y_prob, _PROB_EPSILON, 1 - _PROB_EPSILON))
    positives = weights @ y_true
    defined = (positives > 0) & (positives < weights.sum(axis=1))
    start = None
    if weights.shape[0] > 1:
        mean_slope, mean_intercept, mean_offset, _ = _newton_calibration(x, y_true, weights.mean(axis=0, keepdims=True), None, max_iter, tol)
        start = (mean_slope[0], mean_intercept[0], mean_offset[0])
    slope, _, intercept, converged = _newton_calibration(x, y_true, weights, start, max_iter, tol)
    slope = np.where(defined & converged & np.isfinite(slope), slope, np.nan)
    intercept = np.where(defined & np.isfinite(intercept), intercept, np.nan)
    return slope, intercept


def _newton_calibration(
    x: np.ndarray,
    y_true: np.ndarray,
    weights: np.ndarray,
    start: tuple[float, float, float] | None,
    max_iter: int,
    tol: float,
) -> tuple[np.ndarray, ...]:
    """Run Newton's method for the two recalibration models on every weight row.

    ``start`` is ``(slope, intercept, offset intercept)`` to start from.
    Returns the slope ``b`` and intercept ``a`` of ``a + b x``, the intercept
    of the offset model, and whether the slope model converged, per row.
    """
    n_rows = weights.shape[0]
    slope0, intercept0, offset0 = start if start is not None else (1.0, 0.0, 0.0)
    if not np.isfinite([slope0, intercept0, offset0]).all():
        slope0, intercept0, offset0 = 1.0, 0.0, 0.0
    b, a, offset = np.full(n_rows, slope0), np.full(n_rows, intercept0), np.full(n_rows, offset0)
    weighted_y = weights @ y_true
    weighted_xy = weights @ (x * y_true)

    for _ in range(max_iter):
        mu = expit(offset[:, None] + x)
        weighted_mu = weights * mu
        step = _divide(weighted_y - weighted_mu.sum(axis=1), (weighted_mu * (1 - mu)).sum(axis=1))
        step = np.where(np.isfinite(step), step, 0.0)
        offset += step
        if np.all(np.abs(step) < tol):
            break

    converged = np.zeros(n_rows, dtype=bool)
    for _ in range(max_iter):
        mu = expit(a[:, None] + b[:, None] * x)
        weighted_mu = weights * mu
        variance = weighted_mu * (1 - mu)
        g_a = weighted_y - weighted_mu.sum(axis=1)
        g_b = weighted_xy - weighted_mu @ x
        h_aa, h_ab, h_bb = variance.sum(axis=1), variance @ x, variance @ (x * x)
        determinant = h_aa * h_bb - h_ab**2
        step_a = _divide(h_bb * g_a - h_ab * g_b, determinant)
        step_b = _divide(h_aa * g_b - h_ab * g_a, determinant)
        step_a = np.where(np.isfinite(step_a), step_a, 0.0)
        step_b = np.where(np.isfinite(step_b), step_b, 0.0)
        a += step_a
        b += step_b
        # A singular Hessian (all predictions equal) leaves the slope undefined.
        identifiable = determinant > 1e-10 * np.maximum(h_aa * h_bb, np.finfo(float).tiny)
        converged = (np.abs(step_a) < 1e-6) & (np.abs(step_b) < 1e-6) & identifiable
        if converged.all():
            break
    return b, a, offset, converged


def binary_scores(
    y_true: np.ndarray,
    y_prob: np.ndarray,
    threshold: float | np.ndarray = 0.5,
    mask: np.ndarray | None = None,
    weights: np.ndarray | None = None,
    calibration: bool = True,
) -> dict[str, np.ndarray]:
    """Compute every binary metric for each row of ``weights``.

    Parameters
    ----------
    y_true : array of shape (n,)
        1, 0, or NaN for unknown.
    y_prob : array of shape (n,)
        Predicted probability of the positive class.
    threshold : float or array of shape (n,)
        A patient is predicted positive when ``y_prob >= threshold``; an array
        gives each patient its own threshold (its fold's, in cross-validation).
    mask : array of bool, optional
        False excludes a patient, as does NaN in ``y_true``.
    weights : array of shape (n_boot, n), optional
        Bootstrap counts from :func:`bootstrap_weights`; ones when omitted.
    calibration : bool
        Whether to fit the calibration slope and intercept, the slowest metrics.

    Returns
    -------
    dict of str to numpy.ndarray of shape (n_boot,)
        The metrics in :data:`BINARY_METRICS` plus ``n`` and ``positives``.
    """
    labels, probs, weights = _clean_inputs(y_true, y_prob, weights, mask)
    predicted = (probs >= np.asarray(threshold, dtype=np.float64)).astype(np.float64)
    counts = weighted_confusion(labels, predicted, weights)
    scores = {
        "auroc": weighted_auroc(labels, probs, weights),
        "auprc": weighted_average_precision(labels, probs, weights),
        "f1": f1_from_counts(counts["tp"], counts["fp"], counts["fn"]),
        "sensitivity": _divide(counts["tp"], counts["tp"] + counts["fn"]),
        "specificity": _divide(counts["tn"], counts["tn"] + counts["fp"]),
        "brier": weighted_brier(labels, probs, weights),
        "ece": weighted_ece(labels, probs, weights),
        "n": weights.sum(axis=1),
        "positives": weights @ labels,
    }
    if calibration:
        scores["calibration_slope"], scores["calibration_intercept"] = weighted_calibration_fit(labels, probs, weights)
    else:
        scores["calibration_slope"] = np.full(weights.shape[0], np.nan)
        scores["calibration_intercept"] = np.full(weights.shape[0], np.nan)
    scores["_counts"] = counts  # multilabel_scores pools these into micro-F1 and Hamming loss
    return scores


def binary_metrics(
    y_true: np.ndarray,
    y_prob: np.ndarray,
    threshold: float | np.ndarray = 0.5,
    mask: np.ndarray | None = None,
    n_boot: int = DEFAULT_BOOTSTRAP,
    seed: int = 0,
    alpha: float = DEFAULT_ALPHA,
) -> dict[str, dict[str, float]]:
    """Return each binary metric with its bootstrap confidence interval.

    Parameters are those of :func:`binary_scores`; ``n_boot`` resamples of the
    patients are drawn with ``seed``, and ``alpha`` sets the interval level
    (0.05 gives a 95% interval).

    Returns
    -------
    dict
        ``{metric: {"estimate", "ci_low", "ci_high"}}`` for each metric in
        :data:`BINARY_METRICS`, plus ``n`` and ``positives`` (known labels and
        positives among them, as plain counts).

    Examples
    --------
    >>> import numpy as np
    >>> result = binary_metrics(np.array([0, 0, 1, 1]), np.array([0.1, 0.6, 0.4, 0.9]), n_boot=50)
    >>> result["auroc"]["estimate"]
    0.75
    """
    n_samples = np.asarray(y_true).size
    point = binary_scores(y_true, y_prob, threshold, mask)
    boot = binary_scores(y_true, y_prob, threshold, mask, bootstrap_weights(n_samples, n_boot, seed))
    result: dict[str, dict[str, float]] = {name: summarise(point[name][0], boot[name], alpha) for name in BINARY_METRICS}
    result["n"] = int(point["n"][0])
    result["positives"] = int(point["positives"][0])
    return result


# ---------------------------------------------------------------------------
# Multi-label metrics


def multilabel_scores(
    y_true: np.ndarray,
    y_prob: np.ndarray,
    thresholds: np.ndarray,
    labels: Sequence[str],
    weights: np.ndarray | None = None,
    calibration: bool = True,
) -> dict[str, np.ndarray]:
    """Compute per-label and averaged multi-label metrics for each row of ``weights``.

    Parameters
    ----------
    y_true : array of shape (n, n_labels)
        1, 0, or NaN where the label is unknown; unknown entries are left out
        of every metric.
    y_prob : array of shape (n, n_labels) or (n_repeats, n, n_labels)
        Probabilities. With a leading repeat axis (repeated cross-validation),
        each metric is computed per repeat on the same resamples and averaged
        over repeats.
    thresholds : array of the same shape as ``y_prob``, or of shape (n_labels,)
        Decision thresholds; ``y_prob >= threshold`` predicts the label.
    labels : sequence of str
        Label names, in column order.
    weights : array of shape (n_boot, n), optional
        Bootstrap counts; ones when omitted.
    calibration : bool
        Whether to fit the calibration slope and intercept.

    Returns
    -------
    dict of str to numpy.ndarray of shape (n_boot,)
        Keys ``<metric>/<label>`` for each binary metric and each label, and
        the averages in :data:`MULTILABEL_METRICS`. Macro averages are the mean
        over labels where the metric is defined. Micro-F1 pools the counts of
        every known label entry. Hamming loss is the share of known label
        entries predicted wrongly. Subset accuracy is the share of patients,
        among those with at least one known label, whose known labels are all
        predicted correctly.
    """
    y_true = np.asarray(y_true, dtype=np.float64)
    probs = np.asarray(y_prob, dtype=np.float64)
    if probs.ndim == 2:
        probs = probs[None]
    cuts = np.broadcast_to(np.asarray(thresholds, dtype=np.float64), probs.shape)
    n_repeats, n_samples, n_labels = probs.shape
    if y_true.shape != (n_samples, n_labels) or len(labels) != n_labels:
        raise ValueError(f"y_true has shape {y_true.shape}, expected ({n_samples}, {n_labels}) for {len(labels)} labels")
    weights = _as_weights(weights, n_samples)
    known = np.isfinite(y_true)

    per_repeat = []
    for repeat in range(n_repeats):
        scores: dict[str, np.ndarray] = {}
        totals = {"tp": 0.0, "fp": 0.0, "fn": 0.0, "tn": 0.0}
        all_correct = np.ones(n_samples, dtype=bool)
        for j, label in enumerate(labels):
            label_scores = binary_scores(y_true[:, j], probs[repeat, :, j], cuts[repeat, :, j], weights=weights, calibration=calibration)
            counts = label_scores.pop("_counts")
            for key in totals:
                totals[key] = totals[key] + counts[key]
            for name in BINARY_METRICS:
                scores[f"{name}/{label}"] = label_scores[name]
            predicted = probs[repeat, :, j] >= cuts[repeat, :, j]
            all_correct &= ~known[:, j] | (predicted == (y_true[:, j] == 1))
        scores.update(_averages(scores, totals, labels))
        has_known = known.any(axis=1).astype(np.float64)
        scores["subset_accuracy"] = _divide(weights @ (all_correct & (has_known > 0)).astype(np.float64), weights @ has_known)
        per_repeat.append(scores)

    if n_repeats == 1:
        return per_repeat[0]
    with np.errstate(invalid="ignore"):
        return {name: _nanmean(np.stack([r[name] for r in per_repeat]), axis=0) for name in per_repeat[0]}


def _nanmean(values: np.ndarray, axis: int) -> np.ndarray:
    """Return the mean over ``axis`` of the finite values, or NaN where there are none."""
    finite = np.isfinite(values)
    return _divide(np.where(finite, values, 0.0).sum(axis=axis), finite.sum(axis=axis))


def _averages(scores: Mapping[str, np.ndarray], totals: Mapping[str, np.ndarray], labels: Sequence[str]) -> dict[str, np.ndarray]:
    out = {
        "macro_f1": _nanmean(np.stack([scores[f"f1/{label}"] for label in labels]), axis=0),
        "macro_auroc": _nanmean(np.stack([scores[f"auroc/{label}"] for label in labels]), axis=0),
        "macro_auprc": _nanmean(np.stack([scores[f"auprc/{label}"] for label in labels]), axis=0),
        "macro_brier": _nanmean(np.stack([scores[f"brier/{label}"] for label in labels]), axis=0),
        "micro_f1": f1_from_counts(totals["tp"], totals["fp"], totals["fn"]),
    }
    entries = totals["tp"] + totals["fp"] + totals["fn"] + totals["tn"]
    out["hamming_loss"] = _divide(totals["fp"] + totals["fn"], entries)
    return out


def summarise_scores(
    point: Mapping[str, np.ndarray], boot: Mapping[str, np.ndarray], labels: Sequence[str], alpha: float = DEFAULT_ALPHA
) -> dict[str, object]:
    """Arrange the output of :func:`multilabel_scores` as nested estimates with intervals.

    Returns
    -------
    dict
        ``{average: {"estimate", "ci_low", "ci_high"}, ..., "per_label":
        {label: {metric: {"estimate", "ci_low", "ci_high"}}}}``.
    """
    result: dict[str, object] = {name: summarise(point[name][0], boot[name], alpha) for name in MULTILABEL_METRICS}
    result["per_label"] = {
        label: {name: summarise(point[f"{name}/{label}"][0], boot[f"{name}/{label}"], alpha) for name in BINARY_METRICS}
        for label in labels
    }
    return result


def multilabel_metrics(
    y_true: np.ndarray,
    y_prob: np.ndarray,
    thresholds: np.ndarray,
    labels: Sequence[str],
    n_boot: int = DEFAULT_BOOTSTRAP,
    seed: int = 0,
    alpha: float = DEFAULT_ALPHA,
) -> dict[str, object]:
    """Return the multi-label metrics with bootstrap confidence intervals.

    See :func:`multilabel_scores` for the inputs and definitions and
    :func:`summarise_scores` for the output layout.
    """
    n_samples = np.asarray(y_true).shape[0]
    point = multilabel_scores(y_true, y_prob, thresholds, labels)
    boot = multilabel_scores(y_true, y_prob, thresholds, labels, weights=bootstrap_weights(n_samples, n_boot, seed))
    return summarise_scores(point, boot, labels, alpha)


def best_f1_threshold(y_true: np.ndarray, y_prob: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Return the threshold that maximises F1 when ``y_prob >= threshold`` predicts positive.

    Candidates are the distinct probabilities of patients with known labels;
    ties go to the highest threshold. With no known positive, the threshold is
    just above the highest probability, so nothing is predicted positive.
    """
    labels, probs, weights = _clean_inputs(y_true, y_prob, None, mask)
    keep = weights[0] > 0
    labels, probs = labels[keep], probs[keep]
    if labels.sum() == 0:
        return float(np.nextafter(probs.max(), np.inf)) if probs.size else 0.5
    order = np.argsort(-probs, kind="mergesort")
    sorted_probs = probs[order]
    true_pos = np.cumsum(labels[order])
    predicted_pos = np.arange(1, labels.size + 1)
    # Only the last position of each run of equal probabilities is a reachable cut.
    last_of_run = np.r_[sorted_probs[1:] != sorted_probs[:-1], True]
    f1 = 2 * true_pos / (predicted_pos + labels.sum())
    f1 = np.where(last_of_run, f1, -1.0)
    best = np.flatnonzero(f1 == f1.max())[0]
    return float(sorted_probs[best])
