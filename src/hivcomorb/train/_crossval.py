"""Cross-validation of each model in each setting, and the champions' final fits."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
from joblib import Parallel, delayed

from hivcomorb.models import FitOptions, LabelFit, ModelSpec, StackedLabelModel, fit_label
from hivcomorb.splits import Split, stratified_folds
from hivcomorb.train._data import TrainingData

logger = logging.getLogger(__name__)


@dataclass
class CrossValResult:
    """Out-of-fold output of one model in one setting.

    ``probabilities`` and ``thresholds`` have shape (repeats, n_rows,
    n_labels): the out-of-fold probability of each row and the threshold
    chosen on its fold's inner split. ``inner_probability[(split, label)]``
    contains the inner out-of-fold probabilities of that split's training
    rows, which a stacked model reads as features.
    """

    model: str
    setting: str
    probabilities: np.ndarray
    thresholds: np.ndarray
    params: dict[str, list[dict[str, Any]]]
    inner_probability: dict[tuple[int, str], np.ndarray]
    candidates_scored: int
    searches_truncated: int
    seconds: float
    n_train: dict[str, list[int]] = field(default_factory=dict)


def fit_split_label(
    train_features: np.ndarray,
    target: np.ndarray,
    inner_splits: Sequence[tuple[np.ndarray, np.ndarray]],
    spec: ModelSpec,
    options: FitOptions,
    test_features: np.ndarray,
    keep_model: bool = False,
) -> tuple[np.ndarray, LabelFit]:
    """Fit one label on one split's training rows and return its test probabilities with the fit.

    Unless ``keep_model`` is true the fitted model is dropped from the
    returned fit, so it is not sent back from a worker process.
    """
    fit = fit_label(train_features, target, inner_splits, spec, options)
    probability = fit.model.predict_proba(test_features)[:, 1]
    if not keep_model:
        fit.model = None
    return probability, fit


def split_inputs(
    data: TrainingData,
    setting: str,
    split: Split,
    split_index: int,
    label: str,
    spec: ModelSpec,
    first_stage: CrossValResult | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return the training features, training target and test features of one label on one split.

    This is the only place where rows are divided between fitting and
    testing: test rows reach only the returned test features. For a stacked
    model the other labels' first-stage probabilities are appended.
    """
    features = data.matrices[setting]
    j = data.label_names.index(label)
    train_features = features[split.train]
    test_features = features[split.test]
    if spec.label_dependence:
        if first_stage is None:
            raise ValueError(f"model {spec.name} stacks on {spec.first_stage}, whose result was not given")
        others = [k for k, other in enumerate(data.label_names) if other != label]
        if others:
            inner_other = np.column_stack([first_stage.inner_probability[(split_index, data.label_names[k])] for k in others])
        else:
            inner_other = np.zeros((split.train.size, 0))
        test_other = first_stage.probabilities[split.repeat][split.test][:, others]
        train_features = _with_other_labels(train_features, inner_other)
        test_features = _with_other_labels(test_features, test_other)
    return train_features, data.labels[split.train, j], test_features


def _with_other_labels(features: np.ndarray, other_probabilities: np.ndarray) -> np.ndarray:
    if other_probabilities.shape[1] == 0:
        return features
    return np.column_stack([features, other_probabilities.astype(np.float32)])


def cross_validate(
    data: TrainingData,
    setting: str,
    spec: ModelSpec,
    splits: Sequence[Split],
    options: FitOptions,
    parallel: Parallel,
    first_stage: CrossValResult | None = None,
) -> CrossValResult:
    """Run the nested cross-validation of ``spec`` in ``setting`` on every split.

    For a model with label dependence, ``first_stage`` is the cross-validation
    result of its base model on the same splits. Its inner out-of-fold
    probabilities become training features, and its out-of-fold probabilities
    become test features.
    """
    started = time.perf_counter()
    labels = data.label_names
    n_repeats = max(s.repeat for s in splits) + 1
    tasks = []
    keys = []
    for index, split in enumerate(splits):
        inner = split.inner_splits()
        for j, label in enumerate(labels):
            train_features, target, test_features = split_inputs(data, setting, split, index, label, spec, first_stage)
            tasks.append(delayed(fit_split_label)(train_features, target, inner, spec, options, test_features))
            keys.append((index, j))
    outputs = parallel(tasks)

    shape = (n_repeats, data.n_rows, len(labels))
    probabilities = np.full(shape, np.nan)
    thresholds = np.full(shape, np.nan)
    params: dict[str, list[dict[str, Any]]] = {label: [] for label in labels}
    n_train: dict[str, list[int]] = {label: [] for label in labels}
    inner_probability = {}
    scored = truncated = 0
    for (index, j), (probability, fit) in zip(keys, outputs):
        split = splits[index]
        probabilities[split.repeat, split.test, j] = probability
        thresholds[split.repeat, split.test, j] = fit.threshold
        params[labels[j]].append(fit.params)
        n_train[labels[j]].append(fit.n_train)
        inner_probability[(index, labels[j])] = fit.inner_probability
        scored += fit.candidates_scored
        truncated += int(fit.tuning_truncated)
    if truncated:
        logger.warning(
            "%s (%s): the grid search hit train.tuning.max_seconds in %d of %d fits; reruns may choose differently",
            spec.name, setting, truncated, len(outputs),
        )
    seconds = time.perf_counter() - started
    logger.info("Cross-validated %s (%s): %d label fits in %.1f s", spec.name, setting, len(outputs), seconds)
    return CrossValResult(
        model=spec.name,
        setting=setting,
        probabilities=probabilities,
        thresholds=thresholds,
        params=params,
        inner_probability=inner_probability,
        candidates_scored=scored,
        searches_truncated=truncated,
        seconds=seconds,
        n_train=n_train,
    )



def fit_final(
    data: TrainingData,
    setting: str,
    spec: ModelSpec,
    inner_folds: int,
    seed: int,
    options: FitOptions,
    parallel: Parallel,
    first_stage: dict[str, LabelFit] | None = None,
) -> dict[str, LabelFit]:
    """Refit ``spec`` on every row with a known label, choosing thresholds by inner cross-validation on all rows.

    For a stacked model, ``first_stage`` contains the final fits of its base
    model, and each returned model wraps both stages.
    """
    features = data.matrices[setting]
    labels = data.label_names
    fold = stratified_folds(data.labels, inner_folds, seed)
    inner = [(np.flatnonzero(fold != k), np.flatnonzero(fold == k)) for k in range(inner_folds)]
    tasks = []
    for j, label in enumerate(labels):
        train_features = features
        if spec.label_dependence:
            if first_stage is None:
                raise ValueError(f"model {spec.name} stacks on {spec.first_stage}, whose final fits were not given")
            others = [other for other in labels if other != label]
            inner_other = np.column_stack([first_stage[o].inner_probability for o in others]) if others else np.zeros((features.shape[0], 0))
            train_features = _with_other_labels(features, inner_other)
        tasks.append(delayed(fit_label)(train_features, data.labels[:, j], inner, spec, options))
    fits = dict(zip(labels, parallel(tasks)))
    if spec.label_dependence:
        for label, fit in fits.items():
            others = [other for other in labels if other != label]
            fit.model = StackedLabelModel({o: first_stage[o].model for o in others}, others, fit.model)
    return fits
