"""Feature matrices for the two settings.

The demographic-aware setting uses labs, social and demographic columns; the
demographic-unaware setting drops the demographic columns and keeps the rest.
Category columns become one indicator column per contract category
(``ethnicity=white``), so a matrix built at scoring time has the same columns
as the one built at training time, whatever categories the extract contains.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from hivcomorb.contract import UNKNOWN, Contract
from hivcomorb.errors import ModelError

SETTINGS = ("aware", "unaware")


def setting_roles(setting: str) -> tuple[str, ...]:
    """Return the contract roles whose columns feed models in ``setting``."""
    if setting == "aware":
        return ("lab", "social", "demographic")
    if setting == "unaware":
        return ("lab", "social")
    raise ModelError(f"setting {setting!r} is invalid; expected one of {SETTINGS}")


def input_columns(contract: Contract, frame_columns: Iterable[str], setting: str, usable: Iterable[str] | None = None) -> list[str]:
    """Return the canonical columns that feed models in ``setting``.

    Parameters
    ----------
    contract : Contract
    frame_columns : iterable of str
        Columns present in the cohort.
    setting : {"aware", "unaware"}
    usable : iterable of str, optional
        If given, only these columns are kept (e.g. labs with at least one value).
    """
    present = set(frame_columns)
    keep = set(usable) if usable is not None else None
    roles = setting_roles(setting)
    columns = []
    for col in contract.columns:
        if col.role in roles and col.name in present and (keep is None or col.name in keep):
            columns.append(col.name)
    return columns


def encoded_names(contract: Contract, columns: Sequence[str]) -> list[str]:
    """Return the model feature names for canonical ``columns``, in order."""
    names: list[str] = []
    for name in columns:
        col = contract.column(name)
        if col.dtype == "category":
            names.extend(f"{name}={cat}" for cat in col.categories)
        else:
            names.append(name)
    return names


def build_matrix(frame: pd.DataFrame, contract: Contract, columns: Sequence[str]) -> pd.DataFrame:
    """Encode canonical ``columns`` of ``frame`` as a float32 feature matrix.

    Numeric columns keep NaN for missing values (boosting handles them
    natively; other models impute inside their pipeline). A missing category
    counts as ``unknown``; a value outside the contract's categories sets no
    indicator. The matrix is one row-major float32 array, which estimators
    that convert their input with ``numpy.asarray`` read without a copy.
    """
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ModelError(f"the cohort lacks feature columns {missing}; they were present when the model was trained")
    names = encoded_names(contract, columns)
    n_rows = len(frame)
    block = np.empty((n_rows, len(names)), dtype=np.float32)
    rows = np.arange(n_rows)
    position = 0
    for name in columns:
        col = contract.column(name)
        series = frame[name]
        if col.dtype == "category":
            codes = _category_codes(series, col.categories)
            width = len(col.categories)
            # One-hot columns: zeros, then a 1 at each row's code; a code of -1 sets none.
            block[:, position : position + width] = 0.0
            known = codes >= 0
            block[rows[known], position + codes[known]] = 1.0
            position += width
        else:
            if series.dtype != np.float64:
                series = pd.to_numeric(series, errors="raise").astype("float64")
            block[:, position] = series.to_numpy(dtype=np.float32, na_value=np.nan)
            position += 1
    return pd.DataFrame(block, index=frame.index, columns=names, copy=False)


def _category_codes(series: pd.Series, categories: Sequence[str]) -> np.ndarray:
    """Return each value's position in ``categories``, -1 for a value outside them; a missing value reads ``unknown``."""
    if isinstance(series.dtype, pd.StringDtype) and series.dtype.storage == "pyarrow":
        # Arrow-backed text, as ingestion returns it: Arrow finds the positions without Python strings.
        values = pc.fill_null(pa.array(series), UNKNOWN)
        positions = pc.index_in(values, value_set=pa.array(list(categories), type=values.type))
        return pc.fill_null(positions, -1).to_numpy(zero_copy_only=False)
    return pd.Index(list(categories)).get_indexer(series.astype("string").fillna(UNKNOWN))


def label_matrix(frame: pd.DataFrame, labels: Sequence[str]) -> pd.DataFrame:
    """Return the labels as float (1.0, 0.0, NaN for unknown)."""
    return pd.DataFrame(
        {name: pd.to_numeric(frame[name], errors="raise").astype("float64") for name in labels},
        index=frame.index,
    )
