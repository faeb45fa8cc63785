"""Cohort 'Table 1' by group: who the audited patients are.

One table per configured attribute, one column per shown group plus all
patients, and one row per shown category of each demographic and social
column, a median [IQR] per lab and a 'recorded' count per label.

Small-cell suppression
----------------------
A group or category is shown only when it has at least the disclosure
minimum of patients in the whole cohort. When the ones left out add up to
between 1 and ``minimum - 1`` patients, the smallest shown one is left out
too, so that all patients minus the shown ones is 0 or at least the minimum.
A variable shows the same categories in every table of one call, as the
columns of its own table and as rows of the others. An intersection such as
``gender x ethnicity`` shows only groups whose parts are shown. A count
from 1 to ``minimum - 1`` reads 'suppressed'. Group sizes in 'patients, n'
are never suppressed.

Complementary suppression then hides further counts, because a reader can
subtract along every sum that the tables imply:

* each row: the all-patients count is the sum of the group counts and of
  the groups left out;
* each column: the group size is the sum of the counts of one variable's
  categories and of the categories left out;
* each label: its percentage of known is treated as giving away the number
  of patients with a known label. That number is the recorded count plus
  the not recorded count, and the group size is the known count plus the
  unknown count;
* across tables (only in :func:`cohort_tables`): all-patients counts and
  group sizes repeat in every table, and the table by A with B rows contains
  the counts of the table by B with A rows, so a count is printed in both or
  suppressed in both. An intersection group's size is a count of the two-way
  tables;
* with the fairness audit: it prints every attribute's shown group sizes,
  intersections included, and per label each shown group's n of patients
  with a known label, unless :func:`hivcomorb.audit.groups.hidden_sizes`
  suppresses it. These counts are printed here too, or count as printed,
  and are never suppressed. Every attribute's groups, suppressed ones
  included, add up to the cohort, a group of an intersection's part is the
  sum of the intersection groups inside it, and so are their known and
  unknown counts. A group's size is its known count plus its unknown count.

Suppression repeats until no suppressed count, and no implied count from 1
to ``minimum - 1`` (such as the patients of the groups left out in one row),
can be worked out from these sums. The reader is assumed to use one sum at a
time, reusing what earlier sums revealed. Suppression also goes on while a
sum leaves its hidden counts adding up to 1 to ``minimum - 1``, unless all
of them are unprotected. A larger count that the fairness audit suppresses
only as a partner may be printed here when no small count then follows.

The count of patients with an unknown label in a group that the fairness
audit shows, an intersection group included, is never printed but not
protected either, as in :func:`hivcomorb.audit.groups.hidden_sizes`: it
records what the data lack, not the patients' health. The unknown counts of
the groups left out and of the whole cohort stay protected, and so do the
recorded and not recorded counts.

:func:`hivcomorb.disclosure.suppress_complementary` chooses each new
suppressed count from the sum that gave something away, or from the sums it
used when it contains no printed count. It is a printed non-zero count
there, preferring one that also sits in another sum that gives something
away, and then the smallest. A printed 0 is treated like any printed count:
readers may subtract it, and it is never suppressed, because the hidden
counts of its sums would still add up to the same number. When a sum has no
count left to suppress, because it relies only on counts that are always
printed, as in a cohort of fewer than ``minimum`` patients, it stays printed
and a warning is logged.

Not protected:

* values found by solving several sums together as a system of equations or
  a linear programme, beyond the step-by-step subtraction above;
* bounds from counts being non-negative, apart from a sum whose printed
  counts already reach its total;
* the cells of an intersection table against the two-way tables, although a
  two-way count is a sum of intersection counts;
* medians, and counts that the fairness metrics imply, such as the number
  of positives behind a sensitivity.
"""

from __future__ import annotations

import logging
from itertools import chain
from typing import Any, Collection, Iterable, Mapping, NamedTuple, Sequence

import numpy as np
import pandas as pd

