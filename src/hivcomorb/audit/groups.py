"""Sensitive attributes, their groups and which groups may be reported.

Every audit output is grouped by the sensitive attributes built here: the
demographic and social category columns named in the configuration, the age
band derived from ``age``, and intersections such as ``gender x ethnicity``.
A group with fewer patients than the disclosure minimum is suppressed, and so
are larger partner groups wherever shown groups and the cohort size would
otherwise give a suppressed one away by subtraction. A suppressed group's name
never leaves this module except as part of a count.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from hivcomorb.config import nested_get
from hivcomorb.contract import UNKNOWN
from hivcomorb.disclosure import is_reportable, suppress_complementary
from hivcomorb.errors import ConfigError

logger = logging.getLogger(__name__)

AGE_BAND = "age_band"
INTERSECTION_SEPARATOR = " x "
GROUP_SEPARATOR = " & "

# Metric status values shared by every audit output. WITHHELD marks a metric
# whose estimate is left out, and only its rounded interval kept, because
# the estimate would give away a suppressed n.
OK = "ok"
UNDEFINED = "undefined"
SUPPRESSED = "suppressed"
WITHHELD = "withheld"


@dataclass
class AttributeGroups:
    """The groups of one sensitive attribute and which of them may be shown.

    ``counts`` contains the shown groups only. ``n_suppressed`` counts every
    suppressed group, and ``n_partners`` those of them with at least the
    disclosure minimum of patients, suppressed so that the smaller ones cannot
    be worked out by subtraction.
    """

    attribute: str
    values: pd.Series
    counts: dict[str, int]
    reportable: list[str]
    n_suppressed: int
    reference: str | None
    columns: tuple[str, ...] = field(default_factory=tuple)
    n_partners: int = 0

    def is_reportable(self, group: str) -> bool:
        """Return whether ``group`` may be shown: it reaches the disclosure minimum and is no suppression partner."""
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
    """Count each attribute's groups, suppress the small ones and their partners, and choose references.

    A group with fewer than ``minimum`` patients is suppressed. So is a larger
    group whenever subtraction would otherwise give away a suppressed group,
    or suppressed groups adding up to fewer than ``minimum`` patients. The
    reader subtracts shown groups from the cohort size, or from a shown group
    of an intersection's part (see :func:`hidden_groups`).

    Parameters
    ----------
    frame : DataFrame
        Output of :func:`sensitive_frame`.
    minimum : int
        Smallest reportable group, in patients.
    references : mapping, optional
        Configured reference group per attribute. Without one, or when the
        configured group is absent or suppressed, the largest reportable group
        is the reference. A configured reference is suppressed as a partner
        only when no other group can be.
    """
    references = {str(a): str(g) for a, g in (references or {}).items()}
    counts_of = {attribute: _group_counts(frame[attribute]) for attribute in frame.columns}
    spare = {(attribute, group) for attribute, group in references.items()}
    hidden = hidden_groups(frame, counts_of, minimum, spare)
    plans: dict[str, AttributeGroups] = {}
    for attribute in frame.columns:
        counts = counts_of[attribute]
        ordered = sorted(counts, key=lambda g: (-counts[g], g))
        reportable = [g for g in ordered if (attribute, g) not in hidden]
        n_suppressed = len(ordered) - len(reportable)
        n_small = sum(1 for g in ordered if not is_reportable(counts[g], minimum))
        reference = reportable[0] if reportable else None
        configured = references.get(attribute)
        if configured is not None:
            if configured in reportable:
                reference = configured
            else:
                logger.warning(
                    "Reference group for %s is absent or suppressed, so the largest shown group is used instead",
                    attribute,
                )
        plans[attribute] = AttributeGroups(
            attribute=attribute,
            values=frame[attribute].astype("string"),
            counts={g: counts[g] for g in reportable},
            reportable=reportable,
            n_suppressed=n_suppressed,
            reference=reference,
            columns=_columns_of(attribute),
            n_partners=n_suppressed - n_small,
        )
        if n_suppressed:
            logger.info(
                "Attribute %s: %d group(s) below the disclosure minimum of %d suppressed, and %d larger one(s) with them",
                attribute,
                n_small,
                minimum,
                n_suppressed - n_small,
            )
    return plans


def hidden_groups(
    frame: pd.DataFrame,
    counts_of: Mapping[str, Mapping[str, int]],
    minimum: int,
    spare: set[tuple[str, str]] | None = None,
) -> frozenset[tuple[str, str]]:
    """Return the ``(attribute, group)`` pairs to suppress, small groups and their partners.

    The sums a reader can subtract along are:

    * per attribute, the cohort size is the sum of the attribute's groups;
    * per intersection such as ``gender x ethnicity``, and per attribute made
      of some of its columns (``gender``), each group of that attribute
      (``female``) is the sum of the intersection groups inside it
      (``female & white``, ``female & asian`` and so on).

    The cohort size is always published. An intersection group is suppressed
    whenever a group it is part of is, because Table 1 shows only
    intersection groups whose parts are shown. Partners are chosen by
    :func:`hivcomorb.disclosure.suppress_complementary`, smallest first, so
    within one attribute the smallest shown group goes until the suppressed
    ones add up to at least ``minimum`` patients. Groups in ``spare`` are
    chosen only when a sum offers no other.
    """
    cohort_key = (None, None)
    counts: dict[tuple[Any, Any], int] = {cohort_key: len(frame)}
    sums: list[tuple[tuple[Any, Any], tuple[tuple[str, str], ...]]] = []
    for attribute, groups in counts_of.items():
        counts.update({(attribute, group): count for group, count in groups.items()})
        sums.append((cohort_key, tuple((attribute, group) for group in groups)))
    hidden_with: dict[tuple[str, str], list[tuple[str, str]]] = {}
    for cell, inside in intersection_sums(frame):
        sums.append((cell, inside))
        hidden_with.setdefault(cell, []).extend(inside)

    result = suppress_complementary(counts, sums, minimum, published=[cohort_key], hidden_with=hidden_with, spare=spare or ())
    if result.unresolved:
        # Such a sum relies only on the cohort size, as when the cohort has
        # fewer than ``minimum`` patients, so the count it gives away can
        # still be worked out.
        logger.warning("Group suppression: %d sum(s) reveal a small count that no further suppression can hide", len(result.unresolved))
    return frozenset(result.hidden)


def intersection_sums(frame: pd.DataFrame) -> list[tuple[tuple[str, str], tuple[tuple[str, str], ...]]]:
    """Return each group of an attribute made of some of an intersection's columns, with the intersection groups inside it.

    For ``gender`` and ``gender x ethnicity`` one entry is ``(("gender",
    "female"), (("gender x ethnicity", "female & white"), ...))``: the
    female patients are the sum of those intersection groups.
    """
    sums = []
    for intersection in frame.columns:
        for part in frame.columns:
            if part == intersection or not set(_columns_of(part)) < set(_columns_of(intersection)):
                continue
            pairs = pd.DataFrame({"part": _group_names(frame[part]), "group": _group_names(frame[intersection])}).drop_duplicates()
            if pairs["group"].duplicated().any():
                # The intersection's values were not built from the part's, so
                # the part's groups are not sums of the intersection's.
                logger.warning("Intersection %s does not split the groups of %s, so no sum between them is checked", intersection, part)
                continue
            for part_group, members in pairs.groupby("part", sort=False)["group"]:
                sums.append(((part, str(part_group)), tuple((intersection, str(group)) for group in members)))
    return sums


def plans_frame(plans: Mapping[str, AttributeGroups]) -> pd.DataFrame:
    """Return each patient's group of every attribute, one column per attribute, as :func:`sensitive_frame` does."""
    return pd.DataFrame({attribute: plan.values for attribute, plan in plans.items()})


