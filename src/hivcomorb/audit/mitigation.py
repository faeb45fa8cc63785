"""Post-processing mitigations, fitted on part of the out-of-fold predictions.

Two candidates are compared with the unmitigated baseline on held-out
predictions:

* fairlearn's ThresholdOptimizer (equalized odds by default), which may raise
  or lower any group's thresholds and randomises between two thresholds;
* level-up, which lowers a group's threshold only when its sensitivity trails
  the reference group's, within a budget of extra false positives. A lower
  threshold can only turn negative predictions into positive ones, so on any
  data no group's sensitivity falls, and groups that are not levelled up keep
  exactly their baseline predictions.
"""

from __future__ import annotations

import logging
import warnings
from typing import Any, Mapping

import numpy as np
from fairlearn.postprocessing import ThresholdOptimizer
from sklearn.base import BaseEstimator

from hivcomorb.audit.fairness import SettingPredictions
from hivcomorb.audit.groups import OK, SUPPRESSED, AttributeGroups, count_status
from hivcomorb.config import nested_get

logger = logging.getLogger(__name__)

BASELINE = "baseline"
THRESHOLD_OPTIMIZER = "threshold_optimizer"
LEVEL_UP = "level_up"
CANDIDATE_TITLES = {BASELINE: "baseline", THRESHOLD_OPTIMIZER: "ThresholdOptimizer", LEVEL_UP: "level-up"}

# Internal name of the pooled small groups; it never reaches an output.
_POOLED = "\x00pooled"


class _ScoreColumn(BaseEstimator):
    """A fitted 'model' whose prediction is the score in the first column, for ThresholdOptimizer."""

    def fit(self, X, y=None):
        self.fitted_ = True
        return self

    def predict(self, X):
        return np.asarray(X, dtype=np.float64)[:, 0]


def split_rows(n_rows: int, fit_fraction: float, seed: int) -> np.ndarray:
    """Return a boolean mask of the rows that fit the candidates; the rest are held out."""
    if not 0.0 < fit_fraction < 1.0:
        raise ValueError(f"audit.mitigation.fit_fraction must be between 0 and 1, got {fit_fraction}")
    rng = np.random.default_rng(seed)
    mask = np.zeros(n_rows, dtype=bool)
    mask[rng.permutation(n_rows)[: int(round(fit_fraction * n_rows))]] = True
    return mask


def _rate(numerator_mask: np.ndarray, denominator_mask: np.ndarray) -> float:
    count = denominator_mask.sum()
    return float((numerator_mask & denominator_mask).sum() / count) if count else float("nan")


