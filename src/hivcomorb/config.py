"""Dataset configuration: ``conf/<dataset>.yaml`` over the stage defaults.

Each stage keeps its defaults in ``conf/stages/<stage>.yaml`` under one
top-level key named after the stage. A dataset file overrides any of them and
adds the dataset-level keys (``dataset``, ``seed``, ``source``, ``site``).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Mapping

import yaml

from hivcomorb.errors import ConfigError
from hivcomorb.paths import conf_dir


def deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Return ``base`` with ``override`` merged in; nested mappings merge, other values replace."""
    merged = copy.deepcopy(dict(base))
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def read_yaml(path: Path) -> dict[str, Any]:
    """Read one YAML mapping; raise ConfigError naming the file on any problem."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(f"configuration file not found: {path}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"configuration file {path} is not valid YAML: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"configuration file {path} must contain a mapping at the top level")
    return data


def stage_defaults(directory: Path | None = None) -> dict[str, Any]:
    """Return the merged defaults of every stage in ``conf/stages``."""
    directory = directory or conf_dir() / "stages"
    merged: dict[str, Any] = {}
    for path in sorted(directory.glob("*.yaml")):
        merged = deep_merge(merged, read_yaml(path))
    return merged


def load_config(
    dataset: str | Path,
    overrides: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Load the configuration of a dataset.

    Parameters
    ----------
    dataset : str or Path
        A dataset name (``demo`` reads ``conf/demo.yaml``) or a YAML path.
    overrides : mapping, optional
        Values that win over the file, e.g. from command-line options.

    Returns
    -------
    dict
        The stage defaults, the dataset file and ``overrides``, merged in that order.
    """
    path = Path(dataset)
    if path.suffix not in (".yaml", ".yml"):
        path = conf_dir() / f"{dataset}.yaml"
        if not path.is_file():
            known = sorted(p.stem for p in conf_dir().glob("*.yaml"))
            raise ConfigError(f"no configuration for dataset {str(dataset)!r}: {path} not found; known datasets: {known}")
    config = deep_merge(stage_defaults(), read_yaml(path))
    if overrides:
        config = deep_merge(config, overrides)
    config.setdefault("dataset", path.stem)
    if "seed" not in config:
        raise ConfigError(f"configuration {path} has no 'seed'; set an integer seed so runs are reproducible")
    return config


def nested_get(config: Mapping[str, Any], dotted: str, default: Any = None) -> Any:
    """Return ``config['a']['b']`` for ``'a.b'``, or ``default`` when any key is absent."""
    node: Any = config
    for key in dotted.split("."):
        if not isinstance(node, Mapping) or key not in node:
            return default
        node = node[key]
    return node


def share_or_none(value: Any, setting: str) -> float | None:
    """Read a share setting: a number from 0 to 1, or None (YAML null) for no limit.

    Raises :class:`ConfigError` naming ``setting`` for any other value, a
    boolean included.
    """
    if value is None:
        return None
    invalid = f"{setting} must be a number between 0 and 1, or null for no limit; got {value!r}"
    if isinstance(value, bool):
        raise ConfigError(invalid)
    try:
        share = float(value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(invalid) from exc
    if not 0.0 <= share <= 1.0:
        raise ConfigError(invalid)
    return share


def exceeds_share(part: int, whole: int, share: float | None) -> bool:
    """Return whether ``part`` is more than ``share`` of ``whole``; never when ``share`` is None (no limit)."""
    return share is not None and part > share * whole
