"""Plain-language summary, figures and report section of the probe stage."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from hivcomorb import htmlkit
from hivcomorb.probe import metrics as pm
from hivcomorb.probe.targets import POOLED_CLASS, ProbeTarget

logger = logging.getLogger(__name__)

METRIC_NAMES = {
    "auroc": "AUROC",
    "macro_auroc": "macro one-vs-rest AUROC",
    "mae": "mean absolute error",
    "r2": "R2",
    "band_accuracy": "age-band accuracy",
    "balanced_accuracy": "balanced accuracy",
}


def _label(name: str) -> str:
    return name.replace("_", " ")


def _interval(entry: Mapping[str, Any], digits: int = 2) -> str:
    return htmlkit.fmt_ci(entry.get("estimate"), entry.get("ci_low"), entry.get("ci_high"), digits)


def _p_value(entry: Mapping[str, Any]) -> str:
    text = f"permutation p = {entry['p_value']:.3f} from {entry['n_permutations']} permutations"
    method = entry.get("p_method", "single model")
    return text if method == "single model" else f"{text}, corrected for picking the {method}"


def _top_labs(output: Mapping[str, Any], target: str, count: int = 3) -> list[str]:
    block = output["block"][target]
    result = output["targets"][target]["variant"][block["variant"]]["models"][block["model"]]
    return [item["feature"] for item in result["top_features"][:count]]


def _target_sentence(output: Mapping[str, Any], target: str, alpha: float) -> str:
    block = output["block"][target]
    entry = output["targets"][target]
    metric = block["metric"]
    significant = block["p_value"] is not None and block["p_value"] <= alpha
    source = "lab values alone" if block["variant"] == "labs" else "lab values and social columns"
    name = _label(target).capitalize()
    if metric == "auroc":
        negative, positive = list(entry["classes"])
        metric_text = f"AUROC {_interval(block)} for {positive} against {negative}"
    elif metric == "macro_auroc":
        metric_text = f"macro one-vs-rest AUROC {_interval(block)} over {len(entry['classes'])} classes"
    else:
        metric_text = f"a mean absolute error of {_interval(block, 1)} years"
    chance = f"{block['baseline']:.2f}" if metric != "mae" else f"{block['baseline']:.1f} years when everyone is given the mean age"

    if significant:
        labs = ", ".join(_top_labs(output, target))
        return (
            f"{name} can be predicted from {source} with {metric_text} ({block['model']} model; chance {chance}; "
            f"{_p_value(block)}). The features that carry most of the signal are {labs}."
        )
    return f"{name} could not be predicted from {source} better than chance: {metric_text} against {chance} ({_p_value(block)})."


def _exclusion_sentences(target: str, entry: Mapping[str, Any], minimum: int) -> list[str]:
    sentences = []
    name = _label(target).capitalize()
    if entry.get("status") == "absent":
        return [f"{name} is not in this cohort, so it was not probed."]
    if entry.get("pooled"):
        pooled = entry["pooled"]
        sentences.append(
            f"{name} classes {', '.join(pooled['classes'])} have fewer than {minimum} patients each and were pooled "
            f"into '{POOLED_CLASS}' ({pooled['n']} patients)."
        )
    if entry.get("insufficient"):
        sentences.append(
            f"{name} classes {', '.join(entry['insufficient']['classes'])} have fewer than {minimum} patients even when "
            "pooled, so their patients were left out of this target and counted."
        )
    if entry.get("status") == "insufficient":
        sentences.append(f"{name} was not probed because {entry.get('reason')}.")
    return sentences


def _leakage_sentences(leakage: Mapping[str, Any], alpha: float) -> list[str]:
    if leakage.get("status") != "ok":
        return [f"The demographic-unaware models were not checked for leakage because {leakage.get('reason')}."]
    sentences = []
    for representation, by_target in leakage.get("representations", {}).items():
        kind, _, model = representation.partition(":")
        representation_text = "predicted risks" if kind == "predicted_risks" else "tree-leaf embedding"
        recovers, fails = ("recover", "do not recover") if kind == "predicted_risks" else ("recovers", "does not recover")
        for target, entry in by_target.items():
            if not isinstance(entry, Mapping) or "block" not in entry:
                continue
            block = entry["block"]
            value = _interval(block, 1 if block["metric"] == "mae" else 2)
            if block["metric"] == "mae":
                value = f"{value} years"
            metric = METRIC_NAMES[block["metric"]]
            if block["p_value"] <= alpha:
                sentences.append(
                    f"The demographic-unaware {model} model's {representation_text} {recovers} {_label(target)} with {metric} "
                    f"{value} ({_p_value(block)}), so that model is not unaware of {_label(target)} in fact."
                )
            else:
                sentences.append(
                    f"The demographic-unaware {model} model's {representation_text} {fails} {_label(target)} better than "
                    f"chance ({metric} {value}, {_p_value(block)})."
                )
    return sentences


def summary_sentences(output: Mapping[str, Any], settings: Mapping[str, Any]) -> list[str]:
    """Write the plain-language findings for auditors, one sentence group per target."""
    alpha = float(settings.get("alpha", 0.05))
    minimum = int(output["min_group_size"])
    sentences: list[str] = []
    for target, entry in output["targets"].items():
        sentences.extend(_exclusion_sentences(target, entry, minimum))
        if target in output["block"]:
            sentences.append(_target_sentence(output, target, alpha))
            band = _band_sentence(output, target, settings)
            if band:
                sentences.append(band)
    sentences.extend(_leakage_sentences(output.get("leakage_unaware", {}), alpha))
    return sentences


def _band_sentence(output: Mapping[str, Any], target: str, settings: Mapping[str, Any]) -> str:
    block = output["block"][target]
    if block["metric"] != "mae":
        return ""
    result = output["targets"][target]["variant"][block["variant"]]["models"][block["model"]]
    bands = ", ".join(pm.age_band_names(settings["age_bands"]))
    accuracy = result["metrics"]["band_accuracy"]
    chance = result["baseline"]["band_accuracy"]["estimate"]
    return (
        f"The predicted age falls in the patient's true age band ({bands}) for a share of "
        f"{_interval(accuracy)} of patients, against {chance:.2f} when everyone is given the mean age."
    )


def draw_figures(
    folder: Path,
    output: Mapping[str, Any],
    targets: Mapping[str, ProbeTarget],
    predictions: Mapping[Any, Any],
    settings: Mapping[str, Any],
) -> list[Path]:
    """Draw the top-feature chart of each target and the predicted against true age plot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    for name, block in output["block"].items():
        result = output["targets"][name]["variant"][block["variant"]]["models"][block["model"]]
        top = result["top_features"][::-1]
        fig, ax = plt.subplots(figsize=(6, 0.4 * len(top) + 1.2))
        ax.barh([t["feature"] for t in top], [t["importance"] for t in top], color="#4c72b0")
        ax.set_xlabel(result["importance_method"])
        ax.set_title(f"{_label(name)}: top features ({block['model']}, {block['variant']})")
        fig.tight_layout()
        path = folder / f"importance_{name}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)

    age_path = _draw_age(folder, output, targets, predictions, int(output["min_group_size"]), plt)
    if age_path is not None:
        paths.append(age_path)
    return paths


