"""Small-cell and complementary suppression of the scoring summary's group counts."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pandas as pd
import pytest

from hivcomorb.disclosure import SUPPRESSED
from hivcomorb.score.summary import ScoreCounts, complementary_hidden

MINIMUM = 10
LABELS = ["mental_health", "diabetes"]
KEYS = [*LABELS, "out_of_distribution"]


def counts_with(groups: dict[str, dict[str, int]]) -> ScoreCounts:
    counts = ScoreCounts(labels=LABELS, groups=["deprivation_quintile"], age_edges=[18, 30, 70])
    for name, cells in groups.items():
        counts.by_group["deprivation_quintile"][name] = Counter(cells)
    counts.rows_read = counts.rows_scored = sum(cells["patients"] for cells in groups.values())
    for label in LABELS:
        counts.flagged[label] = sum(cells[label] for cells in groups.values())
    counts.ood_rows = counts.ood_range_rows = sum(cells["out_of_distribution"] for cells in groups.values())
    return counts


def hidden_cells(visible: dict, key: str) -> list[str]:
    return [name for name, cells in visible.items() if cells == SUPPRESSED or cells[key] == SUPPRESSED]


def test_complementary_hidden_adds_smallest_positive():
    counts = {"1": 219, "2": 52, "3": 13, "4": 1, "unknown": 0}
    assert complementary_hidden(counts, {"4"}, MINIMUM) == {"4", "3"}


def test_complementary_hidden_smallest_enough_cell():
    # Hiding b and c would still leave a small hidden sum, but d alone protects a.
    counts = {"a": 1, "b": 2, "c": 3, "d": 50}
    assert complementary_hidden(counts, {"a"}, MINIMUM) == {"a", "d"}


def test_complementary_hidden_no_single_cell_enough():
    # No one cell lifts a's sum to 10, so the largest (d) goes first, then the smallest that is enough (b).
    counts = {"a": 1, "b": 3, "c": 4, "d": 6, "e": 5}
    assert complementary_hidden(counts, {"a"}, MINIMUM) == {"a", "b", "d"}


def test_complementary_hidden_lone_large_cell():
    counts = {"a": 495, "b": 0, "c": 52, "d": 13}
    assert complementary_hidden(counts, {"a"}, MINIMUM) == {"a", "d"}


def test_complementary_hidden_nothing_left_to_hide():
    counts = {"a": 1, "b": 0}
    assert complementary_hidden(counts, {"a"}, MINIMUM) == {"a"}


def test_complementary_hidden_leaves_two_large_cells():
    counts = {"a": 95, "b": 40, "c": 20}
    assert complementary_hidden(counts, {"a", "b"}, MINIMUM) == {"a", "b"}


def test_complementary_hidden_nothing_hidden():
    assert complementary_hidden({"a": 3, "b": 40}, set(), MINIMUM) == set()


def test_summary_hides_cell_recoverable_by_subtraction():
    # The flagged total of mental_health is published, so a lone hidden 1
    # in quintile 4 would be the total minus the shown cells.
    counts = counts_with(
        {
            "1": {"patients": 600, "mental_health": 219, "diabetes": 40, "out_of_distribution": 20},
            "2": {"patients": 300, "mental_health": 52, "diabetes": 30, "out_of_distribution": 15},
            "3": {"patients": 200, "mental_health": 13, "diabetes": 25, "out_of_distribution": 12},
            "4": {"patients": 100, "mental_health": 1, "diabetes": 20, "out_of_distribution": 11},
            "unknown": {"patients": 50, "mental_health": 0, "diabetes": 15, "out_of_distribution": 10},
        }
    )
    visible = counts.suppressed_groups(MINIMUM)["deprivation_quintile"]
    assert visible["4"]["mental_health"] == SUPPRESSED
    assert visible["3"]["mental_health"] == SUPPRESSED
    assert visible["1"]["mental_health"] == 219
    assert visible["3"]["diabetes"] == 25


def test_summary_hides_only_partner_cells_beside_small_group():
    counts = counts_with(
        {
            "1": {"patients": 400, "mental_health": 100, "diabetes": 40, "out_of_distribution": 20},
            "2": {"patients": 30, "mental_health": 12, "diabetes": 10, "out_of_distribution": 10},
            "5": {"patients": 4, "mental_health": 2, "diabetes": 1, "out_of_distribution": 0},
        }
    )
    visible = counts.suppressed_groups(MINIMUM)["deprivation_quintile"]
    assert visible["5"] == SUPPRESSED
    assert visible["2"]["patients"] == SUPPRESSED
    assert visible["2"]["mental_health"] == SUPPRESSED
    assert visible["2"]["diabetes"] == SUPPRESSED
    # Group 5 has no patient out of distribution, so that sum needs no partner.
    assert visible["2"]["out_of_distribution"] == 10
    assert visible["1"] == {"patients": 400, "mental_health": 100, "diabetes": 40, "out_of_distribution": 20}


def test_summary_hides_count_equal_to_hidden_size():
    # All 30 patients of group 2 are out of distribution. Printing 30 beside its
    # hidden size would show that group 2 has at least 30 patients, so group 5 at most 4.
    counts = counts_with(
        {
            "1": {"patients": 400, "mental_health": 100, "diabetes": 40, "out_of_distribution": 20},
            "2": {"patients": 30, "mental_health": 12, "diabetes": 10, "out_of_distribution": 30},
            "5": {"patients": 4, "mental_health": 0, "diabetes": 0, "out_of_distribution": 0},
        }
    )
    visible = counts.suppressed_groups(MINIMUM)["deprivation_quintile"]
    assert visible["2"]["patients"] == SUPPRESSED
    assert visible["2"]["out_of_distribution"] == SUPPRESSED
    assert visible["2"]["mental_health"] == 12
    assert visible["1"]["out_of_distribution"] == 20


def test_summary_lone_hidden_zero_no_partner():
    # Group 5's 0 mental health flags can be worked out, but a 0 reveals no small number of patients.
    counts = counts_with(
        {
            "1": {"patients": 400, "mental_health": 100, "diabetes": 40, "out_of_distribution": 20},
            "2": {"patients": 300, "mental_health": 50, "diabetes": 30, "out_of_distribution": 15},
            "5": {"patients": 4, "mental_health": 0, "diabetes": 2, "out_of_distribution": 0},
        }
    )
    visible = counts.suppressed_groups(MINIMUM)["deprivation_quintile"]
    assert visible["2"]["mental_health"] == 50
    assert visible["1"]["mental_health"] == 100
    assert visible["2"]["diabetes"] == SUPPRESSED


@pytest.mark.parametrize("key", ["mental_health", "diabetes", "out_of_distribution"])
def test_summary_no_lone_hidden_cell(key):
    counts = counts_with(
        {
            "1": {"patients": 500, "mental_health": 495, "diabetes": 3, "out_of_distribution": 20},
            "2": {"patients": 300, "mental_health": 52, "diabetes": 30, "out_of_distribution": 15},
            "3": {"patients": 200, "mental_health": 13, "diabetes": 25, "out_of_distribution": 5},
            "4": {"patients": 8, "mental_health": 1, "diabetes": 0, "out_of_distribution": 0},
        }
    )
    groups = counts.by_group["deprivation_quintile"]
    visible = counts.suppressed_groups(MINIMUM)["deprivation_quintile"]
    hidden = hidden_cells(visible, key)
    hidden_sum = sum(groups[name][key] for name in hidden)
    assert len(hidden) != 1
    assert not 0 < hidden_sum < MINIMUM


# Gender groups as a trial extract had them: two large groups and two small ones.


def counts_from_frame(frame: pd.DataFrame, column: str, flags: dict[str, np.ndarray], ood: np.ndarray) -> ScoreCounts:
    counts = ScoreCounts(labels=LABELS, groups=[column], age_edges=[18, 30, 70])
    counts.add_chunk(frame, flags, ood, ood, np.zeros(len(frame), dtype=bool))
    return counts


def gender_counts() -> ScoreCounts:
    gender = ["male"] * 600 + ["female"] * 400 + ["other"] * 3 + ["unknown"] * 2
    positions = np.arange(len(gender))
    flags = {
        # One patient of gender other has a mental health flag, so that sum needs a partner.
        "mental_health": (positions % 5 == 0) | (positions == 1001),
        # No patient of gender other or unknown has a diabetes flag.
        "diabetes": (positions % 7 == 0) & (positions < 1000),
    }
    ood = (positions % 20 == 0) & (positions < 1000)
    return counts_from_frame(pd.DataFrame({"gender": gender}), "gender", flags, ood)


def test_summary_gender_keeps_women_row():
    visible = gender_counts().suppressed_groups(MINIMUM)["gender"]
    assert visible["other"] == SUPPRESSED
    assert visible["unknown"] == SUPPRESSED
    assert visible["female"] != SUPPRESSED
    assert visible["female"]["diabetes"] == 57
    assert visible["female"]["out_of_distribution"] == 20


def test_summary_gender_hides_smaller_partners():
    visible = gender_counts().suppressed_groups(MINIMUM)["gender"]
    assert visible["female"]["patients"] == SUPPRESSED
    assert visible["female"]["mental_health"] == SUPPRESSED
    assert visible["male"] == {"patients": 600, "mental_health": 120, "diabetes": 86, "out_of_distribution": 30}


def test_summary_age_band_partner_is_smallest_band():
    # 3 patients under 18 need one partner band: 18-29 (25 patients), not the large bands.
    ages = [17.0] * 3 + [25.0] * 25 + [50.0] * 600 + [75.0] * 400
    positions = np.arange(len(ages))
    flags = {"mental_health": positions % 4 == 0, "diabetes": positions % 9 == 0}
    counts = counts_from_frame(pd.DataFrame({"age": ages}), "age_band", flags, positions % 50 == 1)
    visible = counts.suppressed_groups(MINIMUM)["age_band"]
    assert visible["under 18"] == SUPPRESSED
    assert visible["18-29"]["patients"] == SUPPRESSED
    assert visible["30-69"]["patients"] == 600
    assert visible["70+"]["patients"] == 400


# Safety: the reader of the summary subtracts the shown counts of one key from
# its published total (rows scored, flags per label, rows out of distribution).


def published_totals(document: dict) -> dict[str, int | str]:
    return {"patients": document["rows_scored"], **document["flagged"], "out_of_distribution": document["out_of_distribution"]["rows"]}


def safety_problems(counts: ScoreCounts) -> list[str]:
    """Return what a reader can work out from the summary that small-cell suppression should stop.

    A sum that leaves a small remainder is a problem only while a shown
    positive count is left to hide, because suppression can do nothing more.
    """
    document = counts.as_dict(MINIMUM)
    totals = published_totals(document)
    problems = []
    for column, groups in counts.by_group.items():
        visible = document["by_group"][column]
        for key in ["patients", *KEYS]:
            hidden = [name for name, cells in visible.items() if cells == SUPPRESSED or cells[key] == SUPPRESSED]
            hidden_sum = sum(groups[name][key] for name in hidden)
            shown_positive = [name for name in visible if name not in hidden and groups[name][key] > 0]
            if totals[key] == SUPPRESSED or not shown_positive or hidden_sum == 0:
                continue
            if len(hidden) == 1:
                problems.append(f"{column} {key}: the one hidden count of {hidden[0]} is the total minus the shown counts")
            if 0 < hidden_sum < MINIMUM:
                problems.append(f"{column} {key}: the hidden counts {hidden} add up to {hidden_sum}")
        for name, cells in visible.items():
            size = groups[name]["patients"]
            if cells == SUPPRESSED:
                if size >= MINIMUM:
                    problems.append(f"{column} {name}: a group of {size} patients is hidden whole")
                continue
            for key in KEYS:
                count, rest = groups[name][key], size - groups[name][key]
                if cells[key] != SUPPRESSED and (0 < count < MINIMUM or 0 < rest < MINIMUM):
                    problems.append(f"{column} {name} {key}: a small count or remainder is shown")
                if cells["patients"] == SUPPRESSED and cells[key] == size > 0:
                    problems.append(f"{column} {name} {key}: a count equal to the hidden size is shown")
    return problems


def random_counts(rng: np.random.Generator) -> ScoreCounts:
    groups = {}
    for index in range(int(rng.integers(2, 7))):
        size = int(rng.integers(1, MINIMUM)) if rng.random() < 0.4 else int(rng.integers(MINIMUM, 3000))
        cells = {"patients": size}
        for key in KEYS:
            share = rng.choice([0.0, 0.003, 0.05, 0.3, 0.98, 1.0])
            cells[key] = int(rng.binomial(size, share))
        groups[f"g{index}"] = cells
    return counts_with(groups)


def test_summary_gender_safe():
    assert safety_problems(gender_counts()) == []


@pytest.mark.parametrize("seed", range(200))
def test_summary_random_groups_safe(seed):
    assert safety_problems(random_counts(np.random.default_rng(seed))) == []
