"""Locations of the project folders that the stages read and write."""

from __future__ import annotations

import os
from pathlib import Path


def project_root() -> Path:
    """Return the folder that contains ``conf/`` and ``data_schema/``.

    ``HIVCOMORB_HOME`` wins when set. Otherwise the checkout that contains this
    package (editable install) is used, then the current working directory.
    """
    env = os.environ.get("HIVCOMORB_HOME")
    if env:
        return Path(env).resolve()
    checkout = Path(__file__).resolve().parents[2]
    if (checkout / "data_schema" / "contract.yaml").is_file():
        return checkout
    return Path.cwd().resolve()


def contract_path() -> Path:
    """Return the path of the machine-readable data contract."""
    return project_root() / "data_schema" / "contract.yaml"


def conf_dir() -> Path:
    """Return the configuration folder."""
    return project_root() / "conf"


def shared_data_dir() -> Path:
    """Return the folder of public data sets kept beside the checkout.

    ``HIVCOMORB_SHARED_DATA`` overrides the default ``../shared/data``.
    """
    env = os.environ.get("HIVCOMORB_SHARED_DATA")
    if env:
        return Path(env).resolve()
    return (project_root().parent / "shared" / "data").resolve()
