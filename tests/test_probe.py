"""Tests of the demographic recoverability probe on small cohorts with planted signals."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import balanced_accuracy_score, mean_absolute_error, r2_score, roc_auc_score

from hivcomorb.contract import load_contract
from hivcomorb.disclosure import SUPPRESSED
from hivcomorb.errors import ConfigError, DataNotFoundError, ModelError
from hivcomorb.probe import metrics as pm
from hivcomorb.probe import models as probe_models
from hivcomorb.probe.stage import probe_settings, read_training_folds
from hivcomorb.probe.targets import POOLED_CLASS, prepare_target

CONTRACT = load_contract()

# Cheap settings for stage tests: the real defaults are in conf/stages/probe.yaml.
FAST = {
    "probe": {
        "models": ["linear", "xgboost"],
        "variants": ["labs"],
        "permutations": 19,
        "bootstrap": 200,
        "xgboost": {"n_estimators": 30},
        "leakage": {"max_trees_per_label": 10},
    }
}
LINEAR_ONLY = {"probe": {**FAST["probe"], "models": ["linear"]}}


def make_cohort(n: int, seed: int, gender_signal: float = 1.5, age_signal: float = 0.08) -> pd.DataFrame:
    """Build a canonical cohort whose haemoglobin depends on gender and eGFR on age.

    Labs are standard normal noise apart from the planted effects; a signal
    of zero makes every lab independent of the demographics.
    """
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({"patient_id": [f"id{i:05d}" for i in range(n)]})
    frame["age"] = rng.uniform(20, 80, n)
    frame["gender"] = rng.choice(["male", "female", "unknown"], n, p=[0.65, 0.32, 0.03])
    frame["ethnicity"] = rng.choice(["white", "black_african", "asian"], n, p=[0.5, 0.35, 0.15])
    frame["continent_of_birth"] = rng.choice(["europe", "africa"], n)
    frame["hiv_exposure"] = rng.choice(["msm", "heterosexual"], n)
    frame["deprivation_quintile"] = pd.array(rng.integers(1, 6, n), dtype="Int64")
    frame["smoking_status"] = rng.choice(["never", "current"], n)
    for lab in CONTRACT.labs[:8]:
        frame[lab] = rng.normal(0.0, 1.0, n)
    frame["haemoglobin"] = rng.normal(0.0, 1.0, n) + gender_signal * (frame["gender"] == "female")
    frame["egfr"] = rng.normal(0.0, 1.0, n) - age_signal * (frame["age"] - 50)
    frame["source_row"] = np.arange(1, n + 1)
    return frame


def write_cohort(ctx, cohort: pd.DataFrame) -> None:
    folder = ctx.artifacts / "ingest"
    folder.mkdir(parents=True, exist_ok=True)
    cohort.to_parquet(folder / "cohort.parquet")


def run_probe_stage(ctx) -> dict:
    from hivcomorb.pipeline import run_stage

    run_stage(ctx, "probe")
    return json.loads((ctx.artifacts / "probe" / "probe.json").read_text(encoding="utf-8"))


# ---------------------------------------------------------------- metrics


def test_weighted_auroc_matches_sklearn_with_ties():
    rng = np.random.default_rng(0)
    scores = np.round(rng.normal(size=300), 1)
    positive = rng.random(300) < 0.4
    observed = pm.weighted_auroc(scores, positive, np.ones((1, 300)))[0]
    assert observed == pytest.approx(roc_auc_score(positive, scores))


def test_weighted_auroc_bootstrap_matches_resampled_rows():
    rng = np.random.default_rng(1)
    scores = rng.normal(size=200)
    positive = rng.random(200) < 0.3
    draws = rng.integers(0, 200, size=200)
    weights = np.bincount(draws, minlength=200)[None, :].astype(float)
    assert pm.weighted_auroc(scores, positive, weights)[0] == pytest.approx(roc_auc_score(positive[draws], scores[draws]))


def test_macro_auroc_matches_sklearn_one_vs_rest():
    rng = np.random.default_rng(2)
    y = rng.integers(0, 3, 300)
    scores = rng.dirichlet([1, 1, 1], 300) + 0.3 * np.eye(3)[y]
    scores = scores / scores.sum(axis=1, keepdims=True)
    expected = roc_auc_score(y, scores, multi_class="ovr", average="macro")
    assert pm.macro_auroc(scores, y, np.ones((1, 300)))[0] == pytest.approx(expected)


def test_balanced_accuracy_matches_sklearn():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 3, 200)
    predicted = np.where(rng.random(200) < 0.6, y, rng.integers(0, 3, 200))
    observed = pm.balanced_accuracy(predicted, y, 3, np.ones((1, 200)))[0]
    assert observed == pytest.approx(balanced_accuracy_score(y, predicted))


def test_regression_metrics_match_sklearn():
    rng = np.random.default_rng(4)
    y = rng.uniform(20, 80, 150)
    predicted = y + rng.normal(0, 8, 150)
    values = pm.regression_metrics(predicted, y, [40, 50, 60], np.ones((1, 150)))
    assert values["mae"][0] == pytest.approx(mean_absolute_error(y, predicted))
    assert values["r2"][0] == pytest.approx(r2_score(y, predicted))


@pytest.mark.parametrize(
    ("edges", "names"),
    [
        ([40, 50, 60], ["<40", "40-49", "50-59", "60+"]),
        ([65], ["<65", "65+"]),
        ([], ["all ages"]),
    ],
)
def test_age_band_names_cases(edges, names):
    assert pm.age_band_names(edges) == names


def test_band_accuracy_counts_same_band():
    y = np.array([35.0, 45.0, 55.0, 65.0])
    predicted = np.array([39.9, 52.0, 50.0, 90.0])
    assert pm.band_accuracy(predicted, y, [40, 50, 60], np.ones((1, 4)))[0] == pytest.approx(0.75)


@pytest.mark.parametrize(
    ("observed", "null", "metric", "expected"),
    [
        (0.9, np.full(99, 0.5), "auroc", 0.01),
        (0.5, np.full(99, 0.5), "auroc", 1.0),
        (0.6, np.r_[np.full(9, 0.7), np.full(10, 0.5)], "auroc", 0.5),
        (5.0, np.full(19, 10.0), "mae", 0.05),
        (12.0, np.full(19, 10.0), "mae", 1.0),
        (float("nan"), np.full(19, 0.5), "auroc", float("nan")),
    ],
)
def test_permutation_p_value_cases(observed, null, metric, expected):
    p_value = pm.permutation_p_value(observed, null, metric)
    if np.isnan(expected):
        assert np.isnan(p_value)
    else:
        assert p_value == pytest.approx(expected)


@pytest.mark.parametrize(
    ("observed", "nulls", "metric", "expected"),
    [
        # Each model alone beats 18 of 19 nulls, but the best null per permutation beats the best model twice.
        ({"a": 0.70, "b": 0.72}, {"a": np.r_[0.71, np.full(18, 0.5)], "b": np.r_[0.5, 0.73, np.full(17, 0.5)]}, "auroc", 0.1),
        ({"a": 0.90, "b": 0.60}, {"a": np.full(19, 0.5), "b": np.full(19, 0.5)}, "auroc", 0.05),
        ({"a": 8.0, "b": 9.0}, {"a": np.full(19, 7.5), "b": np.full(19, 10.0)}, "mae", 1.0),
    ],
)
def test_best_of_models_p_value_cases(observed, nulls, metric, expected):
    assert pm.best_of_models_p_value(observed, nulls, metric) == pytest.approx(expected)


def test_summarise_percentile_interval():
    summary = pm.summarise(0.5, np.linspace(0.0, 1.0, 1001), 0.95)
    assert summary["ci_low"] == pytest.approx(0.025)
    assert summary["ci_high"] == pytest.approx(0.975)


def test_primary_metric_columns_match_per_column_auroc():
    rng = np.random.default_rng(5)
    scores = rng.normal(size=(120, 1))
    labels = rng.integers(0, 2, size=(120, 4))
    observed = pm.primary_metric_columns("binary", scores, labels, 2)
    expected = [roc_auc_score(labels[:, j], scores[:, 0]) for j in range(4)]
    np.testing.assert_allclose(observed, expected)


def test_bootstrap_weights_sum_to_sample_size():
    weights = pm.bootstrap_weights(50, 7, np.random.default_rng(0))
    np.testing.assert_array_equal(weights.sum(axis=1), np.full(7, 50.0))


# ---------------------------------------------------------------- targets


def test_prepare_target_age_counts_missing():
    cohort = pd.DataFrame({"age": [30.0, np.nan] + list(np.linspace(20, 80, 40))})
    target = prepare_target(cohort, CONTRACT, "age", 10)
    assert target.kind == "regression"
    assert target.record["n_missing"] == 1
    assert target.record["n_used"] == 41
    assert 1 not in target.rows


def test_prepare_target_excludes_unknown_and_null():
    cohort = pd.DataFrame({"continent_of_birth": ["europe"] * 20 + ["africa"] * 20 + ["unknown"] * 3 + [None] * 2})
    target = prepare_target(cohort, CONTRACT, "continent_of_birth", 10)
    assert target.kind == "binary"
    assert target.record["n_unknown"] == 5
    assert target.record["n_used"] == 40


def test_prepare_target_pools_small_classes():
    cohort = pd.DataFrame({"ethnicity": ["white"] * 30 + ["black_african"] * 20 + ["mixed"] * 6 + ["asian"] * 5})
    target = prepare_target(cohort, CONTRACT, "ethnicity", 10)
    assert target.classes == ["white", "black_african", POOLED_CLASS]
    assert target.record["pooled"] == {"classes": ["asian", "mixed"], "into": POOLED_CLASS, "n": 11}
    assert target.record["n_used"] == 61
    assert target.kind == "multiclass"


def test_prepare_target_reports_insufficient_class():
    cohort = pd.DataFrame({"ethnicity": ["white"] * 30 + ["black_african"] * 20 + ["mixed"] * 4})
    target = prepare_target(cohort, CONTRACT, "ethnicity", 10)
    assert target.classes == ["white", "black_african"]
    assert target.record["insufficient"] == {"classes": ["mixed"], "n": SUPPRESSED}
    assert target.record["n_used"] == 50
    assert target.usable


def test_prepare_target_keeps_configured_classes():
    cohort = pd.DataFrame({"gender": ["male"] * 30 + ["female"] * 20 + ["other"] * 3})
    target = prepare_target(cohort, CONTRACT, "gender", 10, classes=["male", "female"])
    assert target.classes == ["male", "female"]
    assert target.record["excluded_by_config"] == {"classes": ["other"], "n": SUPPRESSED}
    assert target.kind == "binary"


def test_prepare_target_single_class_insufficient():
    cohort = pd.DataFrame({"continent_of_birth": ["europe"] * 40 + ["africa"] * 3})
    target = prepare_target(cohort, CONTRACT, "continent_of_birth", 10)
    assert not target.usable
    assert "fewer than two classes" in target.reason


# ---------------------------------------------------------------- models


def _features_and_target(n: int, seed: int, name: str, **signals):
    cohort = make_cohort(n, seed, **signals)
    target = prepare_target(cohort, CONTRACT, name, 10, classes=["male", "female"] if name == "gender" else None)
    frame = cohort.iloc[target.rows]
    features = frame[[c for c in CONTRACT.labs if c in cohort.columns]].astype("float64").reset_index(drop=True)
    folds = np.arange(target.y.size) % 4
    return features, target, folds


def test_ridge_refit_matches_linear_pipeline():
    features, target, folds = _features_and_target(240, 6, "age")
    features.iloc[::7, 0] = np.nan
    oof = probe_models.out_of_fold("linear", features, target, folds, {"linear": {"alpha": 2.0}})
    refit = probe_models.ridge_refit_predictions(features.to_numpy(), folds, target.y[:, None], 2.0)
    np.testing.assert_allclose(refit[:, 0], oof.predictions, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(("name", "metric"), [("gender", "auroc"), ("ethnicity", "macro_auroc"), ("age", "mae")])
@pytest.mark.parametrize("model", ["linear", "xgboost"])
def test_out_of_fold_each_target_kind(name, metric, model):
    features, target, folds = _features_and_target(300, 7, name)
    settings = {"xgboost": {"n_estimators": 30}}
    oof = probe_models.out_of_fold(model, features, target, folds, settings)
    weights = pm.bootstrap_weights(target.y.size, 50, np.random.default_rng(0))
    values, baseline = probe_models.evaluate(target, oof, weights, [40, 50, 60], 0.95)
    assert set(values) == set(baseline)
    if name == "ethnicity":
        # No ethnicity signal is planted, so the estimate stays near chance.
        assert abs(values[metric]["estimate"] - 0.5) < 0.1
    elif metric == "mae":
        assert values[metric]["estimate"] < baseline[metric]["estimate"]
    else:
        assert values[metric]["ci_low"] > 0.5


def test_out_of_fold_class_absent_from_fold():
    features, target, _ = _features_and_target(200, 8, "ethnicity")
    folds = np.where(target.y == 2, 0, np.arange(target.y.size) % 3)
    oof = probe_models.out_of_fold("xgboost", features, target, folds, {"xgboost": {"n_estimators": 10}})
    assert oof.predictions.shape == (target.y.size, 3)
    assert np.all(oof.predictions[folds == 0, 2] == 0.0)


@pytest.mark.parametrize("model", ["linear", "xgboost"])
def test_permutation_null_centres_on_chance(model):
    features, target, folds = _features_and_target(300, 9, "gender")
    settings = {"xgboost": {"n_estimators": 20}}
    oof = probe_models.out_of_fold(model, features, target, folds, settings)
    orders = probe_models.permutation_orders(target.y.size, 60, np.random.default_rng(0))
    null = probe_models.permutation_null(model, features, target, oof, orders, settings)
    assert null.shape == (60,)
    assert abs(float(np.mean(null)) - 0.5) < 0.03


def test_permutation_null_age_worse_than_observed():
    features, target, folds = _features_and_target(300, 10, "age")
    oof = probe_models.out_of_fold("linear", features, target, folds, {})
    orders = probe_models.permutation_orders(target.y.size, 30, np.random.default_rng(0))
    null = probe_models.permutation_null("linear", features, target, oof, orders, {})
    observed = pm.mean_absolute_error(oof.predictions, target.y, np.ones((1, target.y.size)))[0]
    assert observed < null.min()


def test_out_of_fold_rejects_unknown_model():
    features, target, folds = _features_and_target(60, 11, "age")
    with pytest.raises(ModelError, match="probe model 'svm' is invalid"):
        probe_models.out_of_fold("svm", features, target, folds, {})


# ---------------------------------------------------------------- settings and inputs


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"models": ["svm"]}, "probe.models"),
        ({"models": []}, "probe.models"),
        ({"variants": ["labs_only"]}, "probe.variants"),
        ({"permutations": 0}, "probe.permutations must be at least 1"),
        ({"bootstrap": 0}, "probe.bootstrap must be at least 1"),
        ({"confidence": 1.5}, "probe.confidence"),
        ({"age_bands": [50, 40]}, "probe.age_bands must be strictly increasing"),
    ],
)
def test_probe_settings_invalid(override, message):
    with pytest.raises(ConfigError, match=message):
        probe_settings({"probe": override})


def test_probe_settings_config_file_defaults(make_context):
    settings = probe_settings(make_context().config)
    assert settings["permutations"] == 99
    assert settings["targets"]["gender"]["classes"] == ["male", "female"]


def test_run_missing_cohort_raises(make_context):
    from hivcomorb.probe import run

    ctx = make_context(overrides=FAST)
    with pytest.raises(DataNotFoundError, match="hivcomorb ingest"):
        run(ctx)


def test_read_training_folds_uses_first_repeat(make_context):
    ctx = make_context()
    folder = ctx.stage_dir("train")
    folds = pd.DataFrame({"row": list(range(6)) * 2, "repeat": [0] * 6 + [1] * 6, "fold": [0, 1, 2, 0, 1, 2, 2, 2, 2, 1, 1, 1]})
    folds.to_parquet(folder / "folds.parquet")
    np.testing.assert_array_equal(read_training_folds(ctx, 6), [0, 1, 2, 0, 1, 2])


def test_read_training_folds_rejects_other_cohort(make_context):
    ctx = make_context()
    pd.DataFrame({"row": range(4), "repeat": 0, "fold": [0, 1, 0, 1]}).to_parquet(ctx.stage_dir("train") / "folds.parquet")
    assert read_training_folds(ctx, 6) is None


# ---------------------------------------------------------------- the stage


def test_run_recovers_planted_signals(make_context, mlflow_store):
    ctx = make_context(overrides=FAST)
    write_cohort(ctx, make_cohort(500, 12))
    output = run_probe_stage(ctx)

    gender = output["block"]["gender"]
    assert gender["metric"] == "auroc"
    assert gender["ci_low"] > 0.6
    assert gender["p_value"] <= 0.05
    age = output["block"]["age"]
    assert age["metric"] == "mae"
    assert age["ci_high"] < age["baseline"]
    assert age["p_value"] <= 0.05
    top_gender = output["targets"]["gender"]["variant"]["labs"]["models"][gender["model"]]["top_features"][0]["feature"]
    assert top_gender == "haemoglobin"
    assert output["summary"][0].startswith("Age can be predicted")


def test_run_no_signal_reports_chance(make_context, mlflow_store):
    ctx = make_context(overrides=FAST)
    write_cohort(ctx, make_cohort(500, 14, gender_signal=0.0, age_signal=0.0))
    output = run_probe_stage(ctx)

    gender = output["block"]["gender"]
    assert gender["p_value"] > 0.05
    assert gender["ci_low"] <= 0.5 <= gender["ci_high"]
    age = output["block"]["age"]
    assert age["p_value"] > 0.05
    assert age["ci_low"] <= age["baseline"]
    assert any(s.startswith("Gender could not be predicted") for s in output["summary"])


def test_run_reports_small_and_absent_targets(make_context, mlflow_store):
    ctx = make_context(overrides=LINEAR_ONLY)
    cohort = make_cohort(300, 15).drop(columns=["ethnicity"])
    cohort["continent_of_birth"] = ["europe"] * 295 + ["asia"] * 5
    write_cohort(ctx, cohort)
    output = run_probe_stage(ctx)

    assert output["targets"]["ethnicity"]["status"] == "absent"
    continent = output["targets"]["continent_of_birth"]
    assert continent["status"] == "insufficient"
    assert continent["insufficient"]["classes"] == ["asia"]
    assert "continent_of_birth" not in output["block"]
    assert any("Continent of birth was not probed" in s for s in output["summary"])
    assert output["leakage_unaware"]["status"] == "skipped"


def _write_training_outputs(ctx, cohort: pd.DataFrame) -> None:
    """Write folds, out-of-fold risks and an unaware bundle whose risks encode gender."""
    import xgboost as xgb

    from hivcomorb.bundle import ModelBundle
    from hivcomorb.features import build_matrix, encoded_names, input_columns

    folder = ctx.stage_dir("train")
    n = len(cohort)
    folds = np.arange(n) % 4
    pd.DataFrame({"row": np.arange(n), "repeat": 0, "fold": folds}).to_parquet(folder / "folds.parquet")

    rng = np.random.default_rng(0)
    female = (cohort["gender"] == "female").to_numpy(dtype=float)
    oof = pd.DataFrame(
        {
            "row": np.arange(n),
            "repeat": 0,
            "fold": folds,
            "setting": "unaware",
            "model": "xgboost",
            "p_hypertension": 1 / (1 + np.exp(-(female * 1.5 + rng.normal(0, 1, n)))),
            "p_diabetes": rng.random(n),
        }
    )
    aware = oof.assign(setting="aware", p_hypertension=rng.random(n))
    pd.concat([oof, aware]).to_parquet(folder / "oof.parquet")
    (folder / "train.json").write_text(json.dumps({"champions": {"unaware": "xgboost"}}), encoding="utf-8")

    columns = input_columns(CONTRACT, cohort.columns, "unaware")
    matrix = build_matrix(cohort, CONTRACT, columns)
    estimators = {}
    for label, outcome in (("hypertension", female), ("diabetes", (cohort["egfr"] < 0).to_numpy(dtype=float))):
        estimators[label] = xgb.XGBClassifier(n_estimators=10, max_depth=2, n_jobs=1).fit(matrix, outcome)
    bundle = ModelBundle(
        setting="unaware",
        model_name="xgboost",
        labels=["hypertension", "diabetes"],
        input_columns=columns,
        feature_names=encoded_names(CONTRACT, columns),
        estimators=estimators,
        thresholds={"hypertension": 0.5, "diabetes": 0.5},
        contract_version=CONTRACT.version,
    )
    bundle.save(folder / "models" / "unaware.joblib")


def test_run_leakage_detects_gender_in_unaware_risks(make_context, mlflow_store):
    ctx = make_context(overrides=LINEAR_ONLY)
    cohort = make_cohort(400, 16, age_signal=0.0)
    write_cohort(ctx, cohort)
    _write_training_outputs(ctx, cohort)
    output = run_probe_stage(ctx)

    leakage = output["leakage_unaware"]
    assert leakage["status"] == "ok"
    assert leakage["models"] == ["xgboost"]
    risks = leakage["representations"]["predicted_risks:xgboost"]
    assert risks["gender"]["block"]["p_value"] <= 0.05
    assert risks["gender"]["block"]["ci_low"] > 0.6
    assert risks["age"]["block"]["p_value"] > 0.05
    leaves = leakage["representations"]["leaf_embeddings:xgboost"]
    assert leaves["gender"]["block"]["p_value"] <= 0.05
    assert output["folds"] == "train/folds.parquet, repeat 0"


def test_run_writes_figures_tracking_and_report(make_context, mlflow_store):
    import mlflow

    from hivcomorb.probe import report_section

    ctx = make_context(overrides=LINEAR_ONLY)
    write_cohort(ctx, make_cohort(300, 13))
    output = run_probe_stage(ctx)

    folder = ctx.artifacts / "probe"
    for relative in output["figures"]:
        assert (folder / relative).is_file()
    assert "figures/age_predicted_vs_true.png" in output["figures"]
    run = mlflow.get_run(ctx.run_ids["probe"])
    assert "probe.gender.estimate" in run.data.metrics
    assert run.data.params["probe.permutations"] == "19"
    html = report_section(ctx)
    assert html.index("can be predicted") < html.index("<table")
    assert "data:image/png;base64," in html
    assert ctx.run_ids["probe"] in html


def test_report_section_without_output(make_context):
    from hivcomorb.probe import report_section

    assert "has not run" in report_section(make_context())


def test_register_cli_adds_probe_command():
    import argparse

    from hivcomorb.probe import register_cli

    parser = argparse.ArgumentParser()
    register_cli(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["probe", "--config", "demo", "--device", "cpu"])
    assert args.command == "probe"
    assert args.device == "cpu"
    assert callable(args.func)


# ---------------------------------------------------------------- synthetic cohort


def _synthetic_probe(make_context, signatures: dict[str, bool]) -> dict:
    from hivcomorb.synth import generate

    ctx = make_context(overrides=FAST)
    cohort = generate(800, seed=20261204, options={"signatures": signatures})
    write_cohort(ctx, cohort.extract)
    return run_probe_stage(ctx)


@pytest.mark.slow
def test_run_synthetic_recovers_signatures(make_context, mlflow_store):
    output = _synthetic_probe(make_context, {"gender": True, "age": True})
    gender = output["block"]["gender"]
    assert gender["ci_low"] > 0.9
    assert gender["p_value"] <= 0.05
    age = output["block"]["age"]
    assert age["ci_high"] < age["baseline"]
    assert age["p_value"] <= 0.05


@pytest.mark.slow
def test_run_synthetic_no_signal_without_signatures(make_context, mlflow_store):
    output = _synthetic_probe(make_context, {"gender": False, "age": False})
    gender = output["block"]["gender"]
    assert gender["p_value"] > 0.05
    assert gender["ci_low"] <= 0.5 <= gender["ci_high"]
    age = output["block"]["age"]
    assert age["p_value"] > 0.05
    assert age["ci_low"] <= age["baseline"]


class _Calibrated:
    """Stand-in for a training wrapper that keeps the booster as ``estimator``."""

    def __init__(self, estimator):
        self.estimator = estimator


@pytest.mark.parametrize(("wrap", "found"), [(lambda m: m, True), (_Calibrated, True), (lambda m: object(), False)])
def test_tree_model_unwraps_estimators(wrap, found):
    import xgboost as xgb

    from hivcomorb.probe.leakage import tree_model

    booster = xgb.XGBClassifier(n_estimators=2, max_depth=1).fit(np.eye(4), [0, 1, 0, 1])
    assert (tree_model(wrap(booster)) is booster) is found


def test_leaf_kernel_counts_shared_leaves():
    import xgboost as xgb

    from hivcomorb.probe.leakage import leaf_kernel

    x = pd.DataFrame({"a": np.r_[np.zeros(10), np.ones(10)]})
    y = np.r_[np.zeros(10), np.ones(10)]
    booster = xgb.XGBClassifier(n_estimators=3, max_depth=1).fit(x, y)
    kernel = leaf_kernel([booster], x, max_trees=2)
    assert kernel[0, 1] == 2.0
    assert kernel[0, 19] == 0.0
    np.testing.assert_array_equal(np.diag(kernel), np.full(20, 2.0))
