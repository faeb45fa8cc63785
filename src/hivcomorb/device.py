"""Choice of the compute device for gradient boosting.

``auto`` looks for a usable CUDA device once per process and falls back to
the CPU with the reason logged. XGBoost has no direct check: in XGBoost 3.4,
``build_info()["USE_CUDA"]`` is true on CPU-only machines too, and
``device="cuda"`` without a GPU only warns. So the check trains a one-round
model on a tiny matrix and reads back, from the booster's configuration, the
device it actually used.
"""

from __future__ import annotations

import functools
import json
import logging
import shutil
import warnings

logger = logging.getLogger(__name__)

DEVICES = ("auto", "cpu", "cuda")


@functools.lru_cache(maxsize=1)
def cuda_status() -> tuple[bool, str]:
    """Return whether XGBoost can train on a CUDA device, and why not if it cannot."""
    if shutil.which("nvidia-smi") is None:
        return False, "no NVIDIA driver found (nvidia-smi is not on PATH)"
    try:
        import numpy as np
        import xgboost as xgb

        if not xgb.build_info().get("USE_CUDA", False):
            return False, "this XGBoost build has no CUDA support"
        rng = np.random.default_rng(0)
        matrix = xgb.DMatrix(rng.normal(size=(32, 2)), label=rng.integers(0, 2, 32))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            booster = xgb.train({"device": "cuda", "tree_method": "hist", "verbosity": 0}, matrix, num_boost_round=1)
        used = json.loads(booster.save_config())["learner"]["generic_param"]["device"]
    except Exception as exc:  # any failure of the probe means no usable GPU
        return False, f"a CUDA test fit failed: {type(exc).__name__}: {exc}"
    if not used.startswith("cuda"):
        return False, f"XGBoost fell back to {used!r} when asked for CUDA"
    return True, f"XGBoost trained a test model on {used}"


def resolve_device(requested: str = "auto") -> str:
    """Return ``"cuda"`` or ``"cpu"`` for a requested device, logging the choice once.

    Parameters
    ----------
    requested : {"auto", "cpu", "cuda"}
        ``cuda`` is honoured only when a CUDA device is usable. Otherwise the
        run continues on the CPU with a warning, so that a site's
        configuration does not fail on a machine without a GPU.
    """
    if requested not in DEVICES:
        raise ValueError(f"device {requested!r} is invalid; expected one of {DEVICES}")
    if requested == "cpu":
        logger.info("Boosting device: cpu (requested)")
        return "cpu"
    usable, reason = cuda_status()
    if usable:
        logger.info("Boosting device: cuda (%s)", reason)
        return "cuda"
    if requested == "cuda":
        logger.warning("Boosting device: cpu, although cuda was requested, because %s", reason)
    else:
        logger.info("Boosting device: cpu, because %s", reason)
    return "cpu"


def xgboost_params(device: str) -> dict[str, str]:
    """Return the XGBoost parameters that place training on ``device``."""
    return {"device": "cuda" if device == "cuda" else "cpu", "tree_method": "hist"}
