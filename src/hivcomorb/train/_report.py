"""The report section of the train stage, built from ``train.json`` and its figures."""

from __future__ import annotations

import json
from typing import Any, Mapping

from hivcomorb import htmlkit
from hivcomorb.context import RunContext
from hivcomorb.train._figures import CALIBRATION, FOREST, PRECISION_RECALL, ROC

RESULT_COLUMNS = (
    ("macro_f1", "macro-F1"),
    ("micro_f1", "micro-F1"),
    ("macro_auroc", "macro-AUROC"),
    ("macro_auprc", "macro-AUPRC"),
    ("hamming_loss", "Hamming loss"),
    ("subset_accuracy", "subset accuracy"),
    ("macro_brier", "macro Brier"),
)
PER_LABEL_COLUMNS = (
    ("auroc", "AUROC"),
    ("auprc", "AUPRC"),
    ("f1", "F1"),
    ("sensitivity", "sensitivity"),
    ("specificity", "specificity"),
    ("brier", "Brier"),
    ("calibration_slope", "calibration slope"),
    ("calibration_intercept", "calibration intercept"),
    ("ece", "ECE"),
)


def _cell(block: Mapping[str, Any]) -> htmlkit.Raw:
    return htmlkit.Raw(htmlkit.fmt_ci(block["estimate"], block["ci_low"], block["ci_high"]))


def _difference(block: Mapping[str, Any]) -> htmlkit.Raw:
    text = htmlkit.fmt_ci(block["diff"], block["ci_low"], block["ci_high"])
    return htmlkit.Raw(f"{text}, p = {htmlkit.fmt(block['p_value'])}")


def _verdict(block: Mapping[str, Any]) -> str:
    low, high = block["ci_low"], block["ci_high"]
    if low is None or high is None:
        return "undefined"
    if low > 0:
        return "yes"
    if high < 0:
        return "no, worse"
    return "no clear difference"


def results_table(document: Mapping[str, Any]) -> str:
    """Return the paper-style table: models x settings x averaged metrics with intervals."""
    rows = []
    for name, by_setting in document["models"].items():
        for setting, block in by_setting.items():
            champion = document["champions"].get(setting) == name
            label = f"{name} (champion)" if champion else name
            rows.append([label, setting, *(_cell(block[key]) for key, _ in RESULT_COLUMNS)])
    level = round(100 * document["design"]["confidence_level"])
    caption = f"Out-of-fold performance, estimate [{level}% bootstrap CI over patients]"
    return htmlkit.table(["model", "setting", *(title for _, title in RESULT_COLUMNS)], rows, caption=caption)


def champion_paragraph(document: Mapping[str, Any]) -> str:
    """Return how each setting's champion was chosen."""
    design = document["design"]
    metric = dict(RESULT_COLUMNS).get(design["champion_metric"], design["champion_metric"])
    if design.get("champion_rule", "best") == "one_se":
        text = (
            f"Each setting's champion is the simplest model whose {metric} is within one bootstrap standard error "
            f"of the best model's (the one-standard-error rule; linear models count as simpler than tree ensembles "
            f"and neural networks, and a stacked model as more complex than its base)."
        )
    else:
        text = f"Each setting's champion is the model with the best {metric}."
    return htmlkit.paragraph(text)


def comparison_table(document: Mapping[str, Any]) -> str:
    """Return the "Does demographic information help?" table of paired differences."""
    rows = []
    for name, block in document["comparison"].items():
        rows.append([name, _difference(block["macro_f1"]), _difference(block["macro_auroc"]), _verdict(block["macro_f1"])])
    caption = "Does demographic information help? Aware minus unaware, paired bootstrap on the same patients"
    return htmlkit.table(["model", "difference in macro-F1", "difference in macro-AUROC", "helps (macro-F1)?"], rows, caption=caption)


