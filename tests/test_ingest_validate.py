"""Validation on deciding rows: the Great Expectations verdict of a few rows equals that of every row."""

from __future__ import annotations

import numpy as np
import pandas as pd
import polars as pl
import pytest

from hivcomorb.contract import load_contract
from hivcomorb.errors import ExtractError
from hivcomorb.ingest import ingest_frame
from hivcomorb.ingest.validate import CompactCohort, check_validation, deciding_rows, validate_cohort
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
