"""Seeded multi-label stratified folds with inner folds, for partially known labels."""

from __future__ import annotations

import numpy as np
import pytest

from hivcomorb.errors import ModelError
from hivcomorb.splits import make_splits, stratification_matrix, stratified_folds


def partial_labels(n: int = 300, seed: int = 0) -> np.ndarray:
    """Three labels with prevalences 0.1, 0.3, 0.5 and about 10% unknown entries."""
    rng = np.random.default_rng(seed)
    labels = (rng.random((n, 3)) < np.array([0.1, 0.3, 0.5])).astype(float)
    labels[rng.random((n, 3)) < 0.1] = np.nan
    return labels


def test_stratification_matrix_encodes_unknown_separately():
    matrix = stratification_matrix(np.array([[1.0, np.nan], [0.0, 1.0]]))
    assert matrix.tolist() == [[1, 0, 0, 1], [0, 1, 0, 0]]


def test_stratified_folds_assign_every_row():
    fold = stratified_folds(partial_labels(), 5, seed=1)
    assert fold.min() == 0
    assert fold.max() == 4
    assert np.bincount(fold).min() >= 300 // 5 - 2


@pytest.mark.parametrize("column", [0, 1, 2])
def test_stratified_folds_balance_positives(column):
    labels = partial_labels()
    fold = stratified_folds(labels, 5, seed=1)
    per_fold = np.array([np.nansum(labels[fold == k, column] == 1) for k in range(5)])
    expected = np.nansum(labels[:, column] == 1) / 5
    assert np.all(np.abs(per_fold - expected) <= 2)


def test_stratified_folds_balance_unknown():
    labels = partial_labels()
    fold = stratified_folds(labels, 5, seed=1)
    unknown = np.array([np.isnan(labels[fold == k, 0]).sum() for k in range(5)])
    assert unknown.max() - unknown.min() <= 2


def test_stratified_folds_same_seed_same_folds():
    labels = partial_labels()
    assert np.array_equal(stratified_folds(labels, 5, seed=3), stratified_folds(labels, 5, seed=3))


def test_stratified_folds_other_seed_other_folds():
    labels = partial_labels()
    assert not np.array_equal(stratified_folds(labels, 5, seed=3), stratified_folds(labels, 5, seed=4))


@pytest.mark.parametrize(
    ("n_rows", "n_splits", "message"),
    [(20, 1, "at least 2"), (3, 5, "cannot split 3 rows")],
)
def test_stratified_folds_invalid(n_rows, n_splits, message):
    with pytest.raises(ModelError, match=message):
        stratified_folds(partial_labels(n_rows), n_splits, seed=0)


def test_make_splits_table_layout():
    folds, splits = make_splits(partial_labels(), n_splits=3, repeats=2, inner_splits=2, seed=5)
    assert list(folds.columns) == ["row", "repeat", "fold"]
    assert len(folds) == 600
    assert len(splits) == 6


def test_make_splits_test_folds_partition_rows():
    _, splits = make_splits(partial_labels(), n_splits=3, repeats=2, inner_splits=2, seed=5)
    for repeat in (0, 1):
        tests = np.concatenate([s.test for s in splits if s.repeat == repeat])
        assert np.array_equal(np.sort(tests), np.arange(300))


def test_make_splits_train_and_test_disjoint():
    _, splits = make_splits(partial_labels(), n_splits=3, repeats=1, inner_splits=2, seed=5)
    for split in splits:
        assert np.intersect1d(split.train, split.test).size == 0
        assert split.train.size + split.test.size == 300


def test_make_splits_inner_folds_cover_training_rows_only():
    _, splits = make_splits(partial_labels(), n_splits=3, repeats=1, inner_splits=3, seed=5)
    for split in splits:
        inner = split.inner_splits()
        validation = np.concatenate([v for _, v in inner])
        assert np.array_equal(np.sort(validation), np.arange(split.train.size))
        for fit_rows, validation_rows in inner:
            assert np.intersect1d(fit_rows, validation_rows).size == 0


def test_make_splits_repeats_differ():
    folds, _ = make_splits(partial_labels(), n_splits=3, repeats=2, inner_splits=2, seed=5)
    first = folds.loc[folds["repeat"] == 0, "fold"].to_numpy()
    second = folds.loc[folds["repeat"] == 1, "fold"].to_numpy()
    assert not np.array_equal(first, second)


def test_make_splits_reproducible():
    labels = partial_labels()
    first, first_splits = make_splits(labels, n_splits=3, repeats=2, inner_splits=2, seed=5)
    second, second_splits = make_splits(labels, n_splits=3, repeats=2, inner_splits=2, seed=5)
    assert first.equals(second)
    assert all(np.array_equal(a.inner_fold, b.inner_fold) for a, b in zip(first_splits, second_splits))


def test_make_splits_invalid_repeats():
    with pytest.raises(ModelError, match="repeats must be at least 1"):
        make_splits(partial_labels(), n_splits=3, repeats=0, inner_splits=2, seed=5)