from hivcomorb.audit.groups import (
    AGE_BAND,
    GROUP_SEPARATOR,
    SUPPRESSED,
    AttributeGroups,
    hidden_sizes,
    intersection_sums,
    plans_frame,
)
from hivcomorb.config import nested_get
from hivcomorb.contract import UNKNOWN, Contract
from hivcomorb.disclosure import is_reportable, suppress_complementary

logger = logging.getLogger(__name__)

ALL = "all patients"

# A cell key lists (variable, value) pairs, sorted by variable, and the empty
# key is the whole cohort. NOT_SHOWN is the value for the categories left out.
NOT_SHOWN = ("not shown",)
# Values of a label variable in cell keys.
RECORDED, NOT_RECORDED, LABEL_UNKNOWN, LABEL_KNOWN = "recorded", "not recorded", "unknown", "known"

# Kinds of cell, in increasing precedence when two tables register one key.
IMPLIED = 0  # never printed, but a reader may work it out by subtraction
SHOWN = 1  # printed as a count, unless suppressed
FIXED = 2  # printed and never suppressed: group sizes and the cohort size

Key = tuple[tuple[str, Any], ...]
Part = tuple[tuple[str, Any], ...]
Line = tuple[Key, tuple[Key, ...]]


def _cell_key(*parts: Part) -> Key:
    """Return the key of the cell where the conditions of every part hold."""
    return tuple(sorted(chain.from_iterable(parts), key=lambda pair: pair[0]))


class _CountCell(NamedTuple):
    """A printed count, rendered once suppression is settled, with its share of ``denominator``."""

    key: Key
    denominator: Key | None


class _CellLedger:
    """Every count the tables print or imply, and the sums that tie them together.

    A line ``(total, members)`` states that the total cell is the sum of its
    member cells.
    """

    def __init__(self, minimum: int) -> None:
        self.minimum = int(minimum)
        self.values: dict[Key, int] = {}
        self.kinds: dict[Key, int] = {}
        self.lines: dict[Line, None] = {}
        # A known-label total is printed in effect whenever the recorded count
        # of its column is printed with a percentage of known.
        self.revealed_by: dict[Key, Key] = {}
        # Implied cells that a reader may work out whatever their count.
        self.unprotected: set[Key] = set()
        self.hidden: frozenset[Key] = frozenset()

    def add(self, key: Key, value: int, kind: int) -> None:
        """Register a cell. A key registered twice keeps its highest kind."""
        value = int(value)
        if key in self.values:
            if self.values[key] != value:
                raise ValueError(
                    f"Table 1 counts cell {key} as both {self.values[key]} and {value}. "
                    "Build the group plans from the same cohort as the table."
                )
            self.kinds[key] = max(self.kinds[key], kind)
            return
        self.values[key] = value
        self.kinds[key] = kind

    def add_line(self, total: Key, members: Iterable[Key]) -> None:
        """Register that ``total`` is the sum of ``members``."""
        self.lines[(total, tuple(members))] = None

    def protect(self) -> tuple[Line, ...]:
        """Suppress the small printed counts and their partners, returning the lines that no suppression can fix."""
        result = suppress_complementary(
            self.values,
            self.lines,
            self.minimum,
            published=[key for key, kind in self.kinds.items() if kind == FIXED],
            implied=[key for key, kind in self.kinds.items() if kind == IMPLIED and key not in self.unprotected],
            unprotected=[key for key, kind in self.kinds.items() if kind == IMPLIED and key in self.unprotected],
            revealed_by=self.revealed_by,
            prefer_shared=True,
        )
        self.hidden = result.hidden
        return result.unresolved


def _shown_values(counts: Mapping[str, int], candidates: Sequence[str], minimum: int) -> list[str]:
    """Return the candidates to show: each reportable, leaving out none or at least ``minimum`` patients."""
    shown = [value for value in candidates if is_reportable(counts.get(value, 0), minimum)]
    left_out = sum(counts.values()) - sum(counts[value] for value in shown)
    if 0 < left_out < minimum and shown:
        # The left-out patients would be all patients minus the shown ones.
        shown.remove(min(shown, key=lambda value: counts[value]))
    return shown


