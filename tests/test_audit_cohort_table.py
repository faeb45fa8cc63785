"""Tests of Table 1 and its complementary suppression."""

from __future__ import annotations

import pandas as pd
import pytest

from hivcomorb.audit.cohort_table import ALL, cohort_table
from hivcomorb.audit.groups import SUPPRESSED, AttributeGroups
from hivcomorb.contract import load_contract

MINIMUM = 10


def plan_for(values: list[str], reportable: list[str]) -> AttributeGroups:
    series = pd.Series(values, dtype="string")
    counts = series.value_counts().to_dict()
    return AttributeGroups(
        attribute="gender",
        values=series,
        counts={str(k): int(v) for k, v in counts.items()},
        reportable=reportable,
        n_suppressed=len(counts) - len(reportable),
        reference=reportable[0],
        columns=("gender",),
    )


def row(table: dict, variable: str) -> dict[str, str]:
    found = next(r for r in table["rows"] if r["variable"] == variable)
    return dict(zip(table["columns"], found["cells"]))


@pytest.fixture
def contract():
    return load_contract()


def test_cohort_table_partner_cell_suppressed(contract):
    # 60 men (8 current smokers), 40 women (20 current smokers): the men's cell is small.
    gender = ["male"] * 60 + ["female"] * 40
    smoking = ["current"] * 8 + ["never"] * 52 + ["current"] * 20 + ["never"] * 20
    cohort = pd.DataFrame({"gender": gender, "smoking_status": smoking})
    table = cohort_table(cohort, contract, plan_for(gender, ["male", "female"]), MINIMUM)
    cells = row(table, "smoking_status: current, n (%)")
    assert cells["male"] == SUPPRESSED
    assert cells["female"] == SUPPRESSED
    assert cells[ALL].startswith("28 ")


def test_cohort_table_hides_all_cell_without_partner(contract):
    # Current smokers: 8 men, no women, 5 of unknown gender (not shown, 15 patients).
    gender = ["male"] * 50 + ["female"] * 40 + ["unknown"] * 15
    smoking = ["current"] * 8 + ["never"] * 42 + ["never"] * 40 + ["current"] * 5 + ["never"] * 10
    cohort = pd.DataFrame({"gender": gender, "smoking_status": smoking})
    table = cohort_table(cohort, contract, plan_for(gender, ["male", "female"]), MINIMUM)
    cells = row(table, "smoking_status: current, n (%)")
    assert cells["male"] == SUPPRESSED
    assert cells["female"] == "0 (0.0%)"
    assert cells[ALL] == SUPPRESSED


def test_cohort_table_hides_smallest_group(contract):
    # 4 patients of gender "other" are suppressed; without a second hidden group
    # their number would be all patients minus men minus women.
    gender = ["male"] * 60 + ["female"] * 36 + ["other"] * 4
    cohort = pd.DataFrame({"gender": gender, "smoking_status": ["never"] * 100})
    table = cohort_table(cohort, contract, plan_for(gender, ["male", "female"]), MINIMUM)
    assert table["columns"] == [ALL, "male"]
    assert table["suppressed_groups"] == 2
