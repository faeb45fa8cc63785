"""Tests of the register stage and the MLflow pyfunc wrapper, against a real SQLite store.

The module registers small XGBoost bundles once (``registered``) and reuses
them; logging a pyfunc model takes a few seconds. ``test_score.py`` imports
the builders below.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import mlflow
import numpy as np
import pandas as pd
import pytest

from hivcomorb import registry, tracking
from hivcomorb.bundle import ModelBundle
from hivcomorb.config import load_config
from hivcomorb.context import RunContext
from hivcomorb.contract import Contract, load_contract
from hivcomorb.device import cuda_status, xgboost_params
from hivcomorb.errors import ModelError
from hivcomorb.features import build_matrix, input_columns
from hivcomorb.pyfunc import (
    HivcomorbModel,
    OutOfDistributionDetector,
    canonical_input,
    contract_to_yaml,
    probability_column,
    synthetic_input_example,
)

LABELS = ("diabetes", "hypertension", "chronic_kidney_disease")
COHORT_SEED = 11


def make_cohort(n_patients: int = 400, seed: int = COHORT_SEED) -> pd.DataFrame:
    """Return a canonical synthetic cohort (no real patient)."""
    from hivcomorb.synth import generate

    return generate(n_patients, seed).extract


def fit_bundle(
    cohort: pd.DataFrame,
    contract: Contract,
    setting: str,
    *,
    device: str = "cpu",
    n_estimators: int = 25,
    labels: tuple[str, ...] = LABELS,
) -> ModelBundle:
    """Fit one small XGBoost classifier per label, as training would, and bundle them."""
    from xgboost import XGBClassifier

    columns = input_columns(contract, cohort.columns, setting)
    matrix = build_matrix(cohort, contract, columns)
    estimators: dict[str, Any] = {}
    thresholds: dict[str, float] = {}
    for label in labels:
        known = cohort[label].notna().to_numpy()
        target = cohort.loc[known, label].astype(int)
        estimator = XGBClassifier(
            n_estimators=n_estimators, max_depth=3, learning_rate=0.3, n_jobs=1, random_state=0, **xgboost_params(device)
        )
        estimator.fit(matrix[known], target)
        estimators[label] = estimator
        thresholds[label] = float(target.mean())
    ranges = {
        c: (float(cohort[c].min()), float(cohort[c].max())) for c in columns if contract.column(c).dtype != "category"
    }
    return ModelBundle(
        setting=setting,
        model_name="xgboost",
        labels=list(labels),
        input_columns=columns,
        feature_names=list(matrix.columns),
        estimators=estimators,
        thresholds=thresholds,
        contract_version=contract.version,
        training_ranges=ranges,
        device=device,
        metadata={"built_by": "tests"},
    )


def make_test_context(root: Path, score: dict[str, Any] | None = None) -> RunContext:
    """Return a demo context whose artifacts and reports go under ``root``; ``score`` overrides that block."""
    config = load_config(
        "demo",
        {
            "paths": {"artifacts": str(root / "artifacts"), "reports": str(root / "reports")},
            "device": "cpu",
            "score": {"progress": False, **(score or {})},
        },
    )
    ctx = RunContext.from_config(config)
    ctx.device = "cpu"
    return ctx


def stage_training_outputs(ctx: RunContext, cohort: pd.DataFrame, settings: tuple[str, ...] = ("aware", "unaware")) -> dict[str, ModelBundle]:
    """Write the cohort and champion bundles where ingest and train would."""
    (ctx.artifacts / "ingest").mkdir(parents=True, exist_ok=True)
    cohort.to_parquet(ctx.artifacts / "ingest" / "cohort.parquet", index=False)
    bundles = {}
    for setting in settings:
        bundles[setting] = fit_bundle(cohort, ctx.contract, setting)
        bundles[setting].save(registry.bundle_path(ctx, setting))
    return bundles


@contextlib.contextmanager
def sqlite_store(root: Path) -> Iterator[str]:
    """Point MLflow at the SQLite store under ``root`` (created on first use) and yield its URI."""
    with pytest.MonkeyPatch.context() as patch:
        store = root / "mlflow"
        store.mkdir(exist_ok=True)
        uri = f"sqlite:///{(store / 'mlflow.db').as_posix()}"
        patch.setenv("MLFLOW_TRACKING_URI", uri)
        patch.setenv("MLFLOW_ARTIFACTS_DESTINATION", (store / "artifacts").as_uri())
        patch.chdir(root)
        mlflow.set_tracking_uri(uri)
        yield uri
        while mlflow.active_run() is not None:
            mlflow.end_run()


@dataclass
class Registered:
    """Outputs of one register run, shared by the tests of a session."""

    root: Path
    ctx: RunContext
    cohort: pd.DataFrame
    bundles: dict[str, ModelBundle]
    summary: dict[str, Any]
    registry: dict[str, Any]


# A new SQLite store costs seconds of schema migrations and each registration
# a few more, so test_registry.py and test_score.py share one per session.
_SESSION: dict[str, Registered] = {}


def register_once(tmp_path_factory: pytest.TempPathFactory) -> Registered:
    """Stage a cohort and two bundles, run the register stage once per session, and return the outcome."""
    if "registered" not in _SESSION:
        root = tmp_path_factory.mktemp("registry")
        with sqlite_store(root):
            ctx = make_test_context(root)
            cohort = make_cohort()
            bundles = stage_training_outputs(ctx, cohort)
            tracking.configure()
            mlflow.set_experiment(experiment_id=tracking.ensure_experiment("hivcomorb-tests"))
            with tracking.stage_run("register"):
                summary = registry.run(ctx)
            document = json.loads((ctx.artifacts / "register" / "registry.json").read_text(encoding="utf-8"))
        _SESSION["registered"] = Registered(root, ctx, cohort, bundles, summary, document)
    return _SESSION["registered"]


@pytest.fixture(scope="module")
def registered(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registered]:
    outcome = register_once(tmp_path_factory)
    with sqlite_store(outcome.root):
        yield outcome


def _entry(registered: Registered, setting: str) -> dict[str, Any]:
    return next(m for m in registered.registry["models"] if m["setting"] == setting)


# Register stage


def test_register_summary_counts_both_settings(registered):
    assert registered.summary == {"registered": 2, "missing": []}


def test_register_records_detector_method(registered):
    from hivcomorb.registry import load_registry, report_section

    entries = load_registry(registered.ctx)["models"]
    assert [entry["ood_method"] for entry in entries] == ["mahalanobis", "mahalanobis"]
    assert "Mahalanobis distance and training ranges" in report_section(registered.ctx)


@pytest.mark.parametrize("setting", ["aware", "unaware"])
def test_register_alias_points_at_version(registered, setting):
    entry = _entry(registered, setting)
    version = mlflow.MlflowClient().get_model_version_by_alias(entry["name"], entry["alias"])
    assert entry["name"] == f"hivcomorb-demo-{setting}"
    assert entry["uri"] == f"models:/hivcomorb-demo-{setting}@champion-{setting}"
    assert str(version.version) == entry["version"]
    assert version.run_id == entry["run_id"]


def test_register_tags_model_version(registered):
    entry = _entry(registered, "aware")
    version = mlflow.MlflowClient().get_model_version(entry["name"], entry["version"])
    assert version.tags["hivcomorb.setting"] == "aware"
    assert version.tags["hivcomorb.contract_version"] == registered.ctx.contract.version


def test_register_summary_sentences_name_uri(registered):
    assert any("models:/hivcomorb-demo-aware@champion-aware" in s for s in registered.registry["summary"])


def test_register_reports_missing_bundles(registered, tmp_path):
    ctx = make_test_context(tmp_path)
    with tracking.stage_run("register"):
        summary = registry.run(ctx)
    document = registry.load_registry(ctx)
    assert summary == {"registered": 0, "missing": ["aware", "unaware"]}
    assert document["models"] == []
    assert "aware, unaware" in document["summary"][0]


def test_register_rejects_other_contract_version(make_context):
    ctx = make_context()
    bundle = fit_bundle(make_cohort(200), ctx.contract, "aware", n_estimators=2)
    bundle.contract_version = "0.0.1"
    with pytest.raises(ModelError, match="contract version 0.0.1"):
        registry.log_and_register(ctx, bundle, Path("aware.joblib"))


def test_report_section_lists_models(registered):
    html = registry.report_section(registered.ctx)
    assert "hivcomorb-demo-aware" in html
    assert "champion-unaware" in html


# The pyfunc model


@pytest.fixture(scope="module")
def aware_pyfunc(registered):
    return mlflow.pyfunc.load_model(_entry(registered, "aware")["uri"])


def test_pyfunc_predict_equals_bundle(registered, aware_pyfunc):
    bundle = registered.bundles["aware"]
    frame = canonical_input(registered.cohort, registered.ctx.contract, bundle.input_columns)
    predicted = aware_pyfunc.predict(frame)
    expected = bundle.predict_proba(registered.cohort, registered.ctx.contract)
    assert list(predicted.columns) == [probability_column(label) for label in LABELS]
    np.testing.assert_array_equal(predicted.to_numpy(), expected.to_numpy())


def test_pyfunc_unwraps_to_hivcomorb_model(aware_pyfunc):
    model = aware_pyfunc.unwrap_python_model()
    assert isinstance(model, HivcomorbModel)
    assert isinstance(model.ood_detector, OutOfDistributionDetector)
    assert model.bundle.setting == "aware"


def test_pyfunc_missing_column_names_it(registered, aware_pyfunc):
    bundle = registered.bundles["aware"]
    frame = canonical_input(registered.cohort.head(3), registered.ctx.contract, bundle.input_columns)
    frame = frame.drop(columns=["age", "gender"]).assign(patient_id=["PID-1-SECRET", "PID-2-SECRET", "PID-3-SECRET"])
    with pytest.raises(ModelError) as caught:
        aware_pyfunc.predict(frame)
    assert "missing input column(s) 'age', 'gender'" in str(caught.value)
    assert "SECRET" not in str(caught.value)


def test_pyfunc_unaware_ignores_demographics(registered):
    model = mlflow.pyfunc.load_model(_entry(registered, "unaware")["uri"])
    contract = registered.ctx.contract
    columns = registered.bundles["unaware"].input_columns
    without = canonical_input(registered.cohort.head(20), contract, columns)
    with_demographics = without.assign(gender="female", age=44.0, ethnicity="white", continent_of_birth="europe")
    np.testing.assert_array_equal(model.predict(with_demographics).to_numpy(), model.predict(without).to_numpy())


def test_pyfunc_signature_inputs_optional_any(registered, aware_pyfunc):
    from mlflow.types.schema import AnyType

    schema = aware_pyfunc.metadata.get_input_schema()
    assert schema.input_names() == registered.bundles["aware"].input_columns
    assert all(isinstance(spec.type, AnyType) for spec in schema.inputs)
    assert schema.required_input_names() == []


def test_pyfunc_accepts_nullable_integers(registered, aware_pyfunc):
    """An ingested cohort stores deprivation_quintile as Int64 with missing values, which predict converts."""
    bundle = registered.bundles["aware"]
    cohort = registered.cohort.head(20)
    frame = canonical_input(cohort, registered.ctx.contract, bundle.input_columns)
    quintiles = frame["deprivation_quintile"].round().astype("Int64")
    quintiles.iloc[0] = pd.NA
    with_integers = frame.assign(deprivation_quintile=quintiles)
    with_doubles = frame.assign(deprivation_quintile=quintiles.astype("float64"))
    np.testing.assert_array_equal(aware_pyfunc.predict(with_integers).to_numpy(), aware_pyfunc.predict(with_doubles).to_numpy())


@pytest.mark.slow
def test_mlflow_models_predict_cli(registered, tmp_path):
    """``mlflow models predict`` scores through the registered model in a separate process."""
    bundle = registered.bundles["aware"]
    frame = canonical_input(registered.cohort.head(5), registered.ctx.contract, bundle.input_columns)
    source = tmp_path / "input.json"
    payload = {"dataframe_split": json.loads(frame.to_json(orient="split", index=False))}
    source.write_text(json.dumps(payload), encoding="utf-8")
    target = tmp_path / "output.json"
    mlflow_cli = Path(sys.executable).with_name("mlflow")
    completed = subprocess.run(
        [str(mlflow_cli), "models", "predict", "-m", _entry(registered, "aware")["uri"], "-i", str(source),
         "-t", "json", "-o", str(target), "--env-manager", "local"],
        capture_output=True, text=True, timeout=300, env={**os.environ}, check=False,
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    predictions = pd.DataFrame(json.loads(target.read_text(encoding="utf-8"))["predictions"])
    expected = bundle.predict_proba(registered.cohort.head(5), registered.ctx.contract)
    np.testing.assert_allclose(predictions[probability_column("diabetes")].to_numpy(), expected["diabetes"].to_numpy(), rtol=1e-12)


# Helpers of the pyfunc module


def test_contract_yaml_round_trip(tmp_path):
    site = {"categories": {"ethnicity": ["white", "black", "asian", "other"]}, "labels": ["diabetes", "hypertension"]}
    contract = load_contract(site=site)
    path = tmp_path / "contract.yaml"
    path.write_text(contract_to_yaml(contract), encoding="utf-8")
    assert load_contract(path) == contract


def test_input_example_has_no_cohort_row(registered):
    bundle = registered.bundles["aware"]
    example = synthetic_input_example(bundle, registered.ctx.contract)
    assert list(example.columns) == bundle.input_columns
    merged = example.merge(canonical_input(registered.cohort, registered.ctx.contract, bundle.input_columns), how="inner")
    assert merged.empty


def test_ood_detector_flags_extreme_row(registered):
    bundle = registered.bundles["aware"]
    contract = registered.ctx.contract
    matrix = bundle.features(registered.cohort, contract)
    detector = OutOfDistributionDetector.fit(matrix, quantile=0.01, n_estimators=100, seed=0)
    extreme = registered.cohort.head(1).copy()
    for lab in contract.labs:
        low, high = contract.column(lab).possible
        extreme[lab] = high
    _, flags = detector.is_outlier(bundle.features(extreme, contract))
    _, training_flags = detector.is_outlier(matrix)
    assert flags.tolist() == [True]
    assert training_flags.mean() <= 0.02


@pytest.mark.parametrize("quantile", [0.0, 0.5, 1.2])
def test_ood_detector_rejects_bad_quantile(registered, quantile):
    matrix = registered.bundles["aware"].features(registered.cohort.head(50), registered.ctx.contract)
    with pytest.raises(ModelError, match="ood quantile"):
        OutOfDistributionDetector.fit(matrix, quantile=quantile)


# Device


def test_place_on_device_sets_cpu(registered):
    from hivcomorb.score.model import place_on_device

    cohort = registered.cohort
    contract = registered.ctx.contract
    bundle = fit_bundle(cohort, contract, "aware", device="cuda", n_estimators=5)
    place_on_device(bundle, "cpu", n_jobs=1)
    assert {e.get_params()["device"] for e in bundle.estimators.values()} == {"cpu"}


@pytest.mark.skipif(not cuda_status()[0], reason="needs a usable CUDA GPU: " + cuda_status()[1])
def test_gpu_trained_predicts_on_cpu_like_cpu_trained(registered):
    from hivcomorb.score.model import place_on_device

    cohort = registered.cohort
    contract = registered.ctx.contract
    on_gpu = fit_bundle(cohort, contract, "aware", device="cuda")
    on_cpu = fit_bundle(cohort, contract, "aware", device="cpu")
    place_on_device(on_gpu, "cpu", n_jobs=1)
    # NOTE: GPU and CPU histograms sum in a different floating-point order, so
    # the trees can differ slightly. This tolerance has not yet run on a GPU.
    np.testing.assert_allclose(
        on_gpu.predict_proba(cohort, contract).to_numpy(), on_cpu.predict_proba(cohort, contract).to_numpy(), atol=1e-4
    )
