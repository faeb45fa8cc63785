"""Value parsing during ingestion: censored results, separators, stray units, missing words."""

from __future__ import annotations

import math

import pandas as pd
import polars as pl
import pytest

from hivcomorb.contract import load_contract
from hivcomorb.ingest import ingest_frame
from hivcomorb.ingest.parse import parse_category, parse_censor_flags, parse_label


@pytest.fixture(scope="module")
def contract():
    return load_contract()


def ingest_column(contract, column, cells, **options):
    frame = pl.DataFrame({"patient_id": [f"p{i}" for i in range(len(cells))], column: cells}, schema_overrides={column: pl.String})
    return ingest_frame(frame, contract, None, source_name="cells.csv", validate=False, allow_empty=True, options=options or None)


@pytest.mark.parametrize(
    ("cell", "value", "flag"),
    [
        ("<20", 20.0, "<"),
        ("< 0.5", 0.5, "<"),
        (">10000000", 10000000.0, ">"),
        ("<=50", 50.0, "<"),
        ("\u2264 50", 50.0, "<"),
        ("<LDL", 20.0, "<"),
        ("TND", 20.0, "<"),
        ("Not detected", 20.0, "<"),
        ("not  DETECTED", 20.0, "<"),
        ("10 000", 10000.0, None),
        ("10,000,000", 10000000.0, None),
        ("1.234.567", 1234567.0, None),
        ("12'500", 12500.0, None),
        ("1.5e3", 1500.0, None),
        ("  340  ", 340.0, None),
        ("5 copies/mL", 5.0, None),
        ("<20 copies/mL", 20.0, "<"),
    ],
)
def test_parse_viral_load_cells(contract, cell, value, flag):
    result = ingest_column(contract, "viral_load", [cell])
    assert result.summary["rows_kept"] == 1
    assert result.cohort["viral_load"].iloc[0] == pytest.approx(value, rel=1e-12)
    actual_flag = result.cohort["viral_load_censored"].iloc[0]
    if flag is None:
        assert pd.isna(actual_flag)
    else:
        assert actual_flag == flag


@pytest.mark.parametrize(
    ("cell", "value"),
    [
        ("13,5 g/dL", 135.0),
        ("135,5", 135.5),
        ("1.234,5", None),
        ("  142 ", 142.0),
        ("142 g/L", 142.0),
        ("142g/l", 142.0),
        ("8,5 mmol/L", 8.5 * 16.11),
    ],
)
def test_parse_haemoglobin_decimal_commas_and_units(contract, cell, value):
    result = ingest_column(contract, "haemoglobin", [cell])
    if value is None:
        assert result.summary["rows_quarantined"] == 1
    else:
        assert result.cohort["haemoglobin"].iloc[0] == pytest.approx(value, rel=1e-12)


@pytest.mark.parametrize("cell", ["NA", "n/a", "N/A", "-", "", "  ", None, "null", "NaN"])
def test_parse_missing_tokens_become_missing(contract, cell):
    result = ingest_column(contract, "haemoglobin", [cell])
    assert result.summary["rows_kept"] == 1
    assert math.isnan(result.cohort["haemoglobin"].iloc[0])


@pytest.mark.parametrize(
    ("cell", "rule"),
    [
        ("abc", "unparseable_value"),
        ("13.5.2", "unparseable_value"),
        ("1,2,3", "unparseable_value"),
        ("haemolysed", "unparseable_value"),
        ("inf", "unparseable_value"),
        ("13.5 kg", "unknown_unit"),
        ("TND", "no_detection_limit"),
    ],
)
def test_parse_unparseable_cells_quarantined(contract, cell, rule):
    result = ingest_column(contract, "haemoglobin", ["140", cell])
    quarantine = result.quarantine
    assert list(quarantine["source_row"]) == [2]
    assert list(quarantine["column"]) == ["haemoglobin"]
    assert list(quarantine["raw_value"]) == [cell]
    assert list(quarantine["rule"]) == [rule]


def test_parse_ambiguous_comma_read_as_thousands(contract):
    result = ingest_column(contract, "platelets", ["1,200 cells/uL", "250"])
    assert result.cohort["platelets"].tolist() == pytest.approx([1.2, 250.0])


def test_parse_ambiguous_comma_read_as_decimal_beside_decimal_commas(contract):
    result = ingest_column(contract, "creatinine", ["1,234 mg/dL", "75,5"])
    assert result.cohort["creatinine"].tolist() == pytest.approx([1.234 * 88.42, 75.5])


def test_parse_ambiguous_comma_counted_in_summary(contract):
    result = ingest_column(contract, "creatinine", ["1,234 mg/dL", "75,5"])
    assert result.summary["ambiguous_commas"] == {"creatinine": {"cells": 1, "read_as": "decimal comma"}}


def test_parse_decimal_comma_setting_no(contract):
    result = ingest_column(contract, "creatinine", ["1,234", "75,5"], decimal_comma="no")
    assert result.cohort["creatinine"].tolist() == [1234.0]
    assert list(result.quarantine["raw_value"]) == ["75,5"]


def test_parse_decimal_comma_setting_yes(contract):
    result = ingest_column(contract, "creatinine", ["1,234 mg/dL"], decimal_comma="yes")
    assert result.cohort["creatinine"].tolist() == pytest.approx([1.234 * 88.42])


