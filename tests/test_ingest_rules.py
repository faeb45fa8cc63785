"""Quarantine rules, reconciliation and the canonical form of kept rows."""

from __future__ import annotations

import logging

import pandas as pd
import polars as pl
import pytest

from hivcomorb.contract import load_contract
from hivcomorb.errors import ExtractError
from hivcomorb.ingest import ingest_frame

CONTRACT = load_contract()


def ingest(frame, **kwargs):
    kwargs.setdefault("validate", False)
    kwargs.setdefault("allow_empty", True)
    return ingest_frame(pl.DataFrame(frame), CONTRACT, None, source_name="rules.csv", **kwargs)


def reasons(result):
    return result.quarantine[["source_row", "column", "rule"]].values.tolist()


def test_rules_duplicate_ids_quarantine_every_copy():
    result = ingest({"patient_id": ["SECRET-1", "SECRET-2", "SECRET-1"], "age": ["40", "50", "60"]})
    assert reasons(result) == [[1, "patient_id", "duplicate_id"], [3, "patient_id", "duplicate_id"]]


def test_rules_duplicate_ids_counted():
    result = ingest({"patient_id": ["x", "x", "y", "y", "y", "z"]})
    assert result.summary["duplicate_ids"] == {"ids": 2, "rows": 5}


def test_rules_missing_id_quarantined():
    result = ingest({"patient_id": ["a", None, "  ", "NA"]})
    assert reasons(result) == [[2, "patient_id", "missing_id"], [3, "patient_id", "missing_id"], [4, "patient_id", "missing_id"]]


def test_rules_quarantine_never_holds_patient_id():
    result = ingest({"patient_id": ["SECRET-1", "SECRET-1", "SECRET-2"], "age": ["40", "50", "17"]})
    assert not result.quarantine.astype(str).apply(lambda col: col.str.contains("SECRET")).any().any()


def test_rules_id_shifted_into_other_column_withheld():
    result = ingest({"patient_id": ["SECRET-1", "SECRET-2"], "age": ["40", " SECRET-1 "], "gender": ["SECRET-2", "male"]})
    assert reasons(result) == [[1, "gender", "unknown_category"], [2, "age", "unparseable_value"]]
    assert result.quarantine["raw_value"].isna().all()
    assert result.quarantine["detail"].str.contains("value withheld").all()


def test_rules_logs_never_hold_patient_id(caplog):
    with caplog.at_level(logging.DEBUG):
        ingest({"patient_id": ["SECRET-1", "SECRET-1", "SECRET-2"], "age": ["40", "50", "17"]}, validate=True)
    assert "SECRET" not in caplog.text


@pytest.mark.parametrize(
    ("age", "kept"),
    [("17", False), ("17.9", False), ("18", True), ("110", True), ("110.5", False), ("-3", False), ("105", True)],
)
def test_rules_age_bounds(age, kept):
    result = ingest({"patient_id": ["a"], "age": [age]})
    assert result.summary["rows_kept"] == int(kept)


@pytest.mark.parametrize(
    ("column", "value"),
    [("cd4_count", "-5"), ("haemoglobin", "0"), ("platelets", "0"), ("sodium", "300"), ("viral_load", "-1")],
)
def test_rules_impossible_lab_values_quarantined(column, value):
    result = ingest({"patient_id": ["a"], column: [value]})
    assert reasons(result) == [[1, column, "outside_possible_range"]]


def test_rules_impossible_value_detail_names_range():
    result = ingest({"patient_id": ["a"], "haemoglobin": ["0"]})
    assert result.quarantine["detail"].tolist() == ["possible range 20-260 g/L"]


def test_rules_unusual_values_kept_and_counted():
    result = ingest({"patient_id": ["a", "b", "c"], "haemoglobin": ["90", "140", "200"], "age": ["102", "40", "50"]})
    assert result.summary["rows_kept"] == 3
    assert result.summary["out_of_usual_range"] == {"age": 1, "haemoglobin": 2}


@pytest.mark.parametrize(
    ("cell", "expected"),
    [("1", 1), ("0", 0), ("yes", 1), ("No", 0), ("Y", 1), ("n", 0), ("TRUE", 1), ("false", 0), ("", None), (None, None), ("NA", None)],
)
def test_rules_label_values_normalised(cell, expected):
    result = ingest({"patient_id": ["a"], "diabetes": [cell]})
    value = result.cohort["diabetes"].iloc[0]
    if expected is None:
        assert pd.isna(value)
    else:
        assert value == expected


