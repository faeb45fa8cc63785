"""Out-of-range texts of the scoring checks."""

from __future__ import annotations

import numpy as np
import pandas as pd

from hivcomorb.score.checks import range_flags

UNITS = {"viral_load": "copies/mL", "cd4_cd8_ratio": "ratio", "hba1c": "mmol/mol"}


def test_range_flags_limits_plain_decimal():
    # hba1c is absent from the frame, so its limits must not shift the texts of the others.
    ranges = {"hba1c": (20.0, 120.0), "viral_load": (20.0, 293812.0), "cd4_cd8_ratio": (0.0042, 3.5)}
    frame = pd.DataFrame({"viral_load": [500000.0, 100.0, 100.0], "cd4_cd8_ratio": [1.0, 0.001, 1.0]})
    flags, reasons = range_flags(frame, ranges, UNITS)
    assert flags.tolist() == [True, True, False]
    assert reasons.to_list() == [
        "viral_load above training maximum 293,800 copies/mL",
        "cd4_cd8_ratio below training minimum 0.0042 ratio",
        None,
    ]


def test_range_flags_joins_several_columns():
    ranges = {"viral_load": (20.0, 1_000_000.0), "cd4_cd8_ratio": (-0.5, 3.5)}
    frame = pd.DataFrame({"viral_load": [5e6], "cd4_cd8_ratio": [-1.0]})
    _, reasons = range_flags(frame, ranges, UNITS)
    assert reasons.to_list() == [
        "viral_load above training maximum 1,000,000 copies/mL; cd4_cd8_ratio below training minimum -0.5 ratio"
    ]


def test_range_flags_missing_value_not_flagged():
    frame = pd.DataFrame({"viral_load": [np.nan, 40.0]})
    flags, reasons = range_flags(frame, {"viral_load": (20.0, 1000.0)}, UNITS)
    assert flags.tolist() == [False, False]
    assert reasons.to_list() == [None, None]


def test_range_flags_without_unit():
    frame = pd.DataFrame({"score": [0.00001]})
    _, reasons = range_flags(frame, {"score": (1.2346e-5, 1.0)}, {"score": None})
    assert reasons.to_list() == ["score below training minimum 0.00001235"]


def test_range_flags_no_column_in_frame():
    frame = pd.DataFrame({"other": [1.0, 2.0]})
    flags, reasons = range_flags(frame, {"viral_load": (20.0, 1000.0)}, UNITS)
    assert flags.tolist() == [False, False]
    assert reasons.to_list() == [None, None]
