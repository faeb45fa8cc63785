"""Tests of the data contract loader and its site adaptations."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from hivcomorb.contract import load_contract, present
from hivcomorb.errors import ContractError
from hivcomorb.paths import contract_path


@pytest.fixture
def raw_contract() -> dict:
    return yaml.safe_load(contract_path().read_text(encoding="utf-8"))


def write_contract(tmp_path: Path, raw: dict) -> Path:
    path = tmp_path / "contract.yaml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return path


def test_contract_role_counts():
    contract = load_contract()
    assert len(contract.labs) == 30
    assert len(contract.demographics) == 4
    assert len(contract.social) == 3
    assert len(contract.labels) == 9
    assert contract.id_column == "patient_id"


def test_contract_every_lab_has_unit_and_ranges():
    contract = load_contract()
    for name in contract.labs:
        column = contract.column(name)
        assert column.unit, name
        assert column.possible is not None, name
        assert column.usual is not None, name


def test_contract_usual_range_inside_possible():
    contract = load_contract()
    for column in contract.columns:
        if column.possible and column.usual:
            assert column.possible[0] <= column.usual[0], column.name
            assert column.usual[1] <= column.possible[1], column.name


@pytest.mark.parametrize(
    ("column", "unit", "value", "expected"),
    [
        ("haemoglobin", "g/dL", 13.5, 135.0),
        ("creatinine", "mg/dL", 1.0, 88.42),
        ("total_cholesterol", "mg/dL", 193.35, 5.0),
        ("hba1c", "%", 7.0, (7.0 - 2.15) * 10.929),
        ("viral_load", "log10 copies/mL", 3.0, 1000.0),
        ("white_cell_count", "cells/uL", 6500.0, 6.5),
        ("cd4_count", "10^9/L", 0.5, 500.0),
    ],
)
def test_contract_unit_conversion_values(column, unit, value, expected):
    conversion = load_contract().column(column).conversion(unit)
    assert conversion.apply(np.float64(value)) == pytest.approx(expected, rel=1e-9)


def test_contract_canonical_unit_needs_no_conversion():
    assert load_contract().column("creatinine").conversion("umol/L") is None


def test_contract_unknown_unit_raises():
    with pytest.raises(ContractError, match="unit 'mg/L' is not known for column 'haemoglobin'"):
        load_contract().column("haemoglobin").conversion("mg/L")


def test_contract_unknown_column_raises():
    with pytest.raises(ContractError, match="column 'ferritin' is not in the data contract"):
        load_contract().column("ferritin")


def test_contract_site_categories_replace_default():
    contract = load_contract(site={"categories": {"ethnicity": ["white", "black", "asian"]}})
    assert contract.column("ethnicity").categories == ("white", "black", "asian", "unknown")


def test_contract_site_extra_social_column():
    extra = {"name": "education", "role": "social", "dtype": "category", "categories": ["school", "degree", "unknown"]}
    contract = load_contract(site={"extra_columns": [extra]})
    assert "education" in contract.social


def test_contract_site_label_subset():
    contract = load_contract(site={"labels": ["diabetes", "hypertension"]})
    assert contract.labels == ["hypertension", "diabetes"]


@pytest.mark.parametrize(
    ("site", "message"),
    [
        ({"categories": {"blood_group": ["a"]}}, "not in the contract"),
        ({"extra_columns": [{"name": "x", "role": "lab", "dtype": "number"}]}, "must have role 'social' or 'label'"),
        ({"extra_columns": [{"name": "age", "role": "social", "dtype": "number"}]}, "already in the contract"),
        ({"labels": ["gout"]}, "not contract labels"),
    ],
)
def test_contract_invalid_site_raises(site, message):
    with pytest.raises(ContractError, match=message):
        load_contract(site=site)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda raw: raw["columns"][0].update(role="patient"), "role 'patient' is invalid"),
        (lambda raw: raw["columns"][0].update(possible=[110, 18]), "range .* is invalid"),
        (lambda raw: raw["columns"][1].update(categories=[]), "needs a categories list"),
        (lambda raw: raw["columns"].append(dict(raw["columns"][0])), "more than once"),
    ],
)
def test_contract_invalid_file_raises(tmp_path, raw_contract, change, message):
    change(raw_contract)
    with pytest.raises(ContractError, match=message):
        load_contract(write_contract(tmp_path, raw_contract))


def test_contract_missing_file_raises(tmp_path):
    with pytest.raises(ContractError, match="data contract not found"):
        load_contract(tmp_path / "absent.yaml")


def test_present_keeps_contract_order():
    contract = load_contract()
    assert present(contract, ["glucose", "sodium", "ferritin"], "lab") == ["sodium", "glucose"]
