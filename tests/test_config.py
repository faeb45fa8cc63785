"""Tests of dataset configuration loading."""

from __future__ import annotations

import argparse

import pytest

from hivcomorb.cli import share_argument
from hivcomorb.config import deep_merge, load_config, nested_get, share_or_none
from hivcomorb.errors import ConfigError


def test_deep_merge_nested_values():
    merged = deep_merge({"a": {"b": 1, "c": 2}, "d": 3}, {"a": {"b": 10}})
    assert merged == {"a": {"b": 10, "c": 2}, "d": 3}


def test_deep_merge_leaves_inputs_unchanged():
    base = {"a": {"b": 1}}
    deep_merge(base, {"a": {"b": 2}})
    assert base == {"a": {"b": 1}}


def test_load_config_demo_has_seed_and_defaults():
    config = load_config("demo")
    assert config["dataset"] == "demo"
    assert isinstance(config["seed"], int)
    assert config["disclosure"]["min_group_size"] == 10


def test_load_config_overrides_win():
    config = load_config("demo", {"seed": 5, "disclosure": {"min_group_size": 20}})
    assert config["seed"] == 5
    assert config["disclosure"]["min_group_size"] == 20


def test_load_config_unknown_dataset_lists_known():
    with pytest.raises(ConfigError, match=r"no configuration for dataset 'nowhere'.*known datasets: \[.*'demo'"):
        load_config("nowhere")


def test_load_config_without_seed_raises(tmp_path):
    path = tmp_path / "site.yaml"
    path.write_text("dataset: site\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="has no 'seed'"):
        load_config(path)


def test_load_config_invalid_yaml_names_file(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("seed: [1, 2\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="broken.yaml is not valid YAML"):
        load_config(path)


def test_nested_get_missing_returns_default():
    assert nested_get({"a": {"b": 1}}, "a.b") == 1
    assert nested_get({"a": {"b": 1}}, "a.c", "none") == "none"


SITE_MAPPING = """\
name: clinic
id_column: MRN
columns: {}
site:
  extra_columns:
    - {name: alcohol_use, role: social, dtype: category, categories: [none, moderate, harmful, unknown]}
"""


def test_context_reads_mapping_site_block(tmp_path):
    from hivcomorb.context import RunContext

    mapping = tmp_path / "clinic.yaml"
    mapping.write_text(SITE_MAPPING, encoding="utf-8")
    ctx = RunContext.from_config(load_config("demo", {"ingest": {"mapping": str(mapping)}}))
    assert "alcohol_use" in [column.name for column in ctx.contract.columns]


def test_context_without_mapping_keeps_contract():
    from hivcomorb.context import RunContext
    from hivcomorb.contract import load_contract

    ctx = RunContext.from_config(load_config("demo"))
    assert ctx.contract == load_contract()


def test_context_ignores_unreadable_mapping(tmp_path):
    from hivcomorb.context import RunContext
    from hivcomorb.contract import load_contract

    ctx = RunContext.from_config(load_config("demo", {"ingest": {"mapping": str(tmp_path / "absent.yaml")}}))
    assert ctx.contract == load_contract()


@pytest.mark.parametrize("value", [True, -0.1, 1.5, "half", float("nan"), [0.5]])
def test_share_setting_rejects_invalid(value: object) -> None:
    with pytest.raises(ConfigError, match="ingest.max_quarantined_share must be a number between 0 and 1"):
        share_or_none(value, "ingest.max_quarantined_share")


@pytest.mark.parametrize(("value", "expected"), [(None, None), (0, 0.0), ("0.3", 0.3), (1, 1.0)])
def test_share_setting_reads_valid(value: object, expected: float | None) -> None:
    assert share_or_none(value, "score.max_quarantined_share") == expected


@pytest.mark.parametrize(("text", "expected"), [("0.3", 0.3), ("0", 0.0), ("1", 1.0), ("none", 1.0), ("NULL", 1.0)])
def test_share_argument_reads_valid(text: str, expected: float) -> None:
    assert share_argument(text) == expected


@pytest.mark.parametrize("text", ["half", "1.5", "-0.1", ""])
def test_share_argument_rejects_invalid(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="expected a number from 0 to 1, or none for no limit"):
        share_argument(text)
