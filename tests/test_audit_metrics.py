"""Group metrics: MetricFrame point estimates and the vectorised bootstrap."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from hivcomorb.audit.metrics import (
    METRICS,
    auroc,
    bootstrap_weights,
    calibration_error,
    interval,
    metric_frame,
    weighted_metrics,
)


@pytest.fixture(scope="module")
def sample():
    rng = np.random.default_rng(11)
    n = 300
    scores = np.round(rng.random(n), 2)  # rounded so that ties occur
    y = (rng.random(n) < scores).astype(float)
    pred = (scores >= 0.5).astype(float)
    groups = rng.choice(["g1", "g2", "g3"], size=n)
    return y, pred, scores, groups


def test_weighted_metrics_unit_weights_match_metric_frame(sample):
    y, pred, scores, groups = sample
    frame = metric_frame(y, pred, scores, groups)
    for group in ("g1", "g2", "g3"):
        members = groups == group
        plain = weighted_metrics(np.ones((1, members.sum())), y[members], pred[members], scores[members])
        for metric in METRICS:
            assert plain[metric][0] == pytest.approx(frame.loc[group, metric]), f"{group}/{metric}"


def test_weighted_auroc_integer_weights_match_repeated_rows(sample):
    y, pred, scores, _ = sample
    counts = np.random.default_rng(2).integers(0, 3, size=y.size)
    weighted = weighted_metrics(counts[None, :].astype(float), y, pred, scores)["auroc"][0]
    assert weighted == pytest.approx(roc_auc_score(np.repeat(y, counts), np.repeat(scores, counts)))


def test_auroc_matches_sklearn_with_ties(sample):
    y, _, scores, _ = sample
    assert auroc(y, None, scores) == pytest.approx(roc_auc_score(y, scores))


@pytest.mark.parametrize("metric", ["tpr", "auroc"])
def test_metric_frame_single_class_is_nan(metric):
    y = np.zeros(20)
    scores = np.linspace(0.1, 0.9, 20)
    frame = metric_frame(y, (scores > 0.5).astype(float), scores, np.array(["only"] * 20))
    assert np.isnan(frame.loc["only", metric])


@pytest.mark.parametrize("metric", ["tpr", "auroc"])
def test_weighted_metrics_single_class_is_nan(metric):
    y = np.zeros(20)
    scores = np.linspace(0.1, 0.9, 20)
    values = weighted_metrics(np.ones((3, 20)), y, (scores > 0.5).astype(float), scores)
    assert np.isnan(values[metric]).all()


def test_weighted_metrics_include_mask_equals_subset(sample):
    y, pred, scores, _ = sample
    include = np.arange(y.size) % 3 != 0
    weights = bootstrap_weights(y.size, 20, seed=4)
    masked = weighted_metrics(weights, y, pred, scores, include=include)
    subset = weighted_metrics(weights[:, include], y[include], pred[include], scores[include])
    for metric in METRICS:
        assert np.allclose(masked[metric], subset[metric], equal_nan=True), metric


def test_calibration_error_perfect_bins_is_zero():
    scores = np.array([0.25] * 4 + [0.75] * 4)
    y = np.array([1, 0, 0, 0, 1, 1, 1, 0], dtype=float)
    assert calibration_error(y, None, scores, bins=10) == pytest.approx(0.0)


def test_bootstrap_weights_rows_sum_to_patients():
    weights = bootstrap_weights(50, 30, seed=1)
    assert np.all(weights.sum(axis=1) == 50)


def test_bootstrap_weights_same_seed_same_draws():
    assert np.array_equal(bootstrap_weights(40, 10, seed=5), bootstrap_weights(40, 10, seed=5))


def test_interval_mostly_undefined_is_none():
    replicates = np.array([0.5, np.nan, np.nan, np.nan])
    assert interval(replicates, 0.95) == (None, None)


def test_interval_brackets_replicates():
    low, high = interval(np.linspace(0.0, 1.0, 1001), 0.95)
    assert (low, high) == (pytest.approx(0.025), pytest.approx(0.975))