def _category_values(cohort: pd.DataFrame, column: str) -> pd.Series:
    series = cohort[column]
    if pd.api.types.is_numeric_dtype(series):
        return pd.to_numeric(series, errors="coerce").astype("Int64").astype("string").fillna(UNKNOWN)
    return series.astype("string").fillna(UNKNOWN)


def _row_variables(cohort: pd.DataFrame, contract: Contract) -> list[tuple[str, str]]:
    """Return ``(role, column)`` for each demographic and social category or integer column in the cohort."""
    found = []
    for role in ("demographic", "social"):
        for column in contract.names(role):
            if column in cohort.columns and contract.column(column).dtype in ("category", "integer"):
                found.append((role, column))
    return found


def _row_order(values: pd.Series, contract: Contract, column: str) -> list[str]:
    """Return the observed values of ``column``: contract categories first, then others, then ``unknown``."""
    observed = set(values.unique())
    spec = contract.column(column)
    listed = list(spec.categories) if spec.dtype == "category" else []
    order = listed + sorted(observed - set(listed) - {UNKNOWN})
    if UNKNOWN not in order:
        order.append(UNKNOWN)
    return [value for value in order if value in observed]


def _value_counts(values: pd.Series) -> dict[str, int]:
    return {str(k): int(v) for k, v in values.value_counts(dropna=False).items()}


def _components(plan: AttributeGroups, group: str) -> list[tuple[str, str]] | None:
    """Return ``(column, value)`` for each part of an intersection group, or None for a single attribute."""
    values = group.split(GROUP_SEPARATOR)
    if len(plan.columns) < 2 or len(values) != len(plan.columns):
        return None
    return list(zip(plan.columns, values))


def _shown_by_variable(
    cohort: pd.DataFrame, contract: Contract, plans: Mapping[str, AttributeGroups], minimum: int
) -> dict[str, list[str]]:
    """Return the values each variable shows, as columns of its own table and as rows of the others.

    An intersection shows only groups whose parts are all shown, where the
    parts' variables are known, so that its cells are cells of the two-way
    tables too.
    """
    shown_by_variable: dict[str, list[str]] = {}
    for attribute, plan in plans.items():
        if len(plan.columns) < 2:
            shown_by_variable[attribute] = _shown_values(_value_counts(plan.values), plan.reportable, minimum)
    for _, column in _row_variables(cohort, contract):
        if column not in shown_by_variable:
            values = _category_values(cohort, column)
            shown_by_variable[column] = _shown_values(_value_counts(values), _row_order(values, contract, column), minimum)
    for attribute, plan in plans.items():
        if len(plan.columns) >= 2:
            candidates = list(plan.reportable)
            if all(column in shown_by_variable for column in plan.columns):
                candidates = [group for group in candidates if _parts_shown(plan, group, shown_by_variable)]
            shown_by_variable[attribute] = _shown_values(_value_counts(plan.values), candidates, minimum)
    return shown_by_variable


def _parts_shown(plan: AttributeGroups, group: str, shown_by_variable: Mapping[str, list[str]]) -> bool:
    """Return whether ``group`` is an intersection group whose every part is a shown value of its variable."""
    components = _components(plan, group)
    return components is not None and all(value in shown_by_variable.get(column, ()) for column, value in components)


def _group_part(plan: AttributeGroups, group: str) -> Part:
    """Return the key part of a group. An intersection group's key is that of the cells of its parts' tables."""
    components = _components(plan, group)
    if components is not None:
        return tuple(components)
    return ((plan.attribute, group),)


def _codes(values: np.ndarray, categories: Sequence[str]) -> np.ndarray:
    """Return each value's position in ``categories``, or ``len(categories)`` for a value left out."""
    codes = pd.Index(list(categories), dtype=object).get_indexer(values).astype(np.int64)
    return np.where(codes < 0, len(categories), codes)


