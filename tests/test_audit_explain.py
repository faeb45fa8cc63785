"""Tests of the group comparison of the explanation audit and its n per group.

The n of a group is its number of patients in the explained sample.
``reader_recoveries`` treats the sampled patients as included ones: the
reader has the cohort size, the shown group sizes, the sample size and the
printed n's, and may subtract along every sum between them. A shown group's
count of patients outside the sample is not protected.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from hivcomorb.audit.explain import group_attributions
from hivcomorb.audit.groups import SUPPRESSED, plan_groups

from test_audit_fairness_sizes import GROUPS, reader_recoveries

MINIMUM = 10


def sample_sizes(group: list[str], rows: np.ndarray, seed: int = 0) -> tuple[object, dict, np.ndarray]:
    """Compare attributions over the sampled ``rows`` and return the plan, the printed n per group, and the sample as known labels."""
    rng = np.random.default_rng(seed)
    plans = plan_groups(pd.DataFrame({"attribute": pd.Series(group, dtype="string")}), MINIMUM)
    column_values = rng.normal(size=(len(rows), 3, 1))
    result = group_attributions(column_values, ["age", "egfr", "hba1c"], ["hypertension"], plans, rows, MINIMUM, top=3)
    printed = {name: entry["n_sample"] for name, entry in result["attribute"]["groups"].items()}
    # The reader's sums are those of included patients, so the sampled rows
    # stand for the known labels.
    sampled = np.full(len(group), np.nan)
    sampled[rows] = 0.0
    return plans["attribute"], printed, sampled


def test_group_attributions_one_unsampled_printed():
    # 12 patients of "large" and 1 of the 13 in "small" are not sampled:
    # 13 - 12 gives that 1 away, a shown group's count outside the sample,
    # which is not protected.
    unsampled = {GROUPS.index("small"), *range(12)}
    rows = np.array([i for i in range(len(GROUPS)) if i not in unsampled])
    plan, printed, sampled = sample_sizes(GROUPS, rows)
    assert printed == {"large": 188, "middle": 60, "small": 12}
    assert reader_recoveries(GROUPS, sampled, plan, printed) == []


def test_group_attributions_few_sampled_partner_hidden():
    # 8 of the 13 in "small" are sampled, too few to compare. The 17 patients
    # outside the sample minus the 12 of "large" would leave 5 for "small"
    # and the suppressed groups, so the n of "large" is suppressed.
    unsampled = {*np.flatnonzero(np.asarray(GROUPS) == "small")[:5], *range(12)}
    rows = np.array([i for i in range(len(GROUPS)) if i not in unsampled])
    plan, printed, sampled = sample_sizes(GROUPS, rows)
    assert printed == {"large": SUPPRESSED, "middle": 60}
    assert reader_recoveries(GROUPS, sampled, plan, printed) == []


def test_group_attributions_whole_cohort_printed():
    plan, printed, _ = sample_sizes(GROUPS, np.arange(len(GROUPS)))
    assert printed == {"large": 200, "middle": 60, "small": 13}


@pytest.mark.parametrize("seed", range(8))
def test_group_attributions_random_sample_protected(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(200, 500))
    group = list(rng.choice(["a", "b", "c", "d", "e"], size=n, p=[0.5, 0.25, 0.15, 0.07, 0.03]))
    # At least the minimum of patients are left out of the sample: fewer
    # would be the cohort size minus the sample size, which no n can hide.
    rows = np.sort(rng.choice(n, size=int(rng.integers(n - 60, n - MINIMUM + 1)), replace=False))
    plan, printed, sampled = sample_sizes(group, rows, seed)
    assert reader_recoveries(group, sampled, plan, printed) == []