def _draw_age(folder, output, targets, predictions, minimum, plt) -> Path | None:
    block = output["block"].get("age")
    if block is None or block["metric"] != "mae":
        return None
    oof = predictions[("age", block["variant"])][block["model"]]
    true_age = targets["age"].y
    fig, ax = plt.subplots(figsize=(5.5, 5))
    edges = np.arange(np.floor(true_age.min() / 5) * 5, np.ceil(true_age.max() / 5) * 5 + 5, 5)
    counts, x_edges, y_edges = np.histogram2d(true_age, np.clip(oof.predictions, edges[0], edges[-1]), bins=[edges, edges])
    # Cells with fewer patients than the disclosure minimum are left blank.
    reportable_counts = np.where(counts >= minimum, counts, np.nan)
    mesh = ax.pcolormesh(x_edges, y_edges, reportable_counts.T, cmap="viridis")
    ax.plot([edges[0], edges[-1]], [edges[0], edges[-1]], color="grey", linestyle="--", linewidth=1)
    ax.set_xlabel("true age (years)")
    ax.set_ylabel("predicted age (years)")
    ax.set_title(f"Age from {'labs' if block['variant'] == 'labs' else 'labs and social columns'} ({block['model']})")
    fig.colorbar(mesh, ax=ax, label=f"patients (cells under {minimum} hidden)")
    fig.tight_layout()
    path = folder / "age_predicted_vs_true.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _result_rows(output: Mapping[str, Any]) -> list[list[Any]]:
    rows = []
    for target, entry in output["targets"].items():
        for variant, probed in (entry.get("variant") or {}).items():
            for model, result in probed["models"].items():
                metric = result["permutation"]["metric"]
                others = [m for m in result["metrics"] if m != metric]
                rows.append(
                    [
                        _label(target),
                        variant,
                        model,
                        result["n_used"],
                        f"{METRIC_NAMES[metric]} {_interval(result['metrics'][metric], 3)}",
                        _interval(result["baseline"][metric], 3),
                        "; ".join(f"{METRIC_NAMES[m]} {_interval(result['metrics'][m], 3)}" for m in others),
                        result["permutation"]["p_value"],
                    ]
                )
    return rows


