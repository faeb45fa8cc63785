"""``run(ctx)`` of the train stage and the ``hivcomorb train`` command."""

from __future__ import annotations

import contextlib

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import pandas as pd
from joblib import Parallel, delayed

from hivcomorb.bundle import ModelBundle
from hivcomorb.config import nested_get
from hivcomorb.context import RunContext
from hivcomorb.errors import ConfigError
from hivcomorb.evaluate import bootstrap_weights
from hivcomorb.features import SETTINGS
from hivcomorb.files import atomic_path, write_json_atomic
from hivcomorb.models import FitOptions, LabelFit, ModelSpec, model_specs
from hivcomorb.splits import make_splits
from hivcomorb.train._crossval import CrossValResult, cross_validate, fit_final
from hivcomorb.train._data import TrainingData, load_cohort, load_truth, prepare
from hivcomorb.train._results import (
    Scored,
    CHAMPION_RULES,
    choose_champion,
    choose_parsimonious_champion,
    compare,
    flat_block,
    metrics_block,
    oracle_predictions,
    score_predictions,
)

logger = logging.getLogger(__name__)

CHAMPION_METRICS = ("macro_f1", "micro_f1", "macro_auroc", "macro_auprc")


@dataclass(frozen=True)
class TrainSettings:
    """The ``train`` block of the configuration, checked."""

    raw: Mapping[str, Any]
    folds: int
    repeats: int
    inner_folds: int
    min_positives: int
    bootstrap: int
    alpha: float
    champion_metric: str
    champion_rule: str
    workers: int
    options: FitOptions


