"""Tests of small-cell and complementary suppression.

``recoveries`` plays the reader: from the published counts it subtracts along
every sum, one at a time and reusing what it recovered, until nothing new
comes out. Other test modules import it.
"""

from __future__ import annotations

from typing import Hashable, Iterable, Mapping, Sequence

import numpy as np
import pytest

from hivcomorb.disclosure import is_reportable, min_group_size, suppress_complementary

MINIMUM = 10


def recoveries(
    published: Mapping[Hashable, int],
    truth: Mapping[Hashable, int],
    sums: Sequence[tuple[Hashable, Sequence[Hashable]]],
    protected: Iterable[Hashable],
    minimum: int = MINIMUM,
    unprotected: Iterable[Hashable] = (),
) -> list[str]:
    """Return what subtraction along single sums gives away.

    That is a ``protected`` cell, or a cell that is neither published nor
    ``unprotected`` and counts 1 to ``minimum - 1``. It is also the cells of
    one sum still unknown once nothing new comes out, when they add up to 1
    to ``minimum - 1`` and are not all ``unprotected``.
    """
    for cell, count in published.items():
        assert truth[cell] == count, f"{cell} is published as {count}, but counts {truth[cell]}"
    protected = set(protected)
    unprotected = set(unprotected)
    known = dict(published)
    found: set[str] = set()
    changed = True
    while changed:
        changed = False
        for total, members in sums:
            unknown = [member for member in members if member not in known]
            if total in known:
                remainder = known[total] - sum(known[member] for member in members if member in known)
                if len(unknown) == 1 or (unknown and remainder == 0):
                    for cell in unknown:
                        known[cell] = truth[cell]
                    changed = True
            elif not unknown:
                known[total] = truth[total]
                changed = True
    # Bounds are checked on what the reader ends with, because a member
    # still unknown midway may come out exactly later, as a 0 for example.
    for total, members in sums:
        unknown = [member for member in members if member not in known]
        if total in known and not set(unknown) <= unprotected:
            remainder = known[total] - sum(known[member] for member in members if member in known)
            if 0 < remainder < minimum:
                found.add(f"{unknown} add up to {remainder}")
    for cell, value in known.items():
        if cell in protected:
            found.add(f"suppressed {cell} is {value}")
        elif cell not in published and cell not in unprotected and 0 < value < minimum:
            found.add(f"hidden {cell} is {value}")
    return sorted(found)


def printed_after(counts: Mapping[Hashable, int], hidden: Iterable[Hashable], implied: Iterable[Hashable] = ()) -> dict:
    """Return the counts left in print once ``hidden`` and ``implied`` cells are taken out."""
    out = set(hidden) | set(implied)
    return {cell: count for cell, count in counts.items() if cell not in out}


def table_sums(rows: Sequence[str], columns: Sequence[str]) -> list[tuple[Hashable, tuple]]:
    """Return the sums of a two-way table with margins: each row, each column and the grand total."""
    sums: list[tuple[Hashable, tuple]] = []
    for row in rows:
        sums.append((row, tuple((row, column) for column in columns)))
    for column in columns:
        sums.append((column, tuple((row, column) for row in rows)))
    sums.append(("all", tuple(rows)))
    sums.append(("all", tuple(columns)))
    return sums


def table_counts(cells: Mapping[tuple[str, str], int]) -> dict[Hashable, int]:
    """Return the cells of a two-way table with its row, column and grand totals added."""
    counts: dict[Hashable, int] = dict(cells)
    for (row, column), count in cells.items():
        counts[row] = counts.get(row, 0) + count
        counts[column] = counts.get(column, 0) + count
    counts["all"] = sum(cells.values())
    return counts


def test_min_group_size_default():
    assert min_group_size({}) == 10


def test_min_group_size_rejects_zero():
    with pytest.raises(ValueError, match="at least 1"):
        min_group_size({"disclosure": {"min_group_size": 0}})


@pytest.mark.parametrize(("count", "expected"), [(9, False), (10, True), (11, True)])
def test_is_reportable_at_minimum(count, expected):
    assert is_reportable(count, MINIMUM) is expected


