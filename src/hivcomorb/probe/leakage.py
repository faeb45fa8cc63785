"""Leakage of demographics into the demographic-unaware comorbidity models.

The unaware models never see the demographic columns, but they may still
encode them through the labs. Two representations of each unaware model are
probed for every demographic target, on the training stage's folds:

``predicted_risks``
    The model's out-of-fold comorbidity probabilities (``p_<label>`` columns
    of ``train/oof.parquet``), probed with the same models, bootstrap and
    permutation tests as the lab probe.
``leaf_embeddings``
    For a boosting champion, the leaf that each tree sends a patient to,
    one-hot encoded. The probe is kernel ridge regression on the linear
    kernel of these indicators (the number of trees in which two patients
    share a leaf), refitted on each training fold and for each permutation.
    The champion was fitted on the whole cohort, so these embeddings are
    in-sample, and the probe measures what the representation encodes rather
    than what it would encode for new patients.

Each stage input is optional: when the training outputs are absent the
section records why and the rest of the probe still runs.
"""

from __future__ import annotations

import json
import logging
from typing import Any, Mapping

import numpy as np
import pandas as pd
from scipy import sparse

from hivcomorb.context import RunContext
from hivcomorb.errors import HivcomorbError
from hivcomorb.probe import metrics as pm
from hivcomorb.probe.models import OutOfFold, evaluate
from hivcomorb.probe.targets import ProbeTarget

logger = logging.getLogger(__name__)

SETTING = "unaware"


def _skipped(reason: str) -> dict[str, Any]:
    logger.info("Probe leakage: skipped because %s", reason)
    return {"status": "skipped", "reason": reason, "representations": {}}


def read_unaware_oof(ctx: RunContext) -> tuple[pd.DataFrame | None, list[str], str]:
    """Return the unaware rows of ``train/oof.parquet`` (first repeat), the models to probe and a skip reason.

    The champion named in ``train/train.json`` (``champions.unaware``) is
    probed when it is in the file; otherwise every model present is.
    """
    path = ctx.artifacts / "train" / "oof.parquet"
    if not path.is_file():
        return None, [], f"{path} not found; run 'hivcomorb train' first"
    oof = pd.read_parquet(path)
    missing = {"row", "fold", "setting", "model"} - set(oof.columns)
    if missing:
        return None, [], f"{path} lacks columns {sorted(missing)}"
    oof = oof[oof["setting"] == SETTING]
    if "repeat" in oof.columns and len(oof):
        oof = oof[oof["repeat"] == oof["repeat"].min()]
    if oof.empty:
        return None, [], f"{path} has no rows for the {SETTING} setting"

    models = sorted(oof["model"].astype(str).unique())
    champion = _unaware_champion(ctx)
    if champion in models:
        models = [champion]
    return oof, models, ""


def _unaware_champion(ctx: RunContext) -> str | None:
    path = ctx.artifacts / "train" / "train.json"
    if not path.is_file():
        return None
    try:
        champions = json.loads(path.read_text(encoding="utf-8")).get("champions") or {}
    except (json.JSONDecodeError, AttributeError) as exc:
        logger.warning("Probe leakage: %s is unreadable (%s), so every unaware model is probed", path, exc)
        return None
    champion = champions.get(SETTING)
    return str(champion) if champion else None


def subset_target(target: ProbeTarget, rows: np.ndarray) -> tuple[ProbeTarget, np.ndarray]:
    """Restrict a target to the cohort rows in ``rows``, returning it and the positions of its rows in ``rows``."""
    position_of = {int(r): i for i, r in enumerate(rows)}
    keep = np.array([int(r) in position_of for r in target.rows], dtype=bool)
    kept_rows = target.rows[keep]
    positions = np.array([position_of[int(r)] for r in kept_rows], dtype=np.int64)
    subset = ProbeTarget(name=target.name, kind=target.kind, rows=kept_rows, y=target.y[keep], classes=target.classes)
    return subset, positions