def read_settings(ctx: RunContext) -> TrainSettings:
    """Read and check ``train.*`` from the run's configuration."""
    raw = dict(ctx.config.get("train") or {})
    backend = raw.get("backend", "local")
    if backend not in ("local", "dask"):
        raise ConfigError(f"train.backend must be 'local' or 'dask', got {backend!r}")

    def integer(key: str, default: int, minimum: int) -> int:
        value = raw.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ConfigError(f"train.{key} must be an integer of at least {minimum}, got {value!r}")
        return value

    champion_metric = str(raw.get("champion_metric", "macro_f1"))
    if champion_metric not in CHAMPION_METRICS:
        raise ConfigError(f"train.champion_metric must be one of {CHAMPION_METRICS}, got {champion_metric!r}")
    champion_rule = str(raw.get("champion_rule", "one_se"))
    if champion_rule not in CHAMPION_RULES:
        raise ConfigError(f"train.champion_rule must be one of {CHAMPION_RULES}, got {champion_rule!r}")
    alpha = float(raw.get("alpha", 0.05))
    if not 0 < alpha < 1:
        raise ConfigError(f"train.alpha must be between 0 and 1, got {alpha}")
    cores = os.cpu_count() or 1
    workers_raw = raw.get("workers", "auto")
    workers = cores if workers_raw == "auto" else workers_raw
    if backend == "dask":
        # The Dask cluster parallelises each XGBoost fit, so fits are submitted one at a time.
        workers = 1
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ConfigError(f"train.workers must be 'auto' or a positive integer, got {workers_raw!r}")
    threads_raw = raw.get("threads_per_model", "auto")
    # By default, threads per model times worker processes stays within the cores.
    threads = max(1, cores // workers) if threads_raw == "auto" else threads_raw
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ConfigError(f"train.threads_per_model must be 'auto' or a positive integer, got {threads_raw!r}")
    options = FitOptions(
        device=ctx.device,
        n_jobs=threads,
        seed=ctx.seed,
        calibration=str(raw.get("calibration", "none")),
        tuning_metric=str(nested_get(raw, "tuning.metric", "auroc")),
        tuning_seconds=float(nested_get(raw, "tuning.max_seconds", 60)),
    )
    return TrainSettings(
        raw=raw,
        folds=integer("folds", 5, 2),
        repeats=integer("repeats", 1, 1),
        inner_folds=integer("inner_folds", 3, 2),
        min_positives=integer("min_positives", 20, 1),
        bootstrap=integer("bootstrap", 1000, 2),
        alpha=alpha,
        champion_metric=champion_metric,
        champion_rule=champion_rule,
        workers=workers,
        options=options,
    )


def _specs_to_fit(settings: TrainSettings) -> tuple[list[ModelSpec], set[str]]:
    """Return the specs in fitting order (each base before its stacked model) and the names reported."""
    reported = model_specs(settings.raw)
    names = {s.name for s in reported}
    ordered: list[ModelSpec] = []
    for spec in reported:
        if spec.first_stage and spec.first_stage not in names and all(s.name != spec.first_stage for s in ordered):
            base = model_specs({"models": [spec.first_stage], "zoo": settings.raw.get("zoo")})[0]
            ordered.append(base)
    ordered.extend(s for s in reported if not s.label_dependence)
    ordered.extend(s for s in reported if s.label_dependence)
    return ordered, names


@contextlib.contextmanager
def _backend(raw: dict[str, Any]) -> Iterator[None]:
    """Route XGBoost fits to a Dask cluster when ``train.backend`` is ``dask``."""
    if raw.get("backend", "local") != "dask":
        yield
        return
    from hivcomorb.distributed import dask_client
    from hivcomorb.models import dask_backend

    with dask_client(raw.get("dask")) as client, dask_backend(client):
        yield


def run(ctx: RunContext) -> dict[str, Any]:
    """Cross-validate every model in both settings, compare them, and save the champions.

    Returns
    -------
    dict
        Counts and headline figures (no patient data): patients, labels
        trained and skipped, champions and their macro-F1 and macro-AUROC.
    """
    import mlflow

    from hivcomorb import tracking

    started = time.perf_counter()
    settings = read_settings(ctx)
    out_dir = ctx.stage_dir("train")
    cohort = load_cohort(ctx.artifacts / "ingest" / "cohort.parquet")
    truth = load_truth(ctx.artifacts / "source" / "truth.parquet")
    data = prepare(cohort, ctx.contract, settings.min_positives, truth)
    specs, reported = _specs_to_fit(settings)
    logger.info(
        "Training %d models x %d settings on %d patients, %d labels (%d skipped); device %s, %d workers x %d threads",
        len(reported), len(SETTINGS), data.n_rows, len(data.label_names), len(data.skipped_labels),
        ctx.device, settings.workers, settings.options.n_jobs,
    )
    tracking.log_params({"train": {"device": ctx.device, "workers": settings.workers, "threads_per_model": settings.options.n_jobs}})

    folds_table, splits = make_splits(data.labels, settings.folds, settings.repeats, settings.inner_folds, ctx.seed)
    _write_parquet(folds_table, out_dir / "folds.parquet")

    results: dict[tuple[str, str], CrossValResult] = {}
    with _backend(settings.raw), Parallel(n_jobs=settings.workers) as parallel:
        for setting in SETTINGS:
            for spec in specs:
                first = results.get((spec.first_stage, setting)) if spec.label_dependence else None
                results[(spec.name, setting)] = cross_validate(data, setting, spec, splits, settings.options, parallel, first)
        reported_results = {key: value for key, value in results.items() if key[0] in reported}
        _write_parquet(oof_table(data, reported_results, splits), out_dir / "oof.parquet")

        evaluation = evaluate_all(data, reported_results, splits, settings, ctx.seed, parallel)
        champions = {setting: _choose_champion(evaluation, setting, settings, specs) for setting in SETTINGS}
        bundles = {}
        for setting, name in champions.items():
            bundles[setting] = build_champion(ctx, data, setting, name, specs, settings, parallel, evaluation)
            bundles[setting].save(out_dir / "models" / f"{setting}.joblib")
            logger.info("Champion (%s): %s, saved to %s", setting, name, out_dir / "models" / f"{setting}.joblib")

    document = train_document(data, evaluation, champions, settings, specs, reported, results)
    figure_paths = _make_figures(out_dir / "figures", data, reported_results, evaluation, champions, splits)
    write_json_atomic(out_dir / "train.json", document)

    for (name, setting), result in reported_results.items():
        with mlflow.start_run(run_name=f"{name}-{setting}", nested=True):
            spec = next(s for s in specs if s.name == name)
            tracking.log_params(
                {"model": name, "kind": spec.kind, "setting": setting, "device": ctx.device, "params": dict(spec.params),
                 "grid": list(spec.grid), "calibration": settings.options.calibration, "folds": settings.folds,
                 "repeats": settings.repeats, "inner_folds": settings.inner_folds}
            )
            tracking.log_metrics(evaluation["models"][name][setting])
            tracking.log_metrics({"fit_seconds": result.seconds})
    tracking.log_metrics({"champion": {s: document["settings"][s] for s in SETTINGS}, "train_seconds": time.perf_counter() - started})
    mlflow.log_artifact(str(out_dir / "train.json"))
    for path in figure_paths:
        mlflow.log_artifact(str(path), artifact_path="figures")

    summary = {
        "patients": data.n_rows,
        "labels": len(data.label_names),
        "skipped_labels": len(data.skipped_labels),
        "models": len(reported),
        "champions": champions,
    }
    for setting in SETTINGS:
        summary[f"{setting}_macro_f1"] = document["settings"][setting]["macro_f1"]
        summary[f"{setting}_macro_auroc"] = document["settings"][setting]["macro_auroc"]
    return summary


def _write_parquet(frame: pd.DataFrame, path: Path) -> None:
    with atomic_path(path) as tmp:
        frame.to_parquet(tmp, index=False)


def oof_table(data: TrainingData, results: Mapping[tuple[str, str], CrossValResult], splits) -> pd.DataFrame:
    """Return one row per (cohort row, repeat, setting, model) with ``p_<label>`` and ``t_<label>``."""
    n_repeats = max(s.repeat for s in splits) + 1
    fold = np.full((n_repeats, data.n_rows), -1, dtype=np.int64)
    for split in splits:
        fold[split.repeat, split.test] = split.fold
    parts = []
    for (name, setting), result in results.items():
        for repeat in range(n_repeats):
            part = {"row": np.arange(data.n_rows, dtype=np.int64), "repeat": repeat, "fold": fold[repeat], "setting": setting, "model": name}
            for j, label in enumerate(data.label_names):
                part[f"p_{label}"] = result.probabilities[repeat, :, j]
                part[f"t_{label}"] = result.thresholds[repeat, :, j]
            parts.append(pd.DataFrame(part))
    return pd.concat(parts, ignore_index=True)


def evaluate_all(
    data: TrainingData,
    results: Mapping[tuple[str, str], CrossValResult],
    splits,
    settings: TrainSettings,
    seed: int,
    parallel: Parallel,
) -> dict[str, Any]:
    """Score every model, compare settings, and score the oracle, all on the same bootstrap resamples."""
    started = time.perf_counter()
    weights = bootstrap_weights(data.n_rows, settings.bootstrap, seed)
    labels = data.label_names
    keys = list(results)
    outputs = parallel(
        delayed(score_predictions)(data.labels, results[key].probabilities, results[key].thresholds, labels, weights) for key in keys
    )
    scored: dict[tuple[str, str], Scored] = dict(zip(keys, outputs))
    models: dict[str, dict[str, Any]] = {}
    for (name, setting), value in scored.items():
        models.setdefault(name, {})[setting] = metrics_block(value, labels, settings.alpha)
    comparison = {
        name: compare(scored[(name, "aware")], scored[(name, "unaware")], labels, settings.alpha)
        for name in models
        if (name, "aware") in scored and (name, "unaware") in scored
    }
    oracle_scored = None
    oracle = None
    if data.truth is not None:
        probabilities, thresholds = oracle_predictions(data.labels, data.truth, splits)
        oracle_scored = score_predictions(data.labels, probabilities, thresholds, labels, weights)
        oracle = metrics_block(oracle_scored, labels, settings.alpha)
    logger.info("Scored %d model x setting results with %d bootstrap resamples in %.1f s", len(scored), settings.bootstrap, time.perf_counter() - started)
    return {"models": models, "comparison": comparison, "scored": scored, "oracle": oracle, "oracle_scored": oracle_scored}


def _choose_champion(evaluation: Mapping[str, Any], setting: str, settings: TrainSettings, specs: Sequence[ModelSpec]) -> str:
    """Return the champion of ``setting`` by ``train.champion_rule``."""
    if settings.champion_rule == "best":
        return choose_champion(evaluation["models"], setting, settings.champion_metric)
    complexity = {spec.name: spec.complexity for spec in specs}
    return choose_parsimonious_champion(evaluation["models"], evaluation["scored"], setting, settings.champion_metric, complexity)


def build_champion(
    ctx: RunContext,
    data: TrainingData,
    setting: str,
    name: str,
    specs: list[ModelSpec],
    settings: TrainSettings,
    parallel: Parallel,
    evaluation: Mapping[str, Any],
) -> ModelBundle:
    """Refit the champion ``name`` of ``setting`` on all rows with known labels and wrap it in a bundle."""
    spec = next(s for s in specs if s.name == name)
    first_stage: dict[str, LabelFit] | None = None
    if spec.label_dependence:
        base = next(s for s in specs if s.name == spec.first_stage)
        first_stage = fit_final(data, setting, base, settings.inner_folds, ctx.seed, settings.options, parallel)
    fits = fit_final(data, setting, spec, settings.inner_folds, ctx.seed, settings.options, parallel, first_stage)
    labels = data.label_names
    metric_value = evaluation["models"][name][setting][settings.champion_metric]["estimate"]
    return ModelBundle(
        setting=setting,
        model_name=name,
        labels=list(labels),
        input_columns=list(data.columns[setting]),
        feature_names=list(data.feature_names[setting]),
        estimators={label: fits[label].model for label in labels},
        thresholds={label: fits[label].threshold for label in labels},
        contract_version=ctx.contract.version,
        training_ranges=training_ranges(data, setting, ctx),
        device=ctx.device,
        metadata={
            "setting": setting,
            "model": name,
            "kind": spec.kind,
            "label_dependence": spec.label_dependence,
            "params": {label: fits[label].params for label in labels},
            "n_train": {label: fits[label].n_train for label in labels},
            "n_positive": {label: fits[label].n_positive for label in labels},
            "calibration": settings.options.calibration,
            "champion_metric": settings.champion_metric,
            "champion_rule": settings.champion_rule,
            "champion_metric_value": metric_value,
            "inner_folds": settings.inner_folds,
            "seed": ctx.seed,
            "skipped_labels": dict(data.skipped_labels),
        },
    )


def training_ranges(data: TrainingData, setting: str, ctx: RunContext) -> dict[str, tuple[float, float]]:
    """Return the (min, max) of each numeric input column over the training cohort."""
    ranges = {}
    for column in data.columns[setting]:
        if ctx.contract.column(column).dtype == "category":
            continue
        values = pd.to_numeric(data.cohort[column], errors="coerce").astype("float64")
        if values.notna().any():
            ranges[column] = (float(values.min()), float(values.max()))
    return ranges


def train_document(
    data: TrainingData,
    evaluation: Mapping[str, Any],
    champions: Mapping[str, str],
    settings: TrainSettings,
    specs: list[ModelSpec],
    reported: set[str],
    results: Mapping[tuple[str, str], CrossValResult],
) -> dict[str, Any]:
    """Assemble ``train.json``."""
    from hivcomorb.train._summary import oracle_gaps, summary_sentences

    labels = data.label_names
    setting_blocks = {}
    for setting, name in champions.items():
        block = flat_block(evaluation["models"][name][setting], labels)
        setting_blocks[setting] = {"model": name, **block}
    oracle = flat_block(evaluation["oracle"], labels) if evaluation["oracle"] is not None else None
    gaps = oracle_gaps(evaluation, champions, settings.alpha) if oracle is not None else None
    document = {
        "labels": list(labels),
        "skipped_labels": data.skipped_labels,
        "label_counts": data.label_counts,
        "n_patients": data.n_rows,
        "features": {setting: list(columns) for setting, columns in data.columns.items()},
        "dropped_labs": data.dropped_labs,
        "design": {
            "folds": settings.folds,
            "repeats": settings.repeats,
            "inner_folds": settings.inner_folds,
            "bootstrap": settings.bootstrap,
            "confidence_level": 1 - settings.alpha,
            "calibration": settings.options.calibration,
            "tuning_metric": settings.options.tuning_metric,
            "champion_metric": settings.champion_metric,
            "champion_rule": settings.champion_rule,
            "stratification": "iterative multi-label stratification on known-positive and unknown indicators per label",
        },
        "models": {name: evaluation["models"][name] for name in evaluation["models"]},
        "tuning": {
            f"{name}/{setting}": {
                "candidates_scored": r.candidates_scored,
                "searches_truncated": r.searches_truncated,
                "seconds": round(r.seconds, 2),
                "chosen_params": _chosen_params(r),
            }
            for (name, setting), r in results.items()
            if name in reported
        },
        "settings": setting_blocks,
        "comparison": evaluation["comparison"],
        "oracle": oracle,
        "oracle_gap": gaps,
        "champions": dict(champions),
    }
    document["summary"] = summary_sentences(document, settings.alpha)
    return document


def _chosen_params(result: CrossValResult) -> dict[str, dict[str, int]]:
    """Count how often each tuning candidate was chosen, per label, across folds."""
    counts: dict[str, dict[str, int]] = {}
    for label, chosen in result.params.items():
        for params in chosen:
            key = ", ".join(f"{k}={v}" for k, v in sorted(params.items()))
            counts.setdefault(label, {})
            counts[label][key] = counts[label].get(key, 0) + 1
    return counts


def _make_figures(folder: Path, data, results, evaluation, champions, splits) -> list[Path]:
    from hivcomorb.train._figures import make_figures

    return make_figures(folder, data, results, evaluation, champions, splits)


def register_cli(subparsers: Any) -> None:
    """Add ``hivcomorb train``."""
    from hivcomorb.pipeline import add_stage_command

    add_stage_command(
        subparsers,
        "train",
        help="cross-validate the models in both settings and save the champions",
        description="Cross-validate every model of train.models in the demographic-aware and -unaware settings on "
        "the ingested cohort, compare them with bootstrap confidence intervals, and save each setting's champion "
        "to artifacts/<dataset>/train/models/<setting>.joblib.",
    )
