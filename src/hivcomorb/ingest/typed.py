"""Parsing of all clean typed number columns of a chunk in two polars queries.

A Parquet or pandas extract delivers numbers already typed. For such a column
in its canonical unit, with canonical censoring flags (``<``, ``>`` or
nothing) and no value to quarantine, the per-column parse of
:mod:`hivcomorb.ingest.canonical` reduces to "finite values, flags where a
value exists". Its many small polars calls cost more than that work on a
chunk of 100,000 rows, so :func:`parse_clean_numbers` checks every such column
with one aggregate query and reads the clean ones with a second query. A
column that fails any check goes back to the per-column parse, which gives it
its quarantine entries, notes and warnings.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import polars as pl

from hivcomorb.contract import Column, Contract
from hivcomorb.ingest.mapping import CENSOR_SUFFIX, ColumnPlan

_CANONICAL_FLAGS = ["<", ">"]


@dataclass(frozen=True)
class CleanNumbers:
    """Values of one clean number column, and its censoring flags when it is a lab (else None)."""

    values: pl.Series
    censor: pl.Series | None


def parse_clean_numbers(
    data: pl.DataFrame, contract: Contract, plans: Mapping[str, ColumnPlan], opts: Mapping[str, Any]
) -> dict[str, CleanNumbers]:
    """Return the number columns of ``data`` that need no per-column parse, by canonical name.

    A column qualifies when its source is a typed number column in the
    canonical unit (as declared or by default) with no unit column. Its
    censoring flags, if mapped, must be text holding only ``<``, ``>`` or
    nothing. No cell may need quarantine: no infinite value, none outside the
    possible range and no fraction in an integer column. A lab whose values
    mostly fall outside its usual range goes back to the per-column parse,
    whose suspected-unit check decides on it.
    """
    schema = data.schema
    candidates = [
        (column, plans[column.name])
        for column in contract.columns
        if column.name in plans and _is_candidate(schema, column, plans[column.name])
    ]
    if not candidates:
        return {}

    settings = opts.get("suspected_unit") or {}
    min_values = int(settings.get("min_values", 20))
    max_share_declared = float(settings.get("max_share_declared", 0.5))
    checks = data.select([expr for column, plan in candidates for expr in _check_exprs(column, plan)]).row(0, named=True)

    clean = []
    for column, plan in candidates:
        name = column.name
        if checks[f"{name}:bad"] or checks.get(f"{name}:bad_flags"):
            continue
        finite = checks.get(f"{name}:finite")
        if finite is not None and finite >= max(1, min_values) and checks[f"{name}:usual"] / finite <= max_share_declared:
            continue
        clean.append((column, plan))
    if not clean:
        return {}

    outputs = []
    for column, plan in clean:
        value = pl.col(plan.source).cast(pl.Float64)
        value = pl.when(value.is_finite()).then(value)
        if column.dtype == "integer":
            outputs.append(value.round(0).cast(pl.Int64, strict=False).alias(column.name))
        else:
            outputs.append(value.alias(column.name))
        if column.role == "lab":
            flags = pl.col(plan.censor_column).cast(pl.String) if plan.censor_column else pl.lit(None, dtype=pl.String)
            outputs.append(pl.when(value.is_not_null()).then(flags).alias(f"{column.name}{CENSOR_SUFFIX}"))
    parsed = data.select(outputs)
    return {
        column.name: CleanNumbers(
            values=parsed[column.name],
            censor=parsed[f"{column.name}{CENSOR_SUFFIX}"] if column.role == "lab" else None,
        )
        for column, _ in clean
    }


def _is_candidate(schema: pl.Schema, column: Column, plan: ColumnPlan) -> bool:
    if column.dtype not in ("number", "integer") or plan.unit_column is not None:
        return False
    if (plan.unit or column.unit) != column.unit:
        return False
    if not schema[plan.source].is_numeric():
        return False
    if plan.censor_column is not None and schema[plan.censor_column] != pl.String:
        return False
    return True


def _check_exprs(column: Column, plan: ColumnPlan) -> list[pl.Expr]:
    """Return one-row expressions: count of cells to quarantine, and what the suspected-unit check needs."""
    name = column.name
    value = pl.col(plan.source).cast(pl.Float64)
    bad = value.is_infinite()
    if column.possible is not None:
        low, high = column.possible
        bad = bad | (value.is_finite() & ((value < low) | (value > high)))
    if column.dtype == "integer":
        bad = bad | (value.is_finite() & (value != value.round(0)))
    exprs = [bad.fill_null(False).sum().alias(f"{name}:bad")]
    if plan.censor_column is not None:
        flags = pl.col(plan.censor_column)
        exprs.append((flags.is_not_null() & ~flags.is_in(_CANONICAL_FLAGS)).sum().alias(f"{name}:bad_flags"))
    if column.role == "lab" and column.unit is not None and column.usual is not None:
        low, high = column.usual
        finite = value.is_finite().fill_null(False)
        exprs.append(finite.sum().alias(f"{name}:finite"))
        exprs.append((finite & (value >= low) & (value <= high)).sum().alias(f"{name}:usual"))
    return exprs
