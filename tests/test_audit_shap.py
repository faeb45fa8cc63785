"""SHAP adapter: one (patients, features, labels) shape whatever the model."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.base import BaseEstimator
from sklearn.isotonic import IsotonicRegression
from sklearn.neighbors import KNeighborsClassifier

from hivcomorb.audit.shap_adapter import AGNOSTIC, LINEAR, TREE, attributions, estimator_attributions, explainer_kind, positive_class
from hivcomorb.bundle import ModelBundle
from hivcomorb.errors import ModelError

from test_audit_support import fit_estimator

N_ROWS, N_FEATURES = 60, 5


@pytest.fixture(scope="module")
def data() -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    rng = np.random.default_rng(3)
    X = pd.DataFrame(rng.normal(size=(N_ROWS, N_FEATURES)).astype(np.float32), columns=[f"f{i}" for i in range(N_FEATURES)])
    X.iloc[rng.random((N_ROWS, N_FEATURES)) < 0.05] = np.nan
    first = np.nan_to_num(X["f0"].to_numpy())
    labels = {
        "a": (first + rng.normal(scale=0.5, size=N_ROWS) > 0).astype(int),
        "b": (np.nan_to_num(X["f1"].to_numpy()) - first + rng.normal(scale=0.5, size=N_ROWS) > 0).astype(int),
    }
    return X, labels


def _bundle(kind: str, X: pd.DataFrame, labels: dict[str, np.ndarray]) -> ModelBundle:
    return ModelBundle(
        setting="aware",
        model_name=kind,
        labels=list(labels),
        input_columns=list(X.columns),
        feature_names=list(X.columns),
        estimators={name: fit_estimator(kind, X, y, seed=0) for name, y in labels.items()},
        thresholds={name: 0.5 for name in labels},
        contract_version="test",
    )


def _margin(estimator, X: pd.DataFrame) -> np.ndarray:
    probability = np.clip(estimator.predict_proba(X)[:, 1], 1e-12, 1 - 1e-12)
    return np.log(probability / (1 - probability))


@pytest.mark.parametrize("kind", ["xgboost", "lightgbm", "logistic"])
def test_attributions_bundle_shape(kind, data):
    X, labels = data
    values = attributions(_bundle(kind, X, labels), X)
    assert values.shape == (N_ROWS, N_FEATURES, len(labels))


@pytest.mark.parametrize("kind", ["xgboost", "lightgbm", "logistic"])
def test_attributions_sum_to_log_odds(kind, data):
    """Attributions plus a constant give each patient's log-odds, so they explain the positive class."""
    X, labels = data
    bundle = _bundle(kind, X, labels)
    values = attributions(bundle, X)
    for k, name in enumerate(labels):
        offset = _margin(bundle.estimators[name], X) - values[:, :, k].sum(axis=1)
        assert np.ptp(offset) < 1e-3, f"{kind}/{name}: attributions do not add up to the log-odds"


@pytest.mark.parametrize(
    ("kind", "expected"),
    [("xgboost", TREE), ("lightgbm", TREE), ("logistic", LINEAR)],
)
def test_explainer_kind_per_model(kind, expected, data):
    X, labels = data
    assert explainer_kind(fit_estimator(kind, X, labels["a"], seed=0)) == expected


def test_attributions_agnostic_model_shape(data):
    X, labels = data
    filled = X.fillna(0.0)
    model = KNeighborsClassifier(n_neighbors=5).fit(filled, labels["a"])
    values, kind = estimator_attributions(model, filled.iloc[:15], background=filled.to_numpy()[:8], seed=1)
    assert kind == AGNOSTIC
    assert values.shape == (15, N_FEATURES, 1)