def hidden_sizes(
    plans: Mapping[str, AttributeGroups],
    included: np.ndarray,
    minimum: int,
    inside: Sequence[tuple[tuple[str, str], tuple[tuple[str, str], ...]]] | None = None,
    description: str = "included patients",
) -> frozenset[tuple[str, str]]:
    """Return the shown ``(attribute, group)`` pairs whose n of included patients must read 'suppressed'.

    An n counts the included patients of a group, such as those with a known
    label and a prediction. The cohort size, the shown group sizes and the
    number of included patients count as published: Table 1's percentages of
    known give that number away. A reader can subtract along these sums, for
    the group sizes, the n's and the patients left out alike:

    * per attribute, the cohort's count is the sum of its groups' counts;
    * a group of an attribute made of some of an intersection's columns is
      the sum of the intersection groups inside it (see
      :func:`intersection_sums`);
    * a group's size is its n plus its patients left out, and the cohort
      size is the included patients plus those left out.

    An n from 1 to ``minimum - 1`` is suppressed, and partners with it. After
    that no suppressed n can be worked out. Nor can a count from 1 to
    ``minimum - 1`` of a suppressed group's patients (included or left out)
    or of the cohort's patients left out. The reference group's n is a
    partner only when a sum offers no other.

    A shown group's count of patients left out is not protected, and a
    reader may work it out as the group's size minus its n. It records what
    the data lack, such as a label nobody recorded, and says nothing about
    the patients' health. Protecting it would suppress the n, and withhold
    the estimates, of every shown group with 1 to ``minimum - 1`` patients
    left out.

    Parameters
    ----------
    plans : mapping
        Every attribute's groups, from :func:`plan_groups`.
    included : array of bool
        Whether each cohort row is included.
    minimum : int
        Disclosure minimum in patients.
    inside : sequence, optional
        :func:`intersection_sums` of the plans' groups, when the caller has
        them already.
    description : str, optional
        What the included patients are, for the warning logged when a sum
        gives a small count away whatever is suppressed.
    """
    frame = plans_frame(plans)
    if inside is None:
        inside = intersection_sums(frame)
    included = np.asarray(included, dtype=bool)
    cohort, total, left_out = ("size", None, None), ("n", None, None), ("left out", None, None)
    counts: dict[tuple[Any, Any, Any], int] = {cohort: len(frame), total: int(included.sum())}
    counts[left_out] = counts[cohort] - counts[total]
    own_sums, layer_sums = [], []
    published, implied, unprotected = [cohort, total], [left_out], []
    spare = []
    for attribute, plan in plans.items():
        sizes = _group_counts(frame[attribute])
        ns = _group_counts(frame[attribute][included])
        for group, size in sizes.items():
            n = ns.get(group, 0)
            counts["size", attribute, group] = size
            counts["n", attribute, group] = n
            counts["left out", attribute, group] = size - n
            own_sums.append((("size", attribute, group), (("n", attribute, group), ("left out", attribute, group))))
            if plan.is_reportable(group):
                published.append(("size", attribute, group))
                unprotected.append(("left out", attribute, group))
            else:
                implied += [("size", attribute, group), ("n", attribute, group), ("left out", attribute, group)]
        for layer_total in (cohort, total, left_out):
            layer_sums.append((layer_total, tuple((layer_total[0], attribute, group) for group in sizes)))
        if plan.reference is not None:
            spare.append(("n", attribute, plan.reference))
    layer_sums.append((cohort, (total, left_out)))
    for (part, group), members in inside:
        for layer in ("size", "n", "left out"):
            layer_sums.append(((layer, part, group), tuple((layer, *member) for member in members)))
    # Each group's own sum comes first, so that a suppressed group's sum gets
    # its partner before the totals' sums of the same depth do.
    result = suppress_complementary(
        counts, own_sums + layer_sums, minimum, published=published, implied=implied, unprotected=unprotected, spare=spare
    )
    if result.unresolved:
        # Such a sum relies only on published counts, as when the whole
        # cohort has 1 to ``minimum - 1`` patients left out.
        logger.warning("%d sum(s) of %s reveal a small count that no further suppression can hide", len(result.unresolved), description)
    return frozenset((attribute, group) for layer, attribute, group in result.hidden if layer == "n")


def _columns_of(attribute: str) -> tuple[str, ...]:
    return tuple(attribute.split(INTERSECTION_SEPARATOR))


def _group_names(series: pd.Series) -> pd.Series:
    """Return each patient's group name, spelled as in :func:`_group_counts`."""
    return series.astype("string").astype(object).map(str)


def _group_counts(series: pd.Series) -> dict[str, int]:
    return {str(k): int(v) for k, v in series.astype("string").value_counts(dropna=False).items()}


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
