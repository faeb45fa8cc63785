"""Validation on deciding rows: the Great Expectations verdict of a few rows equals that of every row."""

from __future__ import annotations

import numpy as np
import pandas as pd
import polars as pl
import pytest

from hivcomorb.contract import load_contract
from hivcomorb.errors import ConfigError, ExtractError
from hivcomorb.ingest import ingest_file, ingest_frame
from hivcomorb.ingest import validate as validate_module
from hivcomorb.ingest.validate import (
    CompactCohort,
    RowsSetting,
    all_rows_counts,
    check_validation,
    deciding_rows,
    validate_cohort,
    validate_kept_rows,
)
from hivcomorb.schema import build_suite

CONTRACT = load_contract()
N_PATIENTS = 400

# (case, column, row, value): one value per case that the suite must reject.
BREACHES = [
    ("lab above possible range", "haemoglobin", 123, 900.0),
    ("lab below possible range", "creatinine", 5, -1.0),
    ("unknown category", "gender", 57, "SECRET-VALUE"),
    ("invalid censoring flag", "viral_load_censored", 201, "~"),
    ("missing patient id", "patient_id", 88, pd.NA),
    ("label outside 0 and 1", "hypertension", 17, 7),
    ("repeated source row", "source_row", 199, 5),
]


@pytest.fixture(scope="module")
def cohort() -> pd.DataFrame:
    from hivcomorb.synth import generate

    return ingest_frame(generate(N_PATIENTS, 5).extract, CONTRACT, None, source_name="synth.parquet", validate=False).cohort


def with_breach(cohort: pd.DataFrame, column: str, row: int, value) -> pd.DataFrame:
    broken = cohort.copy()
    broken.loc[row, column] = value
    return broken


def verdicts(validation: dict) -> dict[tuple[str, str | None], bool]:
    return {(r["expectation"], r["column"]): r["success"] for r in validation["results"]}


def compact_rows(cohort: pd.DataFrame) -> pd.DataFrame:
    positions = deciding_rows(pl.from_pandas(cohort), build_suite(CONTRACT, columns=cohort.columns))
    return cohort.iloc[positions].reset_index(drop=True)


@pytest.fixture(scope="module")
def clean_verdicts(cohort) -> dict:
    return {"every row": verdicts(validate_cohort(cohort, CONTRACT)), "deciding rows": verdicts(validate_cohort(compact_rows(cohort), CONTRACT))}


def test_deciding_rows_clean_cohort_passes(clean_verdicts):
    assert all(clean_verdicts["every row"].values())
    assert clean_verdicts["deciding rows"] == clean_verdicts["every row"]


@pytest.mark.parametrize(("case", "column", "row", "value"), BREACHES, ids=[b[0] for b in BREACHES])
def test_deciding_rows_verdicts_match_every_row(cohort, case, column, row, value):
    broken = with_breach(cohort, column, row, value)
    every_row = verdicts(validate_cohort(broken, CONTRACT))
    deciding = verdicts(validate_cohort(compact_rows(broken), CONTRACT))
    assert not all(every_row.values()), f"the suite accepts the breach {case}"
    assert deciding == every_row


def test_deciding_rows_repeated_id_kept(cohort):
    broken = with_breach(cohort, "patient_id", 250, cohort.loc[3, "patient_id"])
    kept = compact_rows(broken)
    assert {4, 251} <= set(kept["source_row"])
    assert verdicts(validate_cohort(kept, CONTRACT)) == verdicts(validate_cohort(broken, CONTRACT))


def test_deciding_rows_far_fewer_than_rows(cohort):
    assert len(compact_rows(cohort)) < N_PATIENTS / 2


def test_deciding_rows_hold_extremes_and_categories(cohort):
    kept = compact_rows(cohort)
    assert kept["haemoglobin"].min() == cohort["haemoglobin"].min()
    assert kept["haemoglobin"].max() == cohort["haemoglobin"].max()
    assert set(kept["ethnicity"].dropna()) == set(cohort["ethnicity"].dropna())


