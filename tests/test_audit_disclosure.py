"""Tests that Table 1 and the fairness audit, read together, give no hidden count away.

The cohort is the demo's: 2,200 synthetic patients with 12 of gender 'other'
and 8 of gender 'unknown'. ``ReportReader`` collects what both outputs print:
every Table 1 count, with the known-label total that a percentage of known
gives away, the fairness group sizes and the fairness n's. A cell is a set of
patients, named by one condition per variable, so that a count printed by
both outputs is one cell. ``recoveries`` then subtracts along every sum of
both outputs, one at a time and reusing what it recovered.

What must stay hidden is every count from 1 to the minimum that neither
output prints, and every count that Table 1 suppresses. A larger group or n
that the fairness output hides only as a partner may be printed, or given
away, by Table 1 when no small count follows from it. The exception is the
number of patients with an unknown label in a group that the fairness output
shows: it records what the data lack, so a reader may work it out.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

import numpy as np
import pandas as pd
import pytest

from hivcomorb.audit.cohort_table import ALL, cohort_tables
from hivcomorb.audit.fairness import SettingPredictions, fairness_audit
from hivcomorb.audit.groups import GROUP_SEPARATOR, INTERSECTION_SEPARATOR, SUPPRESSED, plan_groups, sensitive_frame
from hivcomorb.config import load_config
from hivcomorb.contract import load_contract
from hivcomorb.features import label_matrix
from hivcomorb.synth import generate

from test_audit_cohort_table import COUNT_SUFFIX, LABEL_SUFFIX, as_categories, printed_count
from test_disclosure import recoveries

MINIMUM = 10
DEMO_SEED = 20261204
RECORDED, NOT_RECORDED, UNKNOWN = "recorded", "not recorded", "unknown"
KNOWN = {RECORDED, NOT_RECORDED}
FAIRNESS_CONFIG = {"audit": {"bootstrap": 10, "confidence": 0.95, "calibration_bins": 5, "flags": {}}}

Cell = frozenset


class ReportReader:
    """What a reader of Table 1 and the fairness output can see, and the sums that tie it together."""

    def __init__(self, cohort: pd.DataFrame, plans: Mapping[str, Any], labels: Iterable[str]) -> None:
        self.plans = plans
        self.values: dict[str, np.ndarray] = {a: plan.values.astype(str).to_numpy(dtype=object) for a, plan in plans.items()}
        self.cohort = cohort
        for label in labels:
            y = pd.to_numeric(cohort[label], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
            self.values[label] = np.where(np.isnan(y), UNKNOWN, np.where(y == 1, RECORDED, NOT_RECORDED)).astype(object)
        self.published: dict[Cell, int] = {}
        self.protected: set[Cell] = set()
        self.unprotected: set[Cell] = set()
        self.sums: list[tuple[Cell, tuple[Cell, ...]]] = []
        self.truth: dict[Cell, int] = {}
        self.observed: dict[str, set[str]] = {}

    def variable(self, name: str) -> np.ndarray:
        if name not in self.values:
            self.values[name] = as_categories(self.cohort[name]).astype(str).to_numpy(dtype=object)
        return self.values[name]

    def cell(self, conditions: Mapping[str, Iterable[str]]) -> Cell:
        """Return the cell of the patients meeting every condition, leaving out conditions that every patient meets."""
        kept = []
        for name, allowed in conditions.items():
            allowed = frozenset(allowed)
            if name not in self.observed:
                self.observed[name] = set(self.variable(name))
            if not self.observed[name] <= allowed:
                kept.append((name, allowed))
        cell = frozenset(kept)
        if cell not in self.truth:
            mask = np.ones(len(self.cohort), dtype=bool)
            for name, allowed in cell:
                mask &= np.isin(self.variable(name), list(allowed))
            self.truth[cell] = int(mask.sum())
        return cell

    def group(self, attribute: str, groups: Iterable[str]) -> dict[str, set[str]]:
        """Return the conditions of one intersection group by its parts, or of some groups of one attribute."""
        groups = list(groups)
        parts = attribute.split(INTERSECTION_SEPARATOR)
        if len(parts) > 1 and len(groups) == 1:
            return {part: {value} for part, value in zip(parts, groups[0].split(GROUP_SEPARATOR))}
        return {attribute: set(groups)}

    def partition(self, attribute: str, shown: Iterable[str]) -> list[dict[str, set[str]]]:
        """Return one condition per shown group and one for the groups left out, when there are any."""
        shown = list(shown)
        rest = sorted(set(self.variable(attribute)) - set(shown))
        return [self.group(attribute, [g]) for g in shown] + ([self.group(attribute, rest)] if rest else [])

    def add_cross(self, columns: list[dict], rows: list[dict], within: Mapping[str, set[str]] | None = None) -> None:
        """Add the sums of a two-way table with margins, every cell narrowed by ``within``."""
        within = dict(within or {})
        for row in [*rows, {}]:
            members = tuple(self.cell({**column, **row, **within}) for column in columns)
            self.sums.append((self.cell({**row, **within}), members))
        for column in [*columns, {}]:
            if rows:
                members = tuple(self.cell({**column, **row, **within}) for row in rows)
                self.sums.append((self.cell({**column, **within}), members))

    def publish(self, cell: Cell, text: Any, protect: bool = True) -> None:
        """Record one printed count, or a suppressed one, which is protected when ``protect`` holds."""
        if text == SUPPRESSED:
            if protect:
                self.protected.add(cell)
            return
        count = printed_count(text) if isinstance(text, str) else int(text)
        if cell in self.published:
            assert self.published[cell] == count, f"{sorted(cell)} printed as both {self.published[cell]} and {count}"
        self.published[cell] = count

    def read_table(self, table: Mapping[str, Any]) -> None:
        """Read one Table 1 and add the sums of its rows and columns."""
        attribute = table["attribute"]
        shown = table["columns"][1:]
        columns = self.partition(attribute, shown)
        printed = {row["variable"]: dict(zip(table["columns"], row["cells"])) for row in table["rows"]}
        for name, text in printed["patients, n"].items():
            self.publish(self.cell({} if name == ALL else self.group(attribute, [name])), text)

        categories: dict[str, list[str]] = {}
        for variable in printed:
            if variable.endswith(COUNT_SUFFIX):
                column, value = variable[: -len(COUNT_SUFFIX)].split(": ", 1)
                categories.setdefault(column, []).append(value)
        for column, values in categories.items():
            self.add_cross(columns, self.partition(column, values))
            for value in values:
                for name, text in printed[f"{column}: {value}{COUNT_SUFFIX}"].items():
                    group = {} if name == ALL else self.group(attribute, [name])
                    self.publish(self.cell({**group, column: {value}}), text)

        for variable in printed:
            if not variable.endswith(LABEL_SUFFIX):
                continue
            label = variable[: -len(LABEL_SUFFIX)]
            self.add_cross(columns, [{label: {RECORDED}}, {label: {NOT_RECORDED}}, {label: {UNKNOWN}}])
            self.add_cross(columns, [{label: KNOWN}, {label: {UNKNOWN}}])
            for column in [*columns, {}]:
                self.sums.append((self.cell({**column, label: KNOWN}), (self.cell({**column, label: {RECORDED}}), self.cell({**column, label: {NOT_RECORDED}}))))
            for name, text in printed[variable].items():
                group = {} if name == ALL else self.group(attribute, [name])
                self.publish(self.cell({**group, label: {RECORDED}}), text)
                if text != SUPPRESSED and printed_count(text) > 0:
                    # "n (x% of known)" gives the number with a known label away.
                    self.publish(self.cell({**group, label: KNOWN}), self.truth[self.cell({**group, label: KNOWN})])

    def read_fairness(self, fairness: Mapping[str, Any], labels: Iterable[str]) -> None:
        """Read the fairness group sizes and n's, and add the sums over every group of each attribute."""
        labels = list(labels)
        for attribute, result in fairness["attributes"].items():
            every = [self.group(attribute, [g]) for g in sorted(set(self.variable(attribute)))]
            self.add_cross(every, [])
            for label in labels:
                self.add_cross(every, [{label: KNOWN}, {label: {UNKNOWN}}])
            for group in sorted(set(self.variable(attribute))):
                cell = self.cell(self.group(attribute, [group]))
                if group in result["groups"]:
                    self.publish(cell, result["groups"][group])
                    self.unprotected.update(self.cell({**self.group(attribute, [group]), label: {UNKNOWN}}) for label in labels)
            for label, per_setting in result["labels"].items():
                for groups in per_setting.values():
                    for group, entry in groups.items():
                        self.publish(self.cell({**self.group(attribute, [group]), label: KNOWN}), entry["n"], protect=False)
            parts = attribute.split(INTERSECTION_SEPARATOR)
            if len(parts) == 2:
                first, second = ([self.group(part, [g]) for g in sorted(set(self.variable(part)))] for part in parts)
                self.add_cross(first, second)
                for label in labels:
                    for state in (KNOWN, {UNKNOWN}):
                        self.add_cross(first, second, {label: state})

    def recoveries(self) -> list[str]:
        names = {cell: " & ".join(f"{name} in {sorted(allowed)}" for name, allowed in sorted(cell)) or "all" for cell in self.truth}
        found = recoveries(self.published, self.truth, self.sums, self.protected, MINIMUM, self.unprotected)
        for cell, name in names.items():
            found = [line.replace(repr(cell), name) for line in found]
        return found