def level_up_offsets(
    margins: np.ndarray,
    y: np.ndarray,
    groups: np.ndarray,
    reference: str,
    reportable: list[str],
    max_fpr_increase: float,
    tolerance: float,
    minimum: int,
) -> dict[str, dict[str, Any]]:
    """Choose how far to lower each trailing group's threshold.

    Parameters
    ----------
    margins : ndarray
        Probability minus the row's baseline threshold; a row is predicted
        positive when its margin is at least minus the group's offset.
    y : ndarray of 0/1
        Known labels of the fitting rows.
    groups : ndarray of str
    reference : str
        Group whose sensitivity the others are raised towards.
    reportable : list of str
        Groups that may be adjusted; others keep offset 0.
    max_fpr_increase : float
        Largest rise of a group's false-positive rate that its offset may cause.
    tolerance : float
        A group is adjusted only when it trails the reference by more than this.
    minimum : int
        A group needs this many positives and negatives to be adjusted.

    Returns
    -------
    dict
        Group to ``offset`` (probability units, never negative), the fitting
        sensitivity before and after, and whether parity was reached.
    """
    positive = y == 1
    reference_tpr = _rate(margins >= 0, positive & (groups == reference))
    plan: dict[str, dict[str, Any]] = {}
    for group in reportable:
        members = groups == group
        pos = np.sort(margins[members & positive])[::-1]
        neg = np.sort(margins[members & ~positive])[::-1]
        entry: dict[str, Any] = {"offset": 0.0, "reached_reference": None}
        if group == reference or pos.size < minimum or neg.size < minimum or not np.isfinite(reference_tpr):
            plan[group] = entry
            continue
        tpr_before = float((pos >= 0).mean())
        entry["fit_tpr_before"] = tpr_before
        if tpr_before >= reference_tpr - tolerance:
            entry["reached_reference"] = True
            entry["fit_tpr_after"] = tpr_before
            plan[group] = entry
            continue
        needed = int(np.ceil(reference_tpr * pos.size - 1e-9))
        target_offset = max(0.0, -float(pos[needed - 1])) if needed > 0 else 0.0
        # The largest offset whose extra false positives fit the budget: the
        # negatives admitted are those with margin >= -offset.
        allowed = int((neg >= 0).sum() + np.floor(max_fpr_increase * neg.size + 1e-9))
        if allowed < neg.size:
            next_negative = float(neg[allowed])
            budget_offset = max(0.0, -next_negative)
            # Stop just short of admitting that negative.
            budget_offset = np.nextafter(budget_offset, 0.0) if budget_offset > 0 else 0.0
        else:
            budget_offset = np.inf
        offset = float(min(target_offset, budget_offset))
        entry["offset"] = offset
        entry["fit_tpr_after"] = float((pos >= -offset).mean())
        entry["reached_reference"] = bool(entry["fit_tpr_after"] >= reference_tpr - tolerance)
        plan[group] = entry
    return plan


def _evaluate(
    decisions: np.ndarray,
    baseline: np.ndarray,
    y: np.ndarray,
    groups: np.ndarray,
    reportable: list[str],
    reference: str,
    minimum: int,
) -> dict[str, Any]:
    """Score one candidate's held-out decisions overall and per reportable group.

    ``tpr_shortfall`` is how far the worst group's sensitivity falls below the
    reference group's (0 when none does): the disparity that raising the
    worse-served groups is meant to remove. ``tpr_gap`` is the spread between
    the best and the worst group.
    """
    positive = y == 1
    negative = ~positive
    predicted = decisions == 1
    sensitivity = _rate(predicted, positive)
    specificity = 1.0 - _rate(predicted, negative)
    per_group: dict[str, Any] = {}
    tprs, fprs, lowered = [], [], 0
    for group in reportable:
        members = groups == group
        status_tpr = count_status(int((members & positive).sum()), minimum)
        status_fpr = count_status(int((members & negative).sum()), minimum)
        cell: dict[str, Any] = {"tpr_status": status_tpr, "fpr_status": status_fpr}
        if status_tpr == OK:
            tpr = _rate(predicted, members & positive)
            cell["tpr"] = tpr
            tprs.append(tpr)
            if tpr < _rate(baseline == 1, members & positive) - 1e-12:
                lowered += 1
        if status_fpr == OK:
            fpr = _rate(predicted, members & negative)
            cell["fpr"] = fpr
            fprs.append(fpr)
        per_group[group] = cell
    tpr_gap = float(max(tprs) - min(tprs)) if len(tprs) >= 2 else None
    reference_tpr = per_group.get(reference, {}).get("tpr")
    tpr_shortfall = float(max(0.0, reference_tpr - min(tprs))) if reference_tpr is not None and len(tprs) >= 2 else None
    fpr_gap = float(max(fprs) - min(fprs)) if len(fprs) >= 2 else None
    gaps = [g for g in (tpr_gap, fpr_gap) if g is not None]
    return {
        "status": OK,
        "balanced_accuracy": float((sensitivity + specificity) / 2.0) if np.isfinite(sensitivity + specificity) else None,
        "sensitivity": sensitivity if np.isfinite(sensitivity) else None,
        "fpr": 1.0 - specificity if np.isfinite(specificity) else None,
        "tpr_shortfall": tpr_shortfall,
        "tpr_gap": tpr_gap,
        "equalized_odds_gap": max(gaps) if gaps else None,
        "groups_with_lower_tpr": lowered,
        "groups": per_group,
    }