def test_suppress_complementary_hides_smallest_partner():
    # 4 patients of gender "other": without a partner they are 100 - 60 - 24.
    counts = {"all": 100, "male": 60, "female": 24, "other": 4, "unknown": 12}
    sums = [("all", ("male", "female", "other", "unknown"))]
    result = suppress_complementary(counts, sums, MINIMUM, published=["all"])
    assert result.hidden == {"other", "unknown"}


def test_suppress_complementary_small_ones_adding_up_kept_alone():
    # 4 + 6 patients left out already reach the minimum.
    counts = {"all": 100, "male": 60, "female": 30, "other": 4, "unknown": 6}
    result = suppress_complementary(counts, [("all", ("male", "female", "other", "unknown"))], MINIMUM, published=["all"])
    assert result.hidden == {"other", "unknown"}


def test_suppress_complementary_nothing_small_nothing_hidden():
    counts = table_counts({("male", "never"): 40, ("male", "current"): 20, ("female", "never"): 25, ("female", "current"): 15})
    sums = table_sums(["male", "female"], ["never", "current"])
    result = suppress_complementary(counts, sums, MINIMUM, published=["all", "male", "female", "never", "current"])
    assert result.hidden == frozenset()


def test_suppress_complementary_one_small_cell_costs_four():
    # One small cell of a 3 x 3 table with published margins needs three partners.
    cells = {
        ("male", "never"): 30, ("male", "former"): 4, ("male", "current"): 20,
        ("female", "never"): 25, ("female", "former"): 15, ("female", "current"): 12,
        ("other", "never"): 20, ("other", "former"): 18, ("other", "current"): 11,
    }  # fmt: skip
    counts = table_counts(cells)
    rows, columns = ["male", "female", "other"], ["never", "former", "current"]
    margins = ["all", *rows, *columns]
    result = suppress_complementary(counts, table_sums(rows, columns), MINIMUM, published=margins)
    assert len(result.hidden) == 4
    assert recoveries(printed_after(counts, result.hidden), counts, table_sums(rows, columns), result.hidden) == []


def test_suppress_complementary_zero_stays_printed():
    # All minus 0 minus female would give the 8 away, and hiding the 0 would change nothing.
    counts = {"all": 50, "male": 8, "female": 42, "other": 0}
    result = suppress_complementary(counts, [("all", ("male", "female", "other"))], MINIMUM, published=["all"])
    assert result.hidden == {"male", "female"}


def test_suppress_complementary_small_implied_cell_protected():
    # 37 of 40 women recorded: 40 - 37 gives away the 3 not recorded.
    counts = {"female": 40, "recorded": 37, "not recorded": 3}
    result = suppress_complementary(
        counts, [("female", ("recorded", "not recorded"))], MINIMUM, published=["female"], implied=["not recorded"]
    )
    assert result.hidden == {"recorded"}


def test_suppress_complementary_hidden_with_follows():
    counts = {"all": 100, "male": 60, "female": 28, "other": 12, "other & white": 11, "other & asian": 1}
    sums = [("all", ("male", "female", "other")), ("other", ("other & white", "other & asian"))]
    result = suppress_complementary(
        counts, sums, MINIMUM, published=["all"], hidden_with={"other": ["other & white", "other & asian"]}
    )
    assert "other & white" in result.hidden


def test_suppress_complementary_spares_reference():
    counts = {"all": 100, "male": 60, "female": 24, "other": 12, "unknown": 4}
    sums = [("all", ("male", "female", "other", "unknown"))]
    result = suppress_complementary(counts, sums, MINIMUM, published=["all"], spare=["other"])
    assert result.hidden == {"female", "unknown"}


def test_suppress_complementary_small_cohort_unresolved():
    counts = {"all": 8, "male": 5, "female": 3}
    result = suppress_complementary(counts, [("all", ("male", "female"))], MINIMUM, published=["all"])
    assert result.hidden == {"male", "female"}
    assert result.unresolved == (("all", ("male", "female")),)


def test_suppress_complementary_unknown_cell_rejected():
    with pytest.raises(ValueError, match="without a count"):
        suppress_complementary({"all": 10}, [("all", ("male",))], MINIMUM)


