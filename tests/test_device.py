"""Tests of boosting device selection."""

from __future__ import annotations

import logging

import pytest

from hivcomorb import device


@pytest.fixture
def no_gpu(monkeypatch):
    """Make the CUDA check report no usable device, whatever the machine has."""
    device.cuda_status.cache_clear()
    monkeypatch.setattr(device.shutil, "which", lambda name: None)
    yield
    device.cuda_status.cache_clear()


def test_resolve_device_cpu_requested():
    assert device.resolve_device("cpu") == "cpu"


def test_resolve_device_auto_falls_back_with_reason(no_gpu, caplog):
    with caplog.at_level(logging.INFO, logger="hivcomorb.device"):
        assert device.resolve_device("auto") == "cpu"
    assert "because no NVIDIA driver found" in caplog.text


def test_resolve_device_cuda_requested_warns(no_gpu, caplog):
    with caplog.at_level(logging.WARNING, logger="hivcomorb.device"):
        assert device.resolve_device("cuda") == "cpu"
    assert "although cuda was requested" in caplog.text


def test_resolve_device_invalid_raises():
    with pytest.raises(ValueError, match="device 'tpu' is invalid"):
        device.resolve_device("tpu")


def test_xgboost_params_follow_device():
    assert device.xgboost_params("cuda")["device"] == "cuda"
    assert device.xgboost_params("cpu") == {"device": "cpu", "tree_method": "hist"}


def test_cuda_configured_training_runs_on_cpu_machine():
    """XGBoost asked for CUDA on a machine without one still trains and predicts."""
    import numpy as np
    import xgboost as xgb

    device.cuda_status.cache_clear()
    usable, _reason = device.cuda_status()
    if usable:
        pytest.skip("a CUDA device is present; this checks the CPU-only fallback")
    rng = np.random.default_rng(3)
    features = rng.normal(size=(200, 4))
    target = (features[:, 0] > 0).astype(int)
    with pytest.warns(UserWarning):
        model = xgb.XGBClassifier(n_estimators=5, device="cuda", tree_method="hist").fit(features, target)
    cpu_model = xgb.XGBClassifier(n_estimators=5, device="cpu", tree_method="hist").fit(features, target)
    np.testing.assert_allclose(model.predict_proba(features), cpu_model.predict_proba(features), rtol=1e-6)
