"""Figures of the audit, written as PNG files for the report.

Only reportable groups are drawn, so a suppressed group's name cannot reach a
figure. Every function returns the path it wrote.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import shap  # noqa: E402

from hivcomorb.audit.explain import SettingExplanation  # noqa: E402
from hivcomorb.audit.metrics import METRIC_TITLES  # noqa: E402
from hivcomorb.audit.mitigation import CANDIDATE_TITLES, pareto_front  # noqa: E402
from hivcomorb.files import atomic_path  # noqa: E402

SETTING_COLOURS = {"aware": "#1b6ca8", "unaware": "#d9822b"}
CANDIDATE_MARKERS = {"baseline": "o", "threshold_optimizer": "s", "level_up": "^"}
DPI = 110


def _save(fig: plt.Figure, path: Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    return path


def _grid(n_panels: int, columns: int = 3) -> tuple[int, int]:
    columns = min(columns, max(n_panels, 1))
    return math.ceil(n_panels / columns), columns


def importance_heatmap(explanation: SettingExplanation, top: int, path: Path) -> Path:
    """Draw mean absolute SHAP (log-odds) of the most important columns for every label."""
    magnitude = np.abs(explanation.values).mean(axis=0)
    order = np.argsort(-magnitude.sum(axis=1))[:top]
    data = magnitude[order]
    fig, ax = plt.subplots(figsize=(1.0 + 0.75 * len(explanation.labels), 1.0 + 0.32 * len(order)))
    image = ax.imshow(data, aspect="auto", cmap="Blues")
    ax.set_xticks(range(len(explanation.labels)), [l.replace("_", " ") for l in explanation.labels], rotation=40, ha="right")
    ax.set_yticks(range(len(order)), [f"{explanation.columns[i]} ({explanation.roles[explanation.columns[i]]})" for i in order])
    for (row, col), value in np.ndenumerate(data):
        ax.text(col, row, f"{value:.2f}", ha="center", va="center", fontsize=7, color="white" if value > data.max() * 0.6 else "black")
    fig.colorbar(image, ax=ax, label="mean |SHAP| (log-odds)")
    ax.set_title(f"Global importance, {explanation.setting} setting")
    return _save(fig, path)


def beeswarm_grid(explanation: SettingExplanation, top: int, path: Path) -> Path:
    """Draw one SHAP beeswarm per label, restricted to the lab columns."""
    labs = [i for i, c in enumerate(explanation.columns) if explanation.roles[c] == "lab"]
    rows, cols = _grid(len(explanation.labels))
    fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 0.35 * top * rows + 1.2 * rows), squeeze=False)
    data = explanation.column_values[[explanation.columns[i] for i in labs]].to_numpy(dtype=np.float64)
    for k, label in enumerate(explanation.labels):
        ax = axes[k // cols][k % cols]
        values = shap.Explanation(
            values=explanation.values[:, labs, k],
            data=data,
            feature_names=[explanation.columns[i] for i in labs],
        )
        shap.plots.beeswarm(values, max_display=top, ax=ax, show=False, plot_size=None, color_bar=False, s=6)
        ax.set_title(label.replace("_", " "), fontsize=10)
        ax.set_xlabel("SHAP value (log-odds)", fontsize=8)
        ax.tick_params(labelsize=7)
    for k in range(len(explanation.labels), rows * cols):
        axes[k // cols][k % cols].axis("off")
    fig.suptitle(f"Top labs per label, {explanation.setting} setting (colour: lab value, red high, blue low)")
    fig.tight_layout()
    return _save(fig, path)


def dependence_grid(explanation: SettingExplanation, n_labs: int, path: Path) -> Path | None:
    """Draw SHAP dependence plots of the labs with the largest total importance.

    Each lab is shown for the label on which it weighs most.
    """
    labs = [i for i, c in enumerate(explanation.columns) if explanation.roles[c] == "lab"]
    if not labs:
        return None
    magnitude = np.abs(explanation.values).mean(axis=0)
    chosen = sorted(labs, key=lambda i: -magnitude[i].sum())[:n_labs]
    rows, cols = _grid(len(chosen), 2)
    fig, axes = plt.subplots(rows, cols, figsize=(5.0 * cols, 3.6 * rows), squeeze=False)
    for n, i in enumerate(chosen):
        k = int(np.argmax(magnitude[i]))
        column = explanation.columns[i]
        ax = axes[n // cols][n % cols]
        x = explanation.column_values[column].to_numpy(dtype=np.float64)
        y = explanation.values[:, i, k]
        finite = np.isfinite(x)
        ax.scatter(x[finite], y[finite], s=8, alpha=0.6, color=SETTING_COLOURS.get(explanation.setting, "#444444"))
        ax.axhline(0.0, color="#999999", linewidth=0.8)
        ax.set_xlabel(column)
        ax.set_ylabel(f"SHAP for {label_title(explanation.labels[k])} (log-odds)", fontsize=8)
        ax.set_title(f"{column} -> {label_title(explanation.labels[k])}", fontsize=10)
    for n in range(len(chosen), rows * cols):
        axes[n // cols][n % cols].axis("off")
    fig.suptitle(f"Dependence of the top labs, {explanation.setting} setting")
    fig.tight_layout()
    return _save(fig, path)


def label_title(label: str) -> str:
    """Return a label name for display."""
    return label.replace("_", " ")


def fairness_forest(attribute: str, result: Mapping[str, Any], metric: str, path: Path) -> Path | None:
    """Draw one metric per reportable group, with its CI, for every label and both settings."""
    labels = [l for l, per_setting in result["labels"].items() if per_setting]
    if not labels or not result["groups"]:
        return None
    groups = list(result["groups"])

    rows, cols = _grid(len(labels))
    height = max(2.2, 0.32 * len(groups) + 1.0)
    fig, axes = plt.subplots(rows, cols, figsize=(4.4 * cols, height * rows), squeeze=False, sharey=True)
    settings = sorted({s for per_setting in result["labels"].values() for s in per_setting})
    offsets = np.linspace(-0.15, 0.15, num=max(len(settings), 1))

    for k, label in enumerate(labels):
        ax = axes[k // cols][k % cols]
        drawn = 0
        for offset, setting in zip(offsets, settings):
            cells = result["labels"][label].get(setting, {})
            for g, group in enumerate(groups):
                cell = cells.get(group, {}).get("metrics", {}).get(metric, {})
                if cell.get("status") != "ok":
                    continue

                drawn += 1
                low, high = cell.get("low"), cell.get("high")
                xerr = None
                if low is not None and high is not None:
                    xerr = [[cell["value"] - low], [high - cell["value"]]]
                ax.errorbar(
                    cell["value"], g + offset, xerr=xerr, fmt="o", markersize=4, capsize=2,
                    color=SETTING_COLOURS.get(setting, "#444444"), label=setting if g == 0 else None,
                )
        if not drawn:
            ax.text(0.5, 0.5, "undefined or suppressed\nfor every group", transform=ax.transAxes, ha="center", va="center", fontsize=8, color="#666666")
        ax.set_yticks(range(len(groups)), groups, fontsize=7)
        ax.invert_yaxis()
        ax.set_xlim(-0.02, 1.02)
        ax.set_title(label_title(label), fontsize=10)
        ax.tick_params(axis="x", labelsize=7)

    for k in range(len(labels), rows * cols):
        axes[k // cols][k % cols].axis("off")
    handles, names = axes[0][0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, [f"{n} setting" for n in names], loc="upper right")
    fig.suptitle(f"{METRIC_TITLES[metric]} by {attribute} with 95% CI (reference: {result['reference']})")
    fig.tight_layout()
    return _save(fig, path)


def utility_disparity(mitigation: Mapping[str, Any], path: Path) -> Path | None:
    """Draw every candidate's balanced accuracy against sensitivity shortfall, with the Pareto front.

    One panel averages over all labels, then one panel per label; each point
    averages over the mitigated attributes.
    """
    overview = mitigation.get("overview") or []
    if not overview:
        return None
    panels: list[tuple[str, list[dict[str, Any]]]] = [("all labels (mean)", overview)]
    labels = sorted({l for per_label in mitigation["results"].values() for l in per_label})
    for label in labels:
        points = []
        for setting, per_label in mitigation["results"].items():
            for candidate in CANDIDATE_TITLES:
                utility, disparity = [], []
                for candidates in per_label.get(label, {}).values():
                    entry = candidates.get(candidate, {})
                    if entry.get("status") == "ok" and entry["balanced_accuracy"] is not None and entry["tpr_shortfall"] is not None:
                        utility.append(entry["balanced_accuracy"])
                        disparity.append(entry["tpr_shortfall"])
                if utility:
                    points.append(
                        {
                            "setting": setting,
                            "candidate": candidate,
                            "balanced_accuracy": float(np.mean(utility)),
                            "tpr_shortfall": float(np.mean(disparity)),
                        }
                    )
        if points:
            panels.append((label_title(label), points))
    rows, cols = _grid(len(panels), 4)
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 3.2 * rows), squeeze=False)
    for n, (title, points) in enumerate(panels):
        ax = axes[n // cols][n % cols]
        marks = pareto_front([(p["tpr_shortfall"], p["balanced_accuracy"]) for p in points])
        for point, mark in zip(points, marks):
            ax.scatter(
                point["tpr_shortfall"], point["balanced_accuracy"], marker=CANDIDATE_MARKERS[point["candidate"]], s=55,
                color=SETTING_COLOURS.get(point["setting"], "#444444"), edgecolors="black" if mark else "none", linewidths=1.4,
                label=f"{point['setting']}, {CANDIDATE_TITLES[point['candidate']]}",
            )
        front = sorted((p["tpr_shortfall"], p["balanced_accuracy"]) for p, m in zip(points, marks) if m)
        if len(front) > 1:
            ax.plot([f[0] for f in front], [f[1] for f in front], color="black", linewidth=0.8, linestyle="--")
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("worst sensitivity shortfall vs reference", fontsize=8)
        ax.set_ylabel("balanced accuracy", fontsize=8)
        ax.tick_params(labelsize=7)
    for n in range(len(panels), rows * cols):
        axes[n // cols][n % cols].axis("off")
    handles, names = axes[0][0].get_legend_handles_labels()
    fig.suptitle("Mitigation candidates on held-out predictions (outlined and joined: Pareto front)")
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    fig.legend(handles, names, loc="lower center", ncol=3, fontsize=8, bbox_to_anchor=(0.5, 0.0))
    return _save(fig, path)


def sanitise(name: str) -> str:
    """Return ``name`` as a safe file-name part."""
    return "".join(ch if ch.isalnum() else "_" for ch in name).strip("_")