@pytest.mark.parametrize("seed", range(20))
def test_suppress_complementary_random_tables_protected(seed):
    rng = np.random.default_rng(seed)
    rows = [f"r{i}" for i in range(int(rng.integers(2, 5)))]
    columns = [f"c{j}" for j in range(int(rng.integers(2, 6)))]
    cells = {(row, column): int(rng.choice([0, 2, 5, 9, 12, 30, 80])) for row in rows for column in columns}
    counts = table_counts(cells)
    sums = table_sums(rows, columns)
    if counts["all"] < MINIMUM:
        pytest.skip("a cohort below the minimum cannot be protected")
    result = suppress_complementary(counts, sums, MINIMUM, published=["all"])
    assert result.unresolved == ()
    assert recoveries(printed_after(counts, result.hidden), counts, sums, result.hidden) == []


def test_suppress_complementary_prefer_shared_fewer():
    # One small cell of a 2 x 3 table: choosing partners that also stop other
    # sums costs 3 partners, smallest first costs 5.
    cells = {
        ("r0", "c0"): 30, ("r0", "c1"): 12, ("r0", "c2"): 50,
        ("r1", "c0"): 30, ("r1", "c1"): 50, ("r1", "c2"): 5,
    }  # fmt: skip
    counts = table_counts(cells)
    rows, columns = ["r0", "r1"], ["c0", "c1", "c2"]
    sums = table_sums(rows, columns)
    margins = ["all", *rows, *columns]
    shared = suppress_complementary(counts, sums, MINIMUM, published=margins, prefer_shared=True)
    smallest = suppress_complementary(counts, sums, MINIMUM, published=margins)
    assert len(shared.hidden) == 4
    assert len(smallest.hidden) == 6
    assert recoveries(printed_after(counts, shared.hidden), counts, sums, shared.hidden) == []


def test_suppress_complementary_revealed_total_protected():
    # 16 of 36 women with a known label are recorded, and "16 (44.4%)" gives
    # the 36 away, so 40 - 36 would give away the 4 whose label is unknown.
    counts = {"female": 40, "known": 36, "unknown": 4, "recorded": 16, "not recorded": 20}
    sums = [("female", ("known", "unknown")), ("known", ("recorded", "not recorded"))]
    result = suppress_complementary(
        counts,
        sums,
        MINIMUM,
        published=["female"],
        implied=["known", "unknown", "not recorded"],
        revealed_by={"known": "recorded"},
    )
    assert result.hidden == {"recorded"}


def test_suppress_complementary_unprotected_cell_given_away():
    # 37 of 40 women have a known label. The 3 without one are unprotected,
    # so 40 - 37 may give them away and the 37 stays printed.
    counts = {"female": 40, "known": 37, "unknown": 3}
    sums = [("female", ("known", "unknown"))]
    result = suppress_complementary(counts, sums, MINIMUM, published=["female"], unprotected=["unknown"])
    assert result.hidden == frozenset()
    assert recoveries(printed_after(counts, result.hidden, ["unknown"]), counts, sums, result.hidden, unprotected=["unknown"]) == []


def test_suppress_complementary_unprotected_sum_small_kept():
    # The unknown labels of two shown groups add up to 100 - 93 = 7, which
    # gives away nothing protected.
    counts = {"all": 100, "known": 93, "unknown": 7, "male unknown": 4, "female unknown": 3}
    sums = [("all", ("known", "unknown")), ("unknown", ("male unknown", "female unknown"))]
    unprotected = ["unknown", "male unknown", "female unknown"]
    result = suppress_complementary(counts, sums, MINIMUM, published=["all"], unprotected=unprotected)
    assert result.hidden == frozenset()


def test_suppress_complementary_unprotected_beside_implied_protected():
    # 100 - 93 leaves 7 for one shown group's unknown labels and a hidden
    # group's, and the hidden group's count is protected.
    counts = {"all": 100, "known": 93, "shown unknown": 4, "hidden unknown": 3}
    sums = [("all", ("known", "shown unknown", "hidden unknown"))]
    result = suppress_complementary(
        counts, sums, MINIMUM, published=["all"], implied=["hidden unknown"], unprotected=["shown unknown"]
    )
    assert result.hidden == {"known"}
    assert result.unresolved == ()


def test_suppress_complementary_unprotected_implied_overlap_rejected():
    with pytest.raises(ValueError, match="both unprotected and published or implied"):
        suppress_complementary({"all": 10, "a": 10}, [("all", ("a",))], MINIMUM, implied=["a"], unprotected=["a"])
