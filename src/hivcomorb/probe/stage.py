"""The ``probe`` stage: can demographics be recovered from lab values?

For each demographic column of the contract found in the cohort, the stage
predicts the column from the labs alone and from labs plus social columns,
with each configured probe model, on the training stage's folds. Every
figure comes with a 95% bootstrap interval, the chance baseline and a
permutation p-value, and the labs that carry the signal are ranked. The
stage then checks whether the demographic-unaware comorbidity models leak
the same information through their predicted risks.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedKFold

from hivcomorb.config import nested_get
from hivcomorb.contract import present
from hivcomorb.context import RunContext
from hivcomorb.disclosure import min_group_size
from hivcomorb.errors import ConfigError, DataNotFoundError
from hivcomorb.features import build_matrix
from hivcomorb.files import write_json_atomic
from hivcomorb.probe import metrics as pm
from hivcomorb.probe.models import MODELS, PERMUTATION_SCHEMES, evaluate, out_of_fold, permutation_null, permutation_orders
from hivcomorb.probe.targets import ProbeTarget, prepare_target

logger = logging.getLogger(__name__)

STAGE = "probe"
VARIANTS = {"labs": ("lab",), "labs_social": ("lab", "social")}

DEFAULTS: dict[str, Any] = {
    "models": ["xgboost", "linear"],
    "variants": ["labs", "labs_social"],
    "permutations": 99,
    "bootstrap": 1000,
    "confidence": 0.95,
    "alpha": 0.05,
    "age_bands": [40, 50, 60],
    "top_k": 8,
    "n_jobs": 1,
    "targets": {},
}


def probe_settings(config: Mapping[str, Any]) -> dict[str, Any]:
    """Return the ``probe`` configuration block over the defaults, checked."""
    settings = {**DEFAULTS, **(nested_get(config, STAGE, {}) or {})}
    unknown_models = [m for m in settings["models"] if m not in MODELS]
    if unknown_models or not settings["models"]:
        raise ConfigError(f"probe.models {settings['models']} is invalid; use one or more of {list(MODELS)}")
    unknown_variants = [v for v in settings["variants"] if v not in VARIANTS]
    if unknown_variants or not settings["variants"]:
        raise ConfigError(f"probe.variants {settings['variants']} is invalid; use one or more of {list(VARIANTS)}")
    for key in ("permutations", "bootstrap"):
        if int(settings[key]) < 1:
            raise ConfigError(f"probe.{key} must be at least 1, got {settings[key]}")
    if not 0.0 < float(settings["confidence"]) < 1.0:
        raise ConfigError(f"probe.confidence must be between 0 and 1, got {settings['confidence']}")
    bands = [float(b) for b in settings["age_bands"]]
    if bands != sorted(set(bands)):
        raise ConfigError(f"probe.age_bands must be strictly increasing ages in years, got {settings['age_bands']}")
    return settings


def read_cohort(ctx: RunContext) -> pd.DataFrame:
    """Read the canonical cohort written by the ingest stage."""
    path = ctx.artifacts / "ingest" / "cohort.parquet"
    if not path.is_file():
        raise DataNotFoundError(f"canonical cohort not found: {path}; run 'hivcomorb ingest --config {ctx.dataset}' first")
    return pd.read_parquet(path).reset_index(drop=True)


def read_training_folds(ctx: RunContext, n_rows: int) -> np.ndarray | None:
    """Return the training stage's fold of each cohort row (repeat 0), or None.

    None means the file is absent or does not cover the cohort, so the probe
    makes its own folds. The reason is logged.
    """
    path = ctx.artifacts / "train" / "folds.parquet"
    if not path.is_file():
        logger.info("Probe folds: %s not found, so the probe makes its own stratified folds", path)
        return None
    folds = pd.read_parquet(path)
    missing = {"row", "fold"} - set(folds.columns)
    if missing:
        logger.warning("Probe folds: %s lacks columns %s, so the probe makes its own folds", path, sorted(missing))
        return None
    if "repeat" in folds.columns:
        folds = folds[folds["repeat"] == folds["repeat"].min()]
    rows = folds["row"].to_numpy(dtype=np.int64)
    if rows.size != n_rows or set(rows.tolist()) != set(range(n_rows)):
        logger.warning(
            "Probe folds: %s assigns %d rows but the cohort has %d, so the probe makes its own folds",
            path,
            rows.size,
            n_rows,
        )
        return None
    fold_ids = np.empty(n_rows, dtype=np.int64)
    fold_ids[rows] = folds["fold"].to_numpy(dtype=np.int64)
    return fold_ids


def target_folds(target: ProbeTarget, training_folds: np.ndarray | None, n_folds: int, age_bands, seed: int) -> np.ndarray:
    """Return the fold of each of the target's rows.

    The training folds are reused when they exist, so that the probe follows
    the same split as the comorbidity models. Otherwise the folds are
    stratified on the target's class, or on the age band for age.
    """
    if training_folds is not None:
        return training_folds[target.rows]
    strata = pm.age_band_index(target.y, age_bands) if target.kind == "regression" else target.y
    counts = np.bincount(strata)
    smallest = int(counts[counts > 0].min())
    splits = max(2, min(n_folds, smallest))
    fold_ids = np.empty(target.y.shape[0], dtype=np.int64)
    splitter = StratifiedKFold(n_splits=splits, shuffle=True, random_state=seed)
    for fold, (_, test) in enumerate(splitter.split(np.zeros(strata.size), strata)):
        fold_ids[test] = fold
    return fold_ids


def usable_columns(cohort: pd.DataFrame, ctx: RunContext) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """Return the lab and social columns with at least one value, and those absent or empty."""
    contract = ctx.contract
    available: dict[str, list[str]] = {}
    unavailable: dict[str, list[str]] = {}
    for role in ("lab", "social"):
        names = contract.names(role)
        found = present(contract, cohort.columns, role)
        filled = [n for n in found if cohort[n].notna().any()]
        available[role] = filled
        unavailable[role] = [n for n in names if n not in filled]
    return available, unavailable


def probe_target(
    target: ProbeTarget,
    features: pd.DataFrame,
    fold_ids: np.ndarray,
    settings: Mapping[str, Any],
    device: str,
    seed: int,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Run every configured model on one target and feature set.

    Returns
    -------
    results : dict
        Per model: metrics and baseline with bootstrap intervals, the
        permutation test and the top features, under ``models``. The key
        ``best_of_models_p_value`` is the p-value of the best model,
        corrected for picking it.
    predictions : dict
        Per model, the :class:`~hivcomorb.probe.models.OutOfFold` predictions
        (kept in memory for the figures, never written).
    """
    rng = np.random.default_rng(seed)
    n = target.y.shape[0]
    weights = pm.bootstrap_weights(n, int(settings["bootstrap"]), rng)
    orders = permutation_orders(n, int(settings["permutations"]), rng)
    primary = pm.PRIMARY_METRIC[target.kind]
    results: dict[str, Any] = {}
    predictions: dict[str, Any] = {}
    nulls: dict[str, np.ndarray] = {}
    for model_name in settings["models"]:
        oof = out_of_fold(model_name, features, target, fold_ids, settings, device=device, seed=seed)
        metric_block, baseline_block = evaluate(target, oof, weights, settings["age_bands"], float(settings["confidence"]))
        null = permutation_null(model_name, features, target, oof, orders, settings)
        observed = metric_block[primary]["estimate"]
        top = oof.importance.head(int(settings["top_k"]))
        results[model_name] = {
            "n_used": int(n),
            "n_features": int(features.shape[1]),
            "metrics": metric_block,
            "baseline": baseline_block,
            "permutation": {
                "metric": primary,
                "scheme": PERMUTATION_SCHEMES[model_name],
                "n_permutations": int(null.size),
                "p_value": pm.permutation_p_value(observed, null, primary),
                "null_mean": float(np.nanmean(null)) if np.isfinite(null).any() else float("nan"),
            },
            "top_features": [{"feature": name, "importance": float(value)} for name, value in top.items()],
            "importance_method": oof.importance_method,
        }
        predictions[model_name] = oof
        nulls[model_name] = null
    observed_by_model = {name: results[name]["metrics"][primary]["estimate"] for name in results}
    best_p = pm.best_of_models_p_value(observed_by_model, nulls, primary)
    return {"models": results, "best_of_models_p_value": best_p}, predictions


