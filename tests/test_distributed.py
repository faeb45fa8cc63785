"""Tests of XGBoost training on a local two-worker Dask cluster."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import xgboost as xgb

from hivcomorb.distributed import dask_client, fit_xgboost_dask
from hivcomorb.errors import ModelError

PARAMS = {"n_estimators": 30, "max_depth": 3, "learning_rate": 0.2, "tree_method": "hist", "device": "cpu"}


@pytest.fixture(scope="module")
def client():
    with dask_client({"n_workers": 2, "threads_per_worker": 1}) as dask:
        yield dask


def small_problem(discrete: bool) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(11)
    values = rng.integers(0, 40, size=(1500, 4)).astype(np.float32) if discrete else rng.normal(size=(1500, 4)).astype(np.float32)
    values[rng.random(values.shape) < 0.1] = np.nan
    signal = np.nan_to_num(values[:, 0]) - np.nan_to_num(values[:, 1]) * 0.5
    target = (signal + rng.normal(scale=np.nanstd(values) * 0.3, size=1500) > np.nanmean(signal)).astype(int)
    return pd.DataFrame(values, columns=["a", "b", "c", "d"]), target


@pytest.mark.slow
def test_dask_fit_equals_local_on_discrete_features(client):
    """With fewer distinct values than histogram bins, both paths see the same splits."""
    matrix, target = small_problem(discrete=True)
    distributed = fit_xgboost_dask(client, matrix, target, PARAMS)
    local = xgb.XGBClassifier(**PARAMS).fit(matrix, target)
    np.testing.assert_allclose(distributed.predict_proba(matrix), local.predict_proba(matrix), atol=1e-4)


@pytest.mark.slow
def test_dask_fit_agrees_with_local_on_continuous_features(client):
    """Distributed histogram sketches differ slightly, so agreement is close, not exact."""
    matrix, target = small_problem(discrete=False)
    distributed = fit_xgboost_dask(client, matrix, target, PARAMS).predict_proba(matrix)[:, 1]
    local = xgb.XGBClassifier(**PARAMS).fit(matrix, target).predict_proba(matrix)[:, 1]
    assert np.mean(np.abs(distributed - local)) < 0.03
    assert np.corrcoef(distributed, local)[0, 1] > 0.98


def test_dask_fit_single_class_raises(client):
    matrix, _target = small_problem(discrete=True)
    with pytest.raises(ModelError, match="single class"):
        fit_xgboost_dask(client, matrix, np.zeros(len(matrix), dtype=int), PARAMS)
