"""Demographic probe targets: which rows and classes each target uses.

A target is a demographic column of the contract. Age is a regression target
in years, and every other demographic column is categorical. For a
categorical target, rows with a missing or ``unknown`` value are excluded and
counted. A site may restrict a target to some of its classes (gender to male
and female by default). Classes with fewer patients than the disclosure
minimum are pooled, or excluded as insufficient when even the pooled group is
too small. Nothing is dropped without being counted in the target's record.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import pandas as pd

from hivcomorb.contract import UNKNOWN, Contract
from hivcomorb.disclosure import SUPPRESSED, is_reportable

logger = logging.getLogger(__name__)

POOLED_CLASS = "other (pooled)"


@dataclass
class ProbeTarget:
    """Rows, encoded values and class bookkeeping of one probe target.

    ``rows`` are positions in the cohort. ``y`` contains class codes (indices
    into ``classes``) for a categorical target and ages in years for age.
    ``status`` is ``"ok"`` or ``"insufficient"``. ``record`` is the JSON
    description of the exclusions and pooling, with small counts suppressed.
    """

    name: str
    kind: str
    rows: np.ndarray
    y: np.ndarray
    classes: list[str] = field(default_factory=list)
    status: str = "ok"
    reason: str = ""
    record: dict[str, Any] = field(default_factory=dict)

    @property
    def usable(self) -> bool:
        """Whether the target has enough patients and classes to be probed."""
        return self.status == "ok"


def _count_or_suppressed(count: int, minimum: int) -> int | str:
    return int(count) if count == 0 or is_reportable(count, minimum) else SUPPRESSED


def prepare_target(
    cohort: pd.DataFrame,
    contract: Contract,
    name: str,
    min_group_size: int,
    classes: Sequence[str] | None = None,
) -> ProbeTarget:
    """Select the rows and encode the values of one demographic target.

    Parameters
    ----------
    cohort : DataFrame
        Canonical cohort.
    contract : Contract
    name : str
        A demographic column of the contract present in ``cohort``.
    min_group_size : int
        Smallest class that may be used and reported on its own.
    classes : sequence of str, optional
        For a categorical target, the classes to keep (e.g. ``["male",
        "female"]``). Rows of other classes are excluded and counted.

    Returns
    -------
    ProbeTarget
        With ``status == "insufficient"`` and a ``reason`` when too few
        patients or classes remain.
    """
    column = contract.column(name)
    if column.dtype in ("number", "integer"):
        return _prepare_numeric(cohort, name, min_group_size)
    return _prepare_categorical(cohort, name, list(column.categories), min_group_size, classes)


def _prepare_numeric(cohort: pd.DataFrame, name: str, min_group_size: int) -> ProbeTarget:
    values = pd.to_numeric(cohort[name], errors="coerce").astype("float64").to_numpy(na_value=np.nan)
    known = np.isfinite(values)
    rows = np.flatnonzero(known)
    record: dict[str, Any] = {"kind": "regression", "n_used": int(rows.size), "n_missing": int((~known).sum())}
    target = ProbeTarget(name=name, kind="regression", rows=rows, y=values[rows], record=record)

    if rows.size < max(2 * min_group_size, 10) or np.unique(values[rows]).size < 2:
        target.status = "insufficient"
        target.reason = f"fewer than {max(2 * min_group_size, 10)} patients with a known, varying {name}"
    record["status"] = target.status
    if target.reason:
        record["reason"] = target.reason
    return target


def _prepare_categorical(
    cohort: pd.DataFrame,
    name: str,
    categories: list[str],
    min_group_size: int,
    selected: Sequence[str] | None,
) -> ProbeTarget:
    values = cohort[name].astype("string").str.strip().str.lower()
    unknown = values.isna() | (values == UNKNOWN)
    n_unknown = int(unknown.sum())
    record: dict[str, Any] = {"kind": None, "n_unknown": n_unknown}

    outside = pd.Series(False, index=cohort.index)
    if selected is not None:
        selected = [str(c) for c in selected]
        outside = ~unknown & ~values.isin(selected)
        excluded_classes = sorted(set(values[outside].dropna()))
        record["excluded_by_config"] = {
            "classes": excluded_classes,
            "n": _count_or_suppressed(int(outside.sum()), min_group_size),
        }
    included = ~unknown & ~outside

    counts = values[included].value_counts()
    order = [c for c in (selected or categories) if c in counts.index]
    order += sorted(c for c in counts.index if c not in order)
    small = [c for c in order if counts[c] < min_group_size]
    large = [c for c in order if counts[c] >= min_group_size]

    labels = values.copy()
    final_classes = list(large)
    if small:
        pooled_count = int(counts[small].sum())
        if pooled_count >= min_group_size and len(small) > 1:
            labels[included & values.isin(small)] = POOLED_CLASS
            final_classes.append(POOLED_CLASS)
            record["pooled"] = {"classes": small, "into": POOLED_CLASS, "n": pooled_count}
            logger.info(
                "Probe target %s: %d classes with fewer than %d patients pooled into %r",
                name,
                len(small),
                min_group_size,
                POOLED_CLASS,
            )
        else:
            included = included & ~values.isin(small)
            record["insufficient"] = {"classes": small, "n": _count_or_suppressed(pooled_count, min_group_size)}
            logger.warning(
                "Probe target %s: classes %s have fewer than %d patients even when pooled, so their rows are excluded",
                name,
                small,
                min_group_size,
            )

    rows = np.flatnonzero(included.to_numpy())
    codes = {c: i for i, c in enumerate(final_classes)}
    y = np.array([codes[c] for c in labels.to_numpy()[rows]], dtype=np.int64)
    kind = "binary" if len(final_classes) == 2 else "multiclass"
    record.update(
        {
            "kind": kind,
            "n_used": int(rows.size),
            "classes": {c: int((y == codes[c]).sum()) for c in final_classes},
        }
    )
    target = ProbeTarget(name=name, kind=kind, rows=rows, y=y, classes=final_classes, record=record)
    if len(final_classes) < 2:
        target.status = "insufficient"
        target.reason = f"fewer than two classes of {name} have at least {min_group_size} patients"
        record["classes"] = {c: _count_or_suppressed(n, min_group_size) for c, n in record["classes"].items()}
    record["status"] = target.status
    if target.reason:
        record["reason"] = target.reason
    return target
