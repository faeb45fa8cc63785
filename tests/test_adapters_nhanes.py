"""Tests of the NHANES 2017-2018 adapter and its site mapping.

Tests marked ``shared_data`` run the adapter on the public NHANES files that
the ``shared_data`` fixture finds, and compare its output with figures that
the test computes from the raw files on its own. The others run on small
frames and on a miniature NHANES folder written by the test.
"""

from __future__ import annotations

import argparse
import functools
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from hivcomorb.adapters import nhanes
from hivcomorb.config import load_config
from hivcomorb.context import RunContext
from hivcomorb.errors import ConfigError, DataNotFoundError, ExtractError
from hivcomorb.paths import project_root

NHANES_FOLDER = "nhanes-2017-2018"
MAPPING_PATH = project_root() / "conf" / "mappings" / "nhanes.yaml"
NHANES_ZERO_ARTEFACT = 1e-30


# ---------------------------------------------------------------------------
# Shared helpers: the adapter's output and the raw files, each read once.


@functools.lru_cache(maxsize=2)
def _cached_extract(folder: str) -> pd.DataFrame:
    return nhanes.build_site_extract(folder)


@functools.lru_cache(maxsize=32)
def _cached_raw(folder: str, name: str) -> pd.DataFrame:
    """Read one NHANES file without the adapter, indexed by respondent number."""
    xpt = Path(folder) / f"{name}.XPT"
    frame = pd.read_sas(xpt, format="xport") if xpt.exists() else pd.read_csv(Path(folder) / f"{name}.csv")
    numeric = frame.select_dtypes("number").columns
    frame[numeric] = frame[numeric].mask(frame[numeric].abs() < NHANES_ZERO_ARTEFACT, 0.0)
    frame["SEQN"] = frame["SEQN"].astype("int64")
    return frame.set_index("SEQN")


@pytest.fixture
def nhanes_dir(shared_data) -> str:
    return str(shared_data(NHANES_FOLDER))


@pytest.fixture
def extract(nhanes_dir) -> pd.DataFrame:
    frame = _cached_extract(nhanes_dir).copy()
    frame.index = frame["SEQN"].astype("int64")
    return frame


@pytest.fixture
def raw(nhanes_dir):
    return lambda name: _cached_raw(nhanes_dir, name)


@pytest.fixture
def adult_ids(raw) -> pd.Index:
    demo = raw("DEMO_J")
    return demo.index[demo["RIDAGEYR"] >= 18]


@pytest.fixture
def adult_answers(raw, adult_ids):
    """Return the raw answers of the adults to the given items, one column per item."""

    def answers(file_name: str, items: list[str]) -> pd.DataFrame:
        return raw(file_name).reindex(adult_ids)[items]

    return answers


@pytest.fixture
def nhanes_contract():
    return RunContext.from_config(load_config("nhanes")).contract


@pytest.fixture
def mapping() -> dict:
    return yaml.safe_load(MAPPING_PATH.read_text(encoding="utf-8"))


def _to_canonical(values, source_column: str, mapping: dict, contract):
    """Convert ``values`` from the mapping's declared unit to the contract's canonical unit."""
    spec = mapping["columns"][source_column]
    conversion = contract.column(spec["to"]).conversion(spec["unit"])
    values = np.asarray(values, dtype="float64")
    return values if conversion is None else conversion.apply(values)


# ---------------------------------------------------------------------------
# Row counts and coverage on the public files.


@pytest.mark.shared_data
def test_extract_adult_row_count(extract):
    assert len(extract) == 5856


@pytest.mark.shared_data
def test_extract_rows_are_the_raw_adults(extract, adult_ids):
    assert sorted(extract.index) == sorted(adult_ids)


@pytest.mark.shared_data
def test_extract_respondent_numbers_unique_strings(extract):
    assert extract["SEQN"].is_unique
    assert extract["SEQN"].dtype == "string"
    assert extract["SEQN"].str.fullmatch(r"\d+").all()


@pytest.mark.shared_data
def test_extract_panel_coverage(extract, raw, adult_ids):
    with_panels = adult_ids.isin(raw("BIOPRO_J").index) & adult_ids.isin(raw("CBC_J").index)
    coverage = extract.attrs["nhanes"]["adults_with_biochemistry_and_blood_count"]
    assert coverage == int(with_panels.sum())
    assert coverage == 5533


@pytest.mark.shared_data
def test_extract_core_labs_complete_count(extract):
    # 5150 adults have creatinine, ALT, WBC and haemoglobin, counted without this adapter.
    core = extract[["LBXSCR", "LBXSATSI", "LBXWBCSI", "LBXHGB"]].notna().all(axis=1)
    assert int(core.sum()) == 5150


# ---------------------------------------------------------------------------
# Values: pass-through of raw values, and unit conversion through the mapping.