def best_model(results: Mapping[str, Any], metric: str) -> str:
    """Return the model with the best estimate of ``metric`` (lowest for MAE)."""
    def key(name: str) -> float:
        value = results[name]["metrics"][metric]["estimate"]
        if not np.isfinite(value):
            return -np.inf
        return -value if metric in pm.LOWER_IS_BETTER else value

    return max(results, key=key)


def block_entry(target: ProbeTarget, variant: str, probed: Mapping[str, Any]) -> dict[str, Any]:
    """Return the compact ``metrics.json`` entry of one target: its best model's primary metric.

    ``p_value`` is the best-of-models permutation p-value, which accounts for
    picking the better model. ``p_value_model`` is the chosen model's own.
    """
    results = probed["models"]
    metric = pm.PRIMARY_METRIC[target.kind]
    model = best_model(results, metric)
    chosen = results[model]
    return {
        "metric": metric,
        "estimate": chosen["metrics"][metric]["estimate"],
        "ci_low": chosen["metrics"][metric]["ci_low"],
        "ci_high": chosen["metrics"][metric]["ci_high"],
        "baseline": chosen["baseline"][metric]["estimate"],
        "p_value": probed["best_of_models_p_value"],
        "p_value_model": chosen["permutation"]["p_value"],
        "p_method": f"best of {len(results)} models" if len(results) > 1 else "single model",
        "n_permutations": chosen["permutation"]["n_permutations"],
        "model": model,
        "variant": variant,
        "n_used": chosen["n_used"],
    }