def _optimizer_groups(groups: np.ndarray, y: np.ndarray, reportable: list[str], reference: str) -> np.ndarray:
    """Pool the small groups, and merge any group lacking a class into the reference group."""
    mapped = np.where(np.isin(groups, reportable), groups, _POOLED).astype(object)
    for group in np.unique(mapped):
        members = mapped == group
        if y[members].min() == y[members].max():
            mapped[members] = reference
    return mapped


def mitigate_label(
    scores: np.ndarray,
    decisions: np.ndarray,
    margins: np.ndarray,
    y: np.ndarray,
    groups: np.ndarray,
    fit: np.ndarray,
    plan: AttributeGroups,
    config: Mapping[str, Any],
    minimum: int,
    seed: int,
) -> dict[str, Any]:
    """Fit the candidates for one label and attribute and score them on the held-out rows.

    All arrays hold the rows with a known label and a prediction; ``fit``
    marks the rows that fit the candidates.
    """
    hold = ~fit
    reportable = plan.reportable
    reference = plan.reference
    baseline_hold = decisions[hold]
    out: dict[str, Any] = {BASELINE: _evaluate(baseline_hold, baseline_hold, y[hold], groups[hold], reportable, reference, minimum)}

    if nested_get(config, "audit.mitigation.threshold_optimizer.enabled", True):
        options = nested_get(config, "audit.mitigation.threshold_optimizer", {}) or {}
        fit_groups = _optimizer_groups(groups[fit], y[fit], reportable, reference)
        hold_groups = np.where(np.isin(groups[hold], reportable), groups[hold], _POOLED).astype(object)
        hold_groups = np.where(np.isin(hold_groups, np.unique(fit_groups)), hold_groups, reference).astype(object)
        optimizer = ThresholdOptimizer(
            estimator=_ScoreColumn().fit(None),
            constraints=str(options.get("constraints", "equalized_odds")),
            objective=str(options.get("objective", "balanced_accuracy_score")),
            grid_size=int(options.get("grid_size", 1000)),
            prefit=True,
            predict_method="predict",
        )
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                optimizer.fit(scores[fit, None], y[fit], sensitive_features=fit_groups)
                mitigated = optimizer.predict(scores[hold, None], sensitive_features=hold_groups, random_state=seed)
            out[THRESHOLD_OPTIMIZER] = _evaluate(np.asarray(mitigated), baseline_hold, y[hold], groups[hold], reportable, reference, minimum)
        except (ValueError, KeyError) as exc:
            logger.warning("ThresholdOptimizer could not be fitted for attribute %s: %s", plan.attribute, type(exc).__name__)
            out[THRESHOLD_OPTIMIZER] = {"status": "failed", "reason": f"fairlearn raised {type(exc).__name__}"}

    if nested_get(config, "audit.mitigation.level_up.enabled", True):
        offsets = level_up_offsets(
            margins[fit],
            y[fit],
            groups[fit],
            reference,
            reportable,
            float(nested_get(config, "audit.mitigation.level_up.max_fpr_increase", 0.05)),
            float(nested_get(config, "audit.mitigation.level_up.tolerance", 0.0)),
            minimum,
        )
        offset_of_row = np.array([offsets.get(g, {}).get("offset", 0.0) for g in groups[hold]], dtype=np.float64)
        levelled = (margins[hold] >= -offset_of_row).astype(np.float64)
        result = _evaluate(levelled, baseline_hold, y[hold], groups[hold], reportable, reference, minimum)
        result["offsets"] = offsets
        out[LEVEL_UP] = result
    return out


def pareto_front(points: list[tuple[float, float]]) -> list[bool]:
    """Mark the points that no other point beats: lower disparity (x) and higher utility (y)."""
    marks = []
    for i, (x_i, y_i) in enumerate(points):
        dominated = any(
            (x_j <= x_i and y_j >= y_i) and (x_j < x_i or y_j > y_i) for j, (x_j, y_j) in enumerate(points) if j != i
        )
        marks.append(not dominated)
    return marks


