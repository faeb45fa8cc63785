"""Fixtures shared by the test modules: a real MLflow store, shared data, configs."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

import pytest

from hivcomorb.config import deep_merge, load_config
from hivcomorb.context import RunContext
from hivcomorb.paths import shared_data_dir


@pytest.fixture
def mlflow_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """Point MLflow at a fresh SQLite store in a temporary folder and return its URI."""
    import mlflow

    store = tmp_path / "mlflow"
    store.mkdir()
    uri = f"sqlite:///{(store / 'mlflow.db').as_posix()}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_ARTIFACTS_DESTINATION", (store / "artifacts").as_uri())
    monkeypatch.chdir(tmp_path)
    mlflow.set_tracking_uri(uri)
    # MLflow remembers the active experiment id across stores; an id from an
    # earlier test's store does not exist in this one.
    mlflow.set_experiment("Default")
    yield uri
    while mlflow.active_run() is not None:
        mlflow.end_run()


def _require_shared() -> bool:
    return os.environ.get("HIVCOMORB_REQUIRE_SHARED_DATA", "") not in ("", "0", "false", "no")


@pytest.fixture
def shared_data() -> Callable[[str], Path]:
    """Return a function that finds a public data set in ../shared/data.

    Where the folder is absent the test is skipped, or fails when
    ``HIVCOMORB_REQUIRE_SHARED_DATA=1`` (as in CI).
    """

    def find(name: str) -> Path:
        path = shared_data_dir() / name
        if path.is_dir() and any(path.iterdir()):
            return path
        message = f"public data set {name!r} not found at {path}; place it there (see its PROVENANCE.md)"
        if _require_shared():
            pytest.fail(message + " - required because HIVCOMORB_REQUIRE_SHARED_DATA=1")
        pytest.skip(message)

    return find


@pytest.fixture
def make_context(tmp_path: Path) -> Callable[..., RunContext]:
    """Return a factory of run contexts whose outputs go to a temporary folder."""

    def factory(dataset: str = "demo", overrides: dict[str, Any] | None = None) -> RunContext:
        base = {"paths": {"artifacts": str(tmp_path / "artifacts"), "reports": str(tmp_path / "reports")}, "device": "cpu"}
        config = load_config(dataset, deep_merge(base, overrides or {}))
        ctx = RunContext.from_config(config)
        ctx.device = "cpu"
        return ctx

    return factory
