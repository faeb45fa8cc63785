"""Resolve ``--model`` to a fitted bundle, its contract, its detector and its registry stamps."""

from __future__ import annotations

import functools
import logging
import re
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from hivcomorb.bundle import ModelBundle
from hivcomorb.contract import Contract
from hivcomorb.errors import ModelError
from hivcomorb.pyfunc import HivcomorbModel, OutOfDistributionDetector
from hivcomorb.score.linear import LinearLabels

logger = logging.getLogger(__name__)

_ALIAS = re.compile(r"^champion-(?P<setting>[a-z]+)$")


@dataclass
class ScoringModel:
    """A model ready to score, with the stamps written beside every score.

    Attributes
    ----------
    bundle : ModelBundle
    contract : Contract
        The contract the model was trained on; the extract is ingested with it.
    ood_detector : OutOfDistributionDetector or None
        None for a bare bundle file, which only gets training-range checks.
    uri : str
        The reference the model was loaded from.
    name, version, run_id : str
        Registered name and version, and the MLflow run that logged the model.
        An unregistered model (a ``runs:/`` URI or a bundle file) is named by
        its model family and has version ``unregistered``. A bundle file has an
        empty run id.
    """

    bundle: ModelBundle
    contract: Contract
    ood_detector: OutOfDistributionDetector | None
    uri: str
    name: str
    version: str
    run_id: str

    @property
    def setting(self) -> str:
        """Setting the model was trained in: ``aware`` or ``unaware``."""
        return self.bundle.setting

    @functools.cached_property
    def predictor(self) -> "LabelPredictor":
        """The predictor of every label, made on first use."""
        return LabelPredictor(self.bundle)

    def stamps(self) -> dict[str, str]:
        """Return the model's stamps: name, version, run id, setting and contract version."""
        return {
            "model_name": self.name,
            "model_version": self.version,
            "model_run_id": self.run_id,
            "setting": self.setting,
            "contract_version": self.contract.version,
        }


def resolve_reference(reference: str, dataset: str) -> str:
    """Expand a bare alias such as ``champion-aware`` to ``models:/hivcomorb-<dataset>-aware@champion-aware``.

    URIs (``models:/``, ``runs:/``) and file paths are returned unchanged.
    """
    match = _ALIAS.match(reference)
    if match and not Path(reference).exists():
        from hivcomorb.registry import registered_name

        return f"models:/{registered_name(dataset, match['setting'])}@{reference}"
    return reference


