"""Work arrays kept from one call to the next in the same thread.

Scoring runs the same array arithmetic on every chunk of an extract. A fresh
array of tens of megabytes for each step costs the kernel's page faults
every time. In one measurement on the development machine they took about as
long as the arithmetic. :class:`Scratch` hands back the same memory instead.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

__all__ = ["Scratch"]


class Scratch(threading.local):
    """Named work arrays, one set per thread, grown to the largest shape requested.

    An array returned by :meth:`get` is overwritten by the next call for the
    same name in the same thread, so callers copy what they keep.
    """

    def get(self, name: str, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
        """Return an uninitialised C-contiguous array of ``shape`` and ``dtype`` for ``name``."""
        arrays: dict[str, np.ndarray] = self.__dict__.setdefault("arrays", {})
        dtype = np.dtype(dtype)
        array = arrays.get(name)
        if array is None or array.dtype != dtype or array.shape[1:] != tuple(shape[1:]) or array.shape[0] < shape[0]:
            array = np.empty(shape, dtype=dtype)
            arrays[name] = array
        return array[: shape[0]]