def _leakage_rows(leakage: Mapping[str, Any]) -> list[list[Any]]:
    rows = []
    for representation, by_target in (leakage.get("representations") or {}).items():
        for target, entry in (by_target or {}).items():
            if isinstance(entry, Mapping) and "block" in entry:
                block = entry["block"]
                rows.append(
                    [
                        representation,
                        _label(target),
                        block["model"],
                        f"{METRIC_NAMES[block['metric']]} {_interval(block, 3)}",
                        block["baseline"],
                        block["p_value"],
                    ]
                )
    return rows


def report_section(ctx) -> str:
    """Return the probe's HTML section: summary first, then tables and figures."""
    from hivcomorb.pipeline import load_run_ids

    path = ctx.artifacts / "probe" / "probe.json"
    if not path.is_file():
        return htmlkit.section("probe", "Demographic recoverability", htmlkit.paragraph(f"The probe stage has not run: {path} not found."))
    output = json.loads(path.read_text(encoding="utf-8"))
    run_id = load_run_ids(ctx).get("probe")
    parts = [
        htmlkit.paragraph(
            "Can the demographic columns be inferred from the lab values? If they can, removing them from a model "
            "does not remove demographic information, and a fairness audit must account for it."
        ),
        htmlkit.bullet_list(output.get("summary", [])),
        htmlkit.table(
            ["target", "features", "model", "patients", "primary metric [95% CI]", "chance [95% CI]", "other metrics", "permutation p"],
            _result_rows(output),
            caption="Out-of-fold recovery of each demographic target, with percentile bootstrap intervals",
        ),
    ]
    leakage_rows = _leakage_rows(output.get("leakage_unaware", {}))
    if leakage_rows:
        parts.append(
            htmlkit.table(
                ["representation", "target", "probe", "metric [95% CI]", "chance", "permutation p"],
                leakage_rows,
                caption="Demographic information in the demographic-unaware comorbidity models",
            )
        )
    parts.append(
        htmlkit.paragraph(
            "Permutation tests: the linear probe is refitted on every training fold for each shuffle of the target; "
            "the boosting probe's out-of-fold predictions are compared with shuffled targets."
        )
    )
    folder = ctx.artifacts / "probe"
    for relative in output.get("figures", []):
        figure_path = folder / relative
        if figure_path.is_file():
            caption = (
                "Predicted against true age, out of fold" if "age_predicted" in relative else f"Top features: {Path(relative).stem.removeprefix('importance_')}"
            )
            parts.append(htmlkit.figure(figure_path, caption, run_id))
    return htmlkit.section("probe", "Demographic recoverability", "\n".join(parts))
