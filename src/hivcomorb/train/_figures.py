"""Figures of the train stage: forest plot, calibration curves, ROC and precision-recall curves."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.metrics import precision_recall_curve, roc_curve  # noqa: E402

from hivcomorb.files import atomic_path  # noqa: E402

FOREST = "forest_aware_minus_unaware.png"
CALIBRATION = "calibration_curves.png"
ROC = "roc_curves.png"
PRECISION_RECALL = "precision_recall_curves.png"
SETTING_COLOURS = {"aware": "#1f77b4", "unaware": "#d62728"}
CALIBRATION_BINS = 10


def _save(fig: Any, path: Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def _label_grid(n_labels: int) -> tuple[Any, np.ndarray]:
    columns = min(3, n_labels)
    rows = math.ceil(n_labels / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 3.6 * rows), squeeze=False)
    for ax in axes.flat[n_labels:]:
        ax.set_visible(False)
    return fig, axes


def forest_plot(comparison: Mapping[str, Any], path: Path, metrics: Sequence[str] = ("macro_f1", "macro_auroc")) -> Path:
    """Draw each model's aware-minus-unaware difference with its paired bootstrap interval."""
    models = list(comparison)
    fig, axes = plt.subplots(1, len(metrics), figsize=(5 * len(metrics), 0.5 * len(models) + 1.5), squeeze=False, sharey=True)
    y = np.arange(len(models))[::-1]
    for ax, metric in zip(axes[0], metrics):
        diffs = np.array([comparison[m][metric]["diff"] for m in models], dtype=float)
        lows = np.array([comparison[m][metric]["ci_low"] for m in models], dtype=float)
        highs = np.array([comparison[m][metric]["ci_high"] for m in models], dtype=float)
        errors = np.vstack([np.nan_to_num(diffs - lows), np.nan_to_num(highs - diffs)])
        ax.errorbar(diffs, y, xerr=errors, fmt="o", color="black", capsize=3)
        ax.axvline(0.0, color="grey", linestyle="--", linewidth=1)
        ax.set_xlabel(f"{metric}: aware minus unaware")
    axes[0][0].set_yticks(y, models)
    fig.suptitle("Does demographic information help? Paired bootstrap differences")
    return _save(fig, path)


def _known(labels: np.ndarray, probabilities: np.ndarray, j: int) -> tuple[np.ndarray, np.ndarray]:
    mask = np.isfinite(labels[:, j])
    return labels[mask, j], probabilities[mask, j]


def calibration_curves(labels: np.ndarray, curves: Mapping[str, np.ndarray], label_names: Sequence[str], path: Path) -> Path:
    """Draw observed event rate against mean predicted probability in probability deciles, per label.

    ``curves`` maps a legend entry to out-of-fold probabilities of shape (n, n_labels).
    """
    fig, axes = _label_grid(len(label_names))
    for j, label in enumerate(label_names):
        ax = axes.flat[j]
        ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1)
        for name, probabilities in curves.items():
            y, p = _known(labels, probabilities, j)
            edges = np.unique(np.quantile(p, np.linspace(0, 1, CALIBRATION_BINS + 1)))
            bins = np.clip(np.searchsorted(edges, p, side="right") - 1, 0, max(len(edges) - 2, 0))
            mean_p = [p[bins == b].mean() for b in np.unique(bins)]
            rate = [y[bins == b].mean() for b in np.unique(bins)]
            ax.plot(mean_p, rate, marker="o", markersize=3, label=name, color=_colour(name))
        ax.set_title(label)
        ax.set_xlabel("mean predicted probability")
        ax.set_ylabel("observed rate")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
    axes.flat[0].legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, path)


def _colour(name: str) -> str | None:
    for setting, colour in SETTING_COLOURS.items():
        if setting in name and not name.startswith("true"):
            return colour
    return "black" if name.startswith("true") else None


def roc_pr_curves(labels: np.ndarray, curves: Mapping[str, np.ndarray], label_names: Sequence[str], roc_path: Path, pr_path: Path) -> list[Path]:
    """Draw ROC and precision-recall curves per label for each entry of ``curves``."""
    fig_roc, axes_roc = _label_grid(len(label_names))
    fig_pr, axes_pr = _label_grid(len(label_names))
    for j, label in enumerate(label_names):
        for name, probabilities in curves.items():
            y, p = _known(labels, probabilities, j)
            if y.min() == y.max():
                continue
            fpr, tpr, _ = roc_curve(y, p)
            precision, recall, _ = precision_recall_curve(y, p)
            axes_roc.flat[j].plot(fpr, tpr, label=name, color=_colour(name), linewidth=1.2)
            axes_pr.flat[j].plot(recall, precision, label=name, color=_colour(name), linewidth=1.2)
        axes_roc.flat[j].plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1)
        axes_roc.flat[j].set(title=label, xlabel="1 - specificity", ylabel="sensitivity")
        prevalence = float(np.nanmean(labels[:, j]))
        axes_pr.flat[j].axhline(prevalence, color="grey", linestyle="--", linewidth=1)
        axes_pr.flat[j].set(title=label, xlabel="recall (sensitivity)", ylabel="precision", ylim=(0, 1.02))
    axes_roc.flat[0].legend(fontsize=7)
    axes_pr.flat[0].legend(fontsize=7)
    fig_roc.tight_layout()
    fig_pr.tight_layout()
    return [_save(fig_roc, roc_path), _save(fig_pr, pr_path)]


def make_figures(folder: Path, data: Any, results: Mapping[tuple[str, str], Any], evaluation: Mapping[str, Any], champions: Mapping[str, str], splits: Any) -> list[Path]:
    """Draw every figure of the stage into ``folder`` and return their paths.

    Curves use the champions' out-of-fold probabilities of the first repeat
    and, on the synthetic cohort, the true risks.
    """
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    if evaluation["comparison"]:
        paths.append(forest_plot(evaluation["comparison"], folder / FOREST))
    curves = {f"{name} ({setting})": results[(name, setting)].probabilities[0] for setting, name in champions.items()}
    if data.truth is not None:
        curves["true risk"] = data.truth
    paths.append(calibration_curves(data.labels, curves, data.label_names, folder / CALIBRATION))
    paths.extend(roc_pr_curves(data.labels, curves, data.label_names, folder / ROC, folder / PRECISION_RECALL))
    return paths
