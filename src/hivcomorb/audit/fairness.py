"""Fairness audit: group metrics of each setting's champion, with CIs and flags.

Metrics are computed on the out-of-fold predictions of the champion of each
setting, so no patient is scored by a model that saw their label. For every
label and sensitive attribute the audit reports each reportable group's
metrics, their difference from and ratio to the reference group, 95%
bootstrap intervals, and a traffic light on the difference.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
import pandas as pd

from hivcomorb.audit.groups import OK, SUPPRESSED, UNDEFINED, AttributeGroups, count_status
from hivcomorb.audit.metrics import METRICS, bootstrap_weights, denominators, intervals, metric_frame, weighted_metrics_batch
from hivcomorb.config import nested_get
from hivcomorb.disclosure import suppress_complementary

logger = logging.getLogger(__name__)

GREEN, AMBER, RED, NOT_ASSESSED = "green", "amber", "red", "not assessed"


@dataclass
class SettingPredictions:
    """Out-of-fold predictions of one setting's champion, aligned to cohort rows.

    ``scores``, ``thresholds`` and ``decisions`` map each label to an array
    with one entry per cohort row: the probability, the threshold chosen on
    that row's training fold, and 1.0/0.0 for the prediction at that
    threshold. Rows without an out-of-fold prediction are NaN.
    """

    setting: str
    model: str
    scores: dict[str, np.ndarray]
    thresholds: dict[str, np.ndarray]
    decisions: dict[str, np.ndarray]


def flag_for(metric: str, difference: float | None, low: float | None, high: float | None, config: Mapping[str, Any]) -> str:
    """Return the traffic light of a difference from the reference group.

    The thresholds come from ``audit.flags.<metric>`` (absolute differences).
    With ``audit.flag_basis: ci`` the bound of the interval nearer to zero is
    compared instead of the estimate, so only a disparity that the interval
    confirms is flagged.
    """
    if difference is None or not np.isfinite(difference):
        return NOT_ASSESSED
    limits = nested_get(config, f"audit.flags.{metric}", None)
    if not limits:
        return NOT_ASSESSED
    size = abs(difference)
    if nested_get(config, "audit.flag_basis", "point") == "ci":
        if low is None or high is None:
            return NOT_ASSESSED
        if low > 0:
            size = low
        elif high < 0:
            size = -high
        else:
            size = 0.0
    if size >= float(limits["red"]):
        return RED
    if size >= float(limits["amber"]):
        return AMBER
    return GREEN


def _optional(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None


def _group_cells(
    point: Mapping[str, float],
    replicates: Mapping[str, np.ndarray],
    status: Mapping[str, str],
    reference_point: Mapping[str, float],
    reference_replicates: Mapping[str, np.ndarray],
    reference_status: Mapping[str, str],
    is_reference: bool,
    config: Mapping[str, Any],
) -> dict[str, dict[str, Any]]:
    """Return each metric's value, interval, difference and ratio from the reference, and flag."""
    confidence = float(nested_get(config, "audit.confidence", 0.95))
    own = np.stack([replicates[m] for m in METRICS])
    ref = np.stack([reference_replicates[m] for m in METRICS])
    with np.errstate(divide="ignore", invalid="ignore"):
        low, high = intervals(np.concatenate([own, own - ref, own / ref]), confidence)
    n = len(METRICS)
    cells: dict[str, dict[str, Any]] = {}
    for i, metric in enumerate(METRICS):
        value = point[metric]
        if status[metric] != OK:
            cells[metric] = {"status": status[metric]}
            continue
        if not np.isfinite(value):
            cells[metric] = {"status": UNDEFINED}
            continue
        cell: dict[str, Any] = {"status": OK, "value": float(value), "low": _optional(low[i]), "high": _optional(high[i])}
        reference_value = reference_point[metric]
        if is_reference or reference_status[metric] != OK or not np.isfinite(reference_value):
            cell["flag"] = NOT_ASSESSED
            cells[metric] = cell
            continue
        difference = float(value - reference_value)
        has_ratio = reference_value != 0
        cell.update(
            difference=difference,
            difference_low=_optional(low[n + i]),
            difference_high=_optional(high[n + i]),
            ratio=float(value / reference_value) if has_ratio else None,
            ratio_low=_optional(low[2 * n + i]) if has_ratio else None,
            ratio_high=_optional(high[2 * n + i]) if has_ratio else None,
            flag=flag_for(metric, difference, cell_bound(low[n + i]), cell_bound(high[n + i]), config),
        )
        cells[metric] = cell
    return cells


def cell_bound(value: float) -> float | None:
    """Return a bound as a float, or None when it is undefined."""
    return _optional(value)


