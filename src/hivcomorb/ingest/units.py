"""Lab units: recognising unit text, converting to canonical units, spotting wrong units.

Every unit a lab accepts comes from the data contract (its canonical unit and
``alt_units``); ``ingest.unit_aliases`` only adds other spellings of those
units. Conversions are the contract's, applied column-wise with polars.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
import polars as pl

from hivcomorb.contract import Column, UnitConversion


def normalise_unit_text(text: str) -> str:
    """Return ``text`` in the form used to compare unit spellings.

    Case, the micro sign, whitespace around ``/`` and repeated whitespace are
    ignored, so ``"µmol / L"`` and ``"umol/l"`` compare equal.
    """
    text = text.strip().lower().replace("\u00b5", "u").replace("\u03bc", "u").replace("\u00d7", "x")
    text = re.sub(r"\s*/\s*", "/", text)
    return re.sub(r"\s+", " ", text)


def normalise_unit_expr(expr: pl.Expr) -> pl.Expr:
    """Apply :func:`normalise_unit_text` to a string expression."""
    return (
        expr.str.strip_chars()
        .str.to_lowercase()
        .str.replace_all("[\u00b5\u03bc]", "u")
        .str.replace_all("\u00d7", "x", literal=True)
        .str.replace_all(r"\s*/\s*", "/")
        .str.replace_all(r"\s+", " ")
    )


def known_units(column: Column, aliases: Mapping[str, str] | None = None) -> dict[str, str]:
    """Return the unit spellings ``column`` accepts, normalised, mapped to contract unit names.

    The canonical unit maps to itself, each contract alternative unit to its
    own name, and each alias whose target is one of those units to the target.
    """
    names: list[str] = []
    if column.unit:
        names.append(column.unit)
    names.extend(column.alt_units)
    lookup = {normalise_unit_text(name): name for name in names}
    for alias, target in (aliases or {}).items():
        for name in names:
            if normalise_unit_text(str(target)) == normalise_unit_text(name):
                lookup.setdefault(normalise_unit_text(str(alias)), name)
    return lookup


def conversion_for(column: Column, unit: str | None) -> UnitConversion | None:
    """Return the contract conversion of ``unit`` to ``column``'s canonical unit.

    ``None`` means no conversion: ``unit`` is missing or canonical.
    """
    if unit is None or unit == column.unit:
        return None
    return column.conversion(unit)


def convert_expr(value: pl.Expr, conversion: UnitConversion) -> pl.Expr:
    """Return ``value`` converted by ``conversion``, as a polars expression."""
    if conversion.transform == "pow10":
        return pl.lit(10.0).pow(value)
    return (value + conversion.add) * conversion.multiply / conversion.divide


def convert_by_unit(value: pl.Expr, unit: pl.Expr, column: Column, units_present: list[str]) -> pl.Expr:
    """Convert each row of ``value`` from its row's ``unit`` to the canonical unit.

    ``unit`` contains contract unit names; a null unit means the canonical unit.
    Only the units in ``units_present`` get a branch, so a frame with one
    unit costs one pass.
    """
    branches = [(u, conversion_for(column, u)) for u in units_present]
    branches = [(u, conv) for u, conv in branches if conv is not None]
    if not branches:
        return value
    first_unit, first_conv = branches[0]
    chain = pl.when(unit == first_unit).then(convert_expr(value, first_conv))
    for name, conv in branches[1:]:
        chain = chain.when(unit == name).then(convert_expr(value, conv))
    return chain.otherwise(value)


@dataclass(frozen=True)
class SuspectedUnit:
    """A lab column whose values fit another of its units better than the declared one."""

    column: str
    declared_unit: str
    suspected_unit: str
    values_checked: int
    share_usual_declared: float
    share_usual_suspected: float

    def as_dict(self) -> dict[str, Any]:
        """Return the finding as plain data for ``ingest.json``."""
        return {
            "column": self.column,
            "declared_unit": self.declared_unit,
            "suspected_unit": self.suspected_unit,
            "values_checked": self.values_checked,
            "share_usual_declared": round(self.share_usual_declared, 4),
            "share_usual_suspected": round(self.share_usual_suspected, 4),
        }

    def message(self) -> str:
        """Return a log line with the finding and the mapping change that fixes it."""
        return (
            f"column {self.column!r}: {self.share_usual_declared:.0%} of {self.values_checked} values fall in the usual "
            f"range when read as {self.declared_unit}, but {self.share_usual_suspected:.0%} do when read as "
            f"{self.suspected_unit}; the values were not converted. If {self.suspected_unit} is right, declare it as "
            f"the unit of this column in the mapping file"
        )


def suspect_unit(
    column: Column,
    declared_unit: str,
    source_values: np.ndarray,
    *,
    min_values: int,
    max_share_declared: float,
    min_share_suspected: float,
) -> SuspectedUnit | None:
    """Check whether ``source_values`` look like another unit than ``declared_unit``.

    Parameters
    ----------
    column : Column
        Contract column of the lab; its usual range (canonical unit) is the yardstick.
    declared_unit : str
        Unit the values were declared in (mapping or canonical).
    source_values : numpy.ndarray
        Parsed, uncensored values in ``declared_unit``, before conversion.
    min_values : int
        Fewer values than this are not checked.
    max_share_declared, min_share_suspected : float
        The column is flagged when under ``declared_unit`` a share of at most
        ``max_share_declared`` of the values falls in the usual range, and
        under another unit at least ``min_share_suspected``.

    Returns
    -------
    SuspectedUnit or None
        The best-fitting other unit, or None when the declared unit fits.
    """
    values = np.asarray(source_values, dtype=np.float64)
    values = values[np.isfinite(values)]
    if column.usual is None or values.size < max(1, min_values):
        return None
    low, high = column.usual

    def share_usual(unit: str) -> float:
        conversion = conversion_for(column, unit)
        converted = values if conversion is None else np.asarray(conversion.apply(values), dtype=np.float64)
        with np.errstate(invalid="ignore", over="ignore"):
            return float(np.mean((converted >= low) & (converted <= high)))

    declared_share = share_usual(declared_unit)
    if declared_share > max_share_declared:
        return None
    candidates = [u for u in [column.unit, *column.alt_units] if u is not None and u != declared_unit]
    best: tuple[float, str] | None = None
    for unit in candidates:
        share = share_usual(unit)
        if share >= min_share_suspected and share > declared_share and (best is None or share > best[0]):
            best = (share, unit)
    if best is None:
        return None
    return SuspectedUnit(
        column=column.name,
        declared_unit=declared_unit,
        suspected_unit=best[1],
        values_checked=int(values.size),
        share_usual_declared=declared_share,
        share_usual_suspected=best[0],
    )
