"""Fairness audit: group metrics of each setting's champion, with CIs and flags.

Metrics are computed on the out-of-fold predictions of the champion of each
setting, so no patient is scored by a model that saw their label. For every
label and sensitive attribute the audit reports each reportable group's
metrics, their difference from and ratio to the reference group, 95%
bootstrap intervals, and a traffic light on the difference.

Each group's n, its patients with a known label and a prediction, is
suppressed where subtraction would give away a small protected count,
jointly over every attribute (see :func:`hivcomorb.audit.groups.hidden_sizes`).
A shown group's count of patients left out is not protected. The
estimates of a group with a suppressed n are withheld, and only their
intervals kept, rounded, because a group's rates share its n as
denominator and can give it back.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
import pandas as pd

from hivcomorb.audit.groups import (
    OK,
    SUPPRESSED,
    UNDEFINED,
    WITHHELD,
    AttributeGroups,
    count_status,
    hidden_sizes,
    intersection_sums,
    plans_frame,
)
from hivcomorb.audit.metrics import METRICS, bootstrap_weights, denominators, intervals, metric_frame, weighted_metrics_batch
from hivcomorb.config import nested_get

logger = logging.getLogger(__name__)

GREEN, AMBER, RED, NOT_ASSESSED = "green", "amber", "red", "not assessed"

# Decimals kept of an interval whose estimate is withheld, as the report prints them.
WITHHELD_DIGITS = 2


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
    withhold_value: bool = False,
    withhold_difference: bool = False,
) -> dict[str, dict[str, Any]]:
    """Return each metric's value, interval, difference and ratio from the reference, and flag.

    With ``withhold_value`` the value, difference and ratio are left out and
    the intervals rounded, and with ``withhold_difference`` the difference
    and ratio. A rate at full precision is a fraction whose denominator is
    the group's n, so this keeps a suppressed n out of the output; see
    :func:`withhold_estimates`.
    """
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
    if withhold_value or withhold_difference:
        cells = {metric: withhold_estimates(cell, withhold_value) for metric, cell in cells.items()}
    return cells


def withhold_estimates(cell: Mapping[str, Any], withhold_value: bool) -> dict[str, Any]:
    """Return a metric cell without the estimates that would give a suppressed n away.

    A rate such as the selection rate is a fraction over the group's n. At
    full precision the rates of one group often fit a single n. Rounding
    does not fix that. Take a group of 15 to 120 patients and its selection
    rate, sensitivity, false-positive rate and PPV, rounded to 2 decimals.
    In 27 of 80 simulated groups those rates fitted only one of the 10 n's
    below the group's size. The difference from the reference and the
    ratio to it give the group's value back when the reference's value is
    printed, and the reference's value when the group's is. So the estimates go, and the intervals stay, rounded to
    :data:`WITHHELD_DIGITS` decimals, with the flag. Only a cell with status
    'ok' changes, and with ``withhold_value`` its status becomes 'withheld'.

    NOTE: an interval's width still gives a rough estimate of n, which is
    not checked against the minimum.
    """
    if cell.get("status") != OK:
        return dict(cell)
    out = {key: value for key, value in cell.items() if key not in ("difference", "ratio")}
    bounds = ["difference_low", "difference_high", "ratio_low", "ratio_high"]
    if withhold_value:
        del out["value"]
        out["status"] = WITHHELD
        bounds += ["low", "high"]
    for key in bounds:
        if out.get(key) is not None:
            out[key] = round(out[key], WITHHELD_DIGITS)
    return out


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
    included: Mapping[tuple[str, str], np.ndarray],
    hidden_n: Mapping[tuple[str, str], frozenset[tuple[str, str]]],
) -> dict[str, Any]:
    """Return the metrics of every reportable group of one attribute, per label and setting.

    ``included`` gives, per ``(label, setting)``, the rows with a known label
    and a prediction, and ``hidden_n`` the ``(attribute, group)`` pairs whose
    n reads 'suppressed' (see :func:`hivcomorb.audit.groups.hidden_sizes`).
    """
    bins = int(nested_get(config, "audit.calibration_bins", 10))
    values = plan.values.to_numpy(dtype=object)
    reportable = np.isin(values, plan.reportable)
    cases = list(included)

    # Point estimates from fairlearn's MetricFrame, over reportable groups only.
    points: dict[tuple[str, str], pd.DataFrame] = {}
    for label, setting in cases:
        preds = predictions[setting]
        use = included[label, setting] & reportable
        y = labels[label].to_numpy(dtype=np.float64)
        points[label, setting] = metric_frame(y[use], preds.decisions[label][use], preds.scores[label][use], values[use], bins)

    # Bootstrap replicates: each group's weights are sliced once and every
    # label and setting of the group is evaluated in one batch.
    replicates: dict[tuple[str, str, str], dict[str, np.ndarray]] = {}
    statuses: dict[tuple[str, str, str], dict[str, str]] = {}
    sizes: dict[tuple[str, str], dict[str, int]] = {case: {} for case in cases}
    for group in plan.reportable:
        columns = np.flatnonzero(values == group)
        group_weights = np.ascontiguousarray(weights[:, columns])
        batch = []
        for label, setting in cases:
            preds = predictions[setting]
            y = labels[label].to_numpy(dtype=np.float64)[columns]
            in_group = included[label, setting][columns]
            decisions = preds.decisions[label][columns]
            counts = denominators(y[in_group], decisions[in_group])
            statuses[label, setting, group] = {m: count_status(counts[m], minimum) for m in METRICS}
            sizes[label, setting][group] = int(in_group.sum())
            batch.append((y, decisions, preds.scores[label][columns], in_group))
        for (label, setting), result in zip(cases, weighted_metrics_batch(group_weights, batch, bins)):
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
    for label, setting in cases:
        frame = points[label, setting]
        point_of = {g: frame.loc[g].to_dict() if g in frame.index else nan_point for g in plan.reportable}
        hidden = {group for attribute, group in hidden_n[label, setting] if attribute == plan.attribute}
        groups: dict[str, Any] = {}
        for group in plan.reportable:
            groups[group] = {
                "n": SUPPRESSED if group in hidden else sizes[label, setting][group],
                "metrics": _group_cells(
                    point_of[group],
                    replicates[label, setting, group],
                    statuses[label, setting, group],
                    point_of[reference],
                    replicates[label, setting, reference],
                    statuses[label, setting, reference],
                    group == reference,
                    config,
                    withhold_value=group in hidden,
                    withhold_difference=reference in hidden,
                ),
            }
        result["labels"].setdefault(label, {})[setting] = groups
    return result


def included_rows(labels: pd.DataFrame, predictions: Mapping[str, SettingPredictions]) -> dict[tuple[str, str], np.ndarray]:
    """Return, per ``(label, setting)`` with predictions, the rows with a known label and a prediction."""
    included = {}
    for label in labels.columns:
        y = labels[label].to_numpy(dtype=np.float64)
        for setting, preds in predictions.items():
            if label in preds.scores:
                included[label, setting] = np.isfinite(y) & np.isfinite(preds.scores[label]) & np.isfinite(preds.decisions[label])
    return included


def _warn_unpredicted(labels: pd.DataFrame, included: Mapping[tuple[str, str], np.ndarray]) -> None:
    """Log the labels whose known values lack a prediction, which Table 1's check of the n's assumes away."""
    for (label, setting), rows in included.items():
        missing = int(np.isfinite(labels[label].to_numpy(dtype=np.float64)).sum() - rows.sum())
        if missing:
            # NOTE: Table 1 protects the n's together with its own counts on
            # the assumption that every patient with a known label has a
            # prediction, as cross-validation over the whole cohort gives.
            logger.warning(
                "%d patient(s) with a known %s label have no %s prediction, so Table 1 does not check the fairness n's of that label",
                missing,
                label,
                setting,
            )


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
                                "difference": values.get("difference"),
                                "difference_low": values.get("difference_low"),
                                "difference_high": values.get("difference_high"),
                            }
                        )
    rows.sort(key=lambda r: (r["flag"] != RED, -difference_size(r)))
    return rows


def difference_size(row: Mapping[str, Any]) -> float:
    """Return the absolute difference of a flagged row, or 0 when it is withheld, to rank rows."""
    difference = row.get("difference")
    return 0.0 if difference is None else abs(difference)


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
        per-label, per-setting group n's and metrics, with status
        'withheld' and no value where the n is suppressed),
        ``flag_counts``, ``flagged`` (a withheld difference is None) and
        the metric settings used.
    """
    n_boot = int(nested_get(config, "audit.bootstrap", 1000))
    weights = bootstrap_weights(len(labels), n_boot, seed)
    included = included_rows(labels, predictions)
    _warn_unpredicted(labels, included)
    inside = intersection_sums(plans_frame(plans))
    hidden_n = {case: hidden_sizes(plans, rows, minimum, inside) for case, rows in included.items()}
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
        attributes[name] = audit_attribute(plan, labels, predictions, weights, minimum, config, included, hidden_n)
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
