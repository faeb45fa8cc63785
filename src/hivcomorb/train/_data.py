"""The training data of one run: labels kept and skipped, features per setting, oracle truth."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hivcomorb.contract import Contract
from hivcomorb.errors import DataNotFoundError, ModelError
from hivcomorb.features import SETTINGS, build_matrix, input_columns, label_matrix

logger = logging.getLogger(__name__)


@dataclass
class TrainingData:
    """Everything cross-validation needs, in cohort row order.

    ``labels`` is the float matrix (1, 0, NaN for unknown) of the labels kept.
    ``matrices`` and ``feature_names`` hold the float32 feature matrix of each
    setting and its column names. ``truth`` is the true probability of each
    kept label on the synthetic cohort, or None when the dataset has none.
    """

    cohort: pd.DataFrame
    label_names: list[str]
    labels: np.ndarray
    skipped_labels: dict[str, dict[str, Any]]
    columns: dict[str, list[str]]
    matrices: dict[str, np.ndarray]
    feature_names: dict[str, list[str]]
    dropped_labs: dict[str, list[str]]
    truth: np.ndarray | None = None
    label_counts: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def n_rows(self) -> int:
        """Number of patients in the cohort."""
        return int(self.labels.shape[0])


def load_cohort(path: Path) -> pd.DataFrame:
    """Read the canonical cohort written by ingestion."""
    if not path.is_file():
        raise DataNotFoundError(f"canonical cohort not found: {path}; run 'hivcomorb ingest' (or 'hivcomorb run') first")
    return pd.read_parquet(path).reset_index(drop=True)


def count_labels(cohort: pd.DataFrame, labels: list[str]) -> dict[str, dict[str, int]]:
    """Return known positives, known negatives and unknown entries of each label."""
    counts = {}
    for label in labels:
        values = pd.to_numeric(cohort[label], errors="raise").astype("float64")
        counts[label] = {
            "positives": int((values == 1).sum()),
            "negatives": int((values == 0).sum()),
            "unknown": int(values.isna().sum()),
        }
    return counts


def prepare(cohort: pd.DataFrame, contract: Contract, min_positives: int, truth: pd.DataFrame | None = None) -> TrainingData:
    """Choose the labels and features of a run and encode the feature matrices.

    A contract label that is absent from the cohort, or that has fewer than
    ``min_positives`` known positives or known negatives, is skipped and
    reported with its counts. A lab absent from the cohort or with no value
    at all is left out of the features and reported.

    Raises
    ------
    ModelError
        If no label can be trained.
    """
    present_labels = [label for label in contract.labels if label in cohort.columns]
    skipped: dict[str, dict[str, Any]] = {}
    for label in contract.labels:
        if label not in cohort.columns:
            skipped[label] = {"reason": "absent from the cohort", "positives": 0, "negatives": 0, "unknown": 0}
    counts = count_labels(cohort, present_labels)
    kept = []
    for label in present_labels:
        c = counts[label]
        if c["positives"] < min_positives or c["negatives"] < min_positives:
            skipped[label] = {"reason": f"fewer than {min_positives} known positives or negatives (train.min_positives)", **c}
            logger.warning(
                "Label %s skipped: %d known positives, %d known negatives, %d unknown (train.min_positives = %d)",
                label, c["positives"], c["negatives"], c["unknown"], min_positives,
            )
        else:
            kept.append(label)
    if not kept:
        raise ModelError(
            f"no label has at least {min_positives} known positives and negatives; "
            f"counts: {counts}; lower train.min_positives or use a larger cohort"
        )

    absent_labs = [lab for lab in contract.labs if lab not in cohort.columns]
    empty_labs = [lab for lab in contract.labs if lab in cohort.columns and cohort[lab].notna().sum() == 0]
    for lab in empty_labs:
        logger.warning("Lab %s has no value in the cohort and is left out of the features", lab)
    if absent_labs:
        logger.info("Labs absent from the cohort, left out of the features: %s", ", ".join(absent_labs))
    usable = [c for c in cohort.columns if c not in empty_labs]

    columns, matrices, feature_names = {}, {}, {}
    for setting in SETTINGS:
        columns[setting] = input_columns(contract, cohort.columns, setting, usable=usable)
        frame = build_matrix(cohort, contract, columns[setting])
        matrices[setting] = frame.to_numpy(dtype=np.float32)
        feature_names[setting] = list(frame.columns)

    truth_matrix = None
    if truth is not None:
        truth_matrix = align_truth(cohort, truth, kept, contract.id_column)
    return TrainingData(
        cohort=cohort,
        label_names=kept,
        labels=label_matrix(cohort, kept).to_numpy(dtype=np.float64),
        skipped_labels=skipped,
        columns=columns,
        matrices=matrices,
        feature_names=feature_names,
        dropped_labs={"absent": absent_labs, "no_values": empty_labs},
        truth=truth_matrix,
        label_counts={label: counts[label] for label in kept},
    )


def load_truth(path: Path) -> pd.DataFrame | None:
    """Read the true label probabilities of a synthetic cohort, or None when there are none."""
    if not path.is_file():
        return None
    return pd.read_parquet(path)


def align_truth(cohort: pd.DataFrame, truth: pd.DataFrame, labels: list[str], id_column: str) -> np.ndarray | None:
    """Return the true probability of each label in cohort row order, joined on the patient id.

    Returns None, with a warning, when the truth lacks a label or a cohort
    patient. The oracle is then left out rather than computed on a subset.
    """
    missing_labels = [label for label in labels if label not in truth.columns]
    if id_column not in truth.columns or missing_labels:
        logger.warning("True risks lack the id column or labels %s; the oracle comparison is left out", missing_labels)
        return None
    table = truth.drop_duplicates(subset=id_column)
    table = table.set_index(table[id_column].astype(str))[labels]
    aligned = table.reindex(cohort[id_column].astype(str).to_numpy())
    n_missing = int(aligned.isna().any(axis=1).sum())
    if n_missing:
        logger.warning("True risks are missing for %d cohort patients; the oracle comparison is left out", n_missing)
        return None
    return aligned.to_numpy(dtype=np.float64)