@pytest.mark.shared_data
@pytest.mark.parametrize(
    ("file_name", "variable"),
    [
        ("BIOPRO_J", "LBXSCR"),
        ("BIOPRO_J", "LBXSBU"),
        ("BIOPRO_J", "LBXSATSI"),
        ("CBC_J", "LBXHGB"),
        ("CBC_J", "LBXWBCSI"),
        ("GHB_J", "LBXGH"),
        ("TCHOL_J", "LBXTC"),
        ("HDL_J", "LBDHDD"),
        ("HSCRP_J", "LBXHSCRP"),
        ("DEMO_J", "INDFMPIR"),
    ],
)
def test_extract_values_equal_raw_values(extract, raw, adult_ids, file_name, variable):
    expected = raw(file_name).reindex(adult_ids)[variable].astype("float64")
    actual = extract.loc[adult_ids, variable].astype("float64")
    np.testing.assert_array_equal(actual.to_numpy(), expected.to_numpy())


# Respondent 93705 (woman, 66 years), values read by hand from the CDC files:
# creatinine 0.92 mg/dL, BUN 11 mg/dL, bilirubin 0.6 mg/dL, Hb 11.9 g/dL, HbA1c 6.2 %.
HAND_CHECKED_RESPONDENT = 93705


@pytest.mark.shared_data
@pytest.mark.parametrize(
    ("variable", "raw_value", "canonical_value"),
    [
        ("LBXSCR", 0.92, 0.92 * 88.42),  # creatinine, umol/L
        ("LBXSBU", 11.0, 11.0 * 0.357),  # urea, mmol/L
        ("LBXSTB", 0.6, 0.6 * 17.1),  # bilirubin, umol/L
        ("LBXHGB", 11.9, 119.0),  # haemoglobin, g/L
        ("LBXGH", 6.2, (6.2 - 2.15) * 10.929),  # HbA1c, mmol/mol
        ("LBXWBCSI", 8.6, 8.6),  # white cells, 1000 cells/uL = 10^9/L
    ],
)
def test_mapping_converts_hand_checked_values(extract, mapping, nhanes_contract, variable, raw_value, canonical_value):
    value = float(extract.loc[HAND_CHECKED_RESPONDENT, variable])
    assert value == pytest.approx(raw_value)
    converted = float(_to_canonical([value], variable, mapping, nhanes_contract)[0])
    assert converted == pytest.approx(canonical_value, rel=1e-9)


@pytest.mark.shared_data
@pytest.mark.parametrize(
    ("variable", "si_twin"),
    [
        ("LBXSAL", "LBDSALSI"),
        ("LBXSBU", "LBDSBUSI"),
        ("LBXSCR", "LBDSCRSI"),
        ("LBXSGL", "LBDSGLSI"),
        ("LBXSTB", "LBDSTBSI"),
        ("LBXSCA", "LBDSCASI"),
        ("LBXSTP", "LBDSTPSI"),
        ("LBXSTR", "LBDSTRSI"),
        ("LBXTC", "LBDTCSI"),
        ("LBDHDD", "LBDHDDSI"),
    ],
)
def test_mapping_conversion_matches_nhanes_si_values(extract, mapping, nhanes_contract, variable, si_twin):
    # NHANES publishes its own SI values, rounded to 2-3 significant digits and
    # computed with slightly different factors (creatinine x88.4, not x88.42).
    converted = _to_canonical(extract[variable], variable, mapping, nhanes_contract)
    si_values = extract[si_twin].astype("float64").to_numpy()
    known = ~np.isnan(si_values)
    assert known.sum() > 5000
    assert np.isclose(converted[known], si_values[known], rtol=0.006, atol=0.0051).all()


@pytest.mark.shared_data
def test_egfr_hand_checked_respondent(extract):
    # 142 x (0.92/0.7)^-1.200 x 0.9938^66 x 1.012 = 68.7 mL/min/1.73m2.
    assert float(extract.loc[HAND_CHECKED_RESPONDENT, "egfr_ckd_epi_2021"]) == pytest.approx(68.67, abs=0.01)


@pytest.mark.shared_data
def test_egfr_matches_row_by_row_formula(extract):
    expected = []
    for creatinine, age, sex in zip(extract["LBXSCR"], extract["RIDAGEYR"], extract["RIAGENDR"]):
        if pd.isna(creatinine):
            expected.append(math.nan)
            continue
        kappa, alpha, factor = (0.7, -0.241, 1.012) if sex == 2 else (0.9, -0.302, 1.0)
        ratio = creatinine / kappa
        expected.append(142 * min(ratio, 1) ** alpha * max(ratio, 1) ** -1.2 * 0.9938 ** float(age) * factor)
    np.testing.assert_allclose(extract["egfr_ckd_epi_2021"].to_numpy(dtype="float64"), expected, rtol=1e-12)


