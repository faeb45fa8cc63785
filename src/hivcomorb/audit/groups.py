"""Sensitive attributes, their groups and which groups may be reported.

Every audit output is grouped by the sensitive attributes built here: the
demographic and social category columns named in the configuration, the age
band derived from ``age``, and intersections such as ``gender x ethnicity``.
A group with fewer patients than the disclosure minimum is suppressed: its
name never leaves this module except as part of a count.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from hivcomorb.config import nested_get
from hivcomorb.contract import UNKNOWN
from hivcomorb.disclosure import is_reportable
from hivcomorb.errors import ConfigError

logger = logging.getLogger(__name__)

AGE_BAND = "age_band"
INTERSECTION_SEPARATOR = " x "
GROUP_SEPARATOR = " & "

# Metric status values shared by every audit output.
OK = "ok"
UNDEFINED = "undefined"
SUPPRESSED = "suppressed"


@dataclass
class AttributeGroups:
    """The groups of one sensitive attribute and which of them may be shown."""

    attribute: str
    values: pd.Series
    counts: dict[str, int]
    reportable: list[str]
    n_suppressed: int
    reference: str | None
    columns: tuple[str, ...] = field(default_factory=tuple)

    def is_reportable(self, group: str) -> bool:
        """Return whether ``group`` reaches the disclosure minimum in the cohort."""
        return group in self.reportable


def age_band_names(bounds: Sequence[float]) -> list[str]:
    """Return band names such as ``18-34`` and ``65+`` for lower bounds in years."""
    bounds = [int(b) for b in bounds]
    names = [f"{low}-{high - 1}" for low, high in zip(bounds[:-1], bounds[1:])]
    names.append(f"{bounds[-1]}+")
    return names


def age_bands(age: pd.Series, bounds: Sequence[float]) -> pd.Series:
    """Cut ages (years) into bands; a missing age or one below the first bound reads ``unknown``."""
    bounds = sorted(float(b) for b in bounds)
    if len(bounds) < 2:
        raise ConfigError(f"audit.age_bands needs at least two lower bounds in years, got {list(bounds)}")
    names = age_band_names(bounds)
    values = pd.to_numeric(age, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    index = np.searchsorted(np.asarray(bounds), values, side="right") - 1
    out = np.full(values.shape, UNKNOWN, dtype=object)
    valid = ~np.isnan(values) & (index >= 0)
    out[valid] = np.asarray(names, dtype=object)[index[valid]]
    return pd.Series(out, index=age.index, dtype="string")


def _as_group_strings(series: pd.Series) -> pd.Series:
    if pd.api.types.is_numeric_dtype(series):
        numeric = pd.to_numeric(series, errors="coerce")
        text = numeric.astype("Int64").astype("string")
    else:
        text = series.astype("string")
    return text.fillna(UNKNOWN)


def sensitive_frame(cohort: pd.DataFrame, config: Mapping[str, Any]) -> pd.DataFrame:
    """Return one string column per configured sensitive attribute present in the cohort.

    Missing values read ``unknown``, which is a group like any other.
    Intersections are named ``gender x ethnicity`` with values such as
    ``female & white``. Attributes whose source column is absent are left out
    and logged.
    """
    requested = list(nested_get(config, "audit.attributes", []) or [])
    columns: dict[str, pd.Series] = {}
    for attribute in requested:
        if attribute == AGE_BAND:
            if "age" not in cohort.columns:
                logger.info("Sensitive attribute %s skipped: the cohort has no age column", attribute)
                continue
            columns[attribute] = age_bands(cohort["age"], nested_get(config, "audit.age_bands", [18, 35, 50, 65]))
        elif attribute in cohort.columns:
            columns[attribute] = _as_group_strings(cohort[attribute])
        else:
            logger.info("Sensitive attribute %s skipped: the cohort has no such column", attribute)
    for combination in nested_get(config, "audit.intersections", []) or []:
        parts = [str(p) for p in combination]
        if len(parts) < 2:
            raise ConfigError(f"audit.intersections entry {parts} must name at least two attributes")
        absent = [p for p in parts if p not in columns]
        if absent:
            logger.info("Intersection %s skipped: %s not available", INTERSECTION_SEPARATOR.join(parts), absent)
            continue
        joined = columns[parts[0]].astype(str)
        for part in parts[1:]:
            joined = joined + GROUP_SEPARATOR + columns[part].astype(str)
        columns[INTERSECTION_SEPARATOR.join(parts)] = joined.astype("string")
    return pd.DataFrame(columns, index=cohort.index)


def plan_groups(frame: pd.DataFrame, minimum: int, references: Mapping[str, str] | None = None) -> dict[str, AttributeGroups]:
    """Count each attribute's groups, suppress the small ones and choose references.

    Parameters
    ----------
    frame : DataFrame
        Output of :func:`sensitive_frame`.
    minimum : int
        Smallest reportable group, in patients.
    references : mapping, optional
        Configured reference group per attribute. Without one, or when the
        configured group is absent or suppressed, the largest reportable group
        is the reference.
    """
    references = dict(references or {})
    plans: dict[str, AttributeGroups] = {}
    for attribute in frame.columns:
        values = frame[attribute].astype("string")
        counts = {str(k): int(v) for k, v in values.value_counts(dropna=False).items()}
        ordered = sorted(counts, key=lambda g: (-counts[g], g))
        reportable = [g for g in ordered if is_reportable(counts[g], minimum)]
        # TODO: hide one more group when the groups left out add up to fewer than minimum patients, as Table 1
        # does. Until then, a shown group (gender other, 12 patients) and Table 1's totals give away those left out.
        n_suppressed = len(ordered) - len(reportable)
        reference = reportable[0] if reportable else None
        configured = references.get(attribute)
        if configured is not None:
            if str(configured) in reportable:
                reference = str(configured)
            else:
                logger.warning(
                    "Reference group for %s is absent or below the disclosure minimum; the largest group is used instead",
                    attribute,
                )
        plans[attribute] = AttributeGroups(
            attribute=attribute,
            values=values,
            counts={g: counts[g] for g in reportable},
            reportable=reportable,
            n_suppressed=n_suppressed,
            reference=reference,
            columns=tuple(attribute.split(INTERSECTION_SEPARATOR)),
        )
        if n_suppressed:
            logger.info("Attribute %s: %d group(s) below the disclosure minimum of %d suppressed", attribute, n_suppressed, minimum)
    return plans


def count_status(count: float, minimum: int) -> str:
    """Return the status of a figure whose denominator is ``count`` patients.

    Zero patients make the figure undefined; from one to ``minimum - 1`` it is
    suppressed, because it would disclose a small cell.
    """
    if count <= 0:
        return UNDEFINED
    if count < minimum:
        return SUPPRESSED
    return OK