def test_deciding_rows_nan_counts_as_missing():
    frame = pl.DataFrame({"x": [1.0, float("nan"), 3.0, None]})
    suite = {
        "expectations": [
            {"type": "expect_column_values_to_be_between", "kwargs": {"column": "x", "min_value": 0, "max_value": 2}},
        ]
    }
    assert deciding_rows(frame, suite).tolist() == [0, 2]


def test_deciding_rows_unknown_expectation_keeps_every_row(cohort):
    suite = {"expectations": [{"type": "expect_column_mean_to_be_between", "kwargs": {"column": "age", "min_value": 0}}]}
    assert deciding_rows(pl.from_pandas(cohort), suite).tolist() == list(range(N_PATIENTS))


def test_deciding_rows_empty_cohort():
    frame = pl.DataFrame({"patient_id": pl.Series([], dtype=pl.String)})
    assert deciding_rows(frame, build_suite(CONTRACT, columns=frame.columns)).size == 0


def test_ingest_returns_deciding_rows_of_its_cohort(cohort):
    from hivcomorb.synth import generate

    result = ingest_frame(generate(N_PATIENTS, 5).extract, CONTRACT, None, source_name="synth.parquet", validate=False, deciding_rows=True)
    pd.testing.assert_frame_equal(result.deciding_rows, compact_rows(result.cohort))


def test_compact_cohort_matches_every_row(cohort):
    broken = with_breach(cohort, "haemoglobin", 321, 900.0)
    compact = CompactCohort(CONTRACT)
    for start in range(0, N_PATIENTS, 100):
        chunk = broken.iloc[start : start + 100]
        compact.add(compact_rows(chunk), len(chunk))
    validation = compact.validate()
    assert verdicts(validation) == verdicts(validate_cohort(broken, CONTRACT))
    assert validation["rows_represented"] == N_PATIENTS
    assert validation["rows_validated"] == len(compact.rows) < N_PATIENTS / 2


def test_compact_cohort_without_rows_skipped():
    compact = CompactCohort(CONTRACT)
    compact.add(pd.DataFrame(), 0)
    assert compact.validate()["skipped"] == "no rows were kept"


def test_check_validation_names_failed_expectations(cohort):
    validation = validate_cohort(compact_rows(with_breach(cohort, "haemoglobin", 10, 900.0)), CONTRACT)
    with pytest.raises(ExtractError, match="expect_column_values_to_be_between on haemoglobin"):
        check_validation(validation, fail=True)


def test_check_validation_off_does_not_raise():
    check_validation({"success": False, "results": [{"expectation": "x", "column": "y", "success": False}]}, fail=False)


def test_deciding_rows_sorted_positions(cohort):
    positions = deciding_rows(pl.from_pandas(cohort), build_suite(CONTRACT, columns=cohort.columns))
    assert positions.dtype == np.int64
    assert np.all(np.diff(positions) > 0)


# (case, options, message): ingest.validate settings that must be rejected.
INVALID_SETTINGS = [
    ("unknown mode", {"validate": "fast", "validate_all_rows_up_to": 10}, r"ingest\.validate must be one of 'auto', 'all_rows', 'compact', got 'fast'"),
    ("boolean mode", {"validate": True, "validate_all_rows_up_to": 10}, r"ingest\.validate must be one of .*got True"),
    ("auto without limit", {"validate": "auto", "validate_all_rows_up_to": None}, r"ingest\.validate_all_rows_up_to must be a whole number.*got None"),
    ("negative limit", {"validate": "auto", "validate_all_rows_up_to": -1}, r"ingest\.validate_all_rows_up_to .*got -1"),
    ("text limit", {"validate": "compact", "validate_all_rows_up_to": "200k"}, r"ingest\.validate_all_rows_up_to .*got '200k'"),
    ("boolean limit", {"validate": "auto", "validate_all_rows_up_to": True}, r"ingest\.validate_all_rows_up_to .*got True"),
]

