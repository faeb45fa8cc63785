"""Explanation audit: SHAP and permutation importance of a setting's champion.

Attributions are summed over the indicator columns of each category column
(SHAP values are additive), so importance is reported per canonical column
(``ethnicity``, not ``ethnicity=asian``). That keeps the explanation readable
and keeps category names, which may be small groups, out of every output.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
import pandas as pd
from scipy.stats import spearmanr

from hivcomorb.audit.groups import OK, SUPPRESSED, AttributeGroups, count_status, hidden_sizes
from hivcomorb.audit.metrics import auroc, bootstrap_weights, interval
from hivcomorb.audit.shap_adapter import AGNOSTIC, attributions, explainer_kind, unwrap
from hivcomorb.bundle import ModelBundle
from hivcomorb.config import nested_get
from hivcomorb.contract import Contract
from hivcomorb.features import encoded_names

logger = logging.getLogger(__name__)


@dataclass
class SettingExplanation:
    """Attributions of one setting, kept in memory for the figures."""

    setting: str
    labels: list[str]
    columns: list[str]
    roles: dict[str, str]
    values: np.ndarray
    column_values: pd.DataFrame
    rows: np.ndarray
    summary: dict[str, Any]


def column_map(bundle: ModelBundle, contract: Contract) -> dict[str, list[int]]:
    """Return each canonical input column's positions among the bundle's features."""
    position = {name: i for i, name in enumerate(bundle.feature_names)}
    mapping: dict[str, list[int]] = {}
    for column in bundle.input_columns:
        indices = [position[n] for n in encoded_names(contract, [column]) if n in position]
        if indices:
            mapping[column] = indices
    return mapping


def by_column(values: np.ndarray, mapping: Mapping[str, list[int]]) -> np.ndarray:
    """Sum attributions (patients, features, labels) into (patients, columns, labels)."""
    return np.stack([values[:, idx, :].sum(axis=1) for idx in mapping.values()], axis=1)


def permutation_importance(
    bundle: ModelBundle,
    matrix: pd.DataFrame,
    labels: pd.DataFrame,
    mapping: Mapping[str, list[int]],
    repeats: int,
    seed: int,
) -> dict[str, dict[str, dict[str, float]]]:
    """Return the mean and SD drop in AUROC when each canonical column is shuffled.

    All indicator columns of a category column are shuffled together, by rows.
    Labels with one class among the patients given are skipped.
    """
    rng = np.random.default_rng(seed)
    values = matrix.to_numpy(dtype=np.float32, copy=True)
    out: dict[str, dict[str, dict[str, float]]] = {}
    for label in bundle.labels:
        y = labels[label].to_numpy(dtype=np.float64)
        known = np.isfinite(y)
        if known.sum() == 0 or y[known].min() == y[known].max():
            continue
        rows = values[known]
        n_rows = rows.shape[0]
        # Every shuffled copy goes into one matrix, so the model is called
        # once per label rather than once per column and repeat.
        copies = [rows]
        for idx in mapping.values():
            for _ in range(repeats):
                shuffled = rows.copy()
                shuffled[:, idx] = rows[rng.permutation(n_rows)][:, idx]
                copies.append(shuffled)
        stacked = pd.DataFrame(np.concatenate(copies), columns=matrix.columns)
        probabilities = bundle.estimators[label].predict_proba(stacked)[:, 1].reshape(len(copies), n_rows)
        baseline = auroc(y[known], None, probabilities[0])
        drops: dict[str, dict[str, float]] = {}
        for c, column in enumerate(mapping):
            block = probabilities[1 + c * repeats : 1 + (c + 1) * repeats]
            scores = [baseline - auroc(y[known], None, p) for p in block]
            drops[column] = {"mean": float(np.mean(scores)), "sd": float(np.std(scores, ddof=1)) if repeats > 1 else 0.0}
        out[label] = drops
    return out


def demographic_share(
    column_values: np.ndarray,
    demographic: np.ndarray,
    n_boot: int,
    seed: int,
    confidence: float,
) -> list[dict[str, float | None]]:
    """Return, per label, the share of mean absolute attribution on demographic columns, with a CI.

    Patients are resampled with replacement to give the interval.
    """
    magnitude = np.abs(column_values)
    weights = bootstrap_weights(magnitude.shape[0], n_boot, seed)
    shares = []
    for k in range(magnitude.shape[2]):
        per_patient_total = magnitude[:, :, k].sum(axis=1)
        per_patient_demo = magnitude[:, demographic, k].sum(axis=1)
        total = per_patient_total.sum()
        share = per_patient_demo.sum() / total if total > 0 else float("nan")
        with np.errstate(divide="ignore", invalid="ignore"):
            replicates = (weights @ per_patient_demo) / (weights @ per_patient_total)
        low, high = interval(replicates, confidence)
        shares.append({"share": float(share) if np.isfinite(share) else None, "low": low, "high": high})
    return shares


def group_attributions(
    column_values: np.ndarray,
    columns: list[str],
    labels: list[str],
    plans: Mapping[str, AttributeGroups],
    rows: np.ndarray,
    minimum: int,
    top: int,
) -> dict[str, Any]:
    """Compare attributions between the groups of each attribute.

    For each reportable group with at least ``minimum`` patients in the
    explained sample: the mean total absolute attribution (log-odds), its
    three most important columns and the Spearman correlation of its column
    ranking with the whole sample's. A low correlation means the model leans
    on different columns for that group.

    A group's ``n_sample`` reads 'suppressed' where subtracting it from the
    sample size, from other groups' or from the group's size would give away
    a count of fewer than ``minimum`` patients, such as the sampled patients
    of the groups left out. The sampled patients are treated as the included
    patients of :func:`hivcomorb.audit.groups.hidden_sizes`, so a shown
    group's count of patients outside the sample is not protected.
    """
    result: dict[str, Any] = {}
    if not plans:
        return result
    magnitude = np.abs(column_values)
    overall = magnitude.mean(axis=0)
    sampled = np.zeros(len(next(iter(plans.values())).values), dtype=bool)
    sampled[rows] = True
    hidden = hidden_sizes(plans, sampled, minimum, description="patients in the explained sample")
    for attribute, plan in plans.items():
        values = plan.values.to_numpy(dtype=object)[rows]
        groups: dict[str, Any] = {}
        too_small = 0
        for group in plan.reportable:
            members = values == group
            if count_status(int(members.sum()), minimum) != OK:
                too_small += 1
                continue
            mean_abs = magnitude[members].mean(axis=0)
            per_label = {}
            for k, label in enumerate(labels):
                order = np.argsort(-mean_abs[:, k])[:top]
                if np.ptp(mean_abs[:, k]) > 0 and np.ptp(overall[:, k]) > 0:
                    rho = float(spearmanr(mean_abs[:, k], overall[:, k]).statistic)
                else:
                    rho = None
                per_label[label] = {
                    "mean_abs_total": float(mean_abs[:, k].sum()),
                    "top_columns": [columns[i] for i in order[:3]],
                    "rank_correlation": rho,
                }
            n_sample = SUPPRESSED if (attribute, group) in hidden else int(members.sum())
            groups[group] = {"n_sample": n_sample, "labels": per_label}
        result[attribute] = {"groups": groups, "too_few_in_sample": too_small}
    return result


def explain_setting(
    bundle: ModelBundle,
    cohort: pd.DataFrame,
    labels: pd.DataFrame,
    contract: Contract,
    plans: Mapping[str, AttributeGroups],
    config: Mapping[str, Any],
    minimum: int,
    seed: int,
) -> SettingExplanation:
    """Explain one setting's champion on a seeded sample of the cohort.

    Returns
    -------
    SettingExplanation
        ``summary`` contains the JSON part: explainer per label, global
        importance (mean absolute SHAP, log-odds) and permutation importance
        per column, demographic share and the comparison between groups.
    """
    rng = np.random.default_rng(seed)
    kinds = {label: explainer_kind(bundle.estimators[label]) for label in bundle.labels}
    calibrated = [label for label in bundle.labels if unwrap(bundle.estimators[label])[1]]
    size_key = "audit.explain.agnostic_sample" if AGNOSTIC in kinds.values() else "audit.explain.shap_sample"
    size = min(int(nested_get(config, size_key, 500)), len(cohort))
    rows = np.sort(rng.choice(len(cohort), size=size, replace=False))
    sample = cohort.iloc[rows]
    matrix = bundle.features(sample, contract)
    background_size = min(int(nested_get(config, "audit.explain.agnostic_background", 50)), size)
    background = matrix.to_numpy(dtype=np.float64)[rng.choice(size, size=background_size, replace=False)]

    logger.info("Explaining the %s setting (%s) on %d patients", bundle.setting, bundle.model_name, size)
    values = attributions(bundle, matrix, background=background, seed=seed)
    mapping = column_map(bundle, contract)
    columns = list(mapping)
    per_column = by_column(values, mapping)
    roles = {c: contract.column(c).role for c in columns}

    mean_abs = np.abs(per_column).mean(axis=0)
    repeats = int(nested_get(config, "audit.explain.permutation_repeats", 5))
    permutation = permutation_importance(bundle, matrix, labels.iloc[rows], mapping, repeats, seed)
    demographic = np.array([roles[c] == "demographic" for c in columns])
    n_boot = int(nested_get(config, "audit.bootstrap", 1000))
    confidence = float(nested_get(config, "audit.confidence", 0.95))
    shares = demographic_share(per_column, demographic, n_boot, seed, confidence) if demographic.any() else None

    importance = {}
    for k, label in enumerate(bundle.labels):
        order = np.argsort(-mean_abs[:, k])
        importance[label] = [
            {
                "column": columns[i],
                "role": roles[columns[i]],
                "mean_abs_shap": float(mean_abs[i, k]),
                "permutation_auroc_drop": permutation.get(label, {}).get(columns[i], {}).get("mean"),
                "permutation_auroc_drop_sd": permutation.get(label, {}).get(columns[i], {}).get("sd"),
            }
            for i in order
        ]
    top = int(nested_get(config, "audit.explain.top_features", 8))
    summary = {
        "model": bundle.model_name,
        "n_patients": size,
        "units": "log-odds",
        "explainers": kinds,
        "explained_before_calibration": calibrated,
        "importance": importance,
        "demographic_share": (
            {label: shares[k] for k, label in enumerate(bundle.labels)} if shares is not None else None
        ),
        "groups": group_attributions(per_column, columns, bundle.labels, plans, rows, minimum, top),
    }
    column_values = pd.DataFrame(
        {c: sample[c].to_numpy() if c in sample.columns else np.nan for c in columns}, index=range(size)
    )
    return SettingExplanation(
        setting=bundle.setting,
        labels=list(bundle.labels),
        columns=columns,
        roles=roles,
        values=per_column,
        column_values=column_values,
        rows=rows,
        summary=summary,
    )
