"""Tests of the saved model bundle."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import xgboost as xgb
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline

from hivcomorb.bundle import ModelBundle
from hivcomorb.contract import load_contract
from hivcomorb.errors import ModelError


@pytest.fixture
def cohort() -> pd.DataFrame:
    rng = np.random.default_rng(5)
    return pd.DataFrame(
        {
            "patient_id": [f"T{i:04d}" for i in range(120)],
            "haemoglobin": rng.normal(140, 15, 120),
            "creatinine": rng.normal(80, 15, 120),
            "diabetes": pd.array(rng.integers(0, 2, 120), dtype="Int8"),
        }
    )


def make_bundle(cohort: pd.DataFrame, estimator) -> ModelBundle:
    columns = ["haemoglobin", "creatinine"]
    estimator.fit(cohort[columns].to_numpy(np.float32), cohort["diabetes"].to_numpy(int))
    return ModelBundle(
        setting="unaware",
        model_name="test",
        labels=["diabetes"],
        input_columns=columns,
        feature_names=columns,
        estimators={"diabetes": estimator},
        thresholds={"diabetes": 0.5},
        contract_version=load_contract().version,
    )


def test_bundle_round_trip_predicts_same(tmp_path, cohort):
    bundle = make_bundle(cohort, xgb.XGBClassifier(n_estimators=5))
    before = bundle.predict_proba(cohort, load_contract())
    after = ModelBundle.load(bundle.save(tmp_path / "b.joblib")).predict_proba(cohort, load_contract())
    pd.testing.assert_frame_equal(before, after)


def test_bundle_save_moves_xgboost_to_cpu(tmp_path, cohort):
    estimator = xgb.XGBClassifier(n_estimators=5, device="cpu")
    bundle = make_bundle(cohort, estimator)
    estimator.set_params(device="cuda")
    loaded = ModelBundle.load(bundle.save(tmp_path / "b.joblib"))
    assert loaded.estimators["diabetes"].get_params()["device"] == "cpu"


def test_bundle_save_moves_pipeline_step_to_cpu(tmp_path, cohort):
    pipeline = make_pipeline(xgb.XGBClassifier(n_estimators=5, device="cpu"))
    bundle = make_bundle(cohort, pipeline)
    pipeline.set_params(xgbclassifier__device="cuda")
    loaded = ModelBundle.load(bundle.save(tmp_path / "b.joblib"))
    assert loaded.estimators["diabetes"].get_params()["xgbclassifier__device"] == "cpu"


def test_bundle_save_leaves_sklearn_model_alone(tmp_path, cohort):
    bundle = make_bundle(cohort, LogisticRegression())
    loaded = ModelBundle.load(bundle.save(tmp_path / "b.joblib"))
    assert isinstance(loaded.estimators["diabetes"], LogisticRegression)


def test_bundle_load_missing_file_raises(tmp_path):
    with pytest.raises(ModelError, match="model bundle not found"):
        ModelBundle.load(tmp_path / "absent.joblib")


def test_bundle_load_other_object_raises(tmp_path):
    import joblib

    joblib.dump({"not": "a bundle"}, tmp_path / "x.joblib")
    with pytest.raises(ModelError, match="does not contain a hivcomorb ModelBundle"):
        ModelBundle.load(tmp_path / "x.joblib")