def _crosstab(row_codes: np.ndarray, n_rows: int, column_codes: np.ndarray, n_columns: int) -> np.ndarray:
    flat = np.bincount(row_codes * n_columns + column_codes, minlength=n_rows * n_columns)
    return flat.reshape(n_rows, n_columns)


class _TableGrid:
    """The columns of one table as cell-key parts: all patients, the shown groups, the groups left out."""

    def __init__(self, plan: AttributeGroups, groups: list[str]) -> None:
        values = plan.values.to_numpy(dtype=object)
        self.groups = groups
        self.codes = _codes(values, groups)
        self.sizes = np.bincount(self.codes, minlength=len(groups) + 1)
        self.has_left_out = bool(self.sizes[-1])
        self.parts: list[Part] = [()] + [_group_part(plan, g) for g in groups]
        if self.has_left_out:
            self.parts.append(((plan.attribute, NOT_SHOWN),))
        self.printed = len(groups) + 1
        self.masks = [np.ones(len(values), dtype=bool)] + [self.codes == i for i in range(len(groups))]

    def register_sizes(self, ledger: _CellLedger) -> list[_CountCell]:
        """Register the cohort and group sizes and return the 'patients, n' cells."""
        sizes = [int(self.sizes.sum()), *(int(s) for s in self.sizes)]
        for index, part in enumerate(self.parts):
            ledger.add(_cell_key(part), sizes[index], FIXED if index < self.printed else IMPLIED)
        ledger.add_line(_cell_key(), [_cell_key(part) for part in self.parts[1:]])
        return [_CountCell(_cell_key(part), None) for part in self.parts[: self.printed]]

    def register_rows(
        self,
        ledger: _CellLedger,
        row_parts: Sequence[Part],
        row_printed: Sequence[bool],
        counts: np.ndarray,
        column_sums: bool = True,
    ) -> None:
        """Register the cells of some rows and their row sums.

        ``counts`` has one row per row part and one column per group code.
        With ``column_sums``, the rows partition the cohort, so each column's
        size is registered as the sum of its cells too.
        """
        counts = np.column_stack([counts.sum(axis=1), counts[:, : len(self.parts) - 1]])
        for r, row_part in enumerate(row_parts):
            for c, column_part in enumerate(self.parts):
                kind = SHOWN if row_printed[r] and c < self.printed else IMPLIED
                ledger.add(_cell_key(column_part, row_part), int(counts[r, c]), kind)
            ledger.add_line(_cell_key(row_part), [_cell_key(part, row_part) for part in self.parts[1:]])
        if column_sums:
            for column_part in self.parts:
                ledger.add_line(_cell_key(column_part), [_cell_key(column_part, part) for part in row_parts])


def _add_category_rows(
    grid: _TableGrid, ledger: _CellLedger, column: str, values: pd.Series, order: list[str], shown_values: list[str]
) -> tuple[list[tuple[str, list[_CountCell]]], int]:
    """Register one category variable and return its printed rows and the number of categories left out."""
    row_values = [value for value in order if value in shown_values]
    row_codes = _codes(values.to_numpy(dtype=object), row_values)
    counts = _crosstab(row_codes, len(row_values) + 1, grid.codes, len(grid.groups) + 1)
    row_parts: list[Part] = [((column, value),) for value in row_values]
    row_printed = [True] * len(row_values)
    if counts[-1].sum():
        row_parts.append(((column, NOT_SHOWN),))
        row_printed.append(False)
    grid.register_rows(ledger, row_parts, row_printed, counts[: len(row_parts)])
    rows = []
    for value, row_part in zip(row_values, row_parts):
        cells = [_CountCell(_cell_key(part, row_part), _cell_key(part)) for part in grid.parts[: grid.printed]]
        rows.append((f"{column}: {value}, n (%)", cells))
    left_out = sum(1 for value in order if value not in shown_values)
    return rows, left_out


