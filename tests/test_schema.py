"""The Great Expectations suite derived from the data contract, and its exported JSON."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pandas as pd
import pytest

from hivcomorb.contract import load_contract
from hivcomorb.ingest.validate import render_validation_html, validate_cohort
from hivcomorb.schema import build_suite, expectations_path, register_cli, suite_json

CONTRACT = load_contract()


def test_schema_exported_file_matches_contract():
    assert expectations_path().read_text(encoding="utf-8") == suite_json(CONTRACT)


def run_schema_command(argv):
    """Parse and run ``hivcomorb schema ...`` without importing every stage's command."""
    parser = argparse.ArgumentParser(prog="hivcomorb")
    register_cli(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return args.func(args)


def test_schema_export_check_command():
    assert run_schema_command(["schema", "export", "--check"]) == 0


def test_schema_export_check_detects_stale_file(tmp_path):
    stale = tmp_path / "suite.json"
    stale.write_text("{}\n")
    assert run_schema_command(["schema", "export", "--check", "--out", str(stale)]) == 1


def test_schema_export_writes_file(tmp_path):
    out = tmp_path / "suite.json"
    run_schema_command(["schema", "export", "--out", str(out)])
    assert json.loads(out.read_text())["meta"]["contract_version"] == CONTRACT.version


def expectations_for(suite, column):
    return {e["type"]: e["kwargs"] for e in suite["expectations"] if e["kwargs"].get("column") == column}


@pytest.mark.parametrize("lab", CONTRACT.labs)
def test_schema_lab_range_from_contract(lab):
    kwargs = expectations_for(build_suite(CONTRACT), lab)["expect_column_values_to_be_between"]
    assert (kwargs["min_value"], kwargs["max_value"]) == CONTRACT.column(lab).possible


@pytest.mark.parametrize("name", [c.name for c in CONTRACT.columns if c.dtype == "category"])
def test_schema_category_sets_from_contract(name):
    kwargs = expectations_for(build_suite(CONTRACT), name)["expect_column_values_to_be_in_set"]
    assert kwargs["value_set"] == list(CONTRACT.column(name).categories)


@pytest.mark.parametrize("label", CONTRACT.labels)
def test_schema_label_value_set(label):
    assert expectations_for(build_suite(CONTRACT), label)["expect_column_values_to_be_in_set"]["value_set"] == [0, 1]


def test_schema_restricted_to_present_columns():
    suite = build_suite(CONTRACT, columns=["patient_id", "age"])
    columns = {e["kwargs"].get("column") for e in suite["expectations"]}
    assert columns == {None, "patient_id", "source_row", "age"}


def test_schema_site_categories_reach_suite():
    contract = load_contract(site={"categories": {"ethnicity": ["white", "black", "asian"]}})
    kwargs = expectations_for(build_suite(contract), "ethnicity")["expect_column_values_to_be_in_set"]
    assert kwargs["value_set"] == ["white", "black", "asian", "unknown"]


def bad_cohort():
    return pd.DataFrame(
        {
            "patient_id": pd.array(["SECRET-A", "SECRET-A"], dtype="string"),
            "age": np.array([40.0, 150.0]),
            "gender": pd.array(["male", "SECRET-VALUE"], dtype="string"),
            "hypertension": pd.array([1, 0], dtype="Int8"),
            "source_row": np.array([1, 2], dtype=np.int64),
        }
    )


@pytest.fixture(scope="module")
def bad_validation():
    return validate_cohort(bad_cohort(), CONTRACT)


def failed(validation):
    return sorted((r["expectation"], r["column"]) for r in validation["results"] if not r["success"])


def test_validation_catches_contract_breaches(bad_validation):
    assert failed(bad_validation) == [
        ("expect_column_values_to_be_between", "age"),
        ("expect_column_values_to_be_in_set", "gender"),
        ("expect_column_values_to_be_unique", "patient_id"),
    ]


def test_validation_counts_unexpected(bad_validation):
    age = next(r for r in bad_validation["results"] if r["column"] == "age" and r["expectation"].endswith("between"))
    assert (age["element_count"], age["unexpected_count"]) == (2, 1)


def test_validation_results_hold_no_patient_values(bad_validation):
    assert "SECRET" not in json.dumps(bad_validation)


def test_validation_page_holds_no_patient_values(bad_validation):
    page = render_validation_html({"source": "x.csv", "reconciliation": "read 2 = kept 2 + quarantined 0"}, bad_validation)
    assert "SECRET" not in page
    assert "failed" in page
