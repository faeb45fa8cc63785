"""Metric code against hand-computed cases and scikit-learn, bootstrap and paired comparisons."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score

from hivcomorb import evaluate

NAN = float("nan")


def single(scores: dict, name: str) -> float:
    return float(scores[name][0])


# ---------------------------------------------------------------------------
# Binary metrics on hand-computed cases


@pytest.mark.parametrize(
    ("y_true", "y_prob", "expected"),
    [
        ([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8], 0.75),
        ([0, 1], [0.5, 0.5], 0.5),
        ([0, 0, 1], [0.2, 0.2, 0.2], 0.5),
        ([1, 0], [0.9, 0.1], 1.0),
        ([1, 0], [0.1, 0.9], 0.0),
    ],
)
def test_auroc_hand_cases(y_true, y_prob, expected):
    scores = evaluate.binary_scores(np.array(y_true), np.array(y_prob))
    assert single(scores, "auroc") == pytest.approx(expected)


def test_auprc_hand_case():
    # Sorted by score: 0.8 (pos), 0.4 (neg), 0.35 (pos), 0.1 (neg); precision 1 and 2/3 at the positives.
    scores = evaluate.binary_scores(np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.35, 0.8]))
    assert single(scores, "auprc") == pytest.approx((1 + 2 / 3) / 2)


def test_threshold_metrics_hand_case():
    # Predictions at 0.5: [1, 0, 1, 0, 1] -> TP 2, FP 1, FN 1, TN 1.
    scores = evaluate.binary_scores(np.array([1, 1, 0, 0, 1]), np.array([0.9, 0.4, 0.6, 0.1, 0.7]), threshold=0.5)
    assert single(scores, "f1") == pytest.approx(2 / 3)
    assert single(scores, "sensitivity") == pytest.approx(2 / 3)
    assert single(scores, "specificity") == pytest.approx(1 / 2)


def test_threshold_per_patient_applies_each():
    # Patient 1 has threshold 0.3, so 0.4 is positive for it; patient 3 has 0.7, so 0.6 is negative.
    scores = evaluate.binary_scores(
        np.array([1, 1, 0, 0, 1]), np.array([0.9, 0.4, 0.6, 0.1, 0.7]), threshold=np.array([0.5, 0.3, 0.7, 0.5, 0.5])
    )
    assert single(scores, "f1") == pytest.approx(1.0)


def test_brier_hand_case():
    scores = evaluate.binary_scores(np.array([1, 0]), np.array([0.8, 0.3]))
    assert single(scores, "brier") == pytest.approx((0.2**2 + 0.3**2) / 2)


def test_ece_hand_case():
    # Two bins, each with observed rate 0.5 and predicted 0.05 or 0.95: gap 0.45 in each.
    scores = evaluate.binary_scores(np.array([1, 0, 1, 0]), np.array([0.05, 0.05, 0.95, 0.95]))
    assert single(scores, "ece") == pytest.approx(0.45)


def test_calibration_intercept_constant_prediction():
    # Every prediction 0.5 with a 25% event rate: calibration-in-the-large is logit(0.25) - logit(0.5).
    y = np.array([1, 0, 0, 0] * 5)
    scores = evaluate.binary_scores(y, np.full(y.size, 0.5))
    assert single(scores, "calibration_intercept") == pytest.approx(math.log(0.25 / 0.75), abs=1e-6)
    assert math.isnan(single(scores, "calibration_slope"))


def test_calibration_slope_matches_unpenalised_logistic_regression():
    rng = np.random.default_rng(3)
    p = rng.uniform(0.02, 0.98, 400)
    y = (rng.random(400) < p**1.5).astype(float)
    scores = evaluate.binary_scores(y, p)
    x = np.log(p / (1 - p))[:, None]
    reference = LogisticRegression(C=np.inf, tol=1e-10, max_iter=10_000).fit(x, y)
    assert single(scores, "calibration_slope") == pytest.approx(reference.coef_[0, 0], rel=1e-4)


def test_calibration_slope_near_one_when_calibrated():
    rng = np.random.default_rng(4)
    p = rng.uniform(0.05, 0.95, 20_000)
    y = (rng.random(p.size) < p).astype(float)
    scores = evaluate.binary_scores(y, p)
    assert single(scores, "calibration_slope") == pytest.approx(1.0, abs=0.08)
    assert single(scores, "calibration_intercept") == pytest.approx(0.0, abs=0.05)


# ---------------------------------------------------------------------------
# Unknown labels and labels without positives


def test_unknown_label_is_excluded_not_negative():
    # If the NaN were a negative, its score 0.95 above the positive's would lower AUROC below 1.
    with_unknown = evaluate.binary_scores(np.array([1, NAN, 0]), np.array([0.9, 0.95, 0.2]), threshold=0.5)
    assert single(with_unknown, "auroc") == pytest.approx(1.0)
    assert single(with_unknown, "f1") == pytest.approx(1.0)
    assert single(with_unknown, "n") == 2


def test_mask_excludes_like_unknown():
    masked = evaluate.binary_scores(np.array([1, 0, 0]), np.array([0.9, 0.95, 0.2]), mask=np.array([True, False, True]))
    assert single(masked, "auroc") == pytest.approx(1.0)


def test_unknown_score_may_be_missing():
    scores = evaluate.binary_scores(np.array([1, NAN, 0]), np.array([0.9, NAN, 0.2]))
    assert single(scores, "auroc") == pytest.approx(1.0)


@pytest.mark.parametrize("metric", ["auroc", "auprc", "sensitivity", "calibration_slope", "calibration_intercept"])
def test_label_without_positives_undefined(metric):
    scores = evaluate.binary_scores(np.array([0, 0, 0]), np.array([0.2, 0.6, 0.1]), threshold=0.5)
    assert math.isnan(single(scores, metric))


def test_label_without_positives_f1_zero_with_false_positive():
    scores = evaluate.binary_scores(np.array([0, 0, 0]), np.array([0.2, 0.6, 0.1]), threshold=0.5)
    assert single(scores, "f1") == 0.0
    assert single(scores, "specificity") == pytest.approx(2 / 3)


def test_label_without_positives_f1_undefined_without_predictions():
    scores = evaluate.binary_scores(np.array([0, 0, 0]), np.array([0.2, 0.3, 0.1]), threshold=0.5)
    assert math.isnan(single(scores, "f1"))


@pytest.mark.parametrize(
    ("y_true", "y_prob", "message"),
    [
        ([0, 2], [0.1, 0.2], "only 0, 1 or NaN"),
        ([0, 1], [0.1, NAN], "missing or infinite"),
        ([0, 1, 1], [0.1, 0.2], "same length"),
    ],
)
def test_binary_scores_invalid_input(y_true, y_prob, message):
    with pytest.raises(ValueError, match=message):
        evaluate.binary_scores(np.array(y_true, dtype=float), np.array(y_prob, dtype=float))


# ---------------------------------------------------------------------------
# Weighted (bootstrap) metrics agree with explicit resampling


def test_weighted_metrics_match_explicit_resample():
    rng = np.random.default_rng(0)
    y = (rng.random(300) < 0.3).astype(float)
    p = np.round(np.clip(rng.random(300) * 0.6 + 0.3 * y, 0, 1), 2)  # rounded, so there are ties
    weights = evaluate.bootstrap_weights(300, 3, seed=1)
    boot = evaluate.binary_scores(y, p, threshold=0.5, weights=weights)
    for b in range(3):
        idx = np.repeat(np.arange(300), weights[b].astype(int))
        assert boot["auroc"][b] == pytest.approx(roc_auc_score(y[idx], p[idx]))
        assert boot["auprc"][b] == pytest.approx(average_precision_score(y[idx], p[idx]))
        assert boot["brier"][b] == pytest.approx(brier_score_loss(y[idx], p[idx]))


def test_bootstrap_weights_rows_sum_to_sample_size():
    weights = evaluate.bootstrap_weights(50, 20, seed=2)
    assert weights.shape == (20, 50)
    assert np.all(weights.sum(axis=1) == 50)


def test_bootstrap_weights_same_seed_same_draw():
    assert np.array_equal(evaluate.bootstrap_weights(30, 5, seed=9), evaluate.bootstrap_weights(30, 5, seed=9))


@pytest.mark.parametrize(("n", "boot"), [(0, 10), (10, 0)])
def test_bootstrap_weights_invalid_sizes(n, boot):
    with pytest.raises(ValueError, match="at least 1"):
        evaluate.bootstrap_weights(n, boot, seed=0)


def test_binary_metrics_interval_contains_estimate():
    rng = np.random.default_rng(5)
    y = (rng.random(500) < 0.3).astype(float)
    p = np.clip(rng.random(500) * 0.7 + 0.25 * y, 0, 1)
    result = evaluate.binary_metrics(y, p, threshold=0.4, n_boot=200, seed=1)
    for name in evaluate.BINARY_METRICS:
        assert result[name]["ci_low"] <= result[name]["estimate"] <= result[name]["ci_high"], name
    assert result["n"] == 500


# ---------------------------------------------------------------------------
# Multi-label metrics


def hand_multilabel():
    # Label A: truth [1, 0, 1], predicted [1, 1, 0]: TP 1, FP 1, FN 1, F1 0.5.
    # Label B: row 1 unknown; known truth [0, 1], predicted [0, 1]: F1 1.
    y = np.array([[1, 0], [0, NAN], [1, 1]], dtype=float)
    p = np.array([[0.9, 0.2], [0.6, 0.7], [0.3, 0.8]])
    return y, p


@pytest.mark.parametrize(
    ("metric", "expected"),
    [
        ("macro_f1", 0.75),
        ("micro_f1", 2 * 2 / (2 * 2 + 1 + 1)),
        ("hamming_loss", 2 / 5),
        ("subset_accuracy", 1 / 3),
    ],
)
def test_multilabel_hand_case(metric, expected):
    y, p = hand_multilabel()
    scores = evaluate.multilabel_scores(y, p, np.array([0.5, 0.5]), ["a", "b"])
    assert single(scores, metric) == pytest.approx(expected)


def test_multilabel_per_label_keys():
    y, p = hand_multilabel()
    scores = evaluate.multilabel_scores(y, p, np.array([0.5, 0.5]), ["a", "b"])
    assert single(scores, "f1/a") == pytest.approx(0.5)
    assert single(scores, "f1/b") == pytest.approx(1.0)


def test_multilabel_macro_skips_undefined_label():
    # Label b has no positive, so its AUROC is undefined and the macro-AUROC is label a's alone.
    y = np.array([[1, 0], [0, 0], [1, 0], [0, 0]], dtype=float)
    p = np.array([[0.9, 0.1], [0.2, 0.3], [0.7, 0.2], [0.4, 0.6]])
    scores = evaluate.multilabel_scores(y, p, np.array([0.5, 0.5]), ["a", "b"])
    assert math.isnan(single(scores, "auroc/b"))
    assert single(scores, "macro_auroc") == pytest.approx(1.0)


def test_multilabel_repeats_average_each_repeat():
    rng = np.random.default_rng(6)
    y = (rng.random((60, 2)) < 0.4).astype(float)
    p = rng.random((2, 60, 2))
    stacked = evaluate.multilabel_scores(y, p, np.full((2, 60, 2), 0.5), ["a", "b"])
    first = evaluate.multilabel_scores(y, p[0], np.array([0.5, 0.5]), ["a", "b"])
    second = evaluate.multilabel_scores(y, p[1], np.array([0.5, 0.5]), ["a", "b"])
    assert single(stacked, "macro_f1") == pytest.approx((single(first, "macro_f1") + single(second, "macro_f1")) / 2)


def test_multilabel_metrics_layout():
    y, p = hand_multilabel()
    result = evaluate.multilabel_metrics(y, p, np.array([0.5, 0.5]), ["a", "b"], n_boot=30, seed=0)
    assert set(evaluate.MULTILABEL_METRICS) <= set(result)
    assert set(result["per_label"]) == {"a", "b"}
    assert set(result["per_label"]["a"]["auroc"]) == {"estimate", "ci_low", "ci_high"}


def test_multilabel_shape_mismatch_rejected():
    y, p = hand_multilabel()
    with pytest.raises(ValueError, match="expected"):
        evaluate.multilabel_scores(y[:2], p, np.array([0.5, 0.5]), ["a", "b"])


# ---------------------------------------------------------------------------
# Paired comparison and threshold choice


def test_paired_difference_identical_models():
    samples = np.linspace(0.6, 0.8, 99)
    result = evaluate.paired_difference(0.7, samples, 0.7, samples)
    assert result["diff"] == 0.0
    assert result["p_value"] == 1.0


def test_paired_difference_always_better():
    a = np.linspace(0.70, 0.80, 99)
    result = evaluate.paired_difference(0.75, a, 0.65, a - 0.1)
    assert result["diff"] == pytest.approx(0.1)
    assert result["ci_low"] == pytest.approx(0.1)
    assert result["p_value"] == pytest.approx(2 / 100)


def test_paired_difference_undefined_samples():
    result = evaluate.paired_difference(0.7, np.full(10, np.nan), 0.6, np.full(10, 0.6))
    assert math.isnan(result["p_value"])


def test_paired_difference_shape_mismatch():
    with pytest.raises(ValueError, match="same shape"):
        evaluate.paired_difference(0.5, np.zeros(3), 0.5, np.zeros(4))


def test_best_f1_threshold_hand_case():
    # F1 at each cut: 0.9 -> 0.5, 0.7 -> 0.8, 0.6 -> 0.667, 0.4 -> 0.857, 0.1 -> 0.75.
    threshold = evaluate.best_f1_threshold(np.array([1, 1, 0, 0, 1]), np.array([0.9, 0.4, 0.6, 0.1, 0.7]))
    assert threshold == pytest.approx(0.4)


def test_best_f1_threshold_skips_unknown():
    # The unknown row (score 0.95) would otherwise be the best cut's false positive.
    threshold = evaluate.best_f1_threshold(np.array([1, NAN, 0]), np.array([0.9, 0.95, 0.2]))
    assert threshold == pytest.approx(0.9)


def test_best_f1_threshold_without_positives_predicts_none():
    p = np.array([0.2, 0.6, 0.1])
    threshold = evaluate.best_f1_threshold(np.array([0, 0, 0]), p)
    assert np.all(p < threshold)


def test_best_f1_threshold_ties_share_one_cut():
    # Both 0.5 scores sit on one side of any threshold.
    threshold = evaluate.best_f1_threshold(np.array([1, 0, 0]), np.array([0.5, 0.5, 0.1]))
    assert threshold == pytest.approx(0.5)
