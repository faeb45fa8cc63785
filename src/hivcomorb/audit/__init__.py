"""The ``audit`` stage: explanation and fairness audits of the champion models.

Reads the canonical cohort, the out-of-fold predictions and the champion
bundles of both settings, and writes ``audit/audit.json`` and
``audit/figures/*.png``:

* ``cohort_table``: Table 1 by group;
* ``explanations``: SHAP and permutation importance per setting and label,
  the share of attribution on demographic columns and the comparison of
  attributions between groups;
* ``fairness``: group metrics with bootstrap intervals, differences from the
  reference group and traffic lights, for both settings;
* ``mitigation``: ThresholdOptimizer and level-up candidates on held-out
  predictions, with their Pareto front;
* ``suppressed``: the number of groups per attribute below the disclosure
  minimum, which appear in no output;
* ``summary``: plain sentences for the report's executive summary.
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from hivcomorb.audit.cohort_table import cohort_tables
from hivcomorb.audit.explain import explain_setting
from hivcomorb.audit.fairness import fairness_audit
from hivcomorb.audit.groups import plan_groups, sensitive_frame
from hivcomorb.audit.inputs import load_bundle, load_cohort, load_predictions, read_audit
from hivcomorb.audit.mitigation import mitigation_audit
from hivcomorb.audit.shap_adapter import attributions
from hivcomorb.audit.summary import summary_sentences
from hivcomorb.config import nested_get
from hivcomorb.context import RunContext
from hivcomorb.disclosure import min_group_size
from hivcomorb.features import label_matrix
from hivcomorb.files import write_json_atomic

__all__ = ["attributions", "register_cli", "report_section", "run"]

logger = logging.getLogger(__name__)

STAGE = "audit"


def _figures(ctx: RunContext, folder: Path, explanations: dict, fairness: dict, mitigation: dict) -> list[dict[str, str]]:
    from hivcomorb.audit import figures

    top = int(nested_get(ctx.config, "audit.explain.top_features", 8))
    entries: list[dict[str, str]] = []

    def add(path: Path | None, section: str, caption: str) -> None:
        if path is not None:
            entries.append({"file": path.name, "section": section, "caption": caption})

    for setting, explanation in explanations.items():
        add(
            figures.importance_heatmap(explanation, 15, folder / f"importance_{setting}.png"),
            "explanations",
            f"Mean absolute SHAP value (log-odds) of the 15 most important columns, {setting} setting.",
        )
        add(
            figures.beeswarm_grid(explanation, top, folder / f"beeswarm_{setting}.png"),
            "explanations",
            f"SHAP beeswarm of the top labs per label, {setting} setting; each dot is one patient.",
        )
        add(
            figures.dependence_grid(explanation, int(nested_get(ctx.config, "audit.explain.dependence_labs", 4)), folder / f"dependence_{setting}.png"),
            "explanations",
            f"SHAP dependence of the most important labs, {setting} setting.",
        )
    for attribute, result in fairness["attributes"].items():
        add(
            figures.fairness_forest(attribute, result, "tpr", folder / f"tpr_{figures.sanitise(attribute)}.png"),
            "fairness",
            f"Sensitivity by {attribute} with 95% bootstrap intervals, both settings.",
        )
    if mitigation.get("enabled"):
        add(
            figures.utility_disparity(mitigation, folder / "mitigation_pareto.png"),
            "mitigation",
            "Balanced accuracy against the worst group's sensitivity shortfall below the reference group, for every "
            "mitigation candidate on held-out predictions.",
        )
    return entries


def _log_to_mlflow(stage_dir: Path, audit: dict[str, Any]) -> None:
    import mlflow

    from hivcomorb import tracking

    if mlflow.active_run() is None:
        return
    tracking.log_params({"audit": audit["settings"]})
    metrics: dict[str, Any] = {
        "flags": audit["fairness"]["flag_counts"],
        "suppressed_groups": audit["suppressed"],
    }
    for setting, result in audit["explanations"].items():
        if result.get("status") == "ok" and result.get("demographic_share"):
            metrics.setdefault("demographic_share", {})[setting] = {l: s["share"] for l, s in result["demographic_share"].items()}
    for point in audit["mitigation"].get("overview", []):
        metrics.setdefault("mitigation", {}).setdefault(point["setting"], {})[point["candidate"]] = {
            "balanced_accuracy": point["balanced_accuracy"],
            "tpr_shortfall": point["tpr_shortfall"],
            "groups_with_lower_tpr": point["groups_with_lower_tpr"],
        }
    tracking.log_metrics(metrics, prefix="audit")
    mlflow.log_artifact(str(stage_dir / "audit.json"), artifact_path="audit")
    mlflow.log_artifacts(str(stage_dir / "figures"), artifact_path="audit/figures")


def run(ctx: RunContext) -> dict[str, Any]:
    """Run the explanation and fairness audits and write ``audit/audit.json`` and its figures.

    Returns
    -------
    dict
        Counts only: attributes audited, suppressed groups, traffic lights per
        setting and figures written.
    """
    started = time.perf_counter()
    config = ctx.config
    minimum = min_group_size(config)
    stage_dir = ctx.stage_dir(STAGE)
    figures_dir = stage_dir / "figures"
    if figures_dir.is_dir():
        shutil.rmtree(figures_dir)
    figures_dir.mkdir(parents=True)

    cohort = load_cohort(ctx)
    labels = [l for l in ctx.contract.labels if l in cohort.columns]
    absent_labels = [l for l in ctx.contract.labels if l not in cohort.columns]
    if absent_labels:
        logger.info("Labels absent from the cohort, not audited: %s", absent_labels)
    label_frame = label_matrix(cohort, labels)
    plans = plan_groups(sensitive_frame(cohort, config), minimum, nested_get(config, "audit.reference", {}) or {})
    logger.info("Audit of %d patients over %d sensitive attributes", len(cohort), len(plans))

    predictions = load_predictions(ctx, len(cohort), labels, int(nested_get(config, "audit.oof_repeat", 0)))
    fairness = fairness_audit(plans, label_frame, predictions, minimum, config, ctx.seed)
    mitigation = mitigation_audit(plans, label_frame, predictions, config, minimum, ctx.seed)

    explanations: dict[str, Any] = {}
    explained = {}
    for setting in predictions:
        bundle = load_bundle(ctx, setting)
        if bundle is None:
            explanations[setting] = {"status": "skipped", "reason": "no model bundle was written by training"}
            continue
        explanation = explain_setting(bundle, cohort, label_frame, ctx.contract, plans, config, minimum, ctx.seed)
        explained[setting] = explanation
        explanations[setting] = {"status": "ok", **explanation.summary}

    audit: dict[str, Any] = {
        "min_group_size": minimum,
        "n_patients": len(cohort),
        "labels": labels,
        "labels_absent": absent_labels,
        "attributes": list(plans),
        "top_features": int(nested_get(config, "audit.explain.top_features", 8)),
        "settings": nested_get(config, "audit", {}),
        "cohort_table": cohort_tables(cohort, ctx.contract, plans, config, minimum),
        "explanations": explanations,
        "fairness": fairness,
        "mitigation": mitigation,
        "suppressed": {name: plan.n_suppressed for name, plan in plans.items()},
    }
    audit["figures"] = _figures(ctx, figures_dir, explained, fairness, mitigation)
    audit["summary"] = summary_sentences(audit, minimum)
    write_json_atomic(stage_dir / "audit.json", audit)
    _log_to_mlflow(stage_dir, audit)

    elapsed = time.perf_counter() - started
    logger.info("Audit written to %s in %.1f s", stage_dir, elapsed)
    return {
        "attributes": len(plans),
        "suppressed_groups": int(np.sum(list(audit["suppressed"].values()))),
        "flags": fairness["flag_counts"],
        "figures": len(audit["figures"]),
    }


def report_section(ctx: RunContext) -> str:
    """Return the HTML of the audit sections: Table 1, explanations, fairness and mitigation."""
    from hivcomorb import htmlkit
    from hivcomorb.audit.sections import audit_sections
    from hivcomorb.pipeline import load_run_ids

    audit = read_audit(ctx)
    if audit is None:
        return htmlkit.section("audit", "Explanation and fairness audits", htmlkit.paragraph("The audit has not run for this dataset."))
    run_id = load_run_ids(ctx).get(STAGE)
    return audit_sections(audit, ctx.artifacts / STAGE / "figures", run_id)




def register_cli(subparsers: Any) -> None:
    """Add ``hivcomorb audit``."""
    from hivcomorb.pipeline import add_stage_command

    add_stage_command(
        subparsers,
        "audit",
        help="explain and audit the fairness of the champion models",
        description="Compute SHAP and permutation importance, group fairness metrics with bootstrap intervals and "
        "traffic lights, and mitigation candidates for both settings; write artifacts/<dataset>/audit/audit.json.",
    )