@pytest.mark.shared_data
def test_censor_flags_follow_comment_codes(extract, raw, adult_ids):
    below_limit = raw("HSCRP_J").reindex(adult_ids)["LBDHRPLC"].eq(1)
    flags = extract.loc[adult_ids, "LBXHSCRP_censored"]
    assert int(below_limit.sum()) > 0
    assert (flags[below_limit.to_numpy()] == "<").all()
    assert flags[~below_limit.to_numpy()].isna().all()


# ---------------------------------------------------------------------------
# Labels: prevalences computed from the raw answers.


def _any_yes_label(answers: pd.DataFrame, negative_codes=(2,)) -> tuple[int, int]:
    """Return (positives, known) with plain loops: a yes wins when every item was asked."""
    positives = known = 0
    for row in answers.itertuples(index=False):
        values = [None if pd.isna(v) else int(v) for v in row]
        if 1 in values and None not in values:
            positives += 1
            known += 1
        elif all(v in negative_codes for v in values):
            known += 1
    return positives, known


@pytest.mark.shared_data
@pytest.mark.parametrize(
    ("label", "file_name", "items", "negative_codes"),
    [
        ("hypertension", "BPQ_J", ["BPQ020"], (2,)),
        ("diabetes", "DIQ_J", ["DIQ010"], (2, 3)),
        ("dyslipidaemia", "BPQ_J", ["BPQ080"], (2,)),
        ("cardiovascular_disease", "MCQ_J", ["MCQ160B", "MCQ160C", "MCQ160D", "MCQ160E", "MCQ160F"], (2,)),
        ("chronic_kidney_disease", "KIQ_U_J", ["KIQ022"], (2,)),
        ("liver_disease", "MCQ_J", ["MCQ160L"], (2,)),
        ("cancer", "MCQ_J", ["MCQ220"], (2,)),
        ("respiratory_disease", "MCQ_J", ["MCQ160O", "MCQ160G", "MCQ160K", "MCQ010"], (2,)),
    ],
)
def test_label_counts_match_raw_answers(extract, adult_answers, label, file_name, items, negative_codes):
    positives, known = _any_yes_label(adult_answers(file_name, items), negative_codes)
    column = extract[f"dx_{label}"]
    assert int(column.eq(1).sum()) == positives
    assert int(column.notna().sum()) == known


@pytest.mark.shared_data
def test_mental_health_counts_match_raw_phq9(extract, adult_answers):
    answers = adult_answers("DPQ_J", [f"DPQ0{i}0" for i in range(1, 10)])
    positives = known = 0
    for row in answers.itertuples(index=False):
        scores = [int(v) for v in row if not pd.isna(v) and int(v) in (0, 1, 2, 3)]
        if sum(scores) >= 10:
            positives += 1
            known += 1
        elif len(scores) == 9:
            known += 1
    column = extract["dx_mental_health"]
    assert int(column.eq(1).sum()) == positives
    assert int(column.notna().sum()) == known


# Counted without this adapter: positives and answers 1 or 2 among the 5150
# adults with creatinine, ALT, WBC and haemoglobin.
@pytest.mark.shared_data
@pytest.mark.parametrize(
    ("label", "positives", "answered"),
    [
        ("hypertension", 1892, 5140),
        ("chronic_kidney_disease", 202, 4904),
        ("liver_disease", 269, 4897),
        ("cancer", 502, 4910),
    ],
)
def test_label_counts_match_published_figures(extract, label, positives, answered):
    core = extract[["LBXSCR", "LBXSATSI", "LBXWBCSI", "LBXHGB"]].notna().all(axis=1)
    column = extract.loc[core, f"dx_{label}"]
    assert int(column.eq(1).sum()) == positives
    assert int(column.notna().sum()) == answered


@pytest.mark.shared_data
def test_diabetes_positives_match_published_figure(extract):
    core = extract[["LBXSCR", "LBXSATSI", "LBXWBCSI", "LBXHGB"]].notna().all(axis=1)
    assert int(extract.loc[core, "dx_diabetes"].eq(1).sum()) == 792


@pytest.mark.shared_data
@pytest.mark.parametrize(
    ("label", "file_name", "item", "code"),
    [
        ("hypertension", "BPQ_J", "BPQ020", 9),
        ("diabetes", "DIQ_J", "DIQ010", 9),
        ("dyslipidaemia", "BPQ_J", "BPQ080", 9),
        ("liver_disease", "MCQ_J", "MCQ160L", 9),
        ("chronic_kidney_disease", "KIQ_U_J", "KIQ022", 9),
    ],
)
def test_label_dont_know_is_unknown(extract, adult_answers, label, file_name, item, code):
    answers = adult_answers(file_name, [item])[item]
    respondents = answers.index[answers.eq(code)]
    assert len(respondents) > 0
    assert extract.loc[respondents, f"dx_{label}"].isna().all()


