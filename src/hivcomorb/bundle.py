"""The fitted model of one setting, as saved by training and read by later stages.

A :class:`ModelBundle` carries everything scoring needs to reproduce training
exactly: the canonical input columns, the feature encoding, one fitted binary
estimator per label, the per-label decision thresholds, the training data's
value ranges and the contract version.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd

from hivcomorb.contract import Contract
from hivcomorb.errors import ModelError
from hivcomorb.features import build_matrix
from hivcomorb.files import atomic_path


@dataclass
class ModelBundle:
    """Fitted per-label estimators of one setting and model family."""

    setting: str
    model_name: str
    labels: list[str]
    input_columns: list[str]
    feature_names: list[str]
    estimators: dict[str, Any]
    thresholds: dict[str, float]
    contract_version: str
    training_ranges: dict[str, tuple[float, float]] = field(default_factory=dict)
    device: str = "cpu"
    metadata: dict[str, Any] = field(default_factory=dict)

    def features(self, frame: pd.DataFrame, contract: Contract) -> pd.DataFrame:
        """Encode a canonical frame into this bundle's feature matrix."""
        matrix = build_matrix(frame, contract, self.input_columns)
        if list(matrix.columns) == self.feature_names:
            return matrix
        missing = [n for n in self.feature_names if n not in matrix.columns]
        if missing:
            raise ModelError(f"feature encoding lacks {missing}; the contract changed since the model was trained")
        return matrix[self.feature_names]

    def predict_proba_matrix(self, matrix: pd.DataFrame) -> pd.DataFrame:
        """Return each label's probability for an encoded feature matrix."""
        out = {}
        for label in self.labels:
            estimator = self.estimators[label]
            out[label] = np.asarray(estimator.predict_proba(matrix)[:, 1], dtype=np.float64)
        return pd.DataFrame(out, index=matrix.index)

    def predict_proba(self, frame: pd.DataFrame, contract: Contract) -> pd.DataFrame:
        """Return each label's probability for a canonical frame."""
        return self.predict_proba_matrix(self.features(frame, contract))

    def save(self, path: str | Path) -> Path:
        """Write the bundle with joblib, atomically, set to predict on the CPU.

        A model trained on a GPU keeps its trees, but its ``device`` parameter
        is reset to ``cpu`` so that it loads and scores on machines without one.
        ``self.device`` still records where it was trained.
        """
        for estimator in self.estimators.values():
            _move_to_cpu(estimator)
        with atomic_path(path) as tmp:
            joblib.dump(self, tmp)
        return Path(path)

    @staticmethod
    def load(path: str | Path) -> "ModelBundle":
        """Read a bundle written by :meth:`save`."""
        try:
            bundle = joblib.load(path)
        except FileNotFoundError as exc:
            raise ModelError(f"model bundle not found: {path}; run 'hivcomorb train' first") from exc
        if not isinstance(bundle, ModelBundle):
            raise ModelError(f"{path} does not contain a hivcomorb ModelBundle")
        return bundle


def _move_to_cpu(estimator: Any) -> None:
    """Set every ``device`` parameter of an estimator (or pipeline step) to ``cpu``."""
    get_params = getattr(estimator, "get_params", None)
    if get_params is None:
        return
    changes = {key: "cpu" for key, value in get_params(deep=True).items() if key.split("__")[-1] == "device" and value not in (None, "cpu")}
    if changes:
        estimator.set_params(**changes)