@pytest.mark.parametrize("cell", ["2", "maybe", "-1", "positive"])
def test_rules_invalid_labels_quarantined(cell):
    result = ingest({"patient_id": ["a"], "diabetes": [cell]})
    assert result.quarantine[["column", "raw_value", "rule"]].values.tolist() == [["diabetes", cell, "invalid_label"]]


def test_rules_unknown_category_quarantined():
    result = ingest({"patient_id": ["a", "b"], "smoking_status": ["Current", "sometimes"]})
    assert result.quarantine[["source_row", "raw_value", "rule"]].values.tolist() == [[2, "sometimes", "unknown_category"]]


def test_rules_one_row_counted_once_with_several_reasons():
    result = ingest({"patient_id": ["a", "b"], "age": ["5", "40"], "haemoglobin": ["0", "140"], "diabetes": ["x", "1"]})
    assert (result.summary["rows_quarantined"], result.summary["quarantine_entries"]) == (1, 3)


def test_rules_reconciliation_line():
    result = ingest({"patient_id": ["a", "b", "b", "c"], "age": ["40", "50", "60", "12"]})
    assert result.summary["reconciliation"] == "read 4 = kept 1 + quarantined 3"


def test_rules_reconciliation_logged(caplog):
    with caplog.at_level(logging.INFO, logger="hivcomorb.ingest.canonical"):
        ingest({"patient_id": ["a", "b"], "age": ["40", "12"]})
    assert "read 2 = kept 1 + quarantined 1" in caplog.text


def test_rules_row_offset_for_chunks():
    result = ingest({"patient_id": ["a", "b"], "age": ["40", "12"]}, row_offset=1000)
    assert (result.cohort["source_row"].tolist(), result.quarantine["source_row"].tolist()) == ([1001], [1002])


def test_rules_no_usable_rows_raises():
    with pytest.raises(ExtractError, match="no usable rows: all 2 rows were quarantined \\(outside_possible_range in age: 2\\)"):
        ingest_frame(pl.DataFrame({"patient_id": ["a", "b"], "age": ["1", "2"]}), CONTRACT, None, source_name="x.csv", validate=False)


def test_rules_censored_counts():
    result = ingest({"patient_id": ["a", "b", "c"], "viral_load": ["<20", "TND", ">10000000"]})
    assert result.summary["censored"] == {"viral_load": {"<": 2, ">": 1}}


def test_rules_cohort_dtypes():
    result = ingest({"patient_id": ["a"], "age": ["40"], "gender": ["male"], "deprivation_quintile": ["3"], "cd4_count": ["500"], "cancer": ["0"]})
    dtypes = {name: str(dtype) for name, dtype in result.cohort.dtypes.items()}
    assert dtypes == {
        "patient_id": "string",
        "age": "float64",
        "gender": "string",
        "deprivation_quintile": "Int64",
        "cd4_count": "float64",
        "cd4_count_censored": "string",
        "cancer": "Int8",
        "source_row": "int64",
    }


def test_rules_labs_absent_listed():
    result = ingest({"patient_id": ["a"], "haemoglobin": ["140"]})
    assert result.summary["labs_absent"] == [lab for lab in CONTRACT.labs if lab != "haemoglobin"]


def test_rules_content_hash_stable_and_sensitive():
    first = ingest({"patient_id": ["a", "b"], "haemoglobin": ["140", "150"]}).summary["content_hash"]
    again = ingest({"patient_id": ["a", "b"], "haemoglobin": ["140", "150"]}).summary["content_hash"]
    changed = ingest({"patient_id": ["a", "b"], "haemoglobin": ["140", "151"]}).summary["content_hash"]
    assert first == again
    assert first != changed


def test_rules_content_hash_skipped_on_request():
    frame = {"patient_id": ["a", "b"], "haemoglobin": ["140", "150"]}
    hashed = ingest(frame)
    unhashed = ingest(frame, hash_content=False)
    assert unhashed.summary["content_hash"] is None
    pd.testing.assert_frame_equal(unhashed.cohort, hashed.cohort)


def test_rules_pandas_input_accepted():
    frame = pd.DataFrame({"patient_id": ["a", "b"], "haemoglobin": ["140", 150.0], "age": [40, 50]})
    result = ingest_frame(frame, CONTRACT, None, source_name="frame", validate=False)
    assert result.cohort["haemoglobin"].tolist() == [140.0, 150.0]


def test_rules_validation_statistics_in_summary():
    result = ingest({"patient_id": ["a", "b"], "haemoglobin": ["140", "150"], "gender": ["male", None]}, validate=True)
    assert result.summary["validation"]["success"] is True
    assert result.summary["validation"]["statistics"]["unsuccessful_expectations"] == 0
