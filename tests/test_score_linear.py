"""Linear labels scored in one matrix product (hivcomorb.score.linear) against their own pipelines."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from sklearn.isotonic import IsotonicRegression

from hivcomorb.models import FitOptions, LabelModel, ModelSpec, make_estimator
from hivcomorb.score.linear import TOLERANCE, LinearLabels, linear_terms

N_FEATURES = 8


def training_data(n: int = 600, seed: int = 0) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Skewed positive features with missing values (one column always present) and three labels."""
    rng = np.random.default_rng(seed)
    x = rng.lognormal(mean=1.0, sigma=0.8, size=(n, N_FEATURES)).astype(np.float32)
    x[:, 5] = rng.integers(0, 2, size=n)
    for column in (0, 2, 3):
        x[rng.random(n) < 0.15, column] = np.nan
    logit = np.nan_to_num(np.log(x[:, 0]), nan=0.5) - 0.8 * np.nan_to_num(np.log(x[:, 1])) + 0.9 * x[:, 5] - 0.2
    labels = {
        "first": (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int),
        "second": (rng.random(n) < 1 / (1 + np.exp(logit))).astype(int),
        "third": (rng.random(n) < 0.3 + 0.4 * np.isnan(x[:, 2])).astype(int),
    }
    return x, labels


def fit_models(spec: ModelSpec, params: dict, *, calibrate: bool = False) -> tuple[np.ndarray, dict[str, LabelModel]]:
    x, labels = training_data()
    models = {}
    for k, (label, y) in enumerate(labels.items()):
        # Each label drops different rows, as training leaves out unknown labels, so the
        # imputation medians and the scaling differ between labels.
        keep = np.arange(len(y)) % 5 != k
        estimator = make_estimator(spec, params, 1.0, FitOptions()).fit(x[keep], y[keep])
        calibrator = None
        if calibrate:
            calibrator = IsotonicRegression(out_of_bounds="clip").fit(estimator.predict_proba(x[keep])[:, 1], y[keep])
        models[label] = LabelModel(estimator, calibrator)
    return x, models


def scoring_data(n: int = 3000, seed: int = 1) -> np.ndarray:
    x, _ = training_data(n, seed)
    # A column with no missing value in training is missing at scoring: no indicator covers it.
    x[:7, 1] = np.nan
    x[7, :] = np.nan
    return x


LASSO = ModelSpec(name="lasso", kind="logistic", params={"C": 0.1, "l1_ratio": 1.0, "solver": "liblinear"}, log_features=True)
LOGISTIC = ModelSpec(name="logistic", kind="logistic", params={"C": 1.0})


@pytest.mark.parametrize("spec", [LASSO, LOGISTIC], ids=["lasso", "logistic"])
@pytest.mark.parametrize("calibrate", [False, True], ids=["uncalibrated", "calibrated"])
def test_folded_probabilities_match_pipelines(spec, calibrate):
    _, models = fit_models(spec, dict(spec.params), calibrate=calibrate)
    x = scoring_data()
    linear = LinearLabels(models, N_FEATURES)
    assert linear.labels == list(models)
    folded = linear.predict(x)
    for label, model in models.items():
        own = model.predict_proba(x)[:, 1]
        np.testing.assert_allclose(folded[label], own, rtol=0, atol=TOLERANCE)
        assert folded[label].dtype == np.float64


def test_lasso_reads_only_columns_with_a_weight():
    _, models = fit_models(LASSO, {"C": 0.02, "l1_ratio": 1.0, "solver": "liblinear"})
    linear = LinearLabels(models, N_FEATURES)
    (group,) = linear._groups
    used = set(group[2].tolist())
    weighted = set()
    for model in models.values():
        terms = linear_terms(model, N_FEATURES)
        weighted |= set(np.flatnonzero((terms.weights != 0) | (terms.missing_weights != 0)).tolist())
    assert used == weighted
    assert len(used) < N_FEATURES


def test_other_estimators_are_not_folded():
    spec = ModelSpec(name="xgboost", kind="xgboost", params={"n_estimators": 5, "max_depth": 2})
    x, models = fit_models(spec, dict(spec.params))
    assert linear_terms(models["first"], N_FEATURES) is None
    linear = LinearLabels(models, N_FEATURES)
    assert linear.labels == []
    assert linear.predict(x) == {}


def test_pipeline_with_an_unknown_step_is_not_folded():
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import PolynomialFeatures

    x, labels = training_data()
    pipeline = make_pipeline(PolynomialFeatures(2), LogisticRegression(max_iter=5000)).fit(np.nan_to_num(x), labels["first"])
    assert linear_terms(LabelModel(pipeline), N_FEATURES) is None


def test_disagreement_falls_back_to_pipelines(caplog):
    _, models = fit_models(LASSO, dict(LASSO.params))
    x = scoring_data()
    linear = LinearLabels(models, N_FEATURES)
    # Corrupt the folded constant of every label, as a changed scikit-learn step could.
    group = list(linear._groups[0])
    group[5] = group[5] + 0.5
    linear._groups[0] = tuple(group)
    with caplog.at_level(logging.WARNING, logger="hivcomorb.score.linear"):
        predicted = linear.predict(x)
    assert "differs from its pipeline" in caplog.text
    for label, model in models.items():
        np.testing.assert_array_equal(predicted[label], model.predict_proba(x)[:, 1])
    # Later calls keep to the pipelines without checking again.
    np.testing.assert_array_equal(linear.predict(x[:10])["first"], models["first"].predict_proba(x[:10])[:, 1])