def _add_label_row(grid: _TableGrid, ledger: _CellLedger, label: str, y: np.ndarray) -> list[_CountCell]:
    """Register one label's recorded, not recorded, unknown and known counts and return the printed cells."""
    known = np.isfinite(y)
    # Each patient's row in ``parts`` below: recorded, not recorded or unknown.
    state = np.where(~known, 2, np.where(y == 1, 0, 1))
    counts = _crosstab(state, 3, grid.codes, len(grid.groups) + 1)
    parts: list[Part] = [((label, RECORDED),), ((label, NOT_RECORDED),), ((label, LABEL_UNKNOWN),)]
    grid.register_rows(ledger, parts, [True, False, False], counts)

    known_part: Part = ((label, LABEL_KNOWN),)
    grid.register_rows(ledger, [known_part], [False], counts[:2].sum(axis=0, keepdims=True), column_sums=False)
    for index, part in enumerate(grid.parts):
        ledger.add_line(_cell_key(part, known_part), [_cell_key(part, parts[0]), _cell_key(part, parts[1])])
        ledger.add_line(_cell_key(part), [_cell_key(part, known_part), _cell_key(part, parts[2])])
        if index < grid.printed:
            ledger.revealed_by[_cell_key(part, known_part)] = _cell_key(part, parts[0])
    return [_CountCell(_cell_key(part, parts[0]), _cell_key(part, known_part)) for part in grid.parts[: grid.printed]]


def _register_fairness_counts(
    ledger: _CellLedger, cohort: pd.DataFrame, contract: Contract, plans: Mapping[str, AttributeGroups], minimum: int
) -> None:
    """Register the counts that the fairness audit prints, and their sums, so that suppression covers both outputs.

    The audit prints every attribute's shown group sizes and, per label and
    shown group, the n of patients with a known label unless
    :func:`hivcomorb.audit.groups.hidden_sizes` suppresses it. Table 1
    never suppresses these counts. The suppressed groups and n's, the
    patients of each group whose label is unknown, and the intersection
    groups' counts are registered as implied, so that a reader may subtract
    along every sum of either output. A shown group's count of patients with
    an unknown label is unprotected.
    """
    frame = plans_frame(plans)
    inside = intersection_sums(frame)
    shown = {(attribute, group) for attribute, plan in plans.items() for group in plan.reportable}
    _register_group_layer(ledger, plans, frame, inside, np.ones(len(frame), dtype=bool), (), shown)
    for label in contract.labels:
        if label not in cohort.columns:
            continue
        known = np.isfinite(pd.to_numeric(cohort[label], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan))
        # NOTE: the fairness audit's n also needs a prediction. Every patient
        # gets one from cross-validation over the whole cohort, and the audit
        # logs a warning where one is missing.
        hidden = hidden_sizes(plans, known, minimum, inside)
        known_part: Part = ((label, LABEL_KNOWN),)
        unknown_part: Part = ((label, LABEL_UNKNOWN),)
        _register_group_layer(ledger, plans, frame, inside, known, known_part, shown - hidden)
        _register_group_layer(ledger, plans, frame, inside, ~known, unknown_part, set(), unprotected=shown)
        ledger.add_line(_cell_key(), [_cell_key(known_part), _cell_key(unknown_part)])
        for attribute, plan in plans.items():
            for group in _value_counts(frame[attribute]):
                part = _group_part(plan, group)
                ledger.add_line(_cell_key(part), [_cell_key(part, known_part), _cell_key(part, unknown_part)])