def _registry_version(uri: str) -> tuple[str, str, str] | None:
    """Return (name, version, run id) for a ``models:/name@alias`` or ``models:/name/version`` URI."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    body = uri[len("models:/") :]
    client = MlflowClient()
    try:
        if "@" in body:
            name, alias = body.split("@", 1)
            version = client.get_model_version_by_alias(name, alias)
        elif "/" in body:
            name, number = body.split("/", 1)
            if number == "latest":
                versions = client.search_model_versions(f"name='{name}'")
                if not versions:
                    raise ModelError(f"registered model {name!r} has no versions; run 'hivcomorb register'")
                version = max(versions, key=lambda v: int(v.version))
            else:
                version = client.get_model_version(name, number)
        else:
            return None
    except MlflowException as exc:
        raise ModelError(
            f"model {uri} was not found in the MLflow registry: {exc.message}; "
            "run 'hivcomorb run' or 'hivcomorb register' first, or check MLFLOW_TRACKING_URI"
        ) from exc
    return version.name, str(version.version), version.run_id or ""


def load_scoring_model(reference: str, *, dataset: str, fallback_contract: Contract) -> ScoringModel:
    """Load the model that ``reference`` names.

    Parameters
    ----------
    reference : str
        ``models:/name@alias``, ``models:/name/version``, ``runs:/<run id>/<path>``,
        a bare alias ``champion-<setting>`` (registered name from ``dataset``),
        or the path of a bundle joblib file.
    dataset : str
        Dataset name, used to expand a bare alias.
    fallback_contract : Contract
        Contract used for a bundle file, which carries only its version.

    Raises
    ------
    ModelError
        If the model cannot be found or loaded, or is not a hivcomorb model.
    """
    uri = resolve_reference(reference, dataset)
    path = Path(uri)
    if "://" not in uri and not uri.startswith(("models:/", "runs:/")):
        return _load_bundle_file(path, fallback_contract)

    import mlflow.pyfunc
    from mlflow.exceptions import MlflowException

    from hivcomorb import tracking

    tracking.configure()
    try:
        loaded = mlflow.pyfunc.load_model(uri)
    except MlflowException as exc:
        raise ModelError(
            f"model {uri} could not be loaded: {exc.message}; "
            "run 'hivcomorb run' or 'hivcomorb register' first, or check MLFLOW_TRACKING_URI"
        ) from exc
    python_model = loaded.unwrap_python_model()
    if not isinstance(python_model, HivcomorbModel):
        raise ModelError(f"model {uri} is a {type(python_model).__name__}, not a hivcomorb model")
    name, version, run_id = python_model.bundle.model_name, "unregistered", loaded.metadata.run_id or ""
    if uri.startswith("models:/"):
        found = _registry_version(uri)
        if found is not None:
            name, version, run_id = found
    model = ScoringModel(
        bundle=python_model.bundle,
        contract=python_model.contract,
        ood_detector=python_model.ood_detector,
        uri=uri,
        name=name,
        version=version,
        run_id=run_id,
    )
    logger.info("Model %s version %s (%s setting, %s)", model.name, model.version, model.setting, model.bundle.model_name)
    return model


def _load_bundle_file(path: Path, contract: Contract) -> ScoringModel:
    bundle = ModelBundle.load(path)
    if bundle.contract_version != contract.version:
        raise ModelError(
            f"{path} was trained on contract version {bundle.contract_version}, but this checkout has "
            f"{contract.version}; score with the registered model, which carries its own contract"
        )
    logger.warning(
        "Scoring with the bundle file %s: it has no out-of-distribution detector, so only training ranges are checked",
        path,
    )
    return ScoringModel(
        bundle=bundle,
        contract=contract,
        ood_detector=None,
        uri=str(path),
        name=bundle.model_name,
        version="unregistered",
        run_id="",
    )


def single_block(matrix: pd.DataFrame) -> pd.DataFrame:
    """Return the float32 feature ``matrix`` backed by one row-major array.

    Estimators that convert their input with ``numpy.asarray`` then read this
    array without copying it, instead of assembling the columns anew for
    every label. Tree traversal reads one row at a time, so the isolation
    forest also scores a row-major array faster than separate columns, with
    identical scores.
    """
    values = np.ascontiguousarray(matrix.to_numpy(dtype=np.float32))
    return pd.DataFrame(values, index=matrix.index, columns=matrix.columns, copy=False)


def predict_label(bundle: ModelBundle, label: str, matrix: pd.DataFrame) -> np.ndarray:
    """Return the probability of ``label`` for each row, as :meth:`ModelBundle.predict_proba_matrix` computes it."""
    return np.asarray(bundle.estimators[label].predict_proba(matrix)[:, 1], dtype=np.float64)


class LabelPredictor:
    """Predicts every label of a bundle: the linear ones in one pass (:mod:`hivcomorb.score.linear`), the others each by its estimator."""

    def __init__(self, bundle: ModelBundle):
        self.bundle = bundle
        self.linear = LinearLabels(bundle.estimators, len(bundle.feature_names))
        folded = set(self.linear.labels)
        self.others = [label for label in bundle.labels if label not in folded]
        if folded:
            logger.info("Scoring %d linear labels of %s in one matrix product", len(folded), bundle.model_name)

    def submit(self, pool: Executor, matrix: pd.DataFrame) -> Callable[[], dict[str, np.ndarray]]:
        """Start predicting ``matrix`` in ``pool``; the returned function waits and returns each label's probabilities."""
        linear = pool.submit(self.linear.predict, matrix) if self.linear.labels else None
        others = {label: pool.submit(predict_label, self.bundle, label, matrix) for label in self.others}

        def gather() -> dict[str, np.ndarray]:
            found = linear.result() if linear is not None else {}
            found.update((label, future.result()) for label, future in others.items())
            return {label: found[label] for label in self.bundle.labels}

        return gather


def place_on_device(bundle: ModelBundle, device: str, n_jobs: int) -> None:
    """Set every XGBoost or LightGBM estimator of ``bundle`` to predict on ``device`` with ``n_jobs`` threads.

    A model trained on a GPU then predicts on the CPU without XGBoost's
    device-mismatch fallback warning on every call.
    """
    for estimator in bundle.estimators.values():
        for inner in _boosters(estimator):
            params: dict[str, Any] = {"n_jobs": n_jobs}
            if type(inner).__module__.startswith("xgboost"):
                params["device"] = "cuda" if device == "cuda" else "cpu"
            inner.set_params(**params)


def _boosters(estimator: Any) -> list[Any]:
    """Return the XGBoost and LightGBM estimators inside ``estimator``, itself included."""
    module = type(estimator).__module__
    if module.startswith(("xgboost", "lightgbm")):
        return [estimator]
    inner: list[Any] = []
    wrapped = getattr(estimator, "estimator", None)
    if wrapped is not None:
        inner.extend(_boosters(wrapped))
    for calibrated in getattr(estimator, "calibrated_classifiers_", []) or []:
        inner.extend(_boosters(calibrated.estimator))
    steps = getattr(estimator, "steps", None)
    if steps:
        inner.extend(_boosters(steps[-1][1]))
    return inner
