"""The ``register`` stage: log each champion as an MLflow pyfunc model and register it.

For each setting whose champion bundle training saved
(``artifacts/<dataset>/train/models/<setting>.joblib``), the stage

1. fits an out-of-distribution detector on the training cohort's features
   (``ingest/cohort.parquet``), so that scoring can flag rows unlike it;
2. logs a :class:`~hivcomorb.pyfunc.HivcomorbModel` with the bundle, the
   contract and the detector as artifacts, an explicit signature, a synthetic
   input example and the hivcomorb package as code;
3. registers it as ``hivcomorb-<dataset>-<setting>`` and points the alias
   ``champion-<setting>`` at the new version.

It writes ``register/registry.json`` with the names, versions, aliases, run
ids and URIs, which ``hivcomorb score --model`` accepts.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Mapping

import joblib
import pandas as pd

import hivcomorb
from hivcomorb import htmlkit as hk
from hivcomorb.bundle import ModelBundle
from hivcomorb.config import nested_get
from hivcomorb.context import RunContext
from hivcomorb.errors import ModelError
from hivcomorb.features import SETTINGS
from hivcomorb.files import atomic_path, write_json_atomic
from hivcomorb.pyfunc import (
    BUNDLE_ARTIFACT,
    CONTRACT_ARTIFACT,
    OOD_ARTIFACT,
    HivcomorbModel,
    OutOfDistributionDetector,
    runtime_requirements,
    signature_for,
    synthetic_input_example,
    write_contract,
)
from hivcomorb.tracking import log_metrics, log_params

logger = logging.getLogger(__name__)

STAGE = "register"


def registered_name(dataset: str, setting: str) -> str:
    """Return the registry name of a setting's model, e.g. ``hivcomorb-demo-aware``."""
    return f"hivcomorb-{dataset}-{setting}"


def champion_alias(setting: str) -> str:
    """Return the alias of a setting's current champion, e.g. ``champion-aware``."""
    return f"champion-{setting}"


def bundle_path(ctx: RunContext, setting: str) -> Path:
    """Return where training saves the champion bundle of ``setting``."""
    return ctx.artifacts / "train" / "models" / f"{setting}.joblib"


def fit_ood_detector(ctx: RunContext, bundle: ModelBundle) -> OutOfDistributionDetector | None:
    """Fit the out-of-distribution detector on the ingested cohort, or return None without one.

    Settings come from ``score.ood`` in the configuration: ``method``,
    ``quantile`` (share of patients like the training cohort that are
    flagged), and for an isolation forest ``n_estimators`` and ``n_jobs``.
    """
    cohort_path = ctx.artifacts / "ingest" / "cohort.parquet"
    if not cohort_path.is_file():
        logger.warning(
            "No training cohort at %s, so the %s model is registered without an out-of-distribution detector; "
            "scoring will check training ranges only",
            cohort_path,
            bundle.setting,
        )
        return None
    cohort = pd.read_parquet(cohort_path)
    absent = [c for c in bundle.input_columns if c not in cohort.columns]
    if absent:
        raise ModelError(
            f"the cohort {cohort_path} lacks the {bundle.setting} model's input columns {absent}; "
            "rerun ingest and train so that both use the same extract"
        )
    options = nested_get(ctx.config, "score.ood", {}) or {}
    # Category indicators are left out: a rare gender or ethnicity is no reason to doubt a patient's labs.
    numeric = [name for name in bundle.feature_names if name in bundle.input_columns and ctx.contract.column(name).dtype != "category"]
    detector = OutOfDistributionDetector.fit(
        bundle.features(cohort, ctx.contract),
        columns=numeric,
        method=str(options.get("method", "mahalanobis")),
        quantile=float(options.get("quantile", 0.005)),
        n_estimators=int(options.get("n_estimators", 200)),
        seed=ctx.seed,
        n_jobs=int(options.get("n_jobs", 1)),
    )
    logger.info(
        "Out-of-distribution detector (%s) for %s fitted on %d training rows (threshold at quantile %.3f)",
        detector.method,
        bundle.setting,
        len(cohort),
        detector.quantile,
    )
    return detector


def log_and_register(ctx: RunContext, bundle: ModelBundle, source: Path) -> dict[str, Any]:
    """Log one bundle as a pyfunc model in the active run, register it and set its alias.

    Returns
    -------
    dict
        ``setting``, ``name``, ``version``, ``alias``, ``uri`` (by alias),
        ``version_uri``, ``model_uri`` (the logged model), ``run_id``,
        ``model_name`` (the model family), ``contract_version`` and
        ``ood_detector`` (whether one was logged).
    """
    import mlflow
    from mlflow import MlflowClient

    if bundle.contract_version != ctx.contract.version:
        raise ModelError(
            f"{source} was trained on contract version {bundle.contract_version}, but this checkout has "
            f"{ctx.contract.version}; rerun 'hivcomorb train' before registering"
        )
    folder = ctx.stage_dir(STAGE) / bundle.setting
    folder.mkdir(parents=True, exist_ok=True)
    artifacts = {
        BUNDLE_ARTIFACT: str(source),
        CONTRACT_ARTIFACT: str(write_contract(ctx.contract, folder / "contract.yaml")),
    }
    detector = fit_ood_detector(ctx, bundle)
    if detector is not None:
        ood_path = folder / "ood_detector.joblib"
        with atomic_path(ood_path) as tmp:
            joblib.dump(detector, tmp)
        artifacts[OOD_ARTIFACT] = str(ood_path)

    name = registered_name(ctx.dataset, bundle.setting)
    alias = champion_alias(bundle.setting)
    info = mlflow.pyfunc.log_model(
        name=bundle.setting,
        python_model=HivcomorbModel(),
        artifacts=artifacts,
        signature=signature_for(bundle),
        input_example=synthetic_input_example(bundle, ctx.contract),
        code_paths=[str(Path(hivcomorb.__file__).parent)],
        pip_requirements=runtime_requirements(),
        registered_model_name=name,
        metadata={
            "hivcomorb_setting": bundle.setting,
            "hivcomorb_model": bundle.model_name,
            "contract_version": bundle.contract_version,
            "labels": list(bundle.labels),
        },
    )
    version = str(info.registered_model_version)
    client = MlflowClient()
    client.set_registered_model_alias(name, alias, version)
    tags = {
        "hivcomorb.setting": bundle.setting,
        "hivcomorb.model": bundle.model_name,
        "hivcomorb.dataset": ctx.dataset,
        "hivcomorb.contract_version": bundle.contract_version,
        "hivcomorb.trained_device": bundle.device,
    }
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, value)
    logger.info("Registered %s version %s with alias %s", name, version, alias)
    return {
        "setting": bundle.setting,
        "name": name,
        "version": version,
        "alias": alias,
        "uri": f"models:/{name}@{alias}",
        "version_uri": f"models:/{name}/{version}",
        "model_uri": info.model_uri,
        "run_id": info.run_id,
        "model_name": bundle.model_name,
        "labels": list(bundle.labels),
        "contract_version": bundle.contract_version,
        "trained_device": bundle.device,
        "ood_detector": detector is not None,
        "ood_method": detector.method if detector is not None else None,
    }