def _register_group_layer(
    ledger: _CellLedger,
    plans: Mapping[str, AttributeGroups],
    frame: pd.DataFrame,
    inside: Sequence[tuple[tuple[str, str], tuple[tuple[str, str], ...]]],
    rows: np.ndarray,
    extra: Part,
    printed: Collection[tuple[str, str]],
    unprotected: Collection[tuple[str, str]] = (),
) -> None:
    """Register the count of ``rows`` in every group of every attribute, in the cells narrowed by ``extra``, with their sums.

    The count of a group in ``printed``, as ``(attribute, group)``, is
    printed and the others are implied. An implied count of a group in
    ``unprotected`` is not protected. The all-patients count of ``rows`` is
    printed only when ``extra`` is empty, as the cohort size. The number of
    patients with a known label is printed only through Table 1's own
    percentages of known.
    """
    total = _cell_key(extra)
    ledger.add(total, int(rows.sum()), IMPLIED if extra else FIXED)
    for attribute, plan in plans.items():
        counts = _value_counts(frame[attribute][rows])
        members = []
        for group in _value_counts(frame[attribute]):
            key = _cell_key(_group_part(plan, group), extra)
            ledger.add(key, counts.get(group, 0), FIXED if (attribute, group) in printed else IMPLIED)
            if (attribute, group) in unprotected:
                ledger.unprotected.add(key)
            members.append(key)
        ledger.add_line(total, members)
    for (part, group), members in inside:
        ledger.add_line(
            _cell_key(_group_part(plans[part], group), extra),
            [_cell_key(_group_part(plans[attribute], member), extra) for attribute, member in members],
        )


def _median_cell(values: pd.Series, minimum: int, digits: int = 1) -> str:
    numeric = pd.to_numeric(values, errors="coerce").dropna()
    if numeric.size == 0:
        return "no values"
    if numeric.size < minimum:
        return SUPPRESSED
    q1, median, q3 = np.quantile(numeric.to_numpy(dtype=np.float64), [0.25, 0.5, 0.75])
    return f"{median:.{digits}f} [{q1:.{digits}f}-{q3:.{digits}f}]"


def _count_text(count: int, total: int) -> str:
    share = 100.0 * count / total if total else float("nan")
    return f"{count:,} ({share:.1f}%)" if np.isfinite(share) else f"{count:,}"


