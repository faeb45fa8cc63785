"""Tests of Table 1 and its complementary suppression.

``recoveries`` plays the reader: it parses the printed table, takes the true
counts from the cohort, and subtracts along every row, column and margin sum,
one line at a time and reusing what it recovered, until nothing new comes out.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from hivcomorb.audit.cohort_table import ALL, cohort_table, cohort_tables
from hivcomorb.audit.groups import SUPPRESSED, AttributeGroups, hidden_sizes, plan_groups, sensitive_frame
from hivcomorb.contract import UNKNOWN, load_contract

MINIMUM = 10
LEFT_OUT = "(groups left out)"
REST = "(categories left out)"
COUNT_SUFFIX = ", n (%)"
LABEL_SUFFIX = ": recorded, n (% of known)"


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


def cohort_from_counts(columns: tuple[str, ...], counts: dict[tuple, int]) -> pd.DataFrame:
    """Return one row per patient, ``counts`` giving the number of patients with each combination of values."""
    rows = [combination for combination, n in counts.items() for _ in range(n)]
    return pd.DataFrame(rows, columns=list(columns))


def row(table: dict, variable: str) -> dict[str, str]:
    found = next(r for r in table["rows"] if r["variable"] == variable)
    return dict(zip(table["columns"], found["cells"]))


def printed_count(text: str) -> int | None:
    """Return the count a cell prints, or None when it reads 'suppressed'."""
    return None if text == SUPPRESSED else int(text.split(" ")[0].replace(",", ""))


def as_categories(series: pd.Series) -> pd.Series:
    """Return the category of each patient as Table 1 names it, a whole number without decimals."""
    if pd.api.types.is_numeric_dtype(series):
        series = pd.to_numeric(series).astype("Int64")
    return series.astype("string").fillna(UNKNOWN)


class Reader:
    """The cells a reader of one table can read, and which sums tie its cells together.

    Cells are ``(row, column)`` pairs. The groups a table leaves out form one
    hidden column, and the categories it leaves out form one hidden row per
    variable. ``truth`` contains every cell's count in the cohort. A shown
    group's count of patients with an unknown label is ``unprotected``: a
    reader may work it out whatever its count. With ``plans``, the reader
    also has the fairness audit's n per label of each shown group, the
    patients with a known label, unless that n is suppressed.
    """

    def __init__(self, table: dict, cohort: pd.DataFrame, plans: dict | None = None) -> None:
        self.attribute = table["attribute"]
        self.plans = plans
        self.truth: dict[tuple, int] = {}
        self.published: dict[tuple, int] = {}
        self.suppressed: set[tuple] = set()
        self.unprotected: set[tuple] = set()
        self.lines: list[tuple[tuple, list[tuple]]] = []
        self.printed = {r["variable"]: dict(zip(table["columns"], r["cells"])) for r in table["rows"]}

        groups = table["columns"][1:]
        group_of = as_categories(cohort[table["attribute"]])
        self.masks = {ALL: np.ones(len(cohort), dtype=bool)}
        self.masks.update({group: (group_of == group).to_numpy() for group in groups})
        left_out = ~group_of.isin(groups).to_numpy()
        if left_out.any():
            self.masks[LEFT_OUT] = left_out
        self.columns = list(self.masks)

        for column in self.columns:
            self.record(("patients", column), self.masks[column], self.printed["patients, n"].get(column))
        self.add_row_line("patients")
        self.add_categories(cohort)
        self.add_labels(cohort)

    def record(self, cell: tuple, in_cell: np.ndarray, text: str | None) -> None:
        self.truth[cell] = int(in_cell.sum()) if cell[1] == ALL else int((in_cell & self.masks[cell[1]]).sum())
        if text is None:
            return
        if text == SUPPRESSED:
            self.suppressed.add(cell)
            return
        self.published[cell] = printed_count(text)
        assert self.published[cell] == self.truth[cell], f"{cell} prints {text}, but the cohort has {self.truth[cell]}"

    def add_row_line(self, row_id: object) -> None:
        self.lines.append(((row_id, ALL), [(row_id, column) for column in self.columns[1:]]))

    def add_categories(self, cohort: pd.DataFrame) -> None:
        blocks: dict[str, list[str]] = {}
        for variable in self.printed:
            if variable.endswith(COUNT_SUFFIX):
                column, value = variable[: -len(COUNT_SUFFIX)].split(": ", 1)
                blocks.setdefault(column, []).append(value)
        for column, values in blocks.items():
            category = as_categories(cohort[column])
            row_ids = [(column, value) for value in values]
            rest = ~category.isin(values).to_numpy()
            if rest.any():
                row_ids.append((column, REST))
            for row_id in row_ids:
                in_row = rest if row_id[1] == REST else (category == row_id[1]).to_numpy()
                texts = self.printed.get(f"{row_id[0]}: {row_id[1]}{COUNT_SUFFIX}", {})
                for table_column in self.columns:
                    self.record((row_id, table_column), in_row, texts.get(table_column))
                self.add_row_line(row_id)
            for table_column in self.columns:
                self.lines.append((("patients", table_column), [(row_id, table_column) for row_id in row_ids]))

    def add_labels(self, cohort: pd.DataFrame) -> None:
        for variable in self.printed:
            if not variable.endswith(LABEL_SUFFIX):
                continue
            label = variable[: -len(LABEL_SUFFIX)]
            y = pd.to_numeric(cohort[label], errors="coerce").astype("float64")
            states = {
                "recorded": (y == 1).to_numpy(),
                "not recorded": (y.notna() & (y != 1)).to_numpy(),
                "unknown": y.isna().to_numpy(),
                "known": y.notna().to_numpy(),
            }
            for state, in_state in states.items():
                for column in self.columns:
                    text = self.printed[variable].get(column) if state == "recorded" else None
                    self.record(((label, state), column), in_state, text)
                self.add_row_line((label, state))
            shown = [column for column in self.columns if column not in (ALL, LEFT_OUT)]
            self.unprotected.update(((label, "unknown"), column) for column in shown)
            if self.plans is not None:
                hidden = hidden_sizes(self.plans, states["known"], MINIMUM)
                for column in shown:
                    if (self.attribute, column) not in hidden:
                        self.published[((label, "known"), column)] = self.truth[((label, "known"), column)]
            for column in self.columns:
                recorded = ((label, "recorded"), column)
                # "n (x%)" of known gives away the known count.
                if self.published.get(recorded, 0) > 0:
                    self.published[((label, "known"), column)] = self.truth[((label, "known"), column)]
                known = ((label, "known"), column)
                self.lines.append((known, [recorded, ((label, "not recorded"), column)]))
                self.lines.append((("patients", column), [known, ((label, "unknown"), column)]))


def recoveries(reader: Reader, minimum: int = MINIMUM) -> list[str]:
    """Return what subtraction along single lines gives away: suppressed cells, small implied cells, small hidden sums.

    Unprotected cells count as neither implied cells nor hidden members of a
    sum. Hidden sums are checked once nothing new comes out.
    """
    known = dict(reader.published)
    found: set[str] = set()
    changed = True
    while changed:
        changed = False
        for total, members in reader.lines:
            unknown = [m for m in members if m not in known]
            if total in known:
                remainder = known[total] - sum(known[m] for m in members if m in known)
                if len(unknown) == 1 or (unknown and remainder == 0):
                    for cell in unknown:
                        known[cell] = reader.truth[cell]
                    changed = True
            elif not unknown:
                known[total] = reader.truth[total]
                changed = True
    for total, members in reader.lines:
        unknown = [m for m in members if m not in known]
        if total in known and not set(unknown) <= reader.unprotected:
            remainder = known[total] - sum(known[m] for m in members if m in known)
            if 0 < remainder < minimum:
                found.add(f"{unknown} add up to {remainder}")
    for cell, value in known.items():
        if cell in reader.suppressed:
            found.add(f"suppressed {cell} is {value}")
        elif cell not in reader.published and cell not in reader.unprotected and 0 < value < minimum:
            found.add(f"hidden {cell} is {value}")
    return sorted(found)


def crossed_cells(tables: dict, first: str, second: str) -> list[str]:
    """Return the cells that the table by ``first`` and the table by ``second`` print differently."""
    by_first = {r["variable"]: dict(zip(tables[first]["columns"], r["cells"])) for r in tables[first]["rows"]}
    by_second = {r["variable"]: dict(zip(tables[second]["columns"], r["cells"])) for r in tables[second]["rows"]}
    different = []
    for a in tables[first]["columns"][1:]:
        for b in tables[second]["columns"][1:]:
            in_first = printed_count(by_first[f"{second}: {b}{COUNT_SUFFIX}"][a])
            in_second = printed_count(by_second[f"{first}: {a}{COUNT_SUFFIX}"][b])
            if in_first != in_second:
                different.append(f"{first}={a}, {second}={b}: {in_first} and {in_second}")
    return different


def suppressed_cells(table: dict) -> int:
    return sum(cell == SUPPRESSED for r in table["rows"] for cell in r["cells"])


@pytest.fixture(scope="module")
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
    assert recoveries(Reader(table, cohort)) == []


def test_cohort_table_hides_smallest_group(contract):
    # 4 patients of gender "other" are suppressed; without a second hidden group
    # their number would be all patients minus men minus women.
    gender = ["male"] * 60 + ["female"] * 36 + ["other"] * 4
    cohort = pd.DataFrame({"gender": gender, "smoking_status": ["never"] * 100})
    table = cohort_table(cohort, contract, plan_for(gender, ["male", "female"]), MINIMUM)
    assert table["columns"] == [ALL, "male"]
    assert table["suppressed_groups"] == 2


PLANTED = {
    # 8 male current smokers, and the row's other cells are large.
    "in a row": {
        ("male", "never"): 52, ("male", "current"): 8,
        ("female", "never"): 20, ("female", "current"): 20,
        ("other", "never"): 15, ("other", "current"): 25,
    },
    # Every row has a second hidden cell, but the female column has one.
    "in a column": {
        ("male", "never"): 40, ("male", "former"): 6, ("male", "current"): 3,
        ("female", "never"): 30, ("female", "former"): 20, ("female", "current"): 7,
        ("other", "never"): 30, ("other", "former"): 4, ("other", "current"): 20,
    },
    # 15 patients of unknown gender are left out. 3 of them are former smokers,
    # which is all patients minus men minus women in that row.
    "in the groups left out": {
        ("male", "never"): 40, ("male", "former"): 20, ("male", "current"): 20,
        ("female", "never"): 30, ("female", "former"): 15, ("female", "current"): 15,
        ("unknown", "never"): 6, ("unknown", "former"): 3, ("unknown", "current"): 6,
    },
    # 4 patients of unknown smoking status are left out as a category, which
    # all patients minus the shown categories would give away, so the smallest
    # shown category goes too.
    "in the categories left out": {
        ("male", "never"): 40, ("male", "former"): 12, ("male", "current"): 30, ("male", "unknown"): 3,
        ("female", "never"): 30, ("female", "former"): 15, ("female", "current"): 25, ("female", "unknown"): 1,
    },
    # A published 0 beside the small cell: all patients minus the 0 minus the
    # other group would give the 8 away.
    "beside a zero": {
        ("male", "never"): 42, ("male", "current"): 8,
        ("female", "never"): 40, ("female", "current"): 0,
        ("other", "never"): 10, ("other", "current"): 15,
    },
}


@pytest.mark.parametrize("case", list(PLANTED))
def test_cohort_table_planted_small_cell_hidden(contract, case):
    cohort = cohort_from_counts(("gender", "smoking_status"), PLANTED[case])
    groups = [g for g in ("male", "female", "other") if (cohort["gender"] == g).sum() >= MINIMUM]
    table = cohort_table(cohort, contract, plan_for(cohort["gender"].tolist(), groups), MINIMUM)
    assert recoveries(Reader(table, cohort)) == []


def test_cohort_table_zero_cell_printed(contract):
    cohort = cohort_from_counts(("gender", "smoking_status"), PLANTED["beside a zero"])
    table = cohort_table(cohort, contract, plan_for(cohort["gender"].tolist(), ["male", "female", "other"]), MINIMUM)
    cells = row(table, "smoking_status: current, n (%)")
    assert cells["male"] == SUPPRESSED
    assert cells["female"] == "0 (0.0%)"


def test_cohort_table_categories_left_out_counted(contract):
    cohort = cohort_from_counts(("gender", "smoking_status"), PLANTED["in the categories left out"])
    table = cohort_table(cohort, contract, plan_for(cohort["gender"].tolist(), ["male", "female"]), MINIMUM)
    shown = [r["variable"] for r in table["rows"] if r["variable"].startswith("smoking_status")]
    # "unknown" has 4 patients, so "former", the smallest shown, goes with it.
    assert shown == ["smoking_status: never, n (%)", "smoking_status: current, n (%)"]
    assert table["suppressed_rows"] == 2


def test_cohort_table_one_small_cell_costs_four(contract):
    # One small cell in a 3 x 3 table with published margins needs three
    # partners, and every other cell stays printed.
    counts = {
        ("male", "never"): 30, ("male", "former"): 4, ("male", "current"): 20,
        ("female", "never"): 25, ("female", "former"): 15, ("female", "current"): 12,
        ("other", "never"): 20, ("other", "former"): 18, ("other", "current"): 11,
    }
    cohort = cohort_from_counts(("gender", "smoking_status"), counts)
    table = cohort_table(cohort, contract, plan_for(cohort["gender"].tolist(), ["male", "female", "other"]), MINIMUM)
    assert suppressed_cells(table) == 4
    assert all(r["cells"][0] != SUPPRESSED for r in table["rows"])
    assert recoveries(Reader(table, cohort)) == []


def test_cohort_table_no_small_cell_nothing_suppressed(contract):
    counts = {("male", "never"): 40, ("male", "current"): 20, ("female", "never"): 25, ("female", "current"): 15}
    cohort = cohort_from_counts(("gender", "smoking_status"), counts)
    table = cohort_table(cohort, contract, plan_for(cohort["gender"].tolist(), ["male", "female"]), MINIMUM)
    assert suppressed_cells(table) == 0


def test_cohort_table_label_small_remainder_hidden(contract):
    # 37 of 40 women have hypertension recorded: "37 (92.5%) of known" would
    # give away the 3 without it.
    counts = {("male", 1.0): 20, ("male", 0.0): 40, ("female", 1.0): 37, ("female", 0.0): 3}
    cohort = cohort_from_counts(("gender", "hypertension"), counts)
    table = cohort_table(cohort, contract, plan_for(cohort["gender"].tolist(), ["male", "female"]), MINIMUM)
    assert row(table, "hypertension" + LABEL_SUFFIX)["female"] == SUPPRESSED
    assert recoveries(Reader(table, cohort)) == []


def test_cohort_table_label_unknown_small_printed(contract):
    # 4 women and 8 men have no hypertension value. The percentage of known
    # gives away the 36 women with one, and so the 4 without, which is a shown
    # group's count of unknown labels and not protected.
    counts = {
        ("male", 1.0): 20, ("male", 0.0): 32, ("male", np.nan): 8,
        ("female", 1.0): 16, ("female", 0.0): 20, ("female", np.nan): 4,
    }  # fmt: skip
    cohort = cohort_from_counts(("gender", "hypertension"), counts)
    plan = plan_for(cohort["gender"].tolist(), ["male", "female"])
    table = cohort_table(cohort, contract, plan, MINIMUM)
    assert row(table, "hypertension" + LABEL_SUFFIX)["female"] == "16 (44.4%)"
    assert recoveries(Reader(table, cohort, {"gender": plan})) == []


def test_cohort_table_label_unknown_cohort_small_hidden(contract):
    # Only 4 patients, all women, have no hypertension value. The cohort's
    # count of unknown labels stays protected, so the all-patients
    # percentage of known, which gives away the 96 with a value, is suppressed.
    counts = {("male", 1.0): 20, ("male", 0.0): 40, ("female", 1.0): 16, ("female", 0.0): 20, ("female", np.nan): 4}
    cohort = cohort_from_counts(("gender", "hypertension"), counts)
    table = cohort_table(cohort, contract, plan_for(cohort["gender"].tolist(), ["male", "female"]), MINIMUM)
    assert row(table, "hypertension" + LABEL_SUFFIX)[ALL] == SUPPRESSED
    assert recoveries(Reader(table, cohort)) == []


def plans_by(cohort: pd.DataFrame, attributes: list[str], intersections: list[list[str]] | None = None) -> tuple[dict, dict]:
    """Return an audit config with Table 1 by ``attributes``, and the group plans of its attributes."""
    single = [a for a in attributes if " x " not in a]
    config = {"audit": {"attributes": single, "intersections": intersections or [], "cohort_table": {"by": attributes}}}
    return config, plan_groups(sensitive_frame(cohort, config), MINIMUM)


def tables_by(cohort: pd.DataFrame, contract, attributes: list[str], intersections: list[list[str]] | None = None) -> dict:
    config, plans = plans_by(cohort, attributes, intersections)
    return cohort_tables(cohort, contract, plans, config, MINIMUM)


def demo_like_cohort() -> pd.DataFrame:
    """Return gender x ethnicity shaped like the demo cohort: 1 black Caribbean patient of a gender left out, 7 mixed women."""
    counts = {
        ("male", "white"): 120, ("female", "white"): 60, ("other", "white"): 6, ("unknown", "white"): 2,
        ("male", "black_african"): 40, ("female", "black_african"): 80, ("other", "black_african"): 5,
        ("unknown", "black_african"): 4,
        ("male", "black_caribbean"): 44, ("female", "black_caribbean"): 23, ("unknown", "black_caribbean"): 1,
        ("male", "mixed"): 59, ("female", "mixed"): 7,
    }
    return cohort_from_counts(("gender", "ethnicity"), counts)


def test_cohort_tables_gender_ethnicity_regression(contract):
    cohort = demo_like_cohort()
    tables = tables_by(cohort, contract, ["gender", "ethnicity"])
    by_gender, by_ethnicity = tables["gender"], tables["ethnicity"]

    # 68 - 44 men - 23 women gave away 1 patient of a gender left out.
    caribbean = row(by_gender, "ethnicity: black_caribbean, n (%)")
    assert SUPPRESSED in (caribbean["male"], caribbean["female"])
    # 66 - 59 men - 0 of other gender gave away 7 women.
    assert row(by_ethnicity, "gender: female, n (%)")["mixed"] == SUPPRESSED
    assert row(by_ethnicity, "gender: male, n (%)")["mixed"] == SUPPRESSED
    assert not any(r["variable"].startswith("gender: other") for r in by_ethnicity["rows"])

    assert recoveries(Reader(by_gender, cohort)) == []
    assert recoveries(Reader(by_ethnicity, cohort)) == []
    assert crossed_cells(tables, "gender", "ethnicity") == []
    assert row(by_gender, "ethnicity: white, n (%)")["male"] != SUPPRESSED


def test_cohort_tables_show_same_categories(contract):
    tables = tables_by(demo_like_cohort(), contract, ["gender", "ethnicity"])
    gender_rows = [r["variable"] for r in tables["ethnicity"]["rows"] if r["variable"].startswith("gender: ")]
    assert gender_rows == [f"gender: {g}{COUNT_SUFFIX}" for g in tables["gender"]["columns"][1:]]


def test_cohort_tables_intersection_sizes_protected(contract, caplog):
    cohort = demo_like_cohort()
    tables = tables_by(cohort, contract, ["gender", "ethnicity", "gender x ethnicity"], [["gender", "ethnicity"]])
    joint = tables["gender x ethnicity"]
    reader = Reader(tables["gender"], cohort)

    # Each intersection group's size is a cell of the table by gender.
    for group in joint["columns"][1:]:
        gender, ethnicity = group.split(" & ")
        size = row(joint, "patients, n")[group]
        assert row(tables["gender"], f"ethnicity: {ethnicity}{COUNT_SUFFIX}")[gender].startswith(f"{size} "), group
        reader.published[((("ethnicity", ethnicity), gender))] = printed_count(size)

    assert recoveries(reader) == []
    # 188 white patients - 120 men - 60 women would give away 8 of a gender left out.
    assert not {"male & white", "female & white"} <= set(joint["columns"])
    assert "no further suppression" not in caplog.text


def random_cohort(seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(150, 500))
    hypertension = rng.choice([1.0, 0.0, np.nan], size=n, p=[0.3, 0.65, 0.05])
    return pd.DataFrame(
        {
            "gender": rng.choice(["male", "female", "other", "unknown"], size=n, p=[0.62, 0.3, 0.05, 0.03]),
            "ethnicity": rng.choice(
                ["white", "black_african", "black_caribbean", "asian", "mixed", "other"],
                size=n,
                p=[0.5, 0.25, 0.08, 0.08, 0.05, 0.04],
            ),
            "smoking_status": rng.choice(["never", "former", "current", "unknown"], size=n, p=[0.5, 0.2, 0.27, 0.03]),
            "deprivation_quintile": rng.choice([1.0, 2.0, 3.0, 4.0, 5.0, np.nan], size=n, p=[0.25, 0.25, 0.2, 0.15, 0.12, 0.03]),
            "hypertension": hypertension,
        }
    )


@pytest.mark.parametrize("seed", range(12))
def test_cohort_tables_random_cohort_protected(contract, seed):
    cohort = random_cohort(seed)
    config, plans = plans_by(cohort, ["gender", "ethnicity", "smoking_status"])
    tables = cohort_tables(cohort, contract, plans, config, MINIMUM)
    for attribute, table in tables.items():
        assert recoveries(Reader(table, cohort, plans)) == [], attribute
    assert crossed_cells(tables, "gender", "ethnicity") == []
    assert crossed_cells(tables, "gender", "smoking_status") == []
    assert crossed_cells(tables, "ethnicity", "smoking_status") == []
