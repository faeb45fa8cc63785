"""Tests of atomic writes and hashes."""

from __future__ import annotations

import json

import numpy as np
import pytest

from hivcomorb.files import atomic_path, file_sha256, write_json_atomic


def test_atomic_path_failure_leaves_no_file(tmp_path):
    target = tmp_path / "out.csv"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("partial", encoding="utf-8")
            raise RuntimeError("interrupted")
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []


def test_atomic_path_failure_keeps_previous_file(tmp_path):
    target = tmp_path / "out.csv"
    target.write_text("complete", encoding="utf-8")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("partial", encoding="utf-8")
            raise RuntimeError("interrupted")
    assert target.read_text(encoding="utf-8") == "complete"


def test_write_json_atomic_nan_becomes_null(tmp_path):
    path = write_json_atomic(tmp_path / "m.json", {"a": float("nan"), "b": np.float64(0.5), "c": [np.int64(2)]})
    assert json.loads(path.read_text(encoding="utf-8")) == {"a": None, "b": 0.5, "c": [2]}


def test_file_sha256_known_value(tmp_path):
    path = tmp_path / "x.txt"
    path.write_bytes(b"abc")
    assert file_sha256(path) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


def test_atomic_path_file_gets_umask_permissions(tmp_path):
    import os

    umask = os.umask(0o022)
    try:
        with atomic_path(tmp_path / "out.txt") as tmp:
            tmp.write_text("x", encoding="utf-8")
    finally:
        os.umask(umask)
    assert (tmp_path / "out.txt").stat().st_mode & 0o777 == 0o644
