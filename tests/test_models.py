"""The model zoo, per-label fitting with inner folds, and the leakage guarantees of a fold fit."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from hivcomorb.bundle import ModelBundle
from hivcomorb.errors import ConfigError
from hivcomorb.models import (
    KINDS,
    FitOptions,
    LabelModel,
    ModelSpec,
    StackedLabelModel,
    fit_label,
    make_calibrator,
    make_estimator,
    model_specs,
    stack_features,
    xgboost_estimator,
)
from hivcomorb.splits import make_splits
from hivcomorb.train._crossval import fit_split_label, split_inputs
from hivcomorb.train._data import TrainingData

SMALL_PARAMS = {
    "prevalence": {},
    "logistic": {"C": 1.0},
    "random_forest": {"n_estimators": 20, "min_samples_leaf": 3},
    "knn": {"n_neighbors": 15},
    "svm": {"C": 1.0},
    "mlp": {"hidden_layer_sizes": [8], "max_iter": 100},
    "xgboost": {"n_estimators": 30, "max_depth": 2},
    "lightgbm": {"n_estimators": 30, "num_leaves": 4, "min_child_samples": 5},
}


def make_features(n: int = 240, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Features with missing values and two labels that depend on them, 10% unknown."""
    rng = np.random.default_rng(seed)
    features = rng.normal(size=(n, 5)).astype(np.float32)
    logits = np.column_stack([1.5 * features[:, 0] - features[:, 1], features[:, 2] + 0.5 * features[:, 0]])
    labels = (rng.random((n, 2)) < 1 / (1 + np.exp(-logits))).astype(float)
    features[rng.random((n, 5)) < 0.15] = np.nan
    labels[rng.random((n, 2)) < 0.1] = np.nan
    return features, labels


def make_data(n: int = 240, seed: int = 0) -> TrainingData:
    features, labels = make_features(n, seed)
    names = [f"x{i}" for i in range(features.shape[1])]
    return TrainingData(
        cohort=None,
        label_names=["a", "b"],
        labels=labels,
        skipped_labels={},
        columns={"aware": names, "unaware": names},
        matrices={"aware": features, "unaware": features.copy()},
        feature_names={"aware": names, "unaware": names},
        dropped_labs={"absent": [], "no_values": []},
    )


def inner_splits(n: int, k: int = 3) -> list[tuple[np.ndarray, np.ndarray]]:
    fold = np.arange(n) % k
    return [(np.flatnonzero(fold != i), np.flatnonzero(fold == i)) for i in range(k)]


# ---------------------------------------------------------------------------
# Configuration


def zoo_config(**models):
    return {"models": list(models), "zoo": models}


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"models": [], "zoo": {}}, "lists no models"),
        ({"models": ["forest"], "zoo": {}}, "has no entry in train.zoo"),
        (zoo_config(bad={"kind": "boosted_goats"}), "kind must be one of"),
        (zoo_config(lr={"kind": "logistic", "grid": {"C": 1}}), "grid must be a list"),
        (zoo_config(lr={"kind": "logistic", "label_dependence": True}), "no base model"),
        ({"models": ["s"], "zoo": {"s": {"base": "missing"}}}, "must name a zoo entry"),
    ],
)
def test_model_specs_invalid(config, message):
    with pytest.raises(ConfigError, match=message):
        model_specs(config)


def test_model_specs_stacked_copies_base():
    config = {
        "models": ["xgb", "xgb_stacked"],
        "zoo": {"xgb": {"kind": "xgboost", "params": {"max_depth": 2}}, "xgb_stacked": {"base": "xgb", "label_dependence": True}},
    }
    stacked = model_specs(config)[1]
    assert stacked.kind == "xgboost"
    assert stacked.first_stage == "xgb"
    assert stacked.params == {"max_depth": 2}


