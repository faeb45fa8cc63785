"""Seeded cross-validation splits for partially labelled multi-label data.

Outer folds come from repeated iterative stratification
(:class:`iterstrat.ml_stratifiers.MultilabelStratifiedKFold`), so every fold
keeps roughly the cohort's prevalence of each label. The stratifier only
accepts 0/1 columns, so each label is given to it as two indicator columns:
"known positive" and "unknown". Folds therefore balance both the positives
and the share of unknown labels, and an unknown label is never stratified
as a negative.

Inner folds split each outer training part again. Every choice that a model
makes from data (tuning, decision thresholds, calibration) is made on inner
folds, so no outer test fold informs it. Inner folds are computed once here
and shared by every model, which keeps the comparison between models paired.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd
from iterstrat.ml_stratifiers import MultilabelStratifiedKFold

from hivcomorb.errors import ModelError

logger = logging.getLogger(__name__)


def stratification_matrix(labels: pd.DataFrame | np.ndarray) -> np.ndarray:
    """Encode labels (1, 0, NaN for unknown) as the 0/1 matrix given to the stratifier.

    Returns an array of shape (n, 2 * n_labels): for each label, one column
    that is 1 for a known positive and one that is 1 for an unknown label.
    """
    values = np.asarray(labels, dtype=np.float64)
    if values.ndim != 2:
        raise ModelError(f"labels must be a 2-D table, got shape {values.shape}")
    positive = (values == 1).astype(np.int8)
    unknown = np.isnan(values).astype(np.int8)
    return np.concatenate([positive, unknown], axis=1)


def stratified_folds(labels: pd.DataFrame | np.ndarray, n_splits: int, seed: int) -> np.ndarray:
    """Assign each row to one of ``n_splits`` multi-label stratified folds.

    Parameters
    ----------
    labels : table of shape (n, n_labels)
        1, 0 or NaN (unknown).
    n_splits : int
        Number of folds, at least 2.
    seed : int
        Seed of the iterative stratification.

    Returns
    -------
    numpy.ndarray of int, shape (n,)
        Fold number (0-based) of each row.
    """
    values = np.asarray(labels, dtype=np.float64)
    n_rows = values.shape[0]
    if n_splits < 2:
        raise ModelError(f"the number of folds must be at least 2, got {n_splits}; set train.folds in conf/stages/train.yaml")
    if n_rows < n_splits:
        raise ModelError(f"cannot split {n_rows} rows into {n_splits} folds; use fewer folds or more patients")
    target = stratification_matrix(values)
    splitter = MultilabelStratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    fold = np.full(n_rows, -1, dtype=np.int64)
    for number, (_, test) in enumerate(splitter.split(np.zeros((n_rows, 1)), target)):
        fold[test] = number
    return fold


@dataclass(frozen=True)
class Split:
    """One outer fold of one repeat, with its inner folds.

    ``train`` and ``test`` are 0-based row positions in the cohort.
    ``inner_fold[k]`` is the inner fold of row ``train[k]``.
    """

    repeat: int
    fold: int
    train: np.ndarray
    test: np.ndarray
    inner_fold: np.ndarray

    def inner_splits(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """Return ``(fit, validation)`` positions within ``train`` for each inner fold."""
        numbers = np.unique(self.inner_fold)
        return [(np.flatnonzero(self.inner_fold != k), np.flatnonzero(self.inner_fold == k)) for k in numbers]


def make_splits(
    labels: pd.DataFrame | np.ndarray, n_splits: int, repeats: int, inner_splits: int, seed: int
) -> tuple[pd.DataFrame, list[Split]]:
    """Build the repeated outer folds and each one's inner folds.

    Parameters
    ----------
    labels : table of shape (n, n_labels)
        1, 0 or NaN (unknown), in cohort row order.
    n_splits : int
        Outer folds per repeat.
    repeats : int
        Repeats of the outer cross-validation, each with its own shuffle.
    inner_splits : int
        Inner folds within each outer training part.
    seed : int
        Seed of the whole scheme; repeat ``r`` uses ``seed + r`` and the inner
        folds of (repeat ``r``, fold ``f``) use a seed derived from both.

    Returns
    -------
    folds : pandas.DataFrame
        Columns ``row`` (0-based cohort position), ``repeat`` and ``fold``; one
        row per cohort row and repeat.
    splits : list of Split
        In repeat, then fold order.
    """
    if repeats < 1:
        raise ModelError(f"the number of repeats must be at least 1, got {repeats}; set train.repeats")
    values = np.asarray(labels, dtype=np.float64)
    n_rows = values.shape[0]
    tables = []
    splits: list[Split] = []
    for repeat in range(repeats):
        fold = stratified_folds(values, n_splits, seed + repeat)
        tables.append(pd.DataFrame({"row": np.arange(n_rows), "repeat": repeat, "fold": fold}))
        for number in range(n_splits):
            train = np.flatnonzero(fold != number)
            test = np.flatnonzero(fold == number)
            inner_seed = _inner_seed(seed, repeat, number)
            inner = stratified_folds(values[train], inner_splits, inner_seed)
            splits.append(Split(repeat=repeat, fold=number, train=train, test=test, inner_fold=inner))
    folds = pd.concat(tables, ignore_index=True).astype({"row": "int64", "repeat": "int64", "fold": "int64"})
    logger.info("Split %d rows into %d folds x %d repeats, %d inner folds each", n_rows, n_splits, repeats, inner_splits)
    return folds, splits


def _inner_seed(seed: int, repeat: int, fold: int) -> int:
    return int(np.random.SeedSequence([seed, repeat, fold]).generate_state(1)[0])