# (setting, kept rows, mode that runs)
MODES_BY_ROWS = [
    ({"validate": "auto", "validate_all_rows_up_to": 100}, 100, "all_rows"),
    ({"validate": "auto", "validate_all_rows_up_to": 100}, 101, "compact"),
    ({"validate": "auto", "validate_all_rows_up_to": 0}, 1, "compact"),
    ({"validate": "all_rows", "validate_all_rows_up_to": 100}, 10**6, "all_rows"),
    ({"validate": "compact", "validate_all_rows_up_to": 100}, 1, "compact"),
    ({}, 10**6, "all_rows"),
]


@pytest.mark.parametrize(("case", "options", "message"), INVALID_SETTINGS, ids=[c[0] for c in INVALID_SETTINGS])
def test_rows_setting_invalid_value_raises(case, options, message):
    with pytest.raises(ConfigError, match=message):
        RowsSetting.from_options(options)


@pytest.mark.parametrize(("options", "rows_kept", "mode"), MODES_BY_ROWS)
def test_rows_setting_mode_for_kept_rows(options, rows_kept, mode):
    assert RowsSetting.from_options(options).mode_for(rows_kept) == mode


def test_ingest_frame_invalid_setting_raises():
    with pytest.raises(ConfigError, match="ingest.validate must be one of"):
        ingest_frame(pd.DataFrame({"patient_id": ["a"]}), CONTRACT, None, source_name="x.csv", options={"validate": "sometimes"})


@pytest.fixture(scope="module")
def extract_file(tmp_path_factory):
    """The synthetic extract of the module's cohort, written as a CSV file."""
    from hivcomorb.synth import generate

    path = tmp_path_factory.mktemp("extract") / "synth.csv"
    generate(N_PATIENTS, 5).extract.to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def ingested_both_ways(extract_file) -> dict:
    return {mode: ingest_file(extract_file, CONTRACT, options={"validate": mode}) for mode in ("all_rows", "compact")}


def test_ingest_compact_matches_all_rows(ingested_both_ways):
    every_row = ingested_both_ways["all_rows"].validation
    compact = ingested_both_ways["compact"].validation
    assert len(every_row["results"]) > 100
    assert verdicts(compact) == verdicts(every_row)
    assert compact["statistics"] == every_row["statistics"]


def test_ingest_compact_same_cohort(ingested_both_ways):
    pd.testing.assert_frame_equal(ingested_both_ways["compact"].cohort, ingested_both_ways["all_rows"].cohort)
    assert ingested_both_ways["compact"].summary["content_hash"] == ingested_both_ways["all_rows"].summary["content_hash"]


def test_ingest_summary_records_rows_checked(ingested_both_ways):
    kept = ingested_both_ways["all_rows"].summary["rows_kept"]
    every_row = ingested_both_ways["all_rows"].summary["validation"]
    compact = ingested_both_ways["compact"].summary["validation"]
    assert (every_row["mode"], every_row["rows_validated"], every_row["rows_represented"]) == ("all_rows", kept, kept)
    assert (compact["mode"], compact["rows_represented"]) == ("compact", kept)
    assert 0 < compact["rows_validated"] < kept / 2
    assert f"Great Expectations checked {compact['rows_validated']:,} deciding rows" in compact["coverage"]
    assert f"all {kept:,} kept rows" in compact["coverage"]


def test_ingest_compact_counts_every_kept_row(ingested_both_ways):
    every_row = {(r["expectation"], r["column"]): r for r in ingested_both_ways["all_rows"].validation["results"]}
    compact = ingested_both_ways["compact"].validation["results"]
    uncounted = {r["expectation"] for r in compact if "all_rows" not in r}
    assert uncounted == {"expect_column_to_exist", "expect_column_values_to_be_in_type_list"}
    for result in [r for r in compact if "all_rows" in r]:
        reference = every_row[(result["expectation"], result["column"])]
        for name, value in result["all_rows"].items():
            assert value == reference[name], f"{name} of {result['expectation']} on {result['column']}"