def per_label_table(document: Mapping[str, Any], setting: str) -> str:
    """Return the champion's per-label metrics with intervals."""
    name = document["champions"][setting]
    block = document["models"][name][setting]["per_label"]
    rows = [[label, *(_cell(block[label][key]) for key, _ in PER_LABEL_COLUMNS)] for label in document["labels"]]
    caption = f"Per-label performance of the demographic-{setting} champion ({name})"
    return htmlkit.table(["label", *(title for _, title in PER_LABEL_COLUMNS)], rows, caption=caption)


def per_label_comparison_table(document: Mapping[str, Any]) -> str:
    """Return the aware champion's per-label aware-minus-unaware differences."""
    name = document["champions"]["aware"]
    block = document["comparison"].get(name)
    if not block:
        return ""
    rows = [[label, _difference(block["per_label"][label]["auroc"]), _difference(block["per_label"][label]["f1"])] for label in document["labels"]]
    caption = f"Per-label difference for {name}, aware minus unaware"
    return htmlkit.table(["label", "difference in AUROC", "difference in F1"], rows, caption=caption)


def oracle_paragraphs(document: Mapping[str, Any]) -> str:
    """Return the oracle comparison: the true risks' metrics and each champion's gap."""
    gaps = document.get("oracle_gap")
    if not gaps:
        return htmlkit.paragraph("This dataset has no known true risks, so the oracle comparison is not available.")
    oracle = document["oracle"]
    parts = [
        htmlkit.paragraph(
            f"The true risks of the synthetic cohort, thresholded in the same cross-validation, reach macro-AUROC "
            f"{oracle['macro_auroc']:.3f} and macro-F1 {oracle['macro_f1']:.3f}: the best any model can expect."
        )
    ]
    rows = []
    for setting, gap in gaps["champions"].items():
        rows.append([setting, gap["model"], _difference(gap["macro_auroc"]), _difference(gap["macro_f1"])])
    parts.append(htmlkit.table(["setting", "champion", "gap in macro-AUROC (oracle minus model)", "gap in macro-F1"], rows, caption="Gap to the oracle"))
    return "\n".join(parts)


def report_section(ctx: RunContext) -> str:
    """Return the HTML section of model performance, the aware-unaware comparison and the oracle gap."""
    from hivcomorb.pipeline import load_run_ids

    path = ctx.artifacts / "train" / "train.json"
    if not path.is_file():
        return htmlkit.section("train", "Model performance", htmlkit.paragraph("The train stage has not run for this dataset."))
    document = json.loads(path.read_text(encoding="utf-8"))
    run_id = load_run_ids(ctx).get("train")
    figures = ctx.artifacts / "train" / "figures"
    body = [htmlkit.bullet_list(document["summary"]), results_table(document), champion_paragraph(document)]
    if document["skipped_labels"]:
        rows = [[label, info["reason"], info["positives"], info["negatives"], info["unknown"]] for label, info in document["skipped_labels"].items()]
        body.append(htmlkit.table(["label", "reason", "known positives", "known negatives", "unknown"], rows, caption="Labels not trained"))
    body.append(htmlkit.section("train-aware-vs-unaware", "Does demographic information help?", comparison_table(document) + per_label_comparison_table(document)))
    for setting in ("aware", "unaware"):
        body.append(per_label_table(document, setting))
    body.append(htmlkit.section("train-oracle", "Gap to the true risks", oracle_paragraphs(document)))
    level = round(100 * document["design"]["confidence_level"])
    captions = {
        FOREST: f"Aware minus unaware, with paired bootstrap {level}% intervals",
        CALIBRATION: "Calibration of the champions (out-of-fold, probability deciles)",
        ROC: "ROC curves of the champions per label",
        PRECISION_RECALL: "Precision-recall curves of the champions per label (dashed: prevalence)",
    }
    for name, caption in captions.items():
        if (figures / name).is_file():
            body.append(htmlkit.figure(figures / name, caption, run_id))
    return htmlkit.section("train", "Model performance", "\n".join(body))
