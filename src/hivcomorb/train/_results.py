"""Metrics with confidence intervals, aware-versus-unaware comparisons and the oracle gap."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from hivcomorb.evaluate import (
    BINARY_METRICS,
    MULTILABEL_METRICS,
    best_f1_threshold,
    multilabel_scores,
    paired_difference,
    summarise_scores,
)
from hivcomorb.splits import Split

# Averages compared between settings and against the oracle, and the per-label
# metrics compared between settings.
COMPARED_AVERAGES = ("macro_f1", "macro_auroc", "micro_f1", "macro_auprc")
COMPARED_PER_LABEL = ("auroc", "auprc", "f1")
# Metrics where a lower value is better.
LOWER_IS_BETTER = ("hamming_loss", "macro_brier", "brier", "ece")


@dataclass
class Scored:
    """Point estimates and bootstrap resamples of every metric of one set of predictions."""

    point: dict[str, np.ndarray]
    boot: dict[str, np.ndarray]

    def estimate(self, name: str) -> float:
        """Return the point estimate of metric ``name``."""
        return float(self.point[name][0])


def score_predictions(
    labels: np.ndarray, probabilities: np.ndarray, thresholds: np.ndarray, label_names: Sequence[str], weights: np.ndarray
) -> Scored:
    """Score out-of-fold predictions on the observed data and on every bootstrap resample."""
    point = multilabel_scores(labels, probabilities, thresholds, label_names)
    boot = multilabel_scores(labels, probabilities, thresholds, label_names, weights=weights)
    return Scored(point=point, boot=boot)


def oracle_predictions(labels: np.ndarray, truth: np.ndarray, splits: Sequence[Split]) -> tuple[np.ndarray, np.ndarray]:
    """Return the true probabilities and their decision thresholds, shaped like model predictions.

    Each fold's threshold maximises F1 of the true probabilities on that
    fold's training rows, the same information a model's threshold uses.
    """
    n_repeats = max(s.repeat for s in splits) + 1
    probabilities = np.broadcast_to(truth, (n_repeats, *truth.shape)).copy()
    thresholds = np.full(probabilities.shape, np.nan)
    for split in splits:
        for j in range(labels.shape[1]):
            cut = best_f1_threshold(labels[split.train, j], truth[split.train, j])
            thresholds[split.repeat, split.test, j] = cut
    return probabilities, thresholds


def metrics_block(scored: Scored, label_names: Sequence[str], alpha: float) -> dict[str, Any]:
    """Return every metric as ``{"estimate", "ci_low", "ci_high"}``, averages and per label."""
    return summarise_scores(scored.point, scored.boot, label_names, alpha)


def flat_block(block: Mapping[str, Any], label_names: Sequence[str]) -> dict[str, Any]:
    """Return a metrics block as plain numbers with the intervals gathered under ``ci``.

    This is the layout of ``settings.<setting>`` in ``train.json`` and of the
    oracle: ``macro_f1: 0.61`` and ``ci: {macro_f1: [0.58, 0.64]}``.
    """
    flat: dict[str, Any] = {name: block[name]["estimate"] for name in MULTILABEL_METRICS}
    ci: dict[str, Any] = {name: [block[name]["ci_low"], block[name]["ci_high"]] for name in MULTILABEL_METRICS}
    flat["per_label"] = {
        label: {metric: block["per_label"][label][metric]["estimate"] for metric in BINARY_METRICS} for label in label_names
    }
    ci["per_label"] = {
        label: {metric: [block["per_label"][label][metric]["ci_low"], block["per_label"][label][metric]["ci_high"]] for metric in BINARY_METRICS}
        for label in label_names
    }
    flat["ci"] = ci
    return flat


def compare(a: Scored, b: Scored, label_names: Sequence[str], alpha: float) -> dict[str, Any]:
    """Return the paired differences a minus b of the compared metrics, with intervals and p-values."""
    result: dict[str, Any] = {}
    for name in COMPARED_AVERAGES:
        result[name] = paired_difference(a.estimate(name), a.boot[name], b.estimate(name), b.boot[name], alpha)
    result["per_label"] = {}
    for label in label_names:
        result["per_label"][label] = {
            metric: paired_difference(
                a.estimate(f"{metric}/{label}"), a.boot[f"{metric}/{label}"], b.estimate(f"{metric}/{label}"), b.boot[f"{metric}/{label}"], alpha
            )
            for metric in COMPARED_PER_LABEL
        }
    return result


CHAMPION_RULES = ("best", "one_se")


def choose_champion(blocks: Mapping[str, Mapping[str, Any]], setting: str, metric: str) -> str:
    """Return the model with the best ``metric`` in ``setting``; the first listed wins a tie.

    Models whose metric is undefined are never chosen unless all are.
    """
    sign = -1.0 if metric in LOWER_IS_BETTER else 1.0
    best_name, best_value = None, -np.inf
    for name, by_setting in blocks.items():
        value = by_setting[setting][metric]["estimate"]
        value = sign * value if value is not None and np.isfinite(value) else -np.inf
        if best_name is None or value > best_value:
            best_name, best_value = name, value
    assert best_name is not None
    return best_name


def choose_parsimonious_champion(
    blocks: Mapping[str, Mapping[str, Any]],
    scored: Mapping[tuple[str, str], Scored],
    setting: str,
    metric: str,
    complexity: Mapping[str, int],
) -> str:
    """Return the simplest model within one standard error of the best ``metric`` in ``setting``.

    This is the one-standard-error rule of model selection (as cited by the R
    packages bestglm and cvTools from Hastie, Tibshirani and Friedman, The
    Elements of Statistical Learning, 2nd ed., 2009). The standard error here
    is that of the paired bootstrap difference between a model and the best
    one on the same resamples. Among the models that close to the best, the
    lowest ``complexity`` wins, then the better metric, then the first listed.
    """
    best = choose_champion(blocks, setting, metric)
    sign = -1.0 if metric in LOWER_IS_BETTER else 1.0
    best_scored = scored[(best, setting)]
    best_value = sign * best_scored.estimate(metric)
    if not np.isfinite(best_value):
        return best
    candidates = []
    for order, name in enumerate(blocks):
        value = sign * scored[(name, setting)].estimate(metric)
        if not np.isfinite(value):
            continue
        differences = sign * (np.asarray(best_scored.boot[metric], dtype=float) - np.asarray(scored[(name, setting)].boot[metric], dtype=float))
        differences = differences[np.isfinite(differences)]
        standard_error = float(np.std(differences, ddof=1)) if differences.size >= 2 else 0.0
        if best_value - value <= standard_error:
            candidates.append((complexity[name], -value, order, name))
    return min(candidates)[3] if candidates else best