def test_ingest_all_rows_has_no_hivcomorb_counts(ingested_both_ways):
    assert not any("all_rows" in r for r in ingested_both_ways["all_rows"].validation["results"])


@pytest.mark.parametrize(("case", "column", "row", "value"), BREACHES, ids=[b[0] for b in BREACHES])
def test_kept_rows_compact_counts_match_every_row(cohort, case, column, row, value):
    broken = with_breach(cohort, column, row, value)
    every_row = validate_kept_rows(broken, CONTRACT, "all_rows")
    compact = validate_kept_rows(broken, CONTRACT, "compact")
    assert verdicts(compact) == verdicts(every_row)
    reference = {(r["expectation"], r["column"]): r for r in every_row["results"]}
    for result in compact["results"]:
        for name, value in (result.get("all_rows") or {}).items():
            assert value == reference[(result["expectation"], result["column"])][name], f"{name} of {result['expectation']} on {result['column']}"


def test_kept_rows_unknown_mode_raises(cohort):
    with pytest.raises(ValueError, match="mode must be"):
        validate_kept_rows(cohort, CONTRACT, "auto")


def test_all_rows_counts_nan_is_missing():
    frame = pl.DataFrame({"x": [1.0, float("nan"), 3.0, None]})
    suite = {"expectations": [{"type": "expect_column_values_to_be_between", "kwargs": {"column": "x", "min_value": 0, "max_value": 2}}]}
    counts = all_rows_counts(frame, suite)[("expect_column_values_to_be_between", "x")]
    assert counts == {"element_count": 4, "missing_count": 2, "unexpected_count": 1}


def test_all_rows_counts_skips_other_arguments():
    frame = pl.DataFrame({"x": [1.0, 5.0]})
    suite = {
        "expectations": [
            {"type": "expect_column_values_to_be_between", "kwargs": {"column": "x", "min_value": 0, "max_value": 2, "mostly": 0.5}},
            {"type": "expect_column_mean_to_be_between", "kwargs": {"column": "x", "min_value": 0}},
        ]
    }
    assert all_rows_counts(frame, suite) == {}


@pytest.fixture
def tight_haemoglobin(monkeypatch):
    """Narrow the suite's haemoglobin range to 100-150 g/L, so that real ingested rows break it."""
    original = validate_module.build_suite

    def narrowed(contract, columns=None):
        suite = original(contract, columns=columns)
        for expectation in suite["expectations"]:
            if expectation["type"] == "expect_column_values_to_be_between" and expectation["kwargs"]["column"] == "haemoglobin":
                expectation["kwargs"].update(min_value=100.0, max_value=150.0)
        return suite

    monkeypatch.setattr(validate_module, "build_suite", narrowed)


@pytest.mark.parametrize("mode", ["all_rows", "compact"])
def test_ingest_failed_expectation_raises(extract_file, tight_haemoglobin, mode):
    with pytest.raises(ExtractError, match="failed 1 expectations.*expect_column_values_to_be_between on haemoglobin"):
        ingest_file(extract_file, CONTRACT, options={"validate": mode})


def test_ingest_failed_expectation_kept_when_allowed(extract_file, tight_haemoglobin):
    results = {
        mode: ingest_file(extract_file, CONTRACT, options={"validate": mode, "fail_on_validation": False}).validation
        for mode in ("all_rows", "compact")
    }
    key = ("expect_column_values_to_be_between", "haemoglobin")
    every_row = {(r["expectation"], r["column"]): r for r in results["all_rows"]["results"]}[key]
    compact = {(r["expectation"], r["column"]): r for r in results["compact"]["results"]}[key]
    assert results["compact"]["success"] is False
    assert verdicts(results["compact"]) == verdicts(results["all_rows"])
    assert compact["unexpected_count"] < every_row["unexpected_count"]
    assert compact["all_rows"]["unexpected_count"] == every_row["unexpected_count"]