def test_model_specs_candidates_merge_grid():
    spec = ModelSpec(name="x", kind="xgboost", params={"max_depth": 2, "n_estimators": 10}, grid=({"max_depth": 1}, {}))
    assert spec.candidates() == [{"max_depth": 1, "n_estimators": 10}, {"max_depth": 2, "n_estimators": 10}]


@pytest.mark.parametrize(("field", "value", "message"), [("calibration", "platt", "train.calibration"), ("tuning_metric", "f1", "train.tuning.metric")])
def test_fit_options_invalid(field, value, message):
    with pytest.raises(ConfigError, match=message):
        FitOptions(**{field: value})


def test_default_config_names_valid_models():
    from hivcomorb.config import load_config

    specs = model_specs(load_config("demo")["train"])
    assert {s.kind for s in specs} <= set(KINDS)


def test_xgboost_estimator_reads_config():
    from hivcomorb.config import load_config

    config = load_config("demo")
    estimator = xgboost_estimator(config)
    assert estimator.get_params()["n_estimators"] == config["train"]["zoo"]["xgboost"]["params"]["n_estimators"]


# ---------------------------------------------------------------------------
# Estimators


@pytest.mark.parametrize("kind", KINDS)
def test_make_estimator_handles_missing_values(kind):
    features, labels = make_features()
    known = np.isfinite(labels[:, 0])
    spec = ModelSpec(name=kind, kind=kind, params=SMALL_PARAMS[kind], log_features=kind in ("logistic", "knn", "mlp"))
    estimator = make_estimator(spec, spec.params, 2.0, FitOptions(seed=1))
    estimator.fit(features[known], labels[known, 0])
    probability = estimator.predict_proba(features)[:, 1]
    assert probability.shape == (features.shape[0],)
    assert np.all((probability >= 0) & (probability <= 1))


def test_label_model_exposes_device_parameter():
    features, labels = make_features()
    known = np.isfinite(labels[:, 0])
    spec = ModelSpec(name="xgboost", kind="xgboost", params=SMALL_PARAMS["xgboost"])
    estimator = make_estimator(spec, spec.params, 1.0, FitOptions()).fit(features[known], labels[known, 0])
    assert LabelModel(estimator).get_params(deep=True)["estimator__device"] == "cpu"


def test_stacked_model_parameters_reach_both_stages():
    first = {"b": LabelModel(make_estimator(ModelSpec(name="x", kind="xgboost"), {}, 1.0, FitOptions()))}
    stacked = StackedLabelModel(first, ["b"], LabelModel(make_estimator(ModelSpec(name="x", kind="xgboost"), {}, 1.0, FitOptions())))
    stacked.set_params(**{"first_stage__b__estimator__device": "cuda", "second_stage__estimator__device": "cuda"})
    assert first["b"].estimator.get_params()["device"] == "cuda"
    assert stacked.second_stage.estimator.get_params()["device"] == "cuda"


def test_bundle_save_moves_stacked_model_to_cpu(tmp_path):
    features, labels = make_features()
    known = np.isfinite(labels[:, 0])
    spec = ModelSpec(name="x", kind="xgboost", params=SMALL_PARAMS["xgboost"])
    base = LabelModel(make_estimator(spec, spec.params, 1.0, FitOptions()).fit(features[known], labels[known, 0]))
    stacked_features = np.column_stack([features, base.predict_proba(features)[:, 1]])
    second = LabelModel(make_estimator(spec, spec.params, 1.0, FitOptions()).fit(stacked_features[known], labels[known, 0]))
    stacked = StackedLabelModel({"b": base}, ["b"], second)
    stacked.set_params(**{"first_stage__b__estimator__device": "cuda"})
    bundle = ModelBundle("aware", "x", ["a"], [], [], {"a": stacked}, {"a": 0.5}, "1")
    loaded = ModelBundle.load(bundle.save(tmp_path / "b.joblib"))
    assert loaded.estimators["a"].first_stage["b"].estimator.get_params()["device"] == "cpu"