def probe_unaware_models(
    ctx: RunContext,
    cohort: pd.DataFrame,
    targets: Mapping[str, ProbeTarget],
    settings: Mapping[str, Any],
) -> dict[str, Any]:
    """Probe the unaware models' predicted risks and leaf embeddings for each target.

    Returns
    -------
    dict
        ``status``, the models probed and, per representation and target, the
        probe results with a compact ``block`` entry like the lab probe's.
    """
    from hivcomorb.probe.stage import block_entry, probe_target

    if not targets:
        return _skipped("no demographic target could be probed")
    oof, models, reason = read_unaware_oof(ctx)
    if oof is None:
        return _skipped(reason)

    output: dict[str, Any] = {"status": "ok", "setting": SETTING, "models": models, "representations": {}}
    for model in models:
        frame = oof[oof["model"].astype(str) == model].drop_duplicates("row").sort_values("row")
        risk_columns = [c for c in frame.columns if c.startswith("p_")]
        if not risk_columns:
            output["representations"][f"predicted_risks:{model}"] = {"status": "skipped", "reason": "no p_<label> columns"}
            continue
        complete = frame[risk_columns].notna().all(axis=1)
        frame = frame[complete]
        rows = frame["row"].to_numpy(dtype=np.int64)
        risks = frame[risk_columns].astype("float64").reset_index(drop=True)
        folds = frame["fold"].to_numpy(dtype=np.int64)

        by_target: dict[str, Any] = {"n_rows_without_predictions": int((~complete).sum())}
        for name, target in targets.items():
            subset, positions = subset_target(target, rows)
            if subset.y.size == 0:
                by_target[name] = {"status": "skipped", "reason": "no patient of this target has predictions"}
                continue
            features = risks.iloc[positions].reset_index(drop=True)
            probed, _ = probe_target(subset, features, folds[positions], settings, ctx.device, ctx.seed)
            by_target[name] = {**probed, "block": block_entry(subset, "predicted_risks", probed)}
            logger.info(
                "Probe leakage: %s risks of the %s model recover %s with %s %.3f",
                SETTING,
                model,
                name,
                by_target[name]["block"]["metric"],
                by_target[name]["block"]["estimate"],
            )
        output["representations"][f"predicted_risks:{model}"] = by_target

    output["representations"].update(_leaf_embeddings(ctx, cohort, targets, oof, settings))
    return output


def _leaf_embeddings(
    ctx: RunContext,
    cohort: pd.DataFrame,
    targets: Mapping[str, ProbeTarget],
    oof: pd.DataFrame,
    settings: Mapping[str, Any],
) -> dict[str, Any]:
    """Probe the leaf embedding of the saved unaware boosting model, when there is one."""
    from hivcomorb.bundle import ModelBundle

    if not bool(nested_leaf_setting(settings)):
        return {}
    path = ctx.artifacts / "train" / "models" / f"{SETTING}.joblib"
    if not path.is_file():
        return {"leaf_embeddings": {"status": "skipped", "reason": f"{path} not found"}}
    try:
        bundle = ModelBundle.load(path)
        matrix = bundle.features(cohort, ctx.contract)
    except HivcomorbError as exc:
        logger.warning("Probe leakage: leaf embeddings skipped because %s", exc)
        return {"leaf_embeddings": {"status": "skipped", "reason": str(exc)}}

    models = [tree_model(bundle.estimators[label]) for label in bundle.labels]
    if not models or any(model is None for model in models):
        reason = f"the {SETTING} champion ({bundle.model_name}) has no tree leaves to embed"
        logger.info("Probe leakage: leaf embeddings skipped because %s", reason)
        return {"leaf_embeddings": {"status": "skipped", "reason": reason}}

    max_trees = int((settings.get("leakage") or {}).get("max_trees_per_label", 50))
    kernel = leaf_kernel(models, matrix, max_trees)
    fold_of_row = oof.drop_duplicates("row").set_index("row")["fold"]
    alpha = float((settings.get("leakage") or {}).get("kernel_alpha", 1.0))
    by_target: dict[str, Any] = {"model": bundle.model_name, "n_trees": int(kernel.trace() / max(len(cohort), 1))}
    rng = np.random.default_rng(ctx.seed)
    for name, target in targets.items():
        in_folds = np.isin(target.rows, fold_of_row.index.to_numpy())
        subset = ProbeTarget(name=name, kind=target.kind, rows=target.rows[in_folds], y=target.y[in_folds], classes=target.classes)
        if subset.y.size == 0:
            by_target[name] = {"status": "skipped", "reason": "no patient of this target is in the training folds"}
            continue
        folds = fold_of_row.loc[subset.rows].to_numpy(dtype=np.int64)
        results = _kernel_probe(subset, kernel[np.ix_(subset.rows, subset.rows)], folds, alpha, settings, rng)
        by_target[name] = {"models": {"kernel_ridge": results}, "block": _kernel_block(subset, results)}
    return {f"leaf_embeddings:{bundle.model_name}": by_target}


def nested_leaf_setting(settings: Mapping[str, Any]) -> bool:
    """Return whether the leaf-embedding probe is switched on (``probe.leakage.leaf_embeddings``)."""
    return bool((settings.get("leakage") or {}).get("leaf_embeddings", True))


def tree_model(estimator: Any) -> Any | None:
    """Return the tree ensemble with an ``apply`` method inside a label's estimator, or None.

    Training may wrap the booster with a calibrator (an ``estimator``
    attribute). Other wrappers, such as stacked models, are not unwrapped.
    """
    if hasattr(estimator, "apply"):
        return estimator
    inner = getattr(estimator, "estimator", None)
    if inner is not None and hasattr(inner, "apply"):
        return inner
    return None