@pytest.mark.shared_data
def test_cardiovascular_dont_know_without_yes_is_unknown(extract, adult_answers):
    items = ["MCQ160B", "MCQ160C", "MCQ160D", "MCQ160E", "MCQ160F"]
    answers = adult_answers("MCQ_J", items)
    uncertain = answers.isin([7, 9]).any(axis=1) & ~answers.eq(1).any(axis=1)
    respondents = answers.index[uncertain]
    assert len(respondents) > 0
    assert extract.loc[respondents, "dx_cardiovascular_disease"].isna().all()


# ---------------------------------------------------------------------------
# Social columns on the public files.


@pytest.mark.shared_data
def test_income_quintile_cut_points_match_numpy(extract, raw, adult_ids):
    ratios = raw("DEMO_J").reindex(adult_ids)["INDFMPIR"].dropna().to_numpy()
    expected = np.percentile(ratios, [20, 40, 60, 80])
    np.testing.assert_allclose(extract.attrs["nhanes"]["income_poverty_cut_points"], expected)


@pytest.mark.shared_data
def test_income_quintile_cut_points_documented_values(extract):
    # The cut points stated in data_schema/nhanes_labels.md.
    np.testing.assert_allclose(extract.attrs["nhanes"]["income_poverty_cut_points"], [1.01, 1.70, 2.72, 4.62], atol=1e-9)


@pytest.mark.shared_data
@pytest.mark.parametrize("quintile", [1, 2, 3, 4, 5])
def test_income_quintiles_hold_a_fifth_each(extract, quintile):
    known = extract["income_poverty_quintile"].dropna()
    share = float(known.eq(quintile).mean())
    assert 0.18 <= share <= 0.22


@pytest.mark.shared_data
def test_education_level_of_young_adults_from_youth_item(extract, raw, adult_ids):
    demo = raw("DEMO_J").reindex(adult_ids)
    young = demo.index[demo["RIDAGEYR"] < 20]
    expected = demo.loc[young, "DMDEDUC3"].map(nhanes.YOUTH_TO_ADULT_EDUCATION)
    assert len(young) > 0
    np.testing.assert_array_equal(extract.loc[young, "education_level"].to_numpy(dtype="float64"), expected.to_numpy(dtype="float64"))


# ---------------------------------------------------------------------------
# The mapping file against the extract and the NHANES contract.


@pytest.mark.shared_data
@pytest.mark.parametrize(
    ("source_column", "canonical"),
    [
        ("RIAGENDR", "gender"),
        ("RIDRETH3", "ethnicity"),
        ("DMDBORN4", "continent_of_birth"),
        ("education_level", "education"),
    ],
)
def test_mapping_recodes_cover_every_extract_code(extract, mapping, source_column, canonical):
    codes = {str(int(code)) for code in extract[source_column].dropna().unique()}
    assert codes <= set(mapping["recodes"][canonical])


@pytest.mark.parametrize("canonical", ["gender", "ethnicity", "continent_of_birth", "education"])
def test_mapping_recodes_use_site_categories(mapping, nhanes_contract, canonical):
    categories = set(nhanes_contract.column(canonical).categories)
    assert set(mapping["recodes"][canonical].values()) <= categories


def test_mapping_declares_units_the_contract_knows(mapping, nhanes_contract):
    for source_column, spec in mapping["columns"].items():
        if isinstance(spec, dict) and "unit" in spec:
            nhanes_contract.column(spec["to"]).conversion(spec["unit"])


def test_mapping_maps_every_contract_label(mapping, nhanes_contract):
    targets = {spec if isinstance(spec, str) else spec["to"] for spec in mapping["columns"].values()}
    assert set(nhanes_contract.labels) <= targets


def test_mapping_leaves_out_labs_nhanes_lacks(mapping, nhanes_contract):
    targets = {spec if isinstance(spec, str) else spec["to"] for spec in mapping["columns"].values()}
    absent = [lab for lab in nhanes_contract.labs if lab not in targets]
    assert absent == ["cd4_count", "cd8_count", "cd4_cd8_ratio", "viral_load", "ldl_cholesterol"]


@pytest.mark.shared_data
def test_mapping_source_columns_exist_in_extract(extract, mapping):
    needed = set(mapping["columns"]) | {mapping["id_column"]}
    needed |= {spec["censor_column"] for spec in mapping["columns"].values() if isinstance(spec, dict) and "censor_column" in spec}
    assert sorted(needed - set(extract.columns)) == []


