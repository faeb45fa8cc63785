"""Tests of the feature matrices of the two settings."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from hivcomorb.contract import load_contract
from hivcomorb.errors import ModelError
from hivcomorb.features import build_matrix, encoded_names, input_columns, label_matrix


@pytest.fixture
def frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "patient_id": ["a", "b", "c"],
            "age": [40.0, 55.0, 61.0],
            "gender": ["male", None, "female"],
            "smoking_status": ["never", "current", "former"],
            "deprivation_quintile": pd.array([1, None, 5], dtype="Int8"),
            "haemoglobin": [140.0, np.nan, 120.0],
            "diabetes": pd.array([1, 0, None], dtype="Int8"),
        }
    )


def test_input_columns_unaware_drops_demographics(frame):
    columns = input_columns(load_contract(), frame.columns, "unaware")
    assert columns == ["deprivation_quintile", "smoking_status", "haemoglobin"]
    assert "age" not in columns
    assert "gender" not in columns


def test_input_columns_aware_keeps_demographics(frame):
    columns = input_columns(load_contract(), frame.columns, "aware")
    assert "age" in columns
    assert "gender" in columns


def test_input_columns_invalid_setting_raises(frame):
    with pytest.raises(ModelError, match="setting 'blind' is invalid"):
        input_columns(load_contract(), frame.columns, "blind")


def test_build_matrix_one_hot_and_missing(frame):
    contract = load_contract()
    columns = ["gender", "haemoglobin", "deprivation_quintile"]
    matrix = build_matrix(frame, contract, columns)
    assert list(matrix.columns) == encoded_names(contract, columns)
    assert matrix["gender=male"].tolist() == [1.0, 0.0, 0.0]
    assert matrix["gender=unknown"].tolist() == [0.0, 1.0, 0.0]
    assert np.isnan(matrix.loc[1, "haemoglobin"])
    assert np.isnan(matrix.loc[1, "deprivation_quintile"])
    assert matrix.dtypes.unique().tolist() == [np.dtype("float32")]


def test_build_matrix_missing_column_raises(frame):
    with pytest.raises(ModelError, match=r"lacks feature columns \['glucose'\]"):
        build_matrix(frame, load_contract(), ["glucose"])


def test_label_matrix_keeps_unknown_as_nan(frame):
    labels = label_matrix(frame, ["diabetes"])
    assert labels["diabetes"].iloc[0] == 1.0
    assert labels["diabetes"].iloc[1] == 0.0
    assert np.isnan(labels["diabetes"].iloc[2])
