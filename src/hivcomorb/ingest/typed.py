"""Parsing of all clean number columns of a chunk in two polars queries.

A Parquet or pandas extract delivers numbers already typed, and in most CSV
columns every cell is a plain number. For such a column in its canonical
unit, with canonical censoring flags (``<``, ``>`` or nothing) and no value
to quarantine, the per-column parse of
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

    A column qualifies when its source is a typed number column, or text
    whose every cell is a plain number, in the canonical unit (as declared or
    by default) with no unit column. Its censoring flags, if mapped, must be
    text holding only ``<``, ``>`` or nothing, and a flag only beside a value. No cell may need quarantine: no infinite value, none outside the
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

    # Each source column is cast once, because a string to float cast costs more than every check together.
    flagged = [(column, plan) for column, plan in candidates if plan.censor_column is not None]
    numbers = data.select(
        [_number(schema, plan).alias(column.name) for column, plan in candidates]
        + [pl.col(plan.censor_column).alias(f"{column.name}{CENSOR_SUFFIX}") for column, plan in flagged]
    )
    text_cells = data.select(
        [pl.col(plan.source).is_not_null().sum().alias(column.name) for column, plan in candidates if schema[plan.source] == pl.String]
    )
    text_counts = text_cells.row(0, named=True) if text_cells.width else {}
    # A flag other than < or >, or one beside no value, is for the per-column parse to report.
    flag_checks = numbers.select(
        [
            (
                pl.col(f"{column.name}{CENSOR_SUFFIX}").is_not_null()
                & (~pl.col(f"{column.name}{CENSOR_SUFFIX}").is_in(_CANONICAL_FLAGS) | ~pl.col(column.name).is_finite().fill_null(False))
            )
            .sum()
            .alias(column.name)
            for column, _ in flagged
        ]
    )
    bad_flags = flag_checks.row(0, named=True) if flag_checks.width else {}
    checks = numbers.select([expr for column, _ in candidates for expr in _check_exprs(column)]).row(0, named=True)

    settings = opts.get("suspected_unit") or {}
    min_values = int(settings.get("min_values", 20))
    max_share_declared = float(settings.get("max_share_declared", 0.5))
    clean = []
    for column, plan in candidates:
        name = column.name
        finite = checks[f"{name}:finite"]
        # A text cell that the cast did not read as a finite number is one the per-column parse must read:
        # a missing-value word, a censored result, a number with a unit, or an error.
        unread = text_counts[name] - finite if name in text_counts else checks[f"{name}:infinite"]
        if unread or checks[f"{name}:bad"] or bad_flags.get(name):
            continue
        if column.role == "lab" and column.usual is not None and column.unit is not None:
            if finite >= max(1, min_values) and checks[f"{name}:usual"] / finite <= max_share_declared:
                continue
        clean.append((column, plan))
    if not clean:
        return {}

    outputs = []
    for column, plan in clean:
        value = pl.when(pl.col(column.name).is_finite()).then(pl.col(column.name))
        if column.dtype == "integer":
            outputs.append(value.round(0).cast(pl.Int64, strict=False).alias(column.name))
        else:
            outputs.append(value.alias(column.name))
        if column.role == "lab":
            flags = pl.col(f"{column.name}{CENSOR_SUFFIX}") if plan.censor_column else pl.lit(None, dtype=pl.String)
            outputs.append(pl.when(value.is_not_null()).then(flags).alias(f"{column.name}{CENSOR_SUFFIX}"))
    parsed = numbers.select(outputs)
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
    source_type = schema[plan.source]
    if not (source_type.is_numeric() or source_type == pl.String):
        return False
    if plan.censor_column is not None and schema[plan.censor_column] != pl.String:
        return False
    return True


def _number(schema: pl.Schema, plan: ColumnPlan) -> pl.Expr:
    """Return the source column as Float64; text that is not a plain number becomes null.

    The cast is the one :func:`hivcomorb.ingest.parse.parse_numeric` tries
    first, so a text cell it reads gets the same value there.
    """
    return pl.col(plan.source).cast(pl.Float64, strict=schema[plan.source] != pl.String)


def _check_exprs(column: Column) -> list[pl.Expr]:
    """Return one-row expressions over the cast column: counts of finite, infinite and out-of-rule values, and of usual ones."""
    name = column.name
    value = pl.col(name)
    finite = value.is_finite().fill_null(False)
    bad = pl.lit(False)
    if column.possible is not None:
        low, high = column.possible
        bad = bad | (finite & ((value < low) | (value > high)))
    if column.dtype == "integer":
        bad = bad | (finite & (value != value.round(0)))
    exprs = [
        finite.sum().alias(f"{name}:finite"),
        value.is_infinite().fill_null(False).sum().alias(f"{name}:infinite"),
        bad.fill_null(False).sum().alias(f"{name}:bad"),
    ]
    if column.usual is not None:
        low, high = column.usual
        exprs.append((finite & (value >= low) & (value <= high)).sum().alias(f"{name}:usual"))
    return exprs