@pytest.mark.shared_data
@pytest.mark.parametrize("canonical", ["lymphocytes", "mcv", "haemoglobin", "creatinine", "hba1c", "crp"])
def test_mapped_lab_values_mostly_within_possible_range(extract, mapping, nhanes_contract, canonical):
    # One respondent has an MCV of 35.4 fL, below the contract's possible
    # range, so ingestion quarantines that row. Another has lymphocytes of
    # 359 x10^9/L (white cells 400), which the contract allows and keeps.
    source_column = next(s for s, spec in mapping["columns"].items() if isinstance(spec, dict) and spec["to"] == canonical)
    values = _to_canonical(extract[source_column], source_column, mapping, nhanes_contract)
    low, high = nhanes_contract.column(canonical).possible
    known = values[~np.isnan(values)]
    assert int(((known < low) | (known > high)).sum()) <= 1


# ---------------------------------------------------------------------------
# The extract through ingestion, with the mapping and the NHANES contract.


@functools.lru_cache(maxsize=2)
def _cached_ingest(folder: str):
    from hivcomorb.ingest import ingest_frame, load_mapping

    contract = RunContext.from_config(load_config("nhanes")).contract
    mapping = load_mapping(MAPPING_PATH, contract)
    return ingest_frame(_cached_extract(folder), contract, mapping, source_name="extract.parquet", validate=True)


@pytest.fixture
def ingested(nhanes_dir):
    return _cached_ingest(nhanes_dir)


@pytest.fixture
def cohort(ingested) -> pd.DataFrame:
    frame = ingested.cohort.copy()
    frame.index = frame["patient_id"].astype("int64")
    return frame


@pytest.mark.shared_data
def test_ingest_quarantines_one_impossible_value(ingested):
    assert len(ingested.cohort) == 5856 - 1
    assert sorted(ingested.quarantine["column"]) == ["mcv"]


@pytest.mark.shared_data
@pytest.mark.parametrize(
    ("column", "expected"),
    [
        ("creatinine", 0.92 * 88.42),
        ("urea", 11.0 * 0.357),
        ("bilirubin", 0.6 * 17.1),
        ("haemoglobin", 119.0),
        ("white_cell_count", 8.6),
        ("hba1c", (6.2 - 2.15) * 10.929),
        ("egfr", 68.67),
        ("age", 66.0),
    ],
)
def test_ingest_hand_checked_numbers(cohort, column, expected):
    assert float(cohort.loc[HAND_CHECKED_RESPONDENT, column]) == pytest.approx(expected, abs=0.01)


@pytest.mark.shared_data
@pytest.mark.parametrize(
    ("column", "expected"),
    [
        ("gender", "female"),
        ("ethnicity", "non_hispanic_black"),
        ("continent_of_birth", "usa"),
        ("education", "grade_9_to_11"),
        ("deprivation_quintile", 1),
    ],
)
def test_ingest_hand_checked_categories(cohort, column, expected):
    assert cohort.loc[HAND_CHECKED_RESPONDENT, column] == expected


@pytest.mark.shared_data
@pytest.mark.parametrize("label", [rule.label for rule in nhanes.LABEL_RULES] + ["mental_health"])
def test_ingest_label_counts_equal_extract(cohort, extract, label):
    extract_labels = extract.loc[cohort.index, f"dx_{label}"]
    assert int(cohort[label].eq(1).sum()) == int(extract_labels.eq(1).sum())
    assert int(cohort[label].notna().sum()) == int(extract_labels.notna().sum())


@pytest.mark.shared_data
def test_ingest_carries_crp_censoring(cohort):
    assert int(cohort["crp_censored"].eq("<").sum()) == 12


@pytest.mark.shared_data
@pytest.mark.parametrize("absent", ["cd4_count", "cd8_count", "cd4_cd8_ratio", "viral_load", "ldl_cholesterol", "hiv_exposure", "smoking_status"])
def test_ingest_leaves_absent_columns_out(cohort, absent):
    assert absent not in cohort.columns


# ---------------------------------------------------------------------------
# Derivations on small frames.


@pytest.mark.parametrize(
    ("answers", "expected"),
    [
        ([1, 2, 2], 1),
        ([2, 2, 2], 0),
        ([9, 1, 2], 1),
        ([2, 9, 2], None),
        ([2, 7, 2], None),
        ([2, None, 2], None),
        ([1, None, 2], None),  # not asked, as for items asked from age 20
        ([None, None, None], None),
    ],
)
def test_derive_label_any_yes_rule(answers, expected):
    rule = nhanes.LabelRule("cardiovascular_disease", ("A", "B", "C"))
    frame = pd.DataFrame([answers], columns=["A", "B", "C"]).astype("Int64")
    label = nhanes.derive_label(frame, rule).iloc[0]
    assert (pd.isna(label) and expected is None) or label == expected