def random_predictions(n_rows: int, labels: list[str], seed: int) -> dict[str, SettingPredictions]:
    """Return one setting whose every patient has a prediction for every label, as cross-validation gives."""
    rng = np.random.default_rng(seed)
    scores = {label: rng.random(n_rows) for label in labels}
    return {
        "aware": SettingPredictions(
            setting="aware",
            model="model",
            scores=scores,
            thresholds={label: np.full(n_rows, 0.5) for label in labels},
            decisions={label: (score >= 0.5).astype(float) for label, score in scores.items()},
        )
    }


def read_report(cohort: pd.DataFrame, config: Mapping[str, Any], seed: int = 0) -> ReportReader:
    contract = load_contract()
    plans = plan_groups(sensitive_frame(cohort, config), MINIMUM)
    labels = [label for label in contract.labels if label in cohort.columns]
    tables = cohort_tables(cohort, contract, plans, config, MINIMUM)
    fairness = fairness_audit(plans, label_matrix(cohort, labels), random_predictions(len(cohort), labels, seed), MINIMUM, FAIRNESS_CONFIG, seed)
    reader = ReportReader(cohort, plans, labels)
    for table in tables.values():
        reader.read_table(table)
    reader.read_fairness(fairness, labels)
    return reader


@pytest.fixture(scope="module")
def demo_config():
    return load_config("demo")


