"""Cohort 'Table 1' by group: who the audited patients are.

One table per configured attribute, one column per reportable group plus
all patients. A category with fewer patients than the disclosure minimum in
the whole cohort loses its row, which is counted. A cell counting from one
to ``minimum - 1`` patients reads 'suppressed'.

Complementary suppression stops a hidden count being recovered by
subtraction. When the groups left out of the table add up to fewer than the
minimum, the smallest shown group is left out too. In a count row with one
suppressed group cell, the smallest other positive group cell is suppressed
as well (or the all-patients cell, when there is none).
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import pandas as pd

from hivcomorb.audit.groups import AGE_BAND, SUPPRESSED, AttributeGroups
from hivcomorb.config import nested_get
from hivcomorb.contract import UNKNOWN, Contract
from hivcomorb.disclosure import is_reportable

ALL = "all patients"


def _count_cell(count: int, total: int, minimum: int) -> str:
    if 0 < count < minimum:
        return SUPPRESSED
    share = 100.0 * count / total if total else float("nan")
    return f"{count:,} ({share:.1f}%)" if np.isfinite(share) else f"{count:,}"


def _median_cell(values: pd.Series, minimum: int, digits: int = 1) -> str:
    numeric = pd.to_numeric(values, errors="coerce").dropna()
    if numeric.size == 0:
        return "no values"
    if numeric.size < minimum:
        return SUPPRESSED
    q1, median, q3 = np.quantile(numeric.to_numpy(dtype=np.float64), [0.25, 0.5, 0.75])
    return f"{median:.{digits}f} [{q1:.{digits}f}-{q3:.{digits}f}]"


def _category_values(cohort: pd.DataFrame, column: str) -> pd.Series:
    series = cohort[column]
    if pd.api.types.is_numeric_dtype(series):
        return pd.to_numeric(series, errors="coerce").astype("Int64").astype("string").fillna(UNKNOWN)
    return series.astype("string").fillna(UNKNOWN)


def cohort_table(
    cohort: pd.DataFrame,
    contract: Contract,
    plan: AttributeGroups,
    minimum: int,
) -> dict[str, Any]:
    """Build Table 1 for one attribute.

    Returns
    -------
    dict
        ``columns`` (group names, all patients first), ``rows`` (each a
        ``variable``, its ``section`` and one display string per column) and
        ``suppressed_rows``, the number of category rows left out because the
        category is below the disclosure minimum in the whole cohort.
    """
    values = plan.values.to_numpy(dtype=object)
    groups = list(plan.reportable)
    sizes = {g: int((values == g).sum()) for g in groups}
    left_out = len(cohort) - sum(sizes.values())
    extra_hidden = 0
    if 0 < left_out < minimum and groups:
        # The left-out groups' total would be all patients minus the shown groups.
        groups.remove(min(groups, key=lambda g: sizes[g]))
        extra_hidden = 1
    masks = {ALL: np.ones(len(cohort), dtype=bool)}
    masks.update({g: values == g for g in groups})
    rows: list[dict[str, Any]] = []
    suppressed_rows = 0

    def add(section: str, variable: str, cells: list[str]) -> None:
        rows.append({"section": section, "variable": variable, "cells": cells})

    def add_counts(section: str, variable: str, counts: list[int], totals: list[int]) -> None:
        cells = [_count_cell(c, t, minimum) for c, t in zip(counts, totals)]
        group_cells = range(1, len(cells))
        hidden = [i for i in group_cells if cells[i] == SUPPRESSED]
        if len(hidden) == 1:
            candidates = [i for i in group_cells if cells[i] != SUPPRESSED and counts[i] > 0]
            partner = min(candidates, key=lambda i: counts[i]) if candidates else 0
            cells[partner] = SUPPRESSED
        add(section, variable, cells)

    add("cohort", "patients, n", [f"{int(m.sum()):,}" for m in masks.values()])
    if "age" in cohort.columns:
        add("demographic", "age, years, median [IQR]", [_median_cell(cohort["age"][m], minimum) for m in masks.values()])

    own_columns = set(plan.columns) | ({"age"} if AGE_BAND in plan.columns else set())
    for role in ("demographic", "social"):
        for column in contract.names(role):
            if column not in cohort.columns or column in own_columns:
                continue
            spec = contract.column(column)
            if spec.dtype not in ("category", "integer"):
                continue
            categories = _category_values(cohort, column)
            order = list(spec.categories) if spec.dtype == "category" else sorted(c for c in categories.unique() if c != UNKNOWN)
            if spec.dtype != "category":
                order.append(UNKNOWN)
            for category in order:
                in_category = (categories == category).to_numpy()
                total = int(in_category.sum())
                if total == 0:
                    continue
                if not is_reportable(total, minimum):
                    suppressed_rows += 1
                    continue
                add_counts(
                    role,
                    f"{column}: {category}, n (%)",
                    [int((in_category & m).sum()) for m in masks.values()],
                    [int(m.sum()) for m in masks.values()],
                )

    for lab in contract.labs:
        if lab not in cohort.columns:
            continue
        unit = contract.column(lab).unit or ""
        add("lab", f"{lab}, {unit}, median [IQR]", [_median_cell(cohort[lab][m], minimum, digits=2) for m in masks.values()])

    for label in contract.labels:
        if label not in cohort.columns:
            continue
        y = pd.to_numeric(cohort[label], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
        counts, totals = [], []
        for m in masks.values():
            known = m & np.isfinite(y)
            counts.append(int((y[known] == 1).sum()))
            totals.append(int(known.sum()))
        add_counts("label", f"{label}: recorded, n (% of known)", counts, totals)

    return {
        "attribute": plan.attribute,
        "columns": list(masks),
        "rows": rows,
        "suppressed_rows": suppressed_rows,
        "suppressed_groups": plan.n_suppressed + extra_hidden,
    }


def cohort_tables(
    cohort: pd.DataFrame,
    contract: Contract,
    plans: Mapping[str, AttributeGroups],
    config: Mapping[str, Any],
    minimum: int,
) -> dict[str, Any]:
    """Build Table 1 for every attribute in ``audit.cohort_table.by`` present in the cohort."""
    requested = nested_get(config, "audit.cohort_table.by", []) or []
    return {a: cohort_table(cohort, contract, plans[a], minimum) for a in requested if a in plans}
