"""Tests of the group plan: which groups of each sensitive attribute may be shown.

The reader has the cohort size and every shown group's size. Each case
checks, with ``recoveries``, that subtraction gives away no suppressed group
and no suppressed groups adding up to fewer than the minimum. The reader
subtracts along the sums the groups imply: each attribute's groups add up to
the cohort, and an intersection's groups add up to the groups of each of its
parts.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest

from hivcomorb.audit.groups import INTERSECTION_SEPARATOR, plan_groups, sensitive_frame

from test_disclosure import recoveries

MINIMUM = 10
COHORT = "cohort"


def frame_from_counts(columns: tuple[str, ...], counts: dict[tuple, int], intersections: list[list[str]] = ()) -> pd.DataFrame:
    """Return the sensitive frame of a cohort with ``counts`` patients for each combination of values."""
    rows = [combination for combination, n in counts.items() for _ in range(n)]
    cohort = pd.DataFrame(rows, columns=list(columns))
    config = {"audit": {"attributes": list(columns), "intersections": [list(i) for i in intersections]}}
    return sensitive_frame(cohort, config)


def reader_view(frame: pd.DataFrame, plans: dict) -> tuple[dict, dict, list, set]:
    """Return what is published, the true counts, the sums a reader can use and the suppressed cells.

    The sums come from the patients' values, not from the plan.
    """
    truth = {COHORT: len(frame)}
    sums = []
    for attribute in frame.columns:
        counts = frame[attribute].value_counts()
        truth.update({(attribute, str(group)): int(n) for group, n in counts.items()})
        sums.append((COHORT, tuple((attribute, str(group)) for group in counts.index)))
    for intersection in frame.columns:
        parts = intersection.split(INTERSECTION_SEPARATOR)
        if len(parts) < 2:
            continue
        for part in frame.columns:
            if part == intersection or not set(part.split(INTERSECTION_SEPARATOR)) < set(parts):
                continue
            for value, members in frame.groupby(part)[intersection]:
                sums.append(((part, str(value)), tuple((intersection, str(group)) for group in members.unique())))
    published = {COHORT: len(frame)}
    for attribute, plan in plans.items():
        published.update({(attribute, group): count for group, count in plan.counts.items()})
    suppressed = {cell for cell in truth if cell != COHORT and cell not in published}
    return published, truth, sums, suppressed


def assert_protected(frame: pd.DataFrame, plans: dict) -> None:
    published, truth, sums, suppressed = reader_view(frame, plans)
    assert recoveries(published, truth, sums, suppressed, MINIMUM) == []


def demo_like_frame() -> pd.DataFrame:
    """Return gender x ethnicity shaped like the demo cohort: gender other has 12 patients and unknown 8."""
    counts = {
        ("male", "white"): 300, ("female", "white"): 120, ("other", "white"): 6, ("unknown", "white"): 3,
        ("male", "black_african"): 90, ("female", "black_african"): 150, ("other", "black_african"): 4,
        ("unknown", "black_african"): 4,
        ("male", "black_caribbean"): 44, ("female", "black_caribbean"): 23, ("unknown", "black_caribbean"): 1,
        ("male", "mixed"): 59, ("female", "mixed"): 7, ("other", "mixed"): 2,
    }  # fmt: skip
    return frame_from_counts(("gender", "ethnicity"), counts, [["gender", "ethnicity"]])


def test_plan_groups_partner_hides_other():
    # All patients minus the shown genders would give away the 8 of unknown gender.
    plan = plan_groups(demo_like_frame(), MINIMUM)["gender"]
    assert plan.reportable == ["male", "female"]


def test_plan_groups_partner_counted():
    plan = plan_groups(demo_like_frame(), MINIMUM)["gender"]
    assert plan.n_suppressed == 2
    assert plan.n_partners == 1


def test_plan_groups_partner_not_in_counts():
    plan = plan_groups(demo_like_frame(), MINIMUM)["gender"]
    assert "other" not in plan.counts


def test_plan_groups_demo_like_protected():
    frame = demo_like_frame()
    assert_protected(frame, plan_groups(frame, MINIMUM))


def test_plan_groups_intersection_of_hidden_part_hidden():
    # "other" gender is a partner, so "other & white" and the rest go with it.
    plan = plan_groups(demo_like_frame(), MINIMUM)["gender x ethnicity"]
    assert not [group for group in plan.reportable if group.startswith(("other", "unknown"))]


def test_plan_groups_intersection_cell_not_subtracted():
    # 66 mixed - 59 men would give away the 7 mixed women, so the men go too.
    plan = plan_groups(demo_like_frame(), MINIMUM)["gender x ethnicity"]
    assert "female & mixed" not in plan.reportable
    assert "male & mixed" not in plan.reportable


def test_plan_groups_large_intersections_kept():
    plan = plan_groups(demo_like_frame(), MINIMUM)["gender x ethnicity"]
    assert {"male & white", "female & black_african"} <= set(plan.reportable)


def test_plan_groups_large_left_out_no_partner():
    # 4 + 6 patients left out already reach the minimum.
    frame = frame_from_counts(("gender",), {("male",): 60, ("female",): 30, ("other",): 4, ("unknown",): 6})
    plan = plan_groups(frame, MINIMUM)["gender"]
    assert plan.reportable == ["male", "female"]
    assert plan.n_partners == 0


def test_plan_groups_no_small_group_nothing_hidden():
    counts = {("male", "white"): 40, ("male", "asian"): 20, ("female", "white"): 25, ("female", "asian"): 15}
    frame = frame_from_counts(("gender", "ethnicity"), counts, [["gender", "ethnicity"]])
    plans = plan_groups(frame, MINIMUM)
    assert all(plan.n_suppressed == 0 for plan in plans.values())


def test_plan_groups_partner_is_smallest_group():
    frame = frame_from_counts(("gender",), {("male",): 60, ("female",): 36, ("other",): 12, ("unknown",): 4})
    assert plan_groups(frame, MINIMUM)["gender"].reportable == ["male", "female"]


def test_plan_groups_one_small_intersection_costs_four():
    # One small cell of gender x smoking needs three partners, as in a 2 x 3
    # table with published margins. Every other intersection stays shown.
    counts = {
        ("male", "never"): 30, ("male", "former"): 25, ("male", "current"): 20,
        ("female", "never"): 25, ("female", "former"): 15, ("female", "current"): 4,
    }  # fmt: skip
    frame = frame_from_counts(("gender", "smoking_status"), counts, [["gender", "smoking_status"]])
    plans = plan_groups(frame, MINIMUM)
    assert plans["gender x smoking_status"].n_suppressed == 4
    assert plans["gender"].n_suppressed == 0
    assert plans["smoking_status"].n_suppressed == 0
    assert_protected(frame, plans)


def test_plan_groups_configured_reference_kept():
    # "other" is the smallest shown group but the configured reference, so "female" is the partner.
    frame = frame_from_counts(("gender",), {("male",): 60, ("female",): 36, ("other",): 12, ("unknown",): 4})
    plan = plan_groups(frame, MINIMUM, {"gender": "other"})["gender"]
    assert plan.reference == "other"
    assert plan.reportable == ["male", "other"]


def test_plan_groups_reference_never_hidden_group():
    plan = plan_groups(demo_like_frame(), MINIMUM)["gender"]
    assert plan.reference == "male"


def test_plan_groups_hidden_reference_falls_back(caplog):
    frame = frame_from_counts(("gender",), {("male",): 60, ("female",): 36, ("other",): 4})
    with caplog.at_level(logging.WARNING, logger="hivcomorb.audit.groups"):
        plan = plan_groups(frame, MINIMUM, {"gender": "other"})["gender"]
    assert plan.reference == "male"
    assert "absent or suppressed" in caplog.text


def test_plan_groups_three_way_intersection_protected():
    rng = np.random.default_rng(3)
    n = 400
    cohort = pd.DataFrame(
        {
            "gender": rng.choice(["male", "female", "other"], size=n, p=[0.6, 0.36, 0.04]),
            "ethnicity": rng.choice(["white", "black_african", "asian"], size=n, p=[0.6, 0.3, 0.1]),
            "age": rng.uniform(18, 80, size=n),
        }
    )
    config = {
        "audit": {
            "attributes": ["gender", "ethnicity", "age_band"],
            "intersections": [["gender", "ethnicity"], ["gender", "ethnicity", "age_band"]],
            "age_bands": [18, 50],
        }
    }
    frame = sensitive_frame(cohort, config)
    assert_protected(frame, plan_groups(frame, MINIMUM))


def test_plan_groups_small_cohort_warns(caplog):
    frame = frame_from_counts(("gender",), {("male",): 5, ("female",): 3})
    with caplog.at_level(logging.WARNING, logger="hivcomorb.audit.groups"):
        plan = plan_groups(frame, MINIMUM)["gender"]
    assert plan.reportable == []
    assert "no further suppression" in caplog.text


def random_frame(seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(150, 600))
    cohort = pd.DataFrame(
        {
            "gender": rng.choice(["male", "female", "other", "unknown"], size=n, p=[0.62, 0.3, 0.05, 0.03]),
            "ethnicity": rng.choice(
                ["white", "black_african", "black_caribbean", "asian", "mixed", "other"],
                size=n,
                p=[0.5, 0.25, 0.08, 0.08, 0.05, 0.04],
            ),
            "age": rng.uniform(18, 85, size=n),
        }
    )
    config = {
        "audit": {
            "attributes": ["gender", "ethnicity", "age_band"],
            "intersections": [["gender", "ethnicity"], ["gender", "age_band"]],
        }
    }
    return sensitive_frame(cohort, config)


@pytest.mark.parametrize("seed", range(12))
def test_plan_groups_random_cohort_protected(seed):
    frame = random_frame(seed)
    assert_protected(frame, plan_groups(frame, MINIMUM))


@pytest.mark.parametrize("seed", range(12))
def test_plan_groups_random_cohort_partners_needed(seed):
    # A one-way group is a partner only while the suppressed ones add up to fewer than the minimum.
    frame = random_frame(seed)
    plans = plan_groups(frame, MINIMUM)
    for attribute in ("gender", "ethnicity", "age_band"):
        plan = plans[attribute]
        counts = frame[attribute].value_counts()
        small = counts[counts < MINIMUM]
        if small.sum() == 0 or small.sum() >= MINIMUM:
            assert plan.n_partners == 0, attribute
        else:
            assert plan.n_partners == 1, attribute