@pytest.fixture(scope="module")
def demo_reader(demo_config):
    return read_report(generate(2200, DEMO_SEED).extract, demo_config)


def test_report_counts_demo_protected(demo_reader):
    assert demo_reader.recoveries() == []


def test_report_counts_demo_caribbean_men_consistent(demo_reader):
    # The fairness output prints 44 black Caribbean men, so Table 1 prints
    # them too and hides the 23 women, or 68 - 44 - 23 gives away 1 patient
    # of a gender left out.
    men = demo_reader.cell({"gender": {"male"}, "ethnicity": {"black_caribbean"}})
    women = demo_reader.cell({"gender": {"female"}, "ethnicity": {"black_caribbean"}})
    assert demo_reader.published[men] == 44
    assert women in demo_reader.protected


def small_cohort(seed: int) -> pd.DataFrame:
    """Return a cohort of 300 to 700 patients with rare genders and ethnicities and some unknown labels."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(300, 700))
    frame = pd.DataFrame(
        {
            "age": rng.uniform(18, 85, size=n),
            "gender": rng.choice(["male", "female", "other", "unknown"], size=n, p=[0.62, 0.33, 0.03, 0.02]),
            "ethnicity": rng.choice(["white", "black_african", "black_caribbean", "asian", "mixed"], size=n, p=[0.5, 0.25, 0.1, 0.1, 0.05]),
            "smoking_status": rng.choice(["never", "former", "current"], size=n, p=[0.5, 0.2, 0.3]),
        }
    )
    for label in ("hypertension", "diabetes"):
        frame[label] = np.where(rng.random(n) < 0.04, np.nan, (rng.random(n) < 0.3).astype(float))
    return frame


@pytest.mark.parametrize("seed", range(6))
def test_report_counts_random_cohort_protected(seed):
    config = {
        "audit": {
            "attributes": ["gender", "ethnicity", "age_band"],
            "intersections": [["gender", "ethnicity"], ["gender", "age_band"]],
            "age_bands": [18, 50],
            "cohort_table": {"by": ["gender", "ethnicity"]},
        }
    }
    assert read_report(small_cohort(seed), config, seed).recoveries() == []