def run(ctx: RunContext) -> dict[str, Any]:
    """Run the recoverability probe and write ``probe/probe.json`` and its figures.

    Returns
    -------
    dict
        Counts and the headline figure of each target, without patient data.
    """
    from hivcomorb.probe import leakage, report

    started = time.perf_counter()
    settings = probe_settings(ctx.config)
    cohort = read_cohort(ctx)
    minimum = min_group_size(ctx.config)
    available, unavailable = usable_columns(cohort, ctx)
    if not available["lab"]:
        raise DataNotFoundError(f"the cohort in {ctx.artifacts / 'ingest'} has no lab column with a value; the probe needs labs")
    for role, names in unavailable.items():
        if names:
            logger.info("Probe: %d %s columns absent or empty in the cohort: %s", len(names), role, names)

    training_folds = read_training_folds(ctx, len(cohort))
    n_folds = int(nested_get(ctx.config, "train.folds", 5))
    output: dict[str, Any] = {
        "contract_version": ctx.contract.version,
        "settings": {k: settings[k] for k in ("models", "variants", "permutations", "bootstrap", "confidence", "alpha", "age_bands")},
        "folds": "train/folds.parquet, repeat 0" if training_folds is not None else f"own stratified {n_folds}-fold split per target",
        "min_group_size": minimum,
        "absent_columns": unavailable,
        "targets": {},
        "block": {},
    }
    predictions: dict[str, Any] = {}
    prepared: dict[str, ProbeTarget] = {}

    for name in ctx.contract.demographics:
        if name not in cohort.columns:
            output["targets"][name] = {"status": "absent", "reason": f"{name} is not in the cohort"}
            logger.info("Probe target %s: absent from the cohort, skipped", name)
            continue
        classes = nested_get(settings, f"targets.{name}.classes", None)
        target = prepare_target(cohort, ctx.contract, name, minimum, classes)
        entry: dict[str, Any] = {**target.record, "variant": {}}
        output["targets"][name] = entry
        if not target.usable:
            logger.warning("Probe target %s: not probed because %s", name, target.reason)
            continue
        prepared[name] = target
        fold_ids = target_folds(target, training_folds, n_folds, settings["age_bands"], ctx.seed)
        frame = cohort.iloc[target.rows]
        for variant in settings["variants"]:
            columns = [c for role in VARIANTS[variant] for c in available.get(role, [])]
            features = build_matrix(frame, ctx.contract, columns)
            probed, oof = probe_target(target, features, fold_ids, settings, ctx.device, ctx.seed)
            entry["variant"][variant] = probed
            predictions[(name, variant)] = oof
            logger.info("Probe target %s, %s: %s", name, variant, _headline(target, probed["models"]))
        headline_variant = "labs" if "labs" in entry["variant"] else settings["variants"][0]
        output["block"][name] = block_entry(target, headline_variant, entry["variant"][headline_variant])

    output["leakage_unaware"] = leakage.probe_unaware_models(ctx, cohort, prepared, settings)
    output["summary"] = report.summary_sentences(output, settings)
    figures = report.draw_figures(ctx.stage_dir(STAGE) / "figures", output, prepared, predictions, settings)
    output["figures"] = [str(p.relative_to(ctx.stage_dir(STAGE))) for p in figures]

    path = write_json_atomic(ctx.stage_dir(STAGE) / "probe.json", output)
    _track(output, settings, path, figures)
    elapsed = time.perf_counter() - started
    logger.info("Probe: %d targets probed, %d skipped, in %.1f s", len(prepared), len(output["targets"]) - len(prepared), elapsed)
    return {
        "targets_probed": len(prepared),
        "targets_skipped": len(output["targets"]) - len(prepared),
        "block": output["block"],
        "seconds": round(elapsed, 1),
    }


