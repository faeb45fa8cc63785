"""The oracle gaps and the plain-language sentences of ``train.json``."""

from __future__ import annotations

from typing import Any, Mapping

from hivcomorb.evaluate import paired_difference

GAP_METRICS = ("macro_auroc", "macro_f1", "micro_f1", "macro_auprc")


def oracle_gaps(evaluation: Mapping[str, Any], champions: Mapping[str, str], alpha: float) -> dict[str, Any]:
    """Return how far each model falls short of the true risks, oracle minus model.

    ``models`` contains the plain differences of every model and setting, and
    ``champions`` each setting's champion with paired bootstrap intervals.
    """
    oracle = evaluation["oracle_scored"]
    per_model: dict[str, dict[str, Any]] = {}
    for (name, setting), scored in evaluation["scored"].items():
        per_model.setdefault(name, {})[setting] = {m: oracle.estimate(m) - scored.estimate(m) for m in GAP_METRICS}
    per_champion = {}
    for setting, name in champions.items():
        scored = evaluation["scored"][(name, setting)]
        per_champion[setting] = {"model": name}
        for metric in GAP_METRICS:
            per_champion[setting][metric] = paired_difference(
                oracle.estimate(metric), oracle.boot[metric], scored.estimate(metric), scored.boot[metric], alpha
            )
    return {"models": per_model, "champions": per_champion}


def _ci(block: Mapping[str, Any], metric: str, level: int) -> str:
    low, high = block["ci"][metric]
    return f"{block[metric]:.3f} ({level}% CI {low:.3f} to {high:.3f})"


def summary_sentences(document: Mapping[str, Any], alpha: float) -> list[str]:
    """Return the plain sentences, with numbers and intervals, that the report's executive summary reuses."""
    level = round(100 * (1 - alpha))
    design = document["design"]
    sentences = [
        f"Models were trained for {len(document['labels'])} comorbidities on {document['n_patients']} patients"
        f" with {design['folds']}-fold cross-validation repeated {design['repeats']} time(s)."
    ]

    skipped = document["skipped_labels"]
    if skipped:
        parts = [f"{label} ({info['positives']} known positives)" for label, info in skipped.items()]
        sentences.append(f"{len(skipped)} label(s) had too few known cases to train and were skipped: {', '.join(parts)}.")

    for setting in ("aware", "unaware"):
        block = document["settings"][setting]
        sentences.append(
            f"The demographic-{setting} champion was {block['model']}, with macro-F1 {_ci(block, 'macro_f1', level)}"
            f" and macro-AUROC {_ci(block, 'macro_auroc', level)}."
        )

    aware_champion = document["champions"]["aware"]
    diff = document["comparison"].get(aware_champion, {}).get("macro_f1")
    if diff:
        verdict = "did not clearly change"
        if diff["ci_low"] is not None and diff["ci_low"] > 0:
            verdict = "improved"
        elif diff["ci_high"] is not None and diff["ci_high"] < 0:
            verdict = "worsened"
        sentences.append(
            f"Adding demographic columns {verdict} the macro-F1 of {aware_champion}: difference {diff['diff']:+.3f}"
            f" ({level}% CI {diff['ci_low']:+.3f} to {diff['ci_high']:+.3f}, p = {diff['p_value']:.3f})."
        )

    gaps = document.get("oracle_gap")
    if gaps:
        oracle = document["oracle"]
        champion = gaps["champions"]["aware"]
        sentences.append(
            f"On this synthetic cohort the true risks reach macro-AUROC {oracle['macro_auroc']:.3f} and macro-F1"
            f" {oracle['macro_f1']:.3f}; the aware champion ({champion['model']}) is"
            f" {champion['macro_auroc']['diff']:.3f} below in macro-AUROC and {champion['macro_f1']['diff']:.3f} below in macro-F1."
        )
    return sentences
