"""MLflow tracking shared by every stage.

One parent run per pipeline invocation and one nested child run per stage.
The default store is an embedded SQLite database in ``mlflow/`` inside the
project folder; ``MLFLOW_TRACKING_URI`` points the runs at any other tracking
server instead. Nothing that identifies a patient is logged: callers pass
aggregate figures, configuration and files that hold no patient identifier.
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path
from typing import Any, Iterator, Mapping

from hivcomorb.paths import project_root

logger = logging.getLogger(__name__)

# MLflow limits a parameter value to 6,000 characters (mlflow 3.x); longer
# values are cut and marked.
_MAX_PARAM_LENGTH = 6000


def default_tracking_uri(root: Path | None = None) -> str:
    """Return the embedded SQLite store URI inside the project folder."""
    root = root or project_root()
    store = root / "mlflow"
    store.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{(store / 'mlflow.db').as_posix()}"


def configure(root: Path | None = None) -> str:
    """Point MLflow at ``MLFLOW_TRACKING_URI`` or the embedded store and return the URI."""
    import mlflow

    uri = os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri(root)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return uri


def ensure_experiment(name: str, root: Path | None = None) -> str:
    """Create the experiment ``name`` if needed and return its id.

    With a SQLite store, artifacts go to ``artifacts/`` beside the database
    file (``mlflow/artifacts`` for the embedded store) rather than MLflow's
    default ``./mlruns`` under the working directory. A tracking server
    chooses its own artifact location.
    """
    import mlflow

    experiment = mlflow.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    artifact_location = None
    uri = mlflow.get_tracking_uri()
    if uri.startswith("sqlite:///"):
        artifacts = Path(uri[len("sqlite:///") :]).parent / "artifacts"
        artifacts.mkdir(parents=True, exist_ok=True)
        artifact_location = artifacts.resolve().as_uri()
    return mlflow.create_experiment(name, artifact_location=artifact_location)


def flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Flatten a nested mapping into ``a.b.c`` keys with string values."""
    flat: dict[str, str] = {}
    for key, value in config.items():
        name = _metric_name(f"{prefix}{key}")
        if isinstance(value, Mapping):
            flat.update(flatten(value, prefix=f"{name}."))
        else:
            text = str(value)
            if len(text) > _MAX_PARAM_LENGTH:
                marker = "...(cut)"
                text = text[: _MAX_PARAM_LENGTH - len(marker)] + marker
            flat[name] = text
    return flat


def log_params(params: Mapping[str, Any]) -> None:
    """Log a nested mapping of parameters to the active run."""
    import mlflow

    flat = flatten(params)
    items = list(flat.items())
    # MLflow accepts at most 100 parameters in one batch call.
    for start in range(0, len(items), 100):
        mlflow.log_params(dict(items[start : start + 100]))


def log_metrics(metrics: Mapping[str, Any], prefix: str = "") -> None:
    """Log every finite number in a nested mapping as a metric named by its path."""
    import math

    import mlflow

    flat: dict[str, float] = {}

    def walk(node: Any, path: str) -> None:
        if isinstance(node, Mapping):
            for key, value in node.items():
                walk(value, f"{path}.{key}" if path else str(key))
        elif isinstance(node, bool):
            return
        elif isinstance(node, (int, float)) and math.isfinite(float(node)):
            flat[_metric_name(path)] = float(node)

    walk(metrics, prefix)
    items = list(flat.items())
    for start in range(0, len(items), 500):
        mlflow.log_metrics(dict(items[start : start + 500]))


def _metric_name(path: str) -> str:
    # MLflow parameter and metric names allow letters, digits, and _ - . / and space.
    return "".join(ch if ch.isalnum() or ch in "_-./ " else "_" for ch in path)


@contextlib.contextmanager
def pipeline_run(experiment: str, run_name: str, tags: Mapping[str, str] | None = None) -> Iterator[Any]:
    """Open the parent run of one pipeline invocation."""
    import mlflow

    uri = configure()
    experiment_id = ensure_experiment(experiment)
    # Logged models go to the active experiment, so it must be this one and
    # not MLflow's default, whose artifacts land in ./mlruns.
    mlflow.set_experiment(experiment_id=experiment_id)
    logger.info("Tracking to %s, experiment %r", _redact_uri(uri), experiment)
    with mlflow.start_run(experiment_id=experiment_id, run_name=run_name, tags=dict(tags or {})) as run:
        yield run


@contextlib.contextmanager
def stage_run(stage: str, tags: Mapping[str, str] | None = None) -> Iterator[Any]:
    """Open a child run for one stage under the active parent run.

    Without an active run (a stage called on its own), the stage run becomes a
    top-level run in the current experiment.
    """
    import mlflow

    nested = mlflow.active_run() is not None
    with mlflow.start_run(run_name=stage, nested=nested, tags={"hivcomorb.stage": stage, **dict(tags or {})}) as run:
        yield run


def _redact_uri(uri: str) -> str:
    """Drop any user:password part of a tracking URI before it is logged."""
    if "@" in uri and "://" in uri:
        scheme, rest = uri.split("://", 1)
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return uri