def test_parse_censored_age_quarantined(contract):
    result = ingest_column(contract, "age", ["<40"])
    assert list(result.quarantine["rule"]) == ["censored_not_allowed"]


def test_parse_integer_column_rejects_fraction(contract):
    result = ingest_column(contract, "deprivation_quintile", ["2", "2.5"])
    assert list(result.quarantine["rule"]) == ["not_an_integer"]


def test_parse_integer_column_dtype(contract):
    result = ingest_column(contract, "deprivation_quintile", ["2", ""])
    assert str(result.cohort["deprivation_quintile"].dtype) == "Int64"


def test_parse_typed_parquet_numbers_kept(contract):
    frame = pl.DataFrame({"patient_id": ["a", "b"], "haemoglobin": [141.25, None]})
    result = ingest_frame(frame, contract, None, source_name="typed.parquet", validate=False)
    assert result.cohort["haemoglobin"].iloc[0] == 141.25


# Typed and text cells, and parsing of distinct values

TYPED_AND_TEXT = {
    "age": ([35.5, 16.0, None, 62.0, 48.25], ["35.5", "16", "", " 62 ", "48.25"]),
    "haemoglobin": ([141.25, 130.0, -5.0, None, 98.0], ["141.25", "130", "-5", "NA", "98.0"]),
    "viral_load": ([20.0, 1500.0, None, 20.0, 40.0], ["<20", "1500", "", "TND", "40"]),
    "deprivation_quintile": ([2.0, 2.5, 5.0, None, 1.0], ["2", "2.5", "5", "", "1"]),
}
TYPED_FLAGS = {"viral_load_censored": ["<", None, None, "<", None]}


def typed_and_text_frames() -> tuple[pl.DataFrame, pl.DataFrame]:
    ids = [f"p{i}" for i in range(5)]
    typed = pl.DataFrame({"patient_id": ids, **{name: values for name, (values, _) in TYPED_AND_TEXT.items()}, **TYPED_FLAGS})
    text = pl.DataFrame({"patient_id": ids, **{name: cells for name, (_, cells) in TYPED_AND_TEXT.items()}}, schema_overrides={n: pl.String for n in TYPED_AND_TEXT})
    return typed, text


def test_parse_typed_and_text_give_same_cohort(contract):
    typed, text = typed_and_text_frames()
    from_typed = ingest_frame(typed, contract, None, source_name="typed.parquet", validate=False)
    from_text = ingest_frame(text, contract, None, source_name="text.csv", validate=False)
    pd.testing.assert_frame_equal(from_typed.cohort, from_text.cohort, check_exact=True)


def test_parse_typed_and_text_give_same_quarantine(contract):
    typed, text = typed_and_text_frames()
    from_typed = ingest_frame(typed, contract, None, source_name="typed.parquet", validate=False).quarantine
    from_text = ingest_frame(text, contract, None, source_name="text.csv", validate=False).quarantine
    columns = ["source_row", "column", "rule", "detail"]
    pd.testing.assert_frame_equal(from_typed[columns], from_text[columns])
    assert from_typed["rule"].tolist() == ["outside_possible_range", "not_an_integer", "outside_possible_range"]


def test_parse_typed_raw_value_written_as_in_text(contract):
    typed, _ = typed_and_text_frames()
    quarantine = ingest_frame(typed, contract, None, source_name="typed.parquet", validate=False).quarantine
    assert quarantine["raw_value"].tolist() == ["16", "2.5", "-5"]


def test_parse_whitespace_around_numbers(contract):
    cells = [" 140 ", "\t135\n", " nan", "1e400 ", " <20 "]
    result = ingest_column(contract, "haemoglobin", cells)
    assert result.cohort["haemoglobin"].tolist()[:2] == [140.0, 135.0]
    assert math.isnan(result.cohort["haemoglobin"].iloc[2])
    assert result.quarantine[["source_row", "rule"]].values.tolist() == [[4, "unparseable_value"]]
    assert result.cohort["haemoglobin_censored"].iloc[3] == "<"


CELL_PARSERS = {
    "category": lambda cells: parse_category(
        cells, ["male", "female", "other", "unknown"], {"M": "male", "F": "female", "Not stated": None}, ["NA", ""]
    ),
    "label": lambda cells: parse_label(cells, {"maybe": None}, ["1", "yes", "y"], ["0", "no", "n"], ["NA", ""]),
    "censoring flag": lambda cells: parse_censor_flags(cells, ["NA", ""]),
}
MIXED_CELLS = ["male", " Male ", "M", "f", "Not  stated", "NA", "", None, "yes", "0", "<", " >= ", "~", "martian", "male", None]


@pytest.mark.parametrize("parser", list(CELL_PARSERS))
def test_parse_column_equals_cell_by_cell(parser):
    parse = CELL_PARSERS[parser]
    values, errors = parse(pl.Series(MIXED_CELLS, dtype=pl.String))
    one_by_one = [parse(pl.Series([cell], dtype=pl.String)) for cell in MIXED_CELLS]
    assert values.to_list() == [v.item() for v, _ in one_by_one]
    assert errors.to_list() == [e.item() for _, e in one_by_one]


@pytest.mark.parametrize("parser", list(CELL_PARSERS))
def test_parse_all_null_column(parser):
    values, errors = CELL_PARSERS[parser](pl.Series([None, None], dtype=pl.String))
    assert values.to_list() == [None, None]
    assert errors.to_list() == [None, None]
