"""Plain-language sentences that summarise the audit for the report's executive summary."""

from __future__ import annotations

from typing import Any, Mapping

from hivcomorb.audit.fairness import AMBER, RED, difference_size
from hivcomorb.audit.figures import label_title
from hivcomorb.audit.metrics import METRIC_TITLES


def fairness_sentences(fairness: Mapping[str, Any]) -> list[str]:
    """Return the flag counts per setting and the largest flagged error-rate disparity."""
    sentences = []
    for setting, counts in fairness["flag_counts"].items():
        sentences.append(
            f"Fairness audit of the {setting} champion ({fairness['models'].get(setting)}): "
            f"{counts[RED]} red and {counts[AMBER]} amber differences from reference groups, "
            f"over {len(fairness['attributes'])} attributes."
        )

    # Selection-rate differences largely follow prevalence, so the headline
    # disparity is the largest flagged error-rate difference.
    error_flags = [r for r in fairness["flagged"] if r["metric"] != "selection_rate"]
    worst = max(error_flags, key=lambda r: (r["flag"] == RED, difference_size(r)), default=None)
    if worst is None:
        return sentences
    low, high = worst["difference_low"], worst["difference_high"]
    interval = f" (95% CI {low:.2f} to {high:.2f})" if low is not None and high is not None else ""
    if worst["difference"] is None:
        amount = f"by an amount withheld because it would give a suppressed n away{interval}"
    else:
        amount = f"by {worst['difference']:+.2f}{interval}"
    sentences.append(
        f"Largest flagged error-rate disparity: {METRIC_TITLES[worst['metric']]} for {label_title(worst['label'])} "
        f"differs {amount} between group {worst['group']} and reference group "
        f"{worst['reference']} of {worst['attribute']}{_coding(worst['attribute'])} ({worst['setting']} setting)."
    )
    return sentences


def _coding(attribute: str) -> str:
    """Return the contract's note on how ``attribute`` is coded, such as ``1 = most deprived``, in brackets, or ''."""
    from hivcomorb.contract import load_contract

    contract = load_contract()
    if attribute not in [column.name for column in contract.columns]:
        return ""
    note = contract.column(attribute).note
    return f" (coded {note.split(';')[0].strip()})" if note else ""


def explanation_sentences(explanations: Mapping[str, Any]) -> list[str]:
    """Return the range of the demographic share of attribution in the aware model."""
    aware = explanations.get("aware", {})
    if aware.get("status") != "ok" or not aware.get("demographic_share"):
        return []
    defined = {label: share for label, share in aware["demographic_share"].items() if share["share"] is not None}
    if not defined:
        return []
    label, top = max(defined.items(), key=lambda item: item[1]["share"])
    lowest = min(share["share"] for share in defined.values())
    interval = f" (95% CI {top['low']:.1%} to {top['high']:.1%})" if top["low"] is not None else ""
    return [
        f"In the demographic-aware model, demographic columns carry {lowest:.1%} to {top['share']:.1%} of the "
        f"attribution across labels, most for {label_title(label)}{interval}."
    ]


def mitigation_sentences(mitigation: Mapping[str, Any]) -> list[str]:
    """Return what level-up changed against the baseline, per setting."""
    if not mitigation.get("enabled"):
        return []
    by_key = {(p["setting"], p["candidate"]): p for p in mitigation.get("overview", [])}
    sentences = []
    for setting in sorted({p["setting"] for p in mitigation.get("overview", [])}):
        base, level = by_key.get((setting, "baseline")), by_key.get((setting, "level_up"))
        if not base or not level:
            continue
        sentences.append(
            f"Level-up post-processing ({setting} setting) changed the mean shortfall of the worst-served "
            f"group's sensitivity below the reference group's from {base['tpr_shortfall']:.3f} to "
            f"{level['tpr_shortfall']:.3f}, and mean balanced accuracy from {base['balanced_accuracy']:.3f} to "
            f"{level['balanced_accuracy']:.3f}, on held-out predictions; it lowered the sensitivity of "
            f"{level['groups_with_lower_tpr']} group(s)."
        )
    return sentences


def summary_sentences(audit: Mapping[str, Any], minimum: int) -> list[str]:
    """Return the sentences of the audit's ``summary`` list, with numbers and intervals."""
    sentences = fairness_sentences(audit["fairness"])
    sentences += explanation_sentences(audit["explanations"])
    sentences += mitigation_sentences(audit["mitigation"])
    sentences.append(suppression_sentence(audit, minimum))
    return sentences


def suppression_sentence(audit: Mapping[str, Any], minimum: int) -> str:
    """Return how many groups were suppressed, telling the small ones from their larger partners."""
    total = sum(audit["suppressed"].values())
    attributes = audit["fairness"]["attributes"]
    partners = sum(int((attributes.get(name) or {}).get("n_partners") or 0) for name in audit["suppressed"])
    if not partners:
        return f"{total} group(s) with fewer than {minimum} patients were suppressed."
    return (
        f"{total} group(s) were suppressed: {total - partners} with fewer than {minimum} patients, and {partners} "
        "larger one(s) hidden so that the smaller ones cannot be worked out by subtraction."
    )