def audit_attribute(
    plan: AttributeGroups,
    labels: pd.DataFrame,
    predictions: Mapping[str, SettingPredictions],
    weights: np.ndarray,
    minimum: int,
    config: Mapping[str, Any],
) -> dict[str, Any]:
    """Return the metrics of every reportable group of one attribute, per label and setting."""
    bins = int(nested_get(config, "audit.calibration_bins", 10))
    values = plan.values.to_numpy(dtype=object)
    reportable = np.isin(values, plan.reportable)
    cases = [
        (label, setting, preds)
        for label in labels.columns
        for setting, preds in predictions.items()
        if label in preds.scores
    ]
    known = {}
    for label, setting, preds in cases:
        y = labels[label].to_numpy(dtype=np.float64)
        known[label, setting] = np.isfinite(y) & np.isfinite(preds.scores[label]) & np.isfinite(preds.decisions[label])

    # Point estimates from fairlearn's MetricFrame, over reportable groups only.
    points: dict[tuple[str, str], pd.DataFrame] = {}
    for label, setting, preds in cases:
        use = known[label, setting] & reportable
        y = labels[label].to_numpy(dtype=np.float64)
        points[label, setting] = metric_frame(y[use], preds.decisions[label][use], preds.scores[label][use], values[use], bins)

    # Bootstrap replicates: each group's weights are sliced once and every
    # label and setting of the group is evaluated in one batch.
    replicates: dict[tuple[str, str, str], dict[str, np.ndarray]] = {}
    statuses: dict[tuple[str, str, str], dict[str, str]] = {}
    sizes: dict[tuple[str, str], dict[str, int]] = {case[:2]: {} for case in cases}
    for group in plan.reportable:
        columns = np.flatnonzero(values == group)
        group_weights = np.ascontiguousarray(weights[:, columns])
        batch = []
        for label, setting, preds in cases:
            y = labels[label].to_numpy(dtype=np.float64)[columns]
            included = known[label, setting][columns]
            decisions = preds.decisions[label][columns]
            counts = denominators(y[included], decisions[included])
            statuses[label, setting, group] = {m: count_status(counts[m], minimum) for m in METRICS}
            sizes[label, setting][group] = int(included.sum())
            batch.append((y, decisions, preds.scores[label][columns], included))
        for (label, setting, _), result in zip(cases, weighted_metrics_batch(group_weights, batch, bins)):
            replicates[label, setting, group] = result

    result: dict[str, Any] = {
        "reference": plan.reference,
        "groups": dict(plan.counts),
        "n_suppressed": plan.n_suppressed,
        "n_partners": plan.n_partners,
        "labels": {},
    }
    reference = plan.reference
    nan_point = {m: float("nan") for m in METRICS}
    for label, setting, _ in cases:
        frame = points[label, setting]
        point_of = {g: frame.loc[g].to_dict() if g in frame.index else nan_point for g in plan.reportable}
        included = sizes[label, setting]
        # NOTE: audit.json keeps metric values at full precision, and a rate
        # such as the selection rate is a fraction with the n as denominator,
        # so a suppressed n can often be recovered from it there.
        hidden_n = suppressed_sizes(plan, included, int((known[label, setting] & ~reportable).sum()), minimum)
        groups: dict[str, Any] = {}
        for group in plan.reportable:
            groups[group] = {
                "n": SUPPRESSED if group in hidden_n else included[group],
                "metrics": _group_cells(
                    point_of[group],
                    replicates[label, setting, group],
                    statuses[label, setting, group],
                    point_of[reference],
                    replicates[label, setting, reference],
                    statuses[label, setting, reference],
                    group == reference,
                    config,
                ),
            }
        result["labels"].setdefault(label, {})[setting] = groups
    return result


def suppressed_sizes(plan: AttributeGroups, included: Mapping[str, int], included_elsewhere: int, minimum: int) -> set[str]:
    """Return the shown groups whose n of included patients must read 'suppressed'.

    An n counts the patients of a group with a known label and a prediction,
    the included patients. The cohort size, the shown group sizes and the
    number of included patients count as published: Table 1's percentages
    of known give that number away when every patient has a prediction. A
    reader can subtract along these sums:

    * the included patients are the shown groups' n plus those included in
      the suppressed groups;
    * a group's size is its n plus its patients left out;
    * the cohort's patients left out are those of every group, shown or not.

    An n from 1 to ``minimum - 1`` is suppressed, and partners with it, so
    that no suppressed n and no count from 1 to ``minimum - 1`` of patients
    left out, or included in the suppressed groups, can be worked out.

    Parameters
    ----------
    plan : AttributeGroups
        The attribute's groups.
    included : mapping
        Included patients per shown group.
    included_elsewhere : int
        Included patients in the suppressed groups together.
    minimum : int
        Disclosure minimum in patients.
    """
    cohort, total, left_out = "cohort", "included", "left out"
    elsewhere = None  # the suppressed groups together
    groups: list[str | None] = list(plan.reportable)
    size_of: dict[str | None, int] = {group: plan.counts[group] for group in plan.reportable}
    n_of: dict[str | None, int] = {group: included[group] for group in plan.reportable}
    hidden_size = len(plan.values) - sum(size_of.values())
    if hidden_size:
        groups.append(elsewhere)
        size_of[elsewhere] = hidden_size
        n_of[elsewhere] = included_elsewhere

    counts: dict[Any, int] = {cohort: len(plan.values), total: sum(n_of.values())}
    counts[left_out] = counts[cohort] - counts[total]
    for group in groups:
        counts["size", group] = size_of[group]
        counts["n", group] = n_of[group]
        counts[left_out, group] = size_of[group] - n_of[group]
    # Each group's own sum comes first, so that an n giving away its group's
    # patients left out is suppressed before partners are chosen for the totals.
    sums = [
        *((("size", group), (("n", group), (left_out, group))) for group in groups),
        (cohort, tuple(("size", group) for group in groups)),
        (total, tuple(("n", group) for group in groups)),
        (left_out, tuple((left_out, group) for group in groups)),
        (cohort, (total, left_out)),
    ]
    published = [cohort, total, *(("size", group) for group in plan.reportable)]
    implied = [left_out, *((left_out, group) for group in groups)]
    if hidden_size:
        implied += [("size", elsewhere), ("n", elsewhere)]
    result = suppress_complementary(counts, sums, minimum, published=published, implied=implied)
    if result.unresolved:
        # Such a sum relies only on published counts, as when the whole
        # cohort has 1 to ``minimum - 1`` patients left out.
        logger.warning(
            "Attribute %s: %d sum(s) of included patients reveal a small count that no further suppression can hide",
            plan.attribute,
            len(result.unresolved),
        )
    return {cell[1] for cell in result.hidden}