def _headline(target: ProbeTarget, results: Mapping[str, Any]) -> str:
    metric = pm.PRIMARY_METRIC[target.kind]
    parts = []
    for model, result in results.items():
        value = result["metrics"][metric]
        parts.append(
            f"{model} {metric} {value['estimate']:.3f} [{value['ci_low']:.3f}, {value['ci_high']:.3f}], "
            f"p={result['permutation']['p_value']:.3f}"
        )
    return "; ".join(parts)


def _track(output: Mapping[str, Any], settings: Mapping[str, Any], path: Path, figures: list[Path]) -> None:
    """Log settings, the compact block and the aggregate files to the active MLflow run."""
    import mlflow

    from hivcomorb import tracking

    if mlflow.active_run() is None:
        logger.info("Probe: no active MLflow run, so nothing is tracked")
        return
    tracking.log_params({"probe": {k: settings[k] for k in ("models", "variants", "permutations", "bootstrap", "age_bands", "top_k")}})
    numeric_block = {
        target: {k: v for k, v in entry.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        for target, entry in output["block"].items()
    }
    tracking.log_metrics(numeric_block, prefix="probe")
    tracking.log_metrics(_leakage_metrics(output.get("leakage_unaware", {})), prefix="probe.leakage")
    mlflow.log_artifact(str(path), artifact_path=STAGE)
    for figure in figures:
        mlflow.log_artifact(str(figure), artifact_path=f"{STAGE}/figures")


def _leakage_metrics(leakage_output: Mapping[str, Any]) -> dict[str, Any]:
    metrics: dict[str, Any] = {}
    for representation, by_target in (leakage_output.get("representations") or {}).items():
        for target, entry in (by_target or {}).items():
            block = entry.get("block") if isinstance(entry, Mapping) else None
            if block:
                metrics[f"{representation}.{target}"] = {k: block[k] for k in ("estimate", "ci_low", "ci_high", "p_value")}
    return metrics
