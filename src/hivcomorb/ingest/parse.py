"""Parsing of extract cells into numbers, categories and labels, column by column.

Cells arrive as text (CSV, Excel) or as typed values (Parquet, pandas). Each
parser returns one row per input cell, aligned with the input, with the
parsed value and either nothing or the name of the quarantine rule the cell
breaks. Plain numbers take a fast vectorised cast; only the remaining cells
(censored results, decimal commas, stray units, words) go through the
regular expression below.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Mapping

import polars as pl

from hivcomorb.ingest import rules
from hivcomorb.ingest.mapping import fold_text

# A number with an optional censoring sign before it and optional unit text
# after it. The number is either digits grouped by three with spaces or
# apostrophes ("10 000", "1'234.5"), or digits with any dots and commas
# ("13,5", "1.234,5", "10,000,000"), with an optional exponent. Unit text may
# not start with a digit, except the "10^9/L" and "10*9/L" forms.
_VALUE_PATTERN = (
    r"^(?P<op><=|>=|<|>)?\s*"
    r"(?P<num>[+-]?(?:\d{1,3}(?:[ '\x{a0}\x{202f}]\d{3})+(?:[.,]\d+)?|\d*[.,]?\d+(?:[.,]\d+)*)(?:[eE][+-]?\d+)?)"
    r"\s*(?P<unit>10\^\S*|10\*\S*|[^\s\d.,+-].*)?$"
)
_GROUP_SEPARATORS = r"[ '\x{a0}\x{202f}]"


def fold_tokens(tokens: Iterable[str]) -> list[str]:
    """Return tokens folded for matching: lower case, all whitespace removed."""
    return sorted({"".join(str(t).lower().split()) for t in tokens})


def _fold_expr(expr: pl.Expr) -> pl.Expr:
    return expr.str.to_lowercase().str.replace_all(r"\s+", "")


def as_text(series: pl.Series) -> pl.Series:
    """Return ``series`` as strings; integral floats lose their ``.0`` so that codes compare as text."""
    if series.dtype == pl.String:
        return series
    if series.dtype.is_float():
        integral = series.is_finite() & (series == series.round(0)) & (series.abs() < 2**53)
        as_int = series.cast(pl.Int64, strict=False).cast(pl.String)
        return pl.select(pl.when(integral).then(as_int).otherwise(series.cast(pl.String))).to_series().alias(series.name)
    return series.cast(pl.String)


@dataclass
class NumericCells:
    """Parsed numeric cells, aligned with the input column.

    ``number`` is in the unit of the cell, not yet converted. ``unit_text`` is
    the unit written in the cell, which the caller normalises. ``error`` is a
    rule name from :mod:`hivcomorb.ingest.rules` or null.
    """

    number: pl.Series
    censor: pl.Series
    unit_text: pl.Series
    undetectable: pl.Series
    error: pl.Series
    detail: pl.Series
    ambiguous_commas: int
    comma_reading: str | None


def parse_numeric(
    raw: pl.Series,
    *,
    missing_tokens: Iterable[str],
    undetectable_tokens: Iterable[str],
    allow_censor: bool,
    has_detection_limit: bool,
    decimal_comma: str = "auto",
) -> NumericCells:
    """Parse one column of numeric cells.

    Parameters
    ----------
    raw : polars.Series
        The source column, as text or as numbers.
    missing_tokens, undetectable_tokens : iterable of str
        Cell text read as missing, or as "below the detection limit";
        matching ignores case and whitespace.
    allow_censor : bool
        Whether ``<`` and ``>`` results are allowed (lab columns only).
    has_detection_limit : bool
        Whether an undetectable token can be given a value.
    decimal_comma : {"auto", "yes", "no"}
        How a single comma followed by three digits is read (see
        ``ingest.decimal_comma`` in ``conf/stages/ingest.yaml``).

    Returns
    -------
    NumericCells
    """
    n = raw.len()
    if raw.dtype.is_numeric() or raw.dtype == pl.Boolean:
        return _parse_typed(raw)
    text = raw if raw.dtype == pl.String else raw.cast(pl.String)
    # Most cells are plain numbers that a float cast reads as they are. A cell
    # the cast reads has no surrounding whitespace, so only the other cells
    # are stripped and, if still unread, parsed below.
    fast = text.cast(pl.Float64, strict=False)
    fast_ok = fast.is_not_null() & fast.is_finite()
    number = pl.select(pl.when(fast_ok).then(fast)).to_series().alias("number")
    censor = pl.repeat(None, n, dtype=pl.String, eager=True).alias("censor")
    unit_text = pl.repeat(None, n, dtype=pl.String, eager=True).alias("unit_text")
    undetectable = pl.repeat(False, n, dtype=pl.Boolean, eager=True).alias("undetectable")
    error = pl.repeat(None, n, dtype=pl.String, eager=True).alias("error")
    detail = pl.repeat(None, n, dtype=pl.String, eager=True).alias("detail")
    slow = (text.is_not_null() & ~fast_ok).arg_true()
    if slow.len() == 0:
        return NumericCells(number, censor, unit_text, undetectable, error, detail, 0, None)

    stripped = text.gather(slow).str.strip_chars()
    retried = stripped.cast(pl.Float64, strict=False)
    retried_ok = retried.is_not_null() & retried.is_finite()
    if retried_ok.any():
        # Numbers with surrounding whitespace, such as " 12 ".
        number = number.scatter(slow.filter(retried_ok), retried.filter(retried_ok))
        stripped = stripped.filter(~retried_ok)
        slow = slow.filter(~retried_ok)
        if slow.len() == 0:
            return NumericCells(number, censor, unit_text, undetectable, error, detail, 0, None)

    cells = pl.DataFrame({"raw": stripped})
    parsed, ambiguous, reading = _parse_text_cells(
        cells,
        missing=fold_tokens(missing_tokens),
        undetectable=fold_tokens(undetectable_tokens),
        allow_censor=allow_censor,
        has_detection_limit=has_detection_limit,
        decimal_comma=decimal_comma,
    )
    number = number.scatter(slow, parsed["number"])
    censor = censor.scatter(slow, parsed["censor"])
    unit_text = unit_text.scatter(slow, parsed["unit"])
    undetectable = undetectable.scatter(slow, parsed["undetectable"])
    error = error.scatter(slow, parsed["error"])
    detail = detail.scatter(slow, parsed["detail"])
    return NumericCells(number, censor, unit_text, undetectable, error, detail, ambiguous, reading)


def _parse_typed(raw: pl.Series) -> NumericCells:
    n = raw.len()
    if raw.dtype == pl.Boolean:
        number = pl.repeat(None, n, dtype=pl.Float64, eager=True).alias("number")
        bad = raw.is_not_null()
        error = pl.select(pl.when(bad).then(pl.lit(rules.UNPARSEABLE_VALUE))).to_series()
        detail = pl.select(pl.when(bad).then(pl.lit("a true/false cell where a number is expected"))).to_series()
    else:
        values = raw.cast(pl.Float64)
        infinite = values.is_infinite().fill_null(False)
        number = pl.select(pl.when(values.is_finite()).then(values)).to_series()
        error = pl.select(pl.when(infinite).then(pl.lit(rules.UNPARSEABLE_VALUE))).to_series()
        detail = pl.select(pl.when(infinite).then(pl.lit("an infinite number"))).to_series()
    return NumericCells(
        number=number.alias("number"),
        censor=pl.repeat(None, n, dtype=pl.String, eager=True).alias("censor"),
        unit_text=pl.repeat(None, n, dtype=pl.String, eager=True).alias("unit_text"),
        undetectable=pl.repeat(False, n, dtype=pl.Boolean, eager=True).alias("undetectable"),
        error=error.cast(pl.String).alias("error"),
        detail=detail.cast(pl.String).alias("detail"),
        ambiguous_commas=0,
        comma_reading=None,
    )


def _parse_text_cells(
    cells: pl.DataFrame,
    *,
    missing: list[str],
    undetectable: list[str],
    allow_censor: bool,
    has_detection_limit: bool,
    decimal_comma: str,
) -> tuple[pl.DataFrame, int, str | None]:
    """Parse the cells a plain float cast could not read; return them with the comma count and reading."""
    key = _fold_expr(pl.col("raw"))
    cleaned = (
        pl.col("raw")
        .str.replace_all("\u2264", "<=", literal=True)
        .str.replace_all("\u2265", ">=", literal=True)
        .str.replace_all("\u2212", "-", literal=True)
    )
    frame = cells.with_columns(
        key.is_in(missing).alias("is_missing"),
        key.is_in(undetectable).alias("is_undetectable"),
        cleaned.str.extract_groups(_VALUE_PATTERN).alias("groups"),
    ).unnest("groups")

    digits = pl.col("num").str.replace_all(_GROUP_SEPARATORS, "")
    frame = frame.with_columns(digits.alias("digits"))
    one_group_comma = pl.col("digits").str.contains(r"^[+-]?\d{1,3},\d{3}(?:[eE][+-]?\d+)?$")
    clear_decimal_comma = pl.col("digits").str.contains(r"^[+-]?\d*,(?:\d{1,2}|\d{4,})(?:[eE][+-]?\d+)?$")
    stats = frame.select(one_group_comma.sum().alias("ambiguous"), clear_decimal_comma.any().alias("decimal"))
    ambiguous = int(stats["ambiguous"][0] or 0)
    if decimal_comma == "yes":
        comma_is_decimal = True
    elif decimal_comma == "no":
        comma_is_decimal = False
    else:
        comma_is_decimal = bool(stats["decimal"][0])
    if ambiguous == 0:
        reading = None
    elif comma_is_decimal:
        reading = "decimal comma"
    else:
        reading = "thousands separator"

    has_comma = pl.col("digits").str.contains(",", literal=True)
    has_dot = pl.col("digits").str.contains(".", literal=True)
    comma_last = pl.col("digits").str.contains(r",[0-9eE+-]*$")
    grouped_commas = pl.col("digits").str.contains(r"^[+-]?\d{1,3}(?:,\d{3})+(?:[eE][+-]?\d+)?$")
    grouped_dots = pl.col("digits").str.contains(r"^[+-]?\d{1,3}(?:\.\d{3}){2,}$")
    single_comma = pl.col("digits").str.count_matches(",", literal=True) == 1
    number_text = (
        pl.when(has_comma & has_dot & comma_last)
        .then(pl.col("digits").str.replace_all(".", "", literal=True).str.replace(",", ".", literal=True))
        .when(has_comma & has_dot)
        .then(pl.col("digits").str.replace_all(",", "", literal=True))
        .when(has_comma & one_group_comma)
        .then(
            pl.col("digits").str.replace(",", ".", literal=True)
            if comma_is_decimal
            else pl.col("digits").str.replace(",", "", literal=True)
        )
        .when(has_comma & grouped_commas)
        .then(pl.col("digits").str.replace_all(",", "", literal=True))
        .when(has_comma & single_comma & pl.lit(decimal_comma != "no"))
        .then(pl.col("digits").str.replace(",", ".", literal=True))
        .when(has_comma)
        .then(pl.lit(None, dtype=pl.String))
        .when(grouped_dots)
        .then(pl.col("digits").str.replace_all(".", "", literal=True))
        .otherwise(pl.col("digits"))
    )
    frame = frame.with_columns(number_text.cast(pl.Float64, strict=False).alias("parsed"))
    frame = frame.with_columns(
        pl.when(pl.col("parsed").is_finite()).then(pl.col("parsed")).alias("parsed"),
        pl.col("op").replace_strict({"<": "<", "<=": "<", ">": ">", ">=": ">"}, default=None).alias("op"),
    )

    missing_cell = pl.col("is_missing")
    undetectable_cell = pl.col("is_undetectable") & ~missing_cell
    numeric_cell = ~missing_cell & ~undetectable_cell
    error = (
        pl.when(undetectable_cell & pl.lit(not (allow_censor and has_detection_limit)))
        .then(pl.lit(rules.NO_DETECTION_LIMIT if allow_censor else rules.CENSORED_NOT_ALLOWED))
        .when(numeric_cell & pl.col("parsed").is_null())
        .then(pl.lit(rules.UNPARSEABLE_VALUE))
        .when(numeric_cell & pl.col("op").is_not_null() & pl.lit(not allow_censor))
        .then(pl.lit(rules.CENSORED_NOT_ALLOWED))
    )
    detail = (
        pl.when(undetectable_cell & pl.lit(not allow_censor))
        .then(pl.lit("a below-detection-limit result is allowed only in lab columns"))
        .when(undetectable_cell & pl.lit(not has_detection_limit))
        .then(pl.lit("the column has no detection limit; set detection_limit for it in the mapping file"))
        .when(numeric_cell & pl.col("parsed").is_null())
        .then(pl.lit("not a number, a censored result, a missing-value word or a detection-limit word"))
        .when(numeric_cell & pl.col("op").is_not_null() & pl.lit(not allow_censor))
        .then(pl.lit("a censored result (< or >) is allowed only in lab columns"))
    )
    frame = frame.with_columns(error.alias("error"), detail.alias("detail"))
    ok_number = numeric_cell & pl.col("error").is_null()
    out = frame.select(
        pl.when(ok_number).then(pl.col("parsed")).cast(pl.Float64).alias("number"),
        pl.when(ok_number)
        .then(pl.col("op"))
        .when(undetectable_cell & pl.col("error").is_null())
        .then(pl.lit("<"))
        .cast(pl.String)
        .alias("censor"),
        pl.when(ok_number).then(pl.col("unit")).cast(pl.String).alias("unit"),
        (undetectable_cell & pl.col("error").is_null()).alias("undetectable"),
        pl.col("error").cast(pl.String),
        pl.col("detail").cast(pl.String),
    )
    return out, ambiguous, reading


def parse_censor_flags(raw: pl.Series, missing_tokens: Iterable[str]) -> tuple[pl.Series, pl.Series]:
    """Parse a source censoring-flag column into ``<``, ``>`` or null, and an error column."""
    tokens = fold_tokens(missing_tokens)

    def parse(text: pl.Series) -> tuple[pl.Series, pl.Series]:
        stripped = text.str.strip_chars()
        out = pl.DataFrame({"raw": stripped}).select(
            pl.col("raw").replace_strict({"<": "<", "<=": "<", ">": ">", ">=": ">"}, default=None).alias("flag"),
            _fold_expr(pl.col("raw")).is_in(tokens).alias("missing"),
        )
        bad = stripped.is_not_null() & out["flag"].is_null() & ~out["missing"]
        error = pl.select(pl.when(bad).then(pl.lit(rules.INVALID_CENSOR_FLAG))).to_series().cast(pl.String)
        return out["flag"], error

    return _parse_distinct(as_text(raw), parse, pl.String)


def _parse_distinct(
    text: pl.Series, parse: Callable[[pl.Series], tuple[pl.Series, pl.Series]], dtype: pl.DataType
) -> tuple[pl.Series, pl.Series]:
    """Apply ``parse`` to the distinct non-null cells of ``text`` and map its value and error back to every cell.

    ``parse`` must read each cell on its own, so the result equals parsing
    every cell. Category, label and flag columns repeat a few values, so this
    costs one hash lookup per cell instead of several string operations. A
    null cell gets a null value and no error, as ``parse`` gives it.
    """
    n = text.len()
    distinct = text.drop_nulls().unique()
    if distinct.len() == 0:
        return pl.repeat(None, n, dtype=dtype, eager=True), pl.repeat(None, n, dtype=pl.String, eager=True)
    values, errors = parse(distinct)
    # A null cell gets a null index, and gathering at a null index gives null.
    index = text.replace_strict(distinct, pl.int_range(distinct.len(), dtype=pl.UInt32, eager=True), default=None)
    return values.cast(dtype).gather(index), errors.cast(pl.String).gather(index)


def category_lookup(categories: Iterable[str], recodes: Mapping[str, str | None]) -> dict[str, str | None]:
    """Return folded source text -> canonical category, from the recodes and the category names.

    A category matches in any case and with spaces or hyphens for its
    underscores (``"Black African"`` -> ``black_african``). Recodes win.
    """
    lookup: dict[str, str | None] = {}
    for category in categories:
        for spelling in (category, category.replace("_", " "), category.replace("_", "-")):
            lookup[fold_text(spelling)] = category
    for source, target in recodes.items():
        lookup[fold_text(source)] = target
    return lookup


def parse_category(
    raw: pl.Series, categories: Iterable[str], recodes: Mapping[str, str | None], missing_tokens: Iterable[str]
) -> tuple[pl.Series, pl.Series]:
    """Parse a category column into contract categories (or null) and an error column."""
    lookup = category_lookup(list(categories), recodes)
    missing = sorted({fold_text(t) for t in missing_tokens})
    keys = list(lookup)
    values = [lookup[k] for k in keys]

    def parse(text: pl.Series) -> tuple[pl.Series, pl.Series]:
        frame = pl.DataFrame({"raw": text}).with_columns(
            pl.col("raw").str.to_lowercase().str.replace_all(r"\s+", " ").str.strip_chars().alias("key")
        )
        out = frame.select(
            pl.col("key").replace_strict(keys, values, default=None, return_dtype=pl.String).alias("value"),
            pl.col("key").is_in(keys).alias("known"),
            pl.col("key").is_in(missing).alias("missing"),
        )
        bad = text.is_not_null() & ~out["known"] & ~out["missing"]
        error = pl.select(pl.when(bad).then(pl.lit(rules.UNKNOWN_CATEGORY))).to_series().cast(pl.String)
        return out["value"], error

    return _parse_distinct(as_text(raw), parse, pl.String)


def parse_label(
    raw: pl.Series,
    recodes: Mapping[str, str | None],
    positive: Iterable[str],
    negative: Iterable[str],
    missing_tokens: Iterable[str],
) -> tuple[pl.Series, pl.Series]:
    """Parse a label column into 1, 0 or null (unknown) as Int8, and an error column."""
    lookup: dict[str, str | None] = {fold_text(t): None for t in missing_tokens}
    lookup.update({fold_text(t): "1" for t in positive})
    lookup.update({fold_text(t): "0" for t in negative})
    for source, target in recodes.items():
        lookup[fold_text(source)] = target
    keys = list(lookup)
    values = [lookup[k] for k in keys]

    def parse(text: pl.Series) -> tuple[pl.Series, pl.Series]:
        frame = pl.DataFrame({"raw": text}).with_columns(
            pl.col("raw").str.to_lowercase().str.replace_all(r"\s+", " ").str.strip_chars().alias("key")
        )
        out = frame.select(
            pl.col("key").replace_strict(keys, values, default=None, return_dtype=pl.String).cast(pl.Int8).alias("value"),
            pl.col("key").is_in(keys).alias("known"),
        )
        bad = text.is_not_null() & ~out["known"]
        error = pl.select(pl.when(bad).then(pl.lit(rules.INVALID_LABEL))).to_series().cast(pl.String)
        return out["value"], error

    return _parse_distinct(as_text(raw), parse, pl.Int8)