class Calibrated(BaseEstimator):
    """A classifier with an optional calibrator, shaped like the wrapper training saves."""

    def __init__(self, estimator=None, calibrator=None):
        self.estimator = estimator
        self.calibrator = calibrator

    def predict_proba(self, features):
        probability = self.estimator.predict_proba(np.asarray(features, dtype=np.float32))[:, 1]
        if self.calibrator is not None:
            probability = self.calibrator.predict(probability)
        return np.column_stack([1 - probability, probability])


@pytest.mark.parametrize("kind", ["xgboost", "lightgbm", "logistic"])
def test_attributions_unwrap_calibrated_model(kind, data):
    X, labels = data
    inner = fit_estimator(kind, X.to_numpy(), labels["a"], seed=0)
    calibrator = IsotonicRegression(out_of_bounds="clip").fit(inner.predict_proba(X.to_numpy())[:, 1], labels["a"])
    values, explainer = estimator_attributions(Calibrated(inner, calibrator), X)
    assert explainer in (TREE, LINEAR)
    assert values.shape == (N_ROWS, N_FEATURES, 1)


def test_attributions_wrapped_model_sums_to_inner_log_odds(data):
    X, labels = data
    inner = fit_estimator("xgboost", X.to_numpy(), labels["a"], seed=0)
    values = attributions(Calibrated(inner, None), X)
    offset = _margin(inner, X.to_numpy()) - values[:, :, 0].sum(axis=1)
    assert np.ptp(offset) < 1e-3


def test_attributions_single_estimator_has_one_label(data):
    X, labels = data
    values = attributions(fit_estimator("xgboost", X, labels["a"], seed=0), X)
    assert values.shape == (N_ROWS, N_FEATURES, 1)


def test_attributions_bundle_label_subset(data):
    X, labels = data
    values = attributions(_bundle("xgboost", X, labels), X, labels=["b"])
    assert values.shape == (N_ROWS, N_FEATURES, 1)


POSITIVE = np.arange(12, dtype=float).reshape(4, 3)


@pytest.mark.parametrize(
    ("raw", "expected_shape"),
    [
        ([-POSITIVE, POSITIVE], (4, 3, 1)),
        (np.stack([-POSITIVE, POSITIVE], axis=2), (4, 3, 1)),
        (POSITIVE, (4, 3, 1)),
        (np.stack([POSITIVE] * 4, axis=2), (4, 3, 4)),
    ],
    ids=["lightgbm-list", "binary-3d", "binary-2d", "multi-output"],
)
def test_positive_class_shapes(raw, expected_shape):
    assert positive_class(raw, 4, 3).shape == expected_shape


@pytest.mark.parametrize(
    "raw",
    [[-POSITIVE, POSITIVE], np.stack([-POSITIVE, POSITIVE], axis=2)],
    ids=["lightgbm-list", "binary-3d"],
)
def test_positive_class_keeps_positive_values(raw):
    assert np.array_equal(positive_class(raw, 4, 3)[:, :, 0], POSITIVE)


def test_positive_class_rejects_wrong_shape():
    with pytest.raises(ModelError, match="shape"):
        positive_class(np.zeros((5, 3)), 4, 3)


def test_zoo_logistic_with_indicators_is_linear(data):
    """The zoo's logistic pipeline adds missing-value indicators; they fold back into their lab."""
    from hivcomorb.models import FitOptions, ModelSpec, make_estimator

    X, labels = data
    spec = ModelSpec(name="lasso", kind="logistic", log_features=True, params={"C": 0.5, "l1_ratio": 1.0, "solver": "liblinear"})
    model = make_estimator(spec, spec.params, 1.0, FitOptions()).fit(X.to_numpy(), labels["a"])
    assert model.named_steps["impute"].indicator_.features_.size > 0
    values, kind = estimator_attributions(model, X.to_numpy())
    assert kind == LINEAR
    assert values.shape == (N_ROWS, N_FEATURES, 1)
    offset = _margin(model, X.to_numpy()) - values[:, :, 0].sum(axis=1)
    assert np.ptp(offset) < 1e-6
