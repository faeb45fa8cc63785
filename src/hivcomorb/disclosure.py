"""Small-cell suppression, applied to every group-level output.

A group with fewer patients than the configured minimum is never shown: its
figures are removed and only the count of suppressed groups is reported.
"""

from __future__ import annotations

from typing import Any, Mapping

DEFAULT_MIN_GROUP_SIZE = 10
SUPPRESSED = "suppressed"


def min_group_size(config: Mapping[str, Any]) -> int:
    """Return the minimum reportable group size from ``config['disclosure']``."""
    value = int((config.get("disclosure") or {}).get("min_group_size", DEFAULT_MIN_GROUP_SIZE))
    if value < 1:
        raise ValueError(f"disclosure.min_group_size must be at least 1, got {value}")
    return value


def is_reportable(count: int, minimum: int) -> bool:
    """Return whether a group of ``count`` patients may be shown."""
    return int(count) >= int(minimum)