def test_stacked_model_reads_uncalibrated_first_stage():
    """The second stage was trained on uncalibrated inner probabilities, so it must read those at prediction."""
    features, labels = make_features()
    known = np.isfinite(labels[:, 0])
    spec = ModelSpec(name="x", kind="xgboost", params=SMALL_PARAMS["xgboost"])
    estimator = make_estimator(spec, spec.params, 1.0, FitOptions()).fit(features[known], labels[known, 0])
    raw = estimator.predict_proba(features)[:, 1]
    calibrator = make_calibrator("isotonic").fit(raw[known], labels[known, 0])
    base = LabelModel(estimator, calibrator)
    assert not np.allclose(base.predict_proba(features)[:, 1], raw)
    stacked = stack_features(features, {"b": base}, ["b"])
    np.testing.assert_allclose(stacked[:, -1], raw.astype(np.float32))


# ---------------------------------------------------------------------------
# fit_label


def test_fit_label_trains_on_known_rows_only():
    features, labels = make_features()
    spec = ModelSpec(name="lr", kind="logistic", params={"C": 1.0})
    fit = fit_label(features, labels[:, 0], inner_splits(len(features)), spec, FitOptions())
    assert fit.n_train == int(np.isfinite(labels[:, 0]).sum())
    assert fit.n_positive == int(np.nansum(labels[:, 0]))


def test_fit_label_ignores_features_of_unknown_rows():
    features, labels = make_features()
    spec = ModelSpec(name="lr", kind="logistic", params={"C": 1.0})
    changed = features.copy()
    changed[np.isnan(labels[:, 0])] = 1000.0
    splits = inner_splits(len(features))
    first = fit_label(features, labels[:, 0], splits, spec, FitOptions(calibration="isotonic"))
    second = fit_label(changed, labels[:, 0], splits, spec, FitOptions(calibration="isotonic"))
    assert first.threshold == second.threshold
    assert np.allclose(first.model.predict_proba(features), second.model.predict_proba(features))


def test_fit_label_chooses_better_candidate():
    # One nearest neighbour ranks patients far worse than thirty.
    features, labels = make_features()
    spec = ModelSpec(name="knn", kind="knn", grid=({"n_neighbors": 1}, {"n_neighbors": 30}))
    fit = fit_label(features, labels[:, 0], inner_splits(len(features)), spec, FitOptions())
    assert fit.params == {"n_neighbors": 30}
    assert fit.candidates_scored == 2


def test_fit_label_time_bound_scores_first_candidate():
    features, labels = make_features()
    spec = ModelSpec(name="lr", kind="logistic", grid=({"C": 1.0}, {"C": 0.1}))
    fit = fit_label(features, labels[:, 0], inner_splits(len(features)), spec, FitOptions(tuning_seconds=0.0))
    assert fit.candidates_scored == 1
    assert fit.tuning_truncated


@pytest.mark.parametrize("method", ["sigmoid", "isotonic"])
def test_fit_label_calibrated_probabilities_valid(method):
    features, labels = make_features()
    spec = ModelSpec(name="lr", kind="logistic", params={"C": 1.0})
    fit = fit_label(features, labels[:, 0], inner_splits(len(features)), spec, FitOptions(calibration=method))
    probability = fit.model.predict_proba(features)[:, 1]
    assert fit.model.calibrator is not None
    assert np.all((probability >= 0) & (probability <= 1))


def test_fit_label_single_class_gets_constant_model():
    features, _ = make_features()
    target = np.zeros(features.shape[0])
    fit = fit_label(features, target, inner_splits(len(features)), ModelSpec(name="lr", kind="logistic"), FitOptions())
    assert np.all(fit.model.predict_proba(features)[:, 1] == 0.0)