def flag_counts(attributes: Mapping[str, Any]) -> dict[str, dict[str, int]]:
    """Count the traffic lights of each setting over every attribute, label, group and metric."""
    counts: dict[str, dict[str, int]] = {}
    for attribute in attributes.values():
        for per_setting in attribute["labels"].values():
            for setting, groups in per_setting.items():
                tally = counts.setdefault(setting, {RED: 0, AMBER: 0, GREEN: 0})
                for cell in groups.values():
                    for metric in cell["metrics"].values():
                        flag = metric.get("flag")
                        if flag in tally:
                            tally[flag] += 1
    return counts


def flagged_cells(attributes: Mapping[str, Any]) -> list[dict[str, Any]]:
    """List every amber or red difference, worst first, with both settings side by side."""
    rows = []
    for name, attribute in attributes.items():
        for label, per_setting in attribute["labels"].items():
            settings = list(per_setting)
            for setting in settings:
                for group, cell in per_setting[setting].items():
                    for metric, values in cell["metrics"].items():
                        if values.get("flag") not in (RED, AMBER):
                            continue
                        rows.append(
                            {
                                "attribute": name,
                                "label": label,
                                "group": group,
                                "reference": attribute["reference"],
                                "metric": metric,
                                "setting": setting,
                                "flag": values["flag"],
                                "difference": values["difference"],
                                "difference_low": values.get("difference_low"),
                                "difference_high": values.get("difference_high"),
                            }
                        )
    rows.sort(key=lambda r: (r["flag"] != RED, -abs(r["difference"])))
    return rows


def fairness_audit(
    plans: Mapping[str, AttributeGroups],
    labels: pd.DataFrame,
    predictions: Mapping[str, SettingPredictions],
    minimum: int,
    config: Mapping[str, Any],
    seed: int,
) -> dict[str, Any]:
    """Run the fairness audit over every attribute, label and setting.

    Parameters
    ----------
    plans : mapping
        Attribute name to its groups, from :func:`~hivcomorb.audit.groups.plan_groups`.
    labels : DataFrame
        Cohort labels as float (1.0, 0.0, NaN for unknown), one row per cohort row.
    predictions : mapping
        Setting name to its champion's out-of-fold predictions.
    minimum : int
        Disclosure minimum in patients.
    config : mapping
    seed : int
        Seed of the bootstrap. One set of resamples serves every attribute,
        label and setting, so differences between settings are paired.

    Returns
    -------
    dict
        ``attributes`` (per attribute: reference, reportable group sizes,
        the number of suppressed groups and, of those, partners, and
        per-label, per-setting group metrics),
        ``flag_counts``, ``flagged`` and the metric settings used.
    """
    n_boot = int(nested_get(config, "audit.bootstrap", 1000))
    weights = bootstrap_weights(len(labels), n_boot, seed)
    attributes = {}
    for name, plan in plans.items():
        if plan.reference is None:
            logger.warning("Attribute %s has no group reaching the disclosure minimum; it is not audited", name)
            attributes[name] = {
                "reference": None,
                "groups": {},
                "n_suppressed": plan.n_suppressed,
                "n_partners": plan.n_partners,
                "labels": {},
            }
            continue
        attributes[name] = audit_attribute(plan, labels, predictions, weights, minimum, config)
    counts = flag_counts(attributes)
    for setting, tally in counts.items():
        logger.info("Fairness flags, %s setting: %d red, %d amber, %d green", setting, tally[RED], tally[AMBER], tally[GREEN])
    return {
        "metrics": list(METRICS),
        "bootstrap": n_boot,
        "confidence": float(nested_get(config, "audit.confidence", 0.95)),
        "flag_basis": nested_get(config, "audit.flag_basis", "point"),
        "flag_thresholds": nested_get(config, "audit.flags", {}),
        "models": {s: p.model for s, p in predictions.items()},
        "attributes": attributes,
        "flag_counts": counts,
        "flagged": flagged_cells(attributes),
    }