@pytest.mark.parametrize(("answer", "expected"), [(1, 1), (2, 0), (3, 0), (7, None), (9, None), (None, None)])
def test_derive_label_diabetes_borderline_is_negative(answer, expected):
    rule = next(r for r in nhanes.LABEL_RULES if r.label == "diabetes")
    frame = pd.DataFrame({"DIQ010": [answer]}).astype("Int64")
    label = nhanes.derive_label(frame, rule).iloc[0]
    assert (pd.isna(label) and expected is None) or label == expected


@pytest.mark.parametrize(
    ("items", "score", "label"),
    [
        ([0] * 9, 0, 0),
        ([1] * 9, 9, 0),
        ([2, 2, 2, 2, 2, 0, 0, 0, 0], 10, 1),
        ([3, 3, 3, 1, None, None, 0, 0, 0], None, 1),  # 10 already reached
        ([1, 1, 1, 1, 1, 1, 1, 1, 9], None, None),  # don't know on item 9
        ([1, 1, 1, 1, 1, 1, 1, 7, 0], None, None),  # refused
        ([None] * 9, None, None),
    ],
)
def test_derive_phq9_cases(items, score, label):
    frame = pd.DataFrame([items], columns=list(nhanes.PHQ9_ITEMS)).astype("Int64")
    scores, labels = nhanes.derive_phq9(frame)
    assert (pd.isna(scores.iloc[0]) and score is None) or scores.iloc[0] == score
    assert (pd.isna(labels.iloc[0]) and label is None) or labels.iloc[0] == label


@pytest.mark.parametrize(
    ("creatinine", "age", "female", "expected"),
    [
        (1.2, 55, False, 71.42),  # 142 x (1.2/0.9)^-1.200 x 0.9938^55, by hand
        (0.7, 40, True, 142 * 0.9938**40 * 1.012),  # at kappa both power terms are 1
        (0.9, 40, False, 142 * 0.9938**40),
    ],
)
def test_ckd_epi_2021_reference_values(creatinine, age, female, expected):
    egfr = float(nhanes.ckd_epi_2021_egfr([creatinine], [age], [female])[0])
    assert egfr == pytest.approx(expected, abs=0.01)


@pytest.mark.parametrize("creatinine", [0.0, -1.0, math.nan])
def test_ckd_epi_2021_invalid_creatinine_is_nan(creatinine):
    assert math.isnan(nhanes.ckd_epi_2021_egfr([creatinine], [50], [True])[0])


def test_income_quintiles_small_series():
    ratios = pd.Series([0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 4.5, 5.0, None])
    quintiles, cut_points = nhanes.income_poverty_quintiles(ratios)
    assert quintiles.iloc[:10].tolist() == [1, 1, 2, 2, 3, 3, 4, 4, 5, 5]
    assert pd.isna(quintiles.iloc[10])
    # Linear interpolation at positions 1.8, 3.6, 5.4 and 7.2 of the 10 sorted ratios.
    assert cut_points == pytest.approx([1.4, 2.3, 3.2, 4.1])


def test_income_quintiles_all_missing():
    quintiles, cut_points = nhanes.income_poverty_quintiles(pd.Series([None, None], dtype="float64"))
    assert quintiles.isna().all()
    assert cut_points == []


@pytest.mark.parametrize(
    ("age", "adult_code", "youth_code", "expected"),
    [
        (45, 5, None, 5),
        (45, 7, None, None),
        (45, 9, None, None),
        (19, None, 13, 3),
        (18, None, 66, 1),
        (18, None, 11, 2),
        (19, None, 15, 4),
        (19, None, 99, None),
    ],
)
def test_derive_education_level_cases(age, adult_code, youth_code, expected):
    frame = pd.DataFrame({"RIDAGEYR": [age], "DMDEDUC2": [adult_code], "DMDEDUC3": [youth_code]}).astype("Int64")
    level = nhanes.derive_education_level(frame).iloc[0]
    assert (pd.isna(level) and expected is None) or level == expected


@pytest.mark.parametrize(("code", "expected"), [(0, None), (1, "<"), (2, ">"), (None, None)])
def test_derive_censoring_codes(code, expected):
    flag = nhanes.derive_censoring(pd.Series([code], dtype="float64")).iloc[0]
    assert (pd.isna(flag) and expected is None) or flag == expected


# ---------------------------------------------------------------------------
# Finding and reading files.


def test_find_survey_files_missing_folder(tmp_path):
    with pytest.raises(DataNotFoundError, match=r"folder .*absent not found") as caught:
        nhanes.find_survey_files(tmp_path / "absent")
    message = str(caught.value)
    assert "https://wwwn.cdc.gov/Nchs/Nhanes/2017-2018/DEMO_J.XPT" in message
    for survey_file in nhanes.SURVEY_FILES:
        assert f"{survey_file.name}.XPT" in message