def mitigation_audit(
    plans: Mapping[str, AttributeGroups],
    labels_frame,
    predictions: Mapping[str, SettingPredictions],
    config: Mapping[str, Any],
    minimum: int,
    seed: int,
) -> dict[str, Any]:
    """Fit and compare the mitigation candidates for every setting, label and configured attribute.

    Returns
    -------
    dict
        ``results[setting][label][attribute][candidate]`` contains held-out
        figures: balanced accuracy, sensitivity, false-positive rate,
        sensitivity shortfall below the reference, sensitivity gap,
        equalized-odds gap, per-group rates and the number of groups whose
        sensitivity fell. ``overview`` contains the mean of each candidate
        over labels and attributes and its Pareto mark (lower shortfall and
        higher balanced accuracy are better).
    """
    if not nested_get(config, "audit.mitigation.enabled", True):
        return {"enabled": False}
    attributes = [a for a in nested_get(config, "audit.mitigation.attributes", []) or [] if a in plans and plans[a].reference]
    fraction = float(nested_get(config, "audit.mitigation.fit_fraction", 0.5))
    fit_all = split_rows(len(labels_frame), fraction, seed)
    results: dict[str, Any] = {}
    for setting, preds in predictions.items():
        per_label: dict[str, Any] = {}
        for label, scores_all in preds.scores.items():
            y_all = labels_frame[label].to_numpy(dtype=np.float64)
            decisions_all = preds.decisions[label]
            known = np.isfinite(y_all) & np.isfinite(scores_all) & np.isfinite(preds.thresholds[label])
            if known.sum() == 0 or y_all[known].min() == y_all[known].max():
                continue
            margins = scores_all - preds.thresholds[label]
            per_attribute = {}
            for attribute in attributes:
                plan = plans[attribute]
                groups = plan.values.to_numpy(dtype=object)
                per_attribute[attribute] = mitigate_label(
                    scores_all[known],
                    decisions_all[known],
                    margins[known],
                    y_all[known].astype(int),
                    groups[known],
                    fit_all[known],
                    plan,
                    config,
                    minimum,
                    seed,
                )
            per_label[label] = per_attribute
        results[setting] = per_label
    overview = _overview(results)
    return {
        "enabled": True,
        "attributes": attributes,
        "fit_fraction": fraction,
        "utility": "balanced accuracy on held-out predictions",
        "disparity": "largest shortfall of a reportable group's sensitivity below the reference group's, on held-out predictions",
        "results": results,
        "overview": overview,
    }


def _overview(results: Mapping[str, Any]) -> list[dict[str, Any]]:
    points = []
    for setting, per_label in results.items():
        for candidate in (BASELINE, THRESHOLD_OPTIMIZER, LEVEL_UP):
            utility, disparity, lowered, found = [], [], 0, False
            for per_attribute in per_label.values():
                for candidates in per_attribute.values():
                    entry = candidates.get(candidate)
                    if not entry or entry.get("status") != OK:
                        continue
                    found = True
                    lowered += entry["groups_with_lower_tpr"]
                    if entry["balanced_accuracy"] is not None and entry["tpr_shortfall"] is not None:
                        utility.append(entry["balanced_accuracy"])
                        disparity.append(entry["tpr_shortfall"])
            if found and utility:
                points.append(
                    {
                        "setting": setting,
                        "candidate": candidate,
                        "balanced_accuracy": float(np.mean(utility)),
                        "tpr_shortfall": float(np.mean(disparity)),
                        "groups_with_lower_tpr": lowered,
                        "n_comparisons": len(utility),
                    }
                )
    marks = pareto_front([(p["tpr_shortfall"], p["balanced_accuracy"]) for p in points])
    for point, mark in zip(points, marks):
        point["pareto"] = mark
    return points