def _detector_text(entry: Mapping[str, Any]) -> str:
    """Return the report's words for a registered model's out-of-distribution detector."""
    if not entry["ood_detector"]:
        return "no (training ranges only)"
    method = entry.get("ood_method") or "isolation_forest"
    return {"mahalanobis": "Mahalanobis distance", "isolation_forest": "isolation forest"}.get(method, method) + " and training ranges"


def run(ctx: RunContext) -> dict[str, Any]:
    """Register every champion bundle that training saved and write ``registry.json``.

    Returns
    -------
    dict
        ``models`` (one entry per registered setting, as returned by
        :func:`log_and_register`), ``missing`` (settings without a saved
        bundle) and ``summary`` sentences.
    """
    models: list[dict[str, Any]] = []
    missing: list[str] = []
    for setting in SETTINGS:
        path = bundle_path(ctx, setting)
        if not path.is_file():
            logger.warning("No %s champion at %s; run 'hivcomorb train' to create it", setting, path)
            missing.append(setting)
            continue
        bundle = ModelBundle.load(path)
        if bundle.setting != setting:
            raise ModelError(f"{path} contains a {bundle.setting!r} model, expected {setting!r}. Rerun 'hivcomorb train'")
        models.append(log_and_register(ctx, bundle, path))

    summary = [
        f"The {m['setting']} champion ({m['model_name']}) is registered as {m['name']} version {m['version']} "
        f"with alias {m['alias']}; score new extracts with 'hivcomorb score EXTRACT --model {m['uri']}'."
        for m in models
    ]
    if missing:
        summary.append(f"No model was registered for setting(s) {', '.join(missing)} because training saved none.")
    result = {"models": models, "missing": missing, "summary": summary}
    write_json_atomic(ctx.stage_dir(STAGE) / "registry.json", result)
    log_params({"registered": {m["setting"]: f"{m['name']}/{m['version']}" for m in models}})
    log_metrics({"registered_models": len(models)})
    return {"registered": len(models), "missing": missing}


def load_registry(ctx: RunContext) -> dict[str, Any] | None:
    """Return the contents of ``register/registry.json``, or None when the stage has not run."""
    path = ctx.artifacts / STAGE / "registry.json"
    if not path.is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8"))


def report_section(ctx: RunContext) -> str:
    """Return the report section listing the registered models and how to score with them."""
    from hivcomorb.pipeline import load_run_ids

    registry = load_registry(ctx)
    if registry is None:
        return hk.paragraph("The register stage did not run, so no model is registered.")
    rows = [
        (
            m["setting"],
            m["model_name"],
            hk.Raw(f"<code>{hk.escape(m['name'])}</code>"),
            m["version"],
            hk.Raw(f"<code>{hk.escape(m['uri'])}</code>"),
            m["contract_version"],
            _detector_text(m),
        )
        for m in registry.get("models", [])
    ]
    parts = [
        hk.table(
            ["Setting", "Model", "Registered name", "Version", "URI", "Contract", "Out-of-distribution detector"],
            rows,
            caption="Champion models in the MLflow model registry",
        )
    ]
    if registry.get("missing"):
        parts.append(hk.paragraph(f"No champion was saved for: {', '.join(registry['missing'])}."))
    run_id = load_run_ids(ctx).get(STAGE)
    if run_id:
        parts.append(f'<p class="runref">Logged in MLflow run <code>{hk.escape(run_id)}</code>.</p>')
    parts.append(
        hk.paragraph(
            "Each model is an MLflow pyfunc model: it takes canonical columns and returns one probability per label. "
            "'hivcomorb score' adds ingestion, thresholds, reasons and out-of-distribution flags."
        )
    )
    return "\n".join(parts)




def register_cli(subparsers: Any) -> None:
    """Add ``hivcomorb register``."""
    from hivcomorb.pipeline import add_stage_command

    add_stage_command(
        subparsers,
        "register",
        help="register the trained champions in the MLflow model registry",
        description="Log each champion bundle in artifacts/<dataset>/train/models/ as an MLflow pyfunc model, "
        "register it as hivcomorb-<dataset>-<setting> with alias champion-<setting>, and write "
        "artifacts/<dataset>/register/registry.json.",
        device=False,
    )
