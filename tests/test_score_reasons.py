"""Number and value texts that scoring reasons print."""

from __future__ import annotations

import numpy as np
import pandas as pd
import polars as pl
import pytest

from hivcomorb.contract import load_contract
from hivcomorb.score.reasons import ValueTexts, column_groups, number_texts, top_reasons

NUMBER_CASES = [
    (293812.0, "293,800"),
    (2938.4, "2,938"),
    (1_234_567_890.0, "1,235,000,000"),
    (1e20, "100,000,000,000,000,000,000"),
    (58.04, "58.04"),
    (0.5, "0.5"),
    (0.0042, "0.0042"),
    (0.00015, "0.00015"),
    (1.2346e-5, "0.00001235"),
    (5e-324, "0." + "0" * 323 + "4941"),
    (-58.14, "-58.14"),
    (-1500.0, "-1,500"),
    (-0.0042, "-0.0042"),
    (0.0, "0"),
    (-0.0, "0"),
    (5.0, "5"),
    (120.0, "120"),
    (1000.0, "1,000"),
    (999.96, "1,000"),
    (float("inf"), "inf"),
    (float("-inf"), "-inf"),
]


@pytest.mark.parametrize(("value", "expected"), NUMBER_CASES)
def test_number_texts_plain_decimal(value, expected):
    assert number_texts(pl.Series([value], dtype=pl.Float64)).to_list() == [expected]


def test_number_texts_whole_column_keeps_order():
    values = [value for value, _ in NUMBER_CASES]
    expected = [text for _, text in NUMBER_CASES]
    assert number_texts(pl.Series(values, dtype=pl.Float64)).to_list() == expected


@pytest.mark.parametrize("missing", [None, float("nan")])
def test_number_texts_missing_is_null(missing):
    texts = number_texts(pl.Series([12.0, missing, 0.0042], dtype=pl.Float64))
    assert texts.to_list() == ["12", None, "0.0042"]


def test_number_texts_integer_column():
    texts = number_texts(pl.Series([1, 2000, None, -35000], dtype=pl.Int64))
    assert texts.to_list() == ["1", "2,000", None, "-35,000"]


def test_number_texts_empty_column():
    assert number_texts(pl.Series([], dtype=pl.Float64)).to_list() == []


def test_number_texts_significant_figures():
    assert number_texts(pl.Series([293812.0, 0.004216]), significant=2).to_list() == ["290,000", "0.0042"]


@pytest.mark.parametrize("significant", [0, 16])
def test_number_texts_rejects_figures_out_of_range(significant):
    with pytest.raises(ValueError, match=f"significant must be from 1 to 15, got {significant}"):
        number_texts(pl.Series([1.0]), significant=significant)


def test_number_texts_fifteen_figures():
    values = pl.Series([1.7976931348623157e308, -123456789.0123456789])
    texts = number_texts(values, significant=15).to_list()
    assert texts[0] == "179,769,313,486,232," + ",".join(["000"] * 98)
    assert texts[1] == "-123,456,789.012346"


def test_number_texts_never_scientific():
    rng = np.random.default_rng(11)
    values = np.exp(rng.normal(0.0, 12.0, 5000)) * rng.choice([-1.0, 1.0], 5000)
    texts = number_texts(pl.Series(values))
    assert not texts.str.contains("e").any()
    assert texts.is_not_null().all()


def test_number_texts_match_rounded_values():
    rng = np.random.default_rng(12)
    values = np.exp(rng.normal(0.0, 8.0, 5000))
    texts = number_texts(pl.Series(values)).str.replace_all(",", "").cast(pl.Float64).to_list()
    assert texts == [float(f"{value:.4g}") for value in values]


def test_number_texts_near_ties_match_python():
    # Five significant figures ending in 5, such as 1001.5 and 10.035: the fourth figure depends on
    # whether the stored double lies above or below the tie.
    values = [float(f"{whole / 10**places:.{places}f}") for whole, places in zip(range(10005, 100005, 10), np.arange(9000) % 5)]
    texts = number_texts(pl.Series(values)).str.replace_all(",", "").cast(pl.Float64).to_list()
    assert texts == [float(f"{value:.4g}") for value in values]


@pytest.mark.parametrize(("value", "expected"), [(15.605, "15.61"), (26.205, "26.2"), (9999.5, "10,000"), (1.0625, "1.062")])
def test_number_texts_tie_rounding(value, expected):
    assert number_texts(pl.Series([value])).to_list() == [expected]


def test_value_texts_viral_load_plain():
    contract = load_contract()
    frame = pd.DataFrame({"viral_load": [293812.0, 20.0, np.nan, 1_250_000.0], "viral_load_censored": [None, "<", None, ">"]})
    texts = ValueTexts(frame, contract).gather("viral_load", np.arange(len(frame)))
    assert texts.to_list() == ["293,800 copies/mL", "<20 copies/mL", "missing", ">1,250,000 copies/mL"]


def test_value_texts_small_ratio_keeps_figures():
    contract = load_contract()
    frame = pd.DataFrame({"cd4_cd8_ratio": [0.0042, 1.2346e-5, 0.0, 3.0]})
    texts = ValueTexts(frame, contract).gather("cd4_cd8_ratio", np.arange(len(frame)))
    assert texts.to_list() == ["0.0042 ratio", "0.00001235 ratio", "0 ratio", "3 ratio"]


def test_value_texts_nullable_integers():
    contract = load_contract()
    frame = pd.DataFrame({"cd4_count": pd.array([1250, None, 35], dtype="Int64")})
    texts = ValueTexts(frame, contract).gather("cd4_count", np.arange(len(frame)))
    assert texts.to_list() == ["1,250 cells/uL", "missing", "35 cells/uL"]


def test_value_texts_gather_positions():
    contract = load_contract()
    frame = pd.DataFrame({"viral_load": [40.0, 293812.0, 20.0], "viral_load_censored": [None, None, "<"], "gender": ["male", None, "female"]})
    texts = ValueTexts(frame, contract)
    assert texts.gather("viral_load", np.array([2, 1])).to_list() == ["<20 copies/mL", "293,800 copies/mL"]
    assert texts.gather("gender", np.array([1, 2])).to_list() == ["unknown", "female"]


def test_top_reasons_large_value_plain():
    contract = load_contract()
    frame = pd.DataFrame({"viral_load": [40.0, 293812.0], "hba1c": [58.04, 0.0042]})
    groups = column_groups(["viral_load", "hba1c"], ["viral_load", "hba1c"], contract)
    first, second = top_reasons(np.array([[0.9, -0.1], [0.0, 0.0]]), ValueTexts(frame, contract), np.array([1, 0]), groups, n_reasons=2)
    assert first.to_list() == ["viral_load=293,800 copies/mL raises risk", None]
    assert second.to_list() == ["hba1c=0.0042 mmol/mol lowers risk", None]