def test_fit_label_reproducible():
    features, labels = make_features()
    spec = ModelSpec(name="rf", kind="random_forest", params=SMALL_PARAMS["random_forest"])
    first = fit_label(features, labels[:, 1], inner_splits(len(features)), spec, FitOptions(seed=3))
    second = fit_label(features, labels[:, 1], inner_splits(len(features)), spec, FitOptions(seed=3))
    assert first.threshold == second.threshold
    assert np.array_equal(first.inner_probability, second.inner_probability)


# ---------------------------------------------------------------------------
# Leakage: nothing about a split's test rows may reach its thresholds, imputers or calibrators


def fold_fit(data: TrainingData, split, label: str, spec: ModelSpec, options: FitOptions):
    train_features, target, test_features = split_inputs(data, "aware", split, 0, label, spec)
    return fit_split_label(train_features, target, split.inner_splits(), spec, options, test_features, keep_model=True)


def scramble_rows(data: TrainingData, rows: np.ndarray) -> TrainingData:
    """Return a copy of ``data`` with extreme features and flipped labels on ``rows``."""
    changed = copy.deepcopy(data)
    changed.matrices["aware"][rows] = 1e4
    changed.labels[rows] = np.where(np.isnan(changed.labels[rows]), 1.0, 1.0 - changed.labels[rows])
    return changed


def leakage_fits(rows_to_change: str):
    data = make_data()
    _, splits = make_splits(data.labels, n_splits=4, repeats=1, inner_splits=3, seed=2)
    split = splits[0]
    rows = split.test if rows_to_change == "test" else split.train[:5]
    spec = ModelSpec(name="lr", kind="logistic", params={"C": 1.0})
    options = FitOptions(calibration="isotonic")
    _, original = fold_fit(data, split, "a", spec, options)
    _, changed = fold_fit(scramble_rows(data, rows), split, "a", spec, options)
    return original, changed


def imputer_statistics(fit) -> np.ndarray:
    return fit.model.estimator.named_steps["impute"].statistics_


def calibrator_steps(fit) -> np.ndarray:
    return fit.model.calibrator.predict(np.linspace(0, 1, 101))


def test_leakage_test_rows_do_not_reach_threshold():
    original, changed = leakage_fits("test")
    assert original.threshold == changed.threshold


def test_leakage_test_rows_do_not_reach_imputer():
    original, changed = leakage_fits("test")
    assert np.array_equal(imputer_statistics(original), imputer_statistics(changed))


def test_leakage_test_rows_do_not_reach_calibrator():
    original, changed = leakage_fits("test")
    assert np.array_equal(calibrator_steps(original), calibrator_steps(changed))


def test_leakage_test_rows_do_not_reach_inner_predictions():
    original, changed = leakage_fits("test")
    assert np.array_equal(original.inner_probability, changed.inner_probability)


def test_leakage_check_detects_training_change():
    # The same comparison on changed training rows must differ, or the checks above could never fail.
    original, changed = leakage_fits("train")
    assert not np.array_equal(imputer_statistics(original), imputer_statistics(changed))
    assert not np.array_equal(original.inner_probability, changed.inner_probability)


def test_leakage_stacked_inputs_out_of_fold():
    from joblib import Parallel

    from hivcomorb.train._crossval import cross_validate

    data = make_data()
    _, splits = make_splits(data.labels, n_splits=3, repeats=1, inner_splits=2, seed=2)
    base = ModelSpec(name="lr", kind="logistic", params={"C": 1.0})
    stacked = ModelSpec(name="lr_stacked", kind="logistic", params={"C": 1.0}, label_dependence=True, first_stage="lr")
    with Parallel(n_jobs=1) as parallel:
        first = cross_validate(data, "aware", base, splits, FitOptions(), parallel)
    train_features, _, test_features = split_inputs(data, "aware", splits[0], 0, "a", stacked, first)
    assert np.array_equal(train_features[:, -1], first.inner_probability[(0, "b")].astype(np.float32))
    assert np.array_equal(test_features[:, -1], first.probabilities[0, splits[0].test, 1].astype(np.float32))
