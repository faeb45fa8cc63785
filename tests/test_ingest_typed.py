"""The one-query parse of clean typed number columns gives what the per-column parse gives."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import polars as pl
import pytest

from hivcomorb.contract import load_contract
from hivcomorb.ingest import canonical
from hivcomorb.ingest.canonical import default_options, ingest_frame
from hivcomorb.ingest.mapping import load_mapping, plan_mapping
from hivcomorb.ingest.readers import read_extract_with_info
from hivcomorb.ingest.typed import parse_clean_numbers
from hivcomorb.synth import generate

CONTRACT = load_contract()


@pytest.fixture(scope="module")
def typed_extract() -> pl.DataFrame:
    """A synthetic extract with typed number columns, as a Parquet file delivers it."""
    extract = generate(400, seed=7).extract
    return pl.from_pandas(extract)


def _clean_columns(frame: pl.DataFrame) -> set[str]:
    mapping = load_mapping(None, CONTRACT)
    plan = plan_mapping(mapping, CONTRACT, frame.columns, "typed.parquet")
    return set(parse_clean_numbers(frame, CONTRACT, plan.columns, default_options()))


def _ingest_both(frame: pl.DataFrame, monkeypatch: pytest.MonkeyPatch) -> tuple:
    kwargs = dict(source_name="typed.parquet", validate=False, allow_empty=True)
    fast = ingest_frame(frame, CONTRACT, None, **kwargs)
    with monkeypatch.context() as patch:
        patch.setattr(canonical, "parse_clean_numbers", lambda *args: {})
        slow = ingest_frame(frame, CONTRACT, None, **kwargs)
    return fast, slow


def _with_cell(frame: pl.DataFrame, column: str, row: int, text: str) -> pl.DataFrame:
    """Return ``frame`` with the text cell at ``row`` of ``column`` replaced by ``text``."""
    cells = frame[column].to_list()
    cells[row] = text
    return frame.with_columns(pl.Series(column, cells, dtype=pl.String))


def _assert_same(fast, slow) -> None:
    pd.testing.assert_frame_equal(fast.cohort, slow.cohort)
    pd.testing.assert_frame_equal(fast.quarantine, slow.quarantine)
    assert fast.summary == slow.summary


def test_extract_columns_are_typed(typed_extract: pl.DataFrame) -> None:
    assert typed_extract.schema["haemoglobin"] == pl.Float64
    assert typed_extract.schema["deprivation_quintile"].is_numeric()
    assert typed_extract.schema["viral_load_censored"] == pl.String


def test_clean_extract_takes_one_query(typed_extract: pl.DataFrame, monkeypatch: pytest.MonkeyPatch) -> None:
    numbers = {c.name for c in CONTRACT.columns if c.dtype in ("number", "integer") and c.name in typed_extract.columns}
    assert _clean_columns(typed_extract) == numbers
    fast, slow = _ingest_both(typed_extract, monkeypatch)
    _assert_same(fast, slow)
    assert fast.summary["censored"]


@pytest.mark.parametrize(
    ("column", "row", "value"),
    [
        ("haemoglobin", 3, math.inf),
        ("haemoglobin", 5, 9999.0),
        ("cd4_count", 0, -1.0),
        ("deprivation_quintile", 2, 2.5),
        ("age", 4, 200.0),
    ],
)
def test_defect_goes_to_column_parse(
    typed_extract: pl.DataFrame, monkeypatch: pytest.MonkeyPatch, column: str, row: int, value: float
) -> None:
    values = typed_extract[column].cast(pl.Float64).to_list()
    values[row] = value
    frame = typed_extract.with_columns(pl.Series(column, values, dtype=pl.Float64))
    assert column not in _clean_columns(frame)
    fast, slow = _ingest_both(frame, monkeypatch)
    _assert_same(fast, slow)
    assert set(fast.quarantine["column"]) == {column}
    assert fast.summary["rows_quarantined"] == 1


@pytest.mark.parametrize("flag", [" <", "<=", "less", "", "?"])
def test_uncanonical_flag_goes_to_column_parse(typed_extract: pl.DataFrame, monkeypatch: pytest.MonkeyPatch, flag: str) -> None:
    frame = _with_cell(typed_extract, "viral_load_censored", 1, flag)
    assert "viral_load" not in _clean_columns(frame)
    fast, slow = _ingest_both(frame, monkeypatch)
    _assert_same(fast, slow)


def test_nan_reads_as_missing(typed_extract: pl.DataFrame, monkeypatch: pytest.MonkeyPatch) -> None:
    values = typed_extract["haemoglobin"].to_list()
    values[0] = float("nan")
    frame = typed_extract.with_columns(pl.Series("haemoglobin", values, dtype=pl.Float64))
    assert "haemoglobin" in _clean_columns(frame)
    fast, slow = _ingest_both(frame, monkeypatch)
    _assert_same(fast, slow)
    assert pd.isna(fast.cohort["haemoglobin"].iloc[0])


def test_flag_without_value_counted(typed_extract: pl.DataFrame, monkeypatch: pytest.MonkeyPatch) -> None:
    values = typed_extract["viral_load"].to_list()
    flags = typed_extract["viral_load_censored"].to_list()
    values[2], flags[2] = None, "<"
    frame = typed_extract.with_columns(pl.Series("viral_load", values, dtype=pl.Float64), pl.Series("viral_load_censored", flags))
    assert "viral_load" not in _clean_columns(frame)
    fast, slow = _ingest_both(frame, monkeypatch)
    _assert_same(fast, slow)
    assert pd.isna(fast.cohort["viral_load_censored"].iloc[2])
    assert fast.summary["censor_flags_without_value"] == {"viral_load": 1}
    assert fast.summary["rows_quarantined"] == 0


def test_suspected_unit_goes_to_column_parse(typed_extract: pl.DataFrame, monkeypatch: pytest.MonkeyPatch) -> None:
    # Glucose in mg/dL: 18 times the mmol/L values, mostly outside the usual range yet possible.
    low, high = CONTRACT.column("glucose").possible
    frame = typed_extract.with_columns((pl.col("glucose") * 18).clip(low, high))
    assert "glucose" not in _clean_columns(frame)
    fast, slow = _ingest_both(frame, monkeypatch)
    _assert_same(fast, slow)
    assert [finding["column"] for finding in fast.summary["suspected_units"]] == ["glucose"]


def test_unit_declared_in_mapping_goes_to_column_parse(typed_extract: pl.DataFrame) -> None:
    mapping = load_mapping(None, CONTRACT)
    mapping["columns"] = {"haemoglobin": {"to": "haemoglobin", "unit": "g/dL"}}
    plan = plan_mapping(mapping, CONTRACT, typed_extract.columns, "typed.parquet")
    clean = parse_clean_numbers(typed_extract, CONTRACT, plan.columns, default_options())
    assert "haemoglobin" not in clean
    assert "cd4_count" in clean


def test_boolean_column_goes_to_column_parse(typed_extract: pl.DataFrame, monkeypatch: pytest.MonkeyPatch) -> None:
    frame = typed_extract.with_columns((pl.col("haemoglobin") > 130).alias("haemoglobin"))
    assert "haemoglobin" not in _clean_columns(frame)
    fast, slow = _ingest_both(frame, monkeypatch)
    _assert_same(fast, slow)


def test_integer_values_stay_integers(typed_extract: pl.DataFrame) -> None:
    mapping = load_mapping(None, CONTRACT)
    plan = plan_mapping(mapping, CONTRACT, typed_extract.columns, "typed.parquet")
    clean = parse_clean_numbers(typed_extract, CONTRACT, plan.columns, default_options())
    quintile = clean["deprivation_quintile"]
    assert quintile.values.dtype == pl.Int64
    assert quintile.censor is None
    expected = typed_extract["deprivation_quintile"].cast(pl.Float64).to_numpy()
    assert np.array_equal(quintile.values.cast(pl.Float64).to_numpy(), expected, equal_nan=True)


@pytest.fixture(scope="module")
def text_extract(typed_extract: pl.DataFrame, tmp_path_factory: pytest.TempPathFactory) -> pl.DataFrame:
    """The same extract written as CSV and read back as text, as ingestion reads a CSV file."""
    path = tmp_path_factory.mktemp("typed") / "extract.csv"
    typed_extract.write_csv(path)
    frame, _ = read_extract_with_info(path)
    assert frame.schema["haemoglobin"] == pl.String
    return frame


def test_clean_text_takes_one_query(text_extract: pl.DataFrame, monkeypatch: pytest.MonkeyPatch) -> None:
    numbers = {c.name for c in CONTRACT.columns if c.dtype in ("number", "integer") and c.name in text_extract.columns}
    assert _clean_columns(text_extract) == numbers
    fast, slow = _ingest_both(text_extract, monkeypatch)
    _assert_same(fast, slow)


@pytest.mark.parametrize("cell", ["NA", "", " 12.5", "12,5", "<5", "12 g/L", "inf", "nan", "abc", "1e400"])
def test_text_cell_goes_to_column_parse(text_extract: pl.DataFrame, monkeypatch: pytest.MonkeyPatch, cell: str) -> None:
    frame = _with_cell(text_extract, "haemoglobin", 4, cell)
    assert "haemoglobin" not in _clean_columns(frame)
    fast, slow = _ingest_both(frame, monkeypatch)
    _assert_same(fast, slow)
