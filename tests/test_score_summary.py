"""Small-cell and complementary suppression of the scoring summary's group counts."""

from __future__ import annotations

from collections import Counter

import pytest

from hivcomorb.disclosure import SUPPRESSED
from hivcomorb.score.summary import ScoreCounts, complementary_hidden

MINIMUM = 10


def counts_with(groups: dict[str, dict[str, int]]) -> ScoreCounts:
    counts = ScoreCounts(labels=["mental_health", "diabetes"], groups=["deprivation_quintile"], age_edges=[18, 30, 70])
    for name, cells in groups.items():
        counts.by_group["deprivation_quintile"][name] = Counter(cells)
    return counts


def hidden_cells(visible: dict, key: str) -> list[str]:
    return [name for name, cells in visible.items() if cells == SUPPRESSED or cells[key] == SUPPRESSED]


def test_complementary_hidden_adds_smallest_positive():
    counts = {"1": 219, "2": 52, "3": 13, "4": 1, "unknown": 0}
    assert complementary_hidden(counts, {"4"}, MINIMUM) == {"4", "3"}


def test_complementary_hidden_grows_until_sum_reaches_minimum():
    counts = {"a": 1, "b": 2, "c": 3, "d": 50}
    assert complementary_hidden(counts, {"a"}, MINIMUM) == {"a", "b", "c", "d"}


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


def test_summary_hides_second_group_beside_small_group():
    counts = counts_with(
        {
            "1": {"patients": 400, "mental_health": 100, "diabetes": 40, "out_of_distribution": 20},
            "2": {"patients": 30, "mental_health": 12, "diabetes": 10, "out_of_distribution": 10},
            "5": {"patients": 4, "mental_health": 2, "diabetes": 1, "out_of_distribution": 0},
        }
    )
    visible = counts.suppressed_groups(MINIMUM)["deprivation_quintile"]
    assert visible["5"] == SUPPRESSED
    assert visible["2"] == SUPPRESSED
    assert visible["1"]["patients"] == 400


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