def leaf_kernel(models: list[Any], matrix: pd.DataFrame, max_trees: int) -> np.ndarray:
    """Count, for each pair of patients, the trees in which they share a leaf.

    This is the Gram matrix of the one-hot leaf indicators of the first
    ``max_trees`` trees of every label's model. The cap bounds the cost,
    which grows with the number of trees times the squared number of patients.
    """
    n = matrix.shape[0]
    patients = np.arange(n)
    blocks = []
    for model in models:
        leaves = np.asarray(model.apply(matrix)).reshape(n, -1)[:, :max_trees]
        for tree in range(leaves.shape[1]):
            _, leaf_codes = np.unique(leaves[:, tree], return_inverse=True)
            blocks.append(sparse.csr_matrix((np.ones(n), (patients, leaf_codes)), shape=(n, int(leaf_codes.max()) + 1)))
    indicators = sparse.hstack(blocks).tocsr()
    return np.asarray((indicators @ indicators.T).toarray(), dtype=np.float64)


def kernel_ridge_predictions(kernel: np.ndarray, fold_ids: np.ndarray, labels: np.ndarray, alpha: float) -> np.ndarray:
    """Fit kernel ridge regression on each training fold and predict the held-out fold.

    ``labels`` is ``(n, C)``. Each column is fitted separately, with its
    training-fold mean as intercept.
    """
    out = np.zeros(labels.shape, dtype=np.float64)
    for fold in np.unique(fold_ids):
        test = np.flatnonzero(fold_ids == fold)
        train = np.flatnonzero(fold_ids != fold)
        mean = labels[train].mean(axis=0)
        system = kernel[np.ix_(train, train)] + alpha * np.eye(train.size)
        dual = np.linalg.solve(system, labels[train] - mean)
        out[test] = kernel[np.ix_(test, train)] @ dual + mean
    return out


def _kernel_probe(
    target: ProbeTarget,
    kernel: np.ndarray,
    fold_ids: np.ndarray,
    alpha: float,
    settings: Mapping[str, Any],
    rng: np.random.Generator,
) -> dict[str, Any]:
    n = target.y.shape[0]
    n_classes = len(target.classes)
    permutations = int(settings["permutations"])
    order = np.stack([np.arange(n)] + [rng.permutation(n) for _ in range(permutations)], axis=1)
    labels = target.y[order]

    if target.kind == "regression":
        fitted = kernel_ridge_predictions(kernel, fold_ids, labels.astype(np.float64), alpha)
        predictions = fitted[:, 0]
        priors = np.zeros(n)
        null_scores = fitted[:, 1:]
    else:
        indicators = np.concatenate([(labels == k).astype(np.float64) for k in range(n_classes)], axis=1)
        fitted = kernel_ridge_predictions(kernel, fold_ids, indicators, alpha).reshape(n, n_classes, permutations + 1)
        predictions = fitted[:, :, 0]
        priors = np.zeros((n, n_classes))
        null_scores = fitted[:, 1, 1:] if target.kind == "binary" else fitted[:, :, 1:]

    for fold in np.unique(fold_ids):
        train = fold_ids != fold
        if target.kind == "regression":
            priors[~train] = target.y[train].mean()
        else:
            priors[~train] = np.bincount(target.y[train], minlength=n_classes) / train.sum()

    oof = OutOfFold("kernel_ridge", predictions, priors, pd.Series(dtype=float), "", fold_ids)
    weights = pm.bootstrap_weights(n, int(settings["bootstrap"]), rng)
    metric_block, baseline_block = evaluate(target, oof, weights, settings["age_bands"], float(settings["confidence"]))
    primary = pm.PRIMARY_METRIC[target.kind]
    null = pm.primary_metric_columns(target.kind, null_scores, labels[:, 1:], n_classes)
    return {
        "n_used": int(n),
        "metrics": metric_block,
        "baseline": baseline_block,
        "permutation": {
            "metric": primary,
            "scheme": "refit",
            "n_permutations": int(permutations),
            "p_value": pm.permutation_p_value(metric_block[primary]["estimate"], null, primary),
            "null_mean": float(np.nanmean(null)),
        },
    }


def _kernel_block(target: ProbeTarget, results: Mapping[str, Any]) -> dict[str, Any]:
    metric = pm.PRIMARY_METRIC[target.kind]
    return {
        "metric": metric,
        "estimate": results["metrics"][metric]["estimate"],
        "ci_low": results["metrics"][metric]["ci_low"],
        "ci_high": results["metrics"][metric]["ci_high"],
        "baseline": results["baseline"][metric]["estimate"],
        "p_value": results["permutation"]["p_value"],
        "p_value_model": results["permutation"]["p_value"],
        "p_method": "single model",
        "n_permutations": results["permutation"]["n_permutations"],
        "model": "kernel_ridge",
        "variant": "leaf_embeddings",
        "n_used": results["n_used"],
    }
