"""HTML sections of the audit for the auditor's report.

Built only from ``audit/audit.json`` and the figures beside it, so the report
shows exactly what the audit recorded. Suppressed groups are absent from the
JSON and therefore from every table here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from hivcomorb import htmlkit
from hivcomorb.audit.fairness import AMBER, GREEN, NOT_ASSESSED, RED, difference_size
from hivcomorb.audit.groups import WITHHELD
from hivcomorb.audit.figures import label_title
from hivcomorb.audit.metrics import METRIC_TITLES, METRICS
from hivcomorb.audit.mitigation import CANDIDATE_TITLES

FLAG_STYLES = {
    RED: "background:#f4c7c3;color:#7a1010",
    AMBER: "background:#fde9b6;color:#6b4a00",
    GREEN: "background:#d4ecd5;color:#1d4d20",
    NOT_ASSESSED: "color:#666666",
}
FLAG_ORDER = {RED: 0, AMBER: 1, GREEN: 2, NOT_ASSESSED: 3}


def flag_badge(flag: str, text: str | None = None) -> htmlkit.Raw:
    """Return a coloured cell that also spells out the flag, for readers without colour."""
    content = htmlkit.escape(text if text is not None else flag)
    label = "" if text is None else f" ({htmlkit.escape(flag)})"
    return htmlkit.Raw(f'<span class="flag flag-{flag.replace(" ", "-")}" style="{FLAG_STYLES[flag]};padding:0 4px">{content}{label}</span>')


def _figures(audit: Mapping[str, Any], folder: Path, section: str, run_id: str | None) -> str:
    parts = []
    for entry in audit.get("figures", []):
        path = folder / entry["file"]
        if entry["section"] == section and path.is_file():
            parts.append(htmlkit.figure(path, entry["caption"], run_id))
    return "\n".join(parts)


def _metric_text(cell: Mapping[str, Any]) -> str:
    status = cell.get("status")
    if status == WITHHELD:
        return _withheld_text(cell.get("low"), cell.get("high"))
    if status != "ok":
        return str(status)
    return htmlkit.fmt_ci(cell.get("value"), cell.get("low"), cell.get("high"), digits=2)


def _withheld_text(low: Any, high: Any) -> str:
    """Return 'withheld' with the interval that is kept in place of a withheld estimate."""
    if low is None or high is None:
        return WITHHELD
    return f"{WITHHELD} [{htmlkit.fmt(low, 2)}, {htmlkit.fmt(high, 2)}]"


def _difference_text(row: Mapping[str, Any]) -> str:
    if row["difference"] is None:
        return _withheld_text(row["difference_low"], row["difference_high"])
    return htmlkit.fmt_ci(row["difference"], row["difference_low"], row["difference_high"], digits=2)


def cohort_section(audit: Mapping[str, Any]) -> str:
    """Return Table 1 by group, one table per attribute."""
    tables = audit.get("cohort_table") or {}
    if not tables:
        return htmlkit.section("audit-cohort", "Cohort by group (Table 1)", htmlkit.paragraph("No attribute was configured for Table 1."))
    minimum = audit.get("min_group_size")
    body = [
        htmlkit.paragraph(
            f"Patients of the audited cohort by group. Groups and categories with fewer than {minimum} patients are "
            f"not shown. When those left out would add up to fewer than {minimum}, the smallest of the rest is left "
            f"out too, to protect them. Cells counting fewer than {minimum} read 'suppressed'. Some larger cells read 'suppressed' too, "
            "so that no hidden count can be worked out by subtracting shown cells from a shown total, in this table, "
            "in another, or together with the group sizes and n's of the fairness audit. Lab values are in the "
            "contract's canonical units; label percentages are of the patients whose label is known."
        )
    ]
    for attribute, table in tables.items():
        rows = [[row["variable"], *row["cells"]] for row in table["rows"]]
        notes = []
        if table["suppressed_groups"]:
            notes.append(f"{table['suppressed_groups']} group(s) of {attribute} suppressed")
        if table["suppressed_rows"]:
            notes.append(f"{table['suppressed_rows']} category row(s) suppressed")
        caption = f"Table 1 by {attribute}" + (f" ({'; '.join(notes)})" if notes else "")
        body.append(htmlkit.table(["variable", *table["columns"]], rows, caption=caption, css_class="table1"))
    return htmlkit.section("audit-cohort", "Cohort by group (Table 1)", "\n".join(body))


def explanation_section(audit: Mapping[str, Any], folder: Path, run_id: str | None) -> str:
    """Return the explanation audit: importance, demographic share, group comparison and figures."""
    explanations = audit.get("explanations") or {}
    body = [
        htmlkit.paragraph(
            "SHAP values show how much each column moved a patient's predicted log-odds; the mean absolute value "
            "over patients ranks columns globally. Indicator columns of a category are summed into the category "
            "column. Permutation importance, the fall in AUROC when a column is shuffled, is shown beside it; both "
            "are measured on a sample of the cohort that the final model was trained on, so they describe what the "
            "model relies on, not how well it generalises. A group's patients in the sample read 'suppressed' by "
            "the same rule as the n of the fairness audit, with the patients outside the sample as those left out."
        )
    ]
    for setting, result in explanations.items():
        if result.get("status") != "ok":
            body.append(htmlkit.paragraph(f"{setting} setting: not explained ({result.get('reason', 'no model')})."))
            continue
        top = audit.get("top_features", 5)
        rows = []
        for label, items in result["importance"].items():
            listed = ", ".join(f"{i['column']} {i['mean_abs_shap']:.2f}" for i in items[:top])
            perm = sorted(items, key=lambda i: -(i["permutation_auroc_drop"] or 0.0))[:3]
            perm_text = ", ".join(f"{i['column']} {i['permutation_auroc_drop']:.3f}" for i in perm if i["permutation_auroc_drop"] is not None)
            explainer = result["explainers"].get(label, "")
            rows.append([label_title(label), explainer, listed, perm_text or "undefined"])
        body.append(
            htmlkit.table(
                ["label", "explainer", f"top {top} columns, mean |SHAP| (log-odds)", "top 3 by permutation (AUROC drop)"],
                rows,
                caption=f"{setting} setting ({result['model']}, {result['n_patients']} patients explained)",
            )
        )
        share = result.get("demographic_share")
        if share:
            body.append(
                htmlkit.table(
                    ["label", "share of attribution on demographic columns [95% CI]"],
                    [[label_title(l), htmlkit.fmt_ci(s["share"], s["low"], s["high"], digits=3)] for l, s in share.items()],
                    caption=f"Demographic share of attribution, {setting} setting",
                )
            )
        group_rows = []
        for attribute, info in result["groups"].items():
            for group, entry in info["groups"].items():
                correlations = [v["rank_correlation"] for v in entry["labels"].values() if v["rank_correlation"] is not None]
                lowest = min(entry["labels"].items(), key=lambda kv: kv[1]["rank_correlation"] if kv[1]["rank_correlation"] is not None else 2.0)
                group_rows.append(
                    [
                        attribute,
                        group,
                        entry["n_sample"],
                        sum(v["mean_abs_total"] for v in entry["labels"].values()) / max(len(entry["labels"]), 1),
                        min(correlations) if correlations else None,
                        f"{label_title(lowest[0])}: {', '.join(lowest[1]['top_columns'])}",
                    ]
                )
        if group_rows:
            body.append(
                htmlkit.table(
                    ["attribute", "group", "patients in sample", "mean total |SHAP| per label", "lowest rank correlation with all patients", "that label's top columns for the group"],
                    group_rows,
                    caption=f"Attributions by group, {setting} setting (a low rank correlation means the model leans on other columns for that group)",
                )
            )
    body.append(_figures(audit, folder, "explanations", run_id))
    return htmlkit.section("audit-explanations", "Explanation audit", "\n".join(body))


def _suppression_note(attribute: Mapping[str, Any], minimum: Any) -> str:
    """Return how many groups of one fairness attribute are suppressed and why, or '' when none are."""
    suppressed = int(attribute.get("n_suppressed") or 0)
    if not suppressed:
        return ""
    partners = int(attribute.get("n_partners") or 0)
    reasons = []
    if suppressed > partners:
        reasons.append(f"{suppressed - partners} with fewer than {minimum} patients")
    if partners:
        reasons.append(f"{partners} larger one(s) hidden so that smaller groups cannot be worked out by subtraction")
    return f"{suppressed} group(s) suppressed: {', and '.join(reasons)}"


def _worst(flags: list[str]) -> str:
    return min(flags, key=lambda f: FLAG_ORDER[f]) if flags else NOT_ASSESSED


def fairness_section(audit: Mapping[str, Any], folder: Path, run_id: str | None) -> str:
    """Return the fairness audit: flag counts, flag matrix, flagged disparities and group tables."""
    fairness = audit.get("fairness") or {}
    attributes = fairness.get("attributes") or {}
    thresholds = fairness.get("flag_thresholds") or {}
    threshold_text = "; ".join(f"{METRIC_TITLES.get(m, m)} amber at {v['amber']}, red at {v['red']}" for m, v in thresholds.items())
    body = [
        htmlkit.paragraph(
            "Metrics are computed on out-of-fold predictions of each setting's champion, at the threshold chosen on "
            "each training fold, and compared with the reference group of each attribute (the largest group unless "
            f"configured). Intervals are {int(100 * fairness.get('confidence', 0.95))}% bootstrap percentile intervals "
            f"over {fairness.get('bootstrap')} resamples. Traffic lights rate the absolute difference from the "
            f"reference ({fairness.get('flag_basis')} basis): {threshold_text}. 'undefined' means the metric cannot be "
            "computed for the group (for example AUROC with one class present); 'suppressed' means it rests on fewer "
            "patients than the disclosure minimum. The n of a group, its patients with a known label and a prediction, "
            "reads 'suppressed' when subtracting it from the group's size or from the total would give away a count "
            "of fewer patients than the minimum, such as another suppressed n or a count within a suppressed group. "
            "A shown group's size minus its n, the patients left out for an unknown label or a missing prediction, "
            "is not protected and may be worked out whatever it is, because it records what the data lack and "
            "nothing about the patients' health. The estimates of a group whose n is suppressed, and every "
            "difference from a reference group whose n is suppressed, read 'withheld' with only the interval, "
            "rounded to 2 decimals, because "
            "rates that share one n can give it back. A difference in selection rate partly reflects a real difference "
            "in how common the comorbidity is between groups; differences in sensitivity, false-positive rate, PPV "
            "and calibration are errors that the model makes unequally."
        )
    ]
    counts = fairness.get("flag_counts") or {}
    body.append(
        htmlkit.table(
            ["setting", "champion", "red", "amber", "green"],
            [[s, fairness.get("models", {}).get(s, ""), c[RED], c[AMBER], c[GREEN]] for s, c in counts.items()],
            caption="Traffic lights over every label, attribute, group and metric",
        )
    )
    settings = list(counts)
    labels = sorted({l for a in attributes.values() for l in a["labels"]})
    matrix_rows = []
    for label in labels:
        row: list[Any] = [label_title(label)]
        for attribute in attributes.values():
            parts = []
            for setting in settings:
                flags = [
                    values.get("flag", NOT_ASSESSED)
                    for cell in attribute["labels"].get(label, {}).get(setting, {}).values()
                    for metric, values in cell["metrics"].items()
                    if metric != "selection_rate"
                ]
                worst = _worst([f for f in flags if f != NOT_ASSESSED])
                parts.append(flag_badge(worst, setting).html)
            row.append(htmlkit.Raw(" ".join(parts)))
        matrix_rows.append(row)
    if matrix_rows:
        caption = "Worst traffic light per label and attribute in each setting, over the error-rate metrics (all but selection rate)"
        body.append(htmlkit.table(["label", *attributes], matrix_rows, caption=caption))

    # Error-rate disparities come first because selection-rate differences
    # largely follow differences in prevalence.
    flagged = sorted(
        fairness.get("flagged") or [],
        key=lambda r: (r["metric"] == "selection_rate", r["flag"] != RED, -difference_size(r)),
    )
    limit = int(audit.get("flagged_rows", 40))
    if flagged:
        rows = [
            [
                label_title(r["label"]),
                r["attribute"],
                f"{r['group']} vs {r['reference']}",
                METRIC_TITLES.get(r["metric"], r["metric"]),
                r["setting"],
                _difference_text(r),
                flag_badge(r["flag"]),
            ]
            for r in flagged[:limit]
        ]
        caption = (
            f"Flagged disparities, error-rate metrics first, then red before amber "
            f"({min(limit, len(flagged))} of {len(flagged)} shown; all are in audit.json)"
        )
        body.append(htmlkit.table(["label", "attribute", "group vs reference", "metric", "setting", "difference [95% CI]", "flag"], rows, caption=caption))
    else:
        body.append(htmlkit.paragraph("No difference reached the amber threshold."))

    for name, attribute in attributes.items():
        if not attribute["groups"]:
            body.append(htmlkit.paragraph(f"{name}: no group reaches the disclosure minimum; not audited."))
            continue
        rows = []
        for label, per_setting in attribute["labels"].items():
            for setting, groups in per_setting.items():
                for group, cell in groups.items():
                    row: list[Any] = [label_title(label), group + (" (reference)" if group == attribute["reference"] else ""), setting, cell["n"]]
                    for metric in METRICS:
                        values = cell["metrics"][metric]
                        flag = values.get("flag", NOT_ASSESSED)
                        row.append(flag_badge(flag, _metric_text(values)) if flag in (RED, AMBER) else _metric_text(values))
                    rows.append(row)
        note = _suppression_note(attribute, audit.get("min_group_size"))
        note = f"; {note}" if note else ""
        table = htmlkit.table(
            ["label", "group", "setting", "n", *(METRIC_TITLES[m] for m in METRICS)],
            rows,
            caption=f"{name}: reference {attribute['reference']}{note}",
        )
        body.append(f"<details><summary>All metrics by {htmlkit.escape(name)}{htmlkit.escape(note)}</summary>\n{table}\n</details>")
    body.append(_figures(audit, folder, "fairness", run_id))
    return htmlkit.section("audit-fairness", "Fairness audit", "\n".join(body))


def mitigation_section(audit: Mapping[str, Any], folder: Path, run_id: str | None) -> str:
    """Return the mitigation candidates, their overview table and the utility-vs-disparity plot."""
    mitigation = audit.get("mitigation") or {}
    if not mitigation.get("enabled"):
        return htmlkit.section("audit-mitigation", "Mitigation candidates", htmlkit.paragraph("Mitigation was switched off in the configuration."))
    body = [
        htmlkit.paragraph(
            f"Candidates were fitted on {100 * mitigation['fit_fraction']:.0f}% of the out-of-fold predictions and "
            "evaluated on the rest. ThresholdOptimizer (fairlearn) chooses per-group randomised thresholds for "
            "equalized odds and may lower a group's sensitivity. Level-up only lowers the threshold of groups whose "
            "sensitivity trails the reference group's, within a budget of extra false positives, so no group's "
            "sensitivity falls. Utility is balanced accuracy; disparity is how far the worst-served reportable "
            "group's sensitivity falls below the reference group's (audit.json also contains the spread between best "
            f"and worst group and the equalized-odds gap); attributes: {', '.join(mitigation['attributes'])}. These are candidates for the "
            "site to consider, not changes applied to the models."
        )
    ]
    rows = [
        [
            p["setting"],
            CANDIDATE_TITLES[p["candidate"]],
            p["balanced_accuracy"],
            p["tpr_shortfall"],
            p["groups_with_lower_tpr"],
            p["n_comparisons"],
            "yes" if p["pareto"] else "no",
        ]
        for p in mitigation.get("overview", [])
    ]
    body.append(
        htmlkit.table(
            ["setting", "candidate", "mean balanced accuracy", "mean sensitivity shortfall", "groups whose sensitivity fell", "label x attribute pairs", "on Pareto front"],
            rows,
            caption="Mitigation candidates on held-out predictions, averaged over labels and attributes",
        )
    )
    body.append(_figures(audit, folder, "mitigation", run_id))
    return htmlkit.section("audit-mitigation", "Mitigation candidates", "\n".join(body))


def audit_sections(audit: Mapping[str, Any], folder: Path, run_id: str | None) -> str:
    """Return every audit section, in report order."""
    parts = [
        cohort_section(audit),
        explanation_section(audit, folder, run_id),
        fairness_section(audit, folder, run_id),
        mitigation_section(audit, folder, run_id),
    ]
    suppressed = audit.get("suppressed") or {}
    if any(suppressed.values()):
        fairness_attributes = (audit.get("fairness") or {}).get("attributes") or {}
        counts = []
        for name, n in suppressed.items():
            if not n:
                continue
            partners = int((fairness_attributes.get(name) or {}).get("n_partners") or 0)
            counts.append(f"{name}: {n}" + (f" ({partners} of them hidden to protect smaller groups)" if partners else ""))
        minimum = audit.get("min_group_size")
        parts.append(
            htmlkit.paragraph(
                f"Groups suppressed, by attribute: {', '.join(counts)}. A group is suppressed when it has fewer than "
                f"{minimum} patients. A larger group is hidden too when the suppressed groups would otherwise add up "
                f"to fewer than {minimum} patients, or could be worked out exactly, by subtracting the shown groups "
                "from the cohort size or from a shown group of an intersection."
            )
        )
    return "\n".join(parts)
