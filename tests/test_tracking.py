"""Tests of the MLflow helpers against a real SQLite store."""

from __future__ import annotations

import mlflow
import pytest

from hivcomorb import tracking


def test_flatten_nested_config():
    assert tracking.flatten({"a": {"b": 1, "c": {"d": "x"}}, "e": [1, 2]}) == {"a.b": "1", "a.c.d": "x", "e": "[1, 2]"}


def test_flatten_cuts_long_values():
    flat = tracking.flatten({"long": "x" * 10_000})
    assert len(flat["long"]) == 6000
    assert flat["long"].endswith("...(cut)")


def test_redact_uri_hides_credentials():
    assert tracking._redact_uri("https://user:secret@mlflow.example/api") == "https://***@mlflow.example/api"


def test_pipeline_and_stage_runs_nest(mlflow_store):
    with tracking.pipeline_run("test-exp", "demo-pipeline") as parent:
        tracking.log_params({"config": {"seed": 1, "train": {"folds": 5}}})
        with tracking.stage_run("train") as child:
            tracking.log_metrics({"aware": {"macro_f1": 0.5, "undefined": float("nan"), "flag": True}})
    client = mlflow.MlflowClient()
    child_run = client.get_run(child.info.run_id)
    parent_run = client.get_run(parent.info.run_id)
    assert child_run.data.tags["mlflow.parentRunId"] == parent.info.run_id
    assert child_run.data.metrics == {"aware.macro_f1": 0.5}
    assert parent_run.data.params["config.train.folds"] == "5"


def test_ensure_experiment_reuses_existing(mlflow_store):
    tracking.configure()
    first = tracking.ensure_experiment("again")
    assert tracking.ensure_experiment("again") == first


def test_default_tracking_uri_is_sqlite_in_project(tmp_path):
    uri = tracking.default_tracking_uri(tmp_path)
    assert uri == f"sqlite:///{(tmp_path / 'mlflow' / 'mlflow.db').as_posix()}"


def test_flatten_cleans_invalid_key_characters():
    assert tracking.flatten({"unit_aliases": {"x10^9/L": "10^9/L"}}) == {"unit_aliases.x10_9/L": "10^9/L"}