def _layout(
    cohort: pd.DataFrame,
    contract: Contract,
    plan: AttributeGroups,
    shown_by_variable: Mapping[str, list[str]],
    ledger: _CellLedger,
    minimum: int,
) -> dict[str, Any]:
    """Register one table's counts in ``ledger`` and return the table with count cells still unrendered."""
    grid = _TableGrid(plan, shown_by_variable[plan.attribute])
    rows: list[dict[str, Any]] = []
    suppressed_rows = 0

    def add(section: str, variable: str, cells: list[Any]) -> None:
        rows.append({"section": section, "variable": variable, "cells": cells})

    add("cohort", "patients, n", grid.register_sizes(ledger))
    if "age" in cohort.columns:
        add("demographic", "age, years, median [IQR]", [_median_cell(cohort["age"][m], minimum) for m in grid.masks])

    own_columns = set(plan.columns) | ({"age"} if AGE_BAND in plan.columns else set())
    for role, column in _row_variables(cohort, contract):
        if column in own_columns:
            continue
        values = _category_values(cohort, column)
        order = _row_order(values, contract, column)
        category_rows, left_out = _add_category_rows(grid, ledger, column, values, order, shown_by_variable[column])
        suppressed_rows += left_out
        for variable, cells in category_rows:
            add(role, variable, cells)

    for lab in contract.labs:
        if lab not in cohort.columns:
            continue
        unit = contract.column(lab).unit or ""
        add("lab", f"{lab}, {unit}, median [IQR]", [_median_cell(cohort[lab][m], minimum, digits=2) for m in grid.masks])

    for label in contract.labels:
        if label not in cohort.columns:
            continue
        y = pd.to_numeric(cohort[label], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
        add("label", f"{label}: recorded, n (% of known)", _add_label_row(grid, ledger, label, y))

    return {
        "attribute": plan.attribute,
        "columns": [ALL, *grid.groups],
        "rows": rows,
        "suppressed_rows": suppressed_rows,
        "suppressed_groups": plan.n_suppressed + len(plan.reportable) - len(grid.groups),
    }


def _render(table: dict[str, Any], ledger: _CellLedger) -> dict[str, Any]:
    """Replace each count cell of ``table`` with its text: the count and share, or 'suppressed'."""
    rows = []
    for row in table["rows"]:
        cells = []
        for cell in row["cells"]:
            if not isinstance(cell, _CountCell):
                cells.append(cell)
            elif cell.key in ledger.hidden:
                cells.append(SUPPRESSED)
            else:
                total = ledger.values[cell.denominator] if cell.denominator is not None else 0
                cells.append(_count_text(ledger.values[cell.key], total))
        rows.append({**row, "cells": cells})
    return {**table, "rows": rows}


def _build_tables(
    cohort: pd.DataFrame,
    contract: Contract,
    plans: Mapping[str, AttributeGroups],
    attributes: Sequence[str],
    minimum: int,
) -> dict[str, dict[str, Any]]:
    """Build Table 1 for each of ``attributes``, with suppression complementary across all of them.

    Parameters
    ----------
    cohort : DataFrame
        The audited cohort, one row per patient.
    contract : Contract
        Data contract naming the demographic, social, lab and label columns.
    plans : mapping
        Groups of every sensitive attribute, from
        :func:`hivcomorb.audit.groups.plan_groups`. Those not in
        ``attributes`` set which categories their rows show.
    attributes : sequence of str
        Attributes to build a table for, each a key of ``plans``.
    minimum : int
        Smallest reportable count, in patients.

    Returns
    -------
    dict
        One table per attribute, as returned by :func:`cohort_table`.
    """
    shown_by_variable = _shown_by_variable(cohort, contract, plans, minimum)
    ledger = _CellLedger(minimum)
    layouts = {
        attribute: _layout(cohort, contract, plans[attribute], shown_by_variable, ledger, minimum) for attribute in attributes
    }
    _register_fairness_counts(ledger, cohort, contract, plans, minimum)
    unresolved = ledger.protect()
    if unresolved:
        # NOTE: these lines rely only on counts that are always printed, as
        # when the cohort has fewer than ``minimum`` patients. The counts they
        # give away stay printed.
        logger.warning("Table 1: %d sum(s) reveal a small count that no further suppression can hide", len(unresolved))
    hidden_primary = sum(1 for key in ledger.hidden if ledger.values[key] < minimum)
    logger.info(
        "Table 1: %d count cell(s) suppressed, %d of them to stop subtraction",
        len(ledger.hidden),
        len(ledger.hidden) - hidden_primary,
    )
    return {attribute: _render(layout, ledger) for attribute, layout in layouts.items()}


def cohort_table(
    cohort: pd.DataFrame,
    contract: Contract,
    plan: AttributeGroups,
    minimum: int,
) -> dict[str, Any]:
    """Build Table 1 for one attribute, with suppression complementary within this table and the fairness counts of its groups.

    Returns
    -------
    dict
        ``columns`` (group names, all patients first), ``rows`` (each a
        ``variable``, its ``section`` and one display string per column),
        ``suppressed_rows``, the number of categories left out of the rows,
        and ``suppressed_groups``, the number of groups left out of the
        columns.
    """
    return _build_tables(cohort, contract, {plan.attribute: plan}, [plan.attribute], minimum)[plan.attribute]


def cohort_tables(
    cohort: pd.DataFrame,
    contract: Contract,
    plans: Mapping[str, AttributeGroups],
    config: Mapping[str, Any],
    minimum: int,
) -> dict[str, Any]:
    """Build Table 1 for every attribute in ``audit.cohort_table.by`` present in the cohort.

    Suppression is complementary across the tables, which share margins, and
    with the group sizes and n's that the fairness audit prints.
    """
    requested = nested_get(config, "audit.cohort_table.by", []) or []
    return _build_tables(cohort, contract, plans, [a for a in requested if a in plans], minimum)