def test_find_survey_files_names_only_missing_files(tmp_path):
    for survey_file in nhanes.SURVEY_FILES:
        if survey_file.name != "DPQ_J":
            (tmp_path / f"{survey_file.name}.XPT").touch()
    with pytest.raises(DataNotFoundError, match=r"missing from .*: DPQ_J\. ") as caught:
        nhanes.find_survey_files(tmp_path)
    assert "DEMO_J.XPT" not in str(caught.value)


def test_find_survey_files_any_case_prefers_xpt(tmp_path):
    for survey_file in nhanes.SURVEY_FILES:
        (tmp_path / f"{survey_file.name.lower()}.xpt").touch()
    (tmp_path / "MCQ_J.csv").touch()
    found = nhanes.find_survey_files(tmp_path)
    assert found["MCQ_J"].name == "mcq_j.xpt"


def test_build_site_extract_default_folder_missing(tmp_path, monkeypatch):
    monkeypatch.setenv("HIVCOMORB_SHARED_DATA", str(tmp_path / "no-shared-data"))
    with pytest.raises(DataNotFoundError, match="no-shared-data/nhanes-2017-2018"):
        nhanes.build_site_extract()


def test_read_survey_file_restores_true_zero(tmp_path):
    path = tmp_path / "X_J.csv"
    path.write_text("SEQN,A\n1,5.397605346934028e-79\n2,3\n", encoding="utf-8")
    frame = nhanes.read_survey_file(path)
    assert frame["A"].tolist() == [0.0, 3.0]


def test_read_survey_file_codes_become_integers(tmp_path):
    path = tmp_path / "X_J.csv"
    path.write_text("SEQN,A,B\n1,1.0,0.5\n2,NA,2\n", encoding="utf-8")
    frame = nhanes.read_survey_file(path, codes=True)
    assert frame["A"].dtype == "Int64"
    assert frame["B"].dtype == "float64"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("SEQN,A\n1,2\n2,yes\n", r"column A, data row 2: value is not a number"),
        ("SEQN,A\n1,2\n1,3\n", r"column SEQN, data row 2: the respondent number repeats an earlier row"),
        ("SEQN,A\n1,2\n,3\n", r"column SEQN, data row 2: the respondent number is missing"),
        ("SEQN,A\n1.5,2\n", r"column SEQN, data row 1: the respondent number is not a whole number"),
        ("ID,A\n1,2\n", r"has no SEQN column"),
    ],
)
def test_read_survey_file_invalid(tmp_path, text, message):
    path = tmp_path / "X_J.csv"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ExtractError, match=message):
        nhanes.read_survey_file(path)


# ---------------------------------------------------------------------------
# A miniature NHANES folder: the whole adapter and its command without the public files.

# Four respondents: a child (dropped), a man of 50 with hypertension, a woman
# of 19 who answered "don't know" to most questions, and a woman of 80 with a
# heart attack and a PHQ-9 of 12.
_MINI_TABLES = {
    "DEMO_J": {
        "RIDAGEYR": [10, 50, 19, 80],
        "RIAGENDR": [1, 1, 2, 2],
        "RIDRETH3": [3, 4, 6, 1],
        "DMDBORN4": [1, 2, 99, 1],
        "DMDEDUC2": [None, 5, None, 3],
        "DMDEDUC3": [4, None, 13, None],
        "INDFMPIR": [1.0, 4.0, None, 0.8],
    },
    "BIOPRO_J": {
        "LBXSCR": [0.5, 1.2, 0.7, 1.0],
        "LBXSATSI": [20, 30, 15, 10],
        "LBDSATLC": [0, 0, 0, 0],
        "LBXSGTSI": [10, 20, 15, 2],
        "LBDSGTLC": [0, 0, 0, 1],
        "LBXSTB": [0.5, 0.6, 0.4, 0.1],
        "LBDSTBLC": [0, 0, 0, 1],
    },
    "CBC_J": {"LBXHGB": [12.0, 15.0, 13.1, 11.9]},
    "GHB_J": {"LBXGH": [5.0, 5.5, 5.1, 6.8]},
    "TCHOL_J": {"LBXTC": [150, 210, 180, 240]},
    "HDL_J": {"LBDHDD": [50, 40, 60, 55]},
    "HSCRP_J": {"LBXHSCRP": [0.5, 1.2, 0.11, 3.0], "LBDHRPLC": [0, 0, 1, 0]},
    "BPQ_J": {"BPQ020": [None, 1, 9, 2], "BPQ080": [None, 2, 9, 1]},
    "DIQ_J": {"DIQ010": [2, 2, 9, 3]},
    "KIQ_U_J": {"KIQ022": [None, 2, None, 2]},
    "MCQ_J": {
        **{item: [None, 2, 9, 2] for item in ("MCQ160B", "MCQ160C", "MCQ160D", "MCQ160F")},
        "MCQ160E": [None, 2, 9, 1],
        **{item: [None, 2, 9, 2] for item in ("MCQ160L", "MCQ160O", "MCQ160G", "MCQ160K", "MCQ220")},
        "MCQ010": [2, 2, 9, 2],
    },
    "DPQ_J": {
        **{f"DPQ0{i}0": [None, 0, None, 2] for i in range(1, 7)},
        **{f"DPQ0{i}0": [None, 0, None, 0] for i in range(7, 10)},
    },
}
_MINI_IDS = [93703, 93704, 93705, 93706]


def _write_mini_folder(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, columns in _MINI_TABLES.items():
        frame = pd.DataFrame({"SEQN": _MINI_IDS, **columns})
        frame.to_csv(folder / f"{name}.csv", index=False)
    return folder


@pytest.fixture
def mini_extract(tmp_path) -> pd.DataFrame:
    frame = nhanes.build_site_extract(_write_mini_folder(tmp_path / "mini"))
    frame.index = frame["SEQN"].astype("int64")
    return frame


def test_mini_extract_keeps_adults(mini_extract):
    assert mini_extract.index.tolist() == [93704, 93705, 93706]


@pytest.mark.parametrize(
    ("column", "expected"),
    [
        ("dx_hypertension", [1, None, 0]),
        ("dx_dyslipidaemia", [0, None, 1]),
        ("dx_diabetes", [0, None, 0]),
        ("dx_cardiovascular_disease", [0, None, 1]),
        ("dx_chronic_kidney_disease", [0, None, 0]),
        ("dx_respiratory_disease", [0, None, 0]),
        ("dx_mental_health", [0, None, 1]),
        ("phq9_score", [0, None, 12]),
        ("education_level", [5, 3, 3]),
        ("LBXHSCRP_censored", [None, "<", None]),
        ("LBXSTB_censored", [None, None, "<"]),
    ],
)
def test_mini_extract_derived_columns(mini_extract, column, expected):
    actual = [None if pd.isna(value) else value for value in mini_extract[column]]
    assert actual == expected


def test_mini_extract_income_quintiles_among_adults(mini_extract):
    # Adults' ratios 4.0 and 0.8 (one missing); the child's 1.0 is not counted.
    assert mini_extract.attrs["nhanes"]["income_poverty_cut_points"] == pytest.approx([1.44, 2.08, 2.72, 3.36])
    assert mini_extract["income_poverty_quintile"].tolist()[0] == 5


def test_mini_extract_raises_for_missing_item(tmp_path):
    folder = _write_mini_folder(tmp_path / "mini")
    bpq = pd.read_csv(folder / "BPQ_J.csv").drop(columns=["BPQ080"])
    bpq.to_csv(folder / "BPQ_J.csv", index=False)
    with pytest.raises(ExtractError, match=r"lack columns \['BPQ080'\], which the dyslipidaemia label needs"):
        nhanes.build_site_extract(folder)


def _run_adapt(argv: list[str]) -> int:
    """Parse ``argv`` with only the ``adapt`` command registered and run it.

    The full ``hivcomorb`` parser imports every stage module; this keeps the
    test about the adapter alone. ``hivcomorb.cli.main`` turns the errors
    raised here into exit status 1 and an ERROR log line.
    """
    parser = argparse.ArgumentParser(prog="hivcomorb")
    nhanes.register_cli(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return args.func(args)


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_adapt_command_writes_extract(tmp_path, suffix):
    folder = _write_mini_folder(tmp_path / "mini")
    out = tmp_path / "out" / f"extract{suffix}"
    status = _run_adapt(["adapt", "nhanes", "--source", str(folder), "--out", str(out)])
    written = pd.read_csv(out) if suffix == ".csv" else pd.read_parquet(out)
    assert status == 0
    assert len(written) == 3


def test_adapt_command_missing_folder(tmp_path):
    with pytest.raises(DataNotFoundError, match=r"https://wwwn\.cdc\.gov/Nchs/Nhanes/2017-2018/<FILE>\.XPT"):
        _run_adapt(["adapt", "nhanes", "--source", str(tmp_path / "absent"), "--out", str(tmp_path / "x.parquet")])


def test_adapt_command_rejects_unknown_suffix(tmp_path):
    folder = _write_mini_folder(tmp_path / "mini")
    with pytest.raises(ConfigError, match=r"must end in \.parquet or \.csv"):
        _run_adapt(["adapt", "nhanes", "--source", str(folder), "--out", str(tmp_path / "x.xlsx")])


def test_adapt_command_requires_adapter_name():
    with pytest.raises(SystemExit):
        _run_adapt(["adapt"])
