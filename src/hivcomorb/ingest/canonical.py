"""Turning one extract frame into the canonical cohort plus a quarantine list.

:func:`ingest_frame` applies a mapping, parses every mapped column, converts
lab units, applies the quarantine rules and validates the kept rows with
Great Expectations, on every kept row or on the rows that decide each
expectation (``ingest.validate``). Every source row ends either in the
cohort or in the quarantine list, so ``rows_read == rows_kept +
rows_quarantined`` always holds. Values are never altered beyond the unit
conversions of the contract, and each conversion is counted and logged.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np
import pandas as pd
import polars as pl

from hivcomorb.config import deep_merge, read_yaml
from hivcomorb.contract import Column, Contract
from hivcomorb.errors import ExtractError
from hivcomorb.ingest import rules
from hivcomorb.ingest.mapping import CENSOR_SUFFIX, ColumnPlan, fold_text, load_mapping, plan_mapping
from hivcomorb.ingest.parse import NumericCells, as_text, parse_category, parse_censor_flags, parse_label, parse_numeric
from hivcomorb.ingest.readers import read_extract_with_info
from hivcomorb.ingest.typed import parse_clean_numbers
from hivcomorb.ingest.units import convert_by_unit, known_units, normalise_unit_expr, suspect_unit
from hivcomorb.paths import conf_dir
from hivcomorb.schema import build_suite

if TYPE_CHECKING:
    from hivcomorb.ingest.validate import RowsSetting

logger = logging.getLogger(__name__)

SOURCE_ROW = "source_row"
_HASH_SLICE_ROWS = 200_000

# Sources of a lab cell's unit, in order of precedence.
UNIT_FROM_CELL = "cell"
UNIT_FROM_UNIT_COLUMN = "unit_column"
UNIT_DECLARED = "declared"
UNIT_ASSUMED = "assumed"
UNIT_DETECTION_LIMIT = "detection_limit"


def default_options() -> dict[str, Any]:
    """Return the ingestion settings of ``conf/stages/ingest.yaml``.

    The file is parsed again only when it changes, because scoring calls this
    for every chunk of an extract.
    """
    path = conf_dir() / "stages" / "ingest.yaml"
    try:
        status = path.stat()
    except OSError:
        # read_yaml raises the ConfigError that names the file.
        return dict(read_yaml(path).get("ingest") or {})
    return copy.deepcopy(_read_options(path, (status.st_mtime_ns, status.st_size, status.st_ino)))


@functools.lru_cache(maxsize=4)
def _read_options(path: Path, stamp: tuple[int, int, int]) -> dict[str, Any]:
    return dict(read_yaml(path).get("ingest") or {})


@dataclass
class IngestResult:
    """Outcome of ingesting one extract or one chunk of it.

    Attributes
    ----------
    cohort : pandas.DataFrame
        Kept rows in canonical form: ``patient_id``, the contract columns
        present in contract order (each lab followed by ``<lab>_censored``),
        and ``source_row``.
    quarantine : pandas.DataFrame
        One entry per broken rule: ``source_row``, ``column``, ``raw_value``,
        ``rule`` and ``detail``. The patient id is never copied here.
    summary : dict
        Counts, content hash, conversions, warnings and validation statistics.
    validation : dict
        The per-expectation validation results (counts only).
    deciding_rows : pandas.DataFrame or None
        The rows of ``cohort`` that decide each expectation of the suite
        (:func:`hivcomorb.ingest.validate.deciding_rows`), when requested.
    """

    cohort: pd.DataFrame
    quarantine: pd.DataFrame
    summary: dict[str, Any]
    validation: dict[str, Any] = field(default_factory=dict)
    deciding_rows: pd.DataFrame | None = None


@dataclass
class _ColumnOutcome:
    """Parsed values of one canonical column over all rows, before rows are dropped."""

    values: pl.Series
    censor: pl.Series | None = None
    # None when every value was read in the canonical unit as declared.
    unit_used: pl.Series | None = None
    unit_origin: pl.Series | None = None
    entries: list[pl.DataFrame] = field(default_factory=list)
    notes: dict[str, Any] = field(default_factory=dict)


def ingest_frame(
    frame: pl.DataFrame | pd.DataFrame,
    contract: Contract,
    mapping: Mapping[str, Any] | None = None,
    *,
    source_name: str,
    row_offset: int = 0,
    options: Mapping[str, Any] | None = None,
    validate: bool = True,
    allow_empty: bool = False,
    hash_content: bool = True,
    deciding_rows: bool = False,
    chunk: bool = False,
) -> IngestResult:
    """Ingest one extract frame into the canonical cohort.

    Parameters
    ----------
    frame : polars.DataFrame or pandas.DataFrame
        The extract as read, one row per patient; text or typed columns.
    contract : Contract
        The data contract, already adapted to the site.
    mapping : mapping, optional
        A mapping from :func:`load_mapping`; ``None`` applies the identity
        mapping (canonical names and units).
    source_name : str
        Name of the source used in messages (a file name; no patient data).
    row_offset : int
        Number of data rows before this frame in the source, so that
        ``source_row`` stays the row number in the whole file when a caller
        ingests a large extract chunk by chunk. Row 1 is the first data row
        after the header.
    options : mapping, optional
        Settings overriding ``conf/stages/ingest.yaml`` (the ``ingest`` block).
    validate : bool
        Run the Great Expectations suite on the kept rows: on every kept row
        or on the rows that decide each expectation, as ``validate`` and
        ``validate_all_rows_up_to`` in ``options`` say
        (:class:`hivcomorb.ingest.validate.RowsSetting`).
    allow_empty : bool
        Return an empty cohort instead of raising when no row is kept.
    hash_content : bool
        Compute the cohort's content hash (:func:`content_hash`), which
        renders every kept row as CSV. Scoring does not keep the cohort and
        turns it off, and ``summary["content_hash"]`` is then None.
    deciding_rows : bool
        Also return the kept rows that decide each expectation of the suite,
        so that a caller can validate many chunks in one run
        (:class:`hivcomorb.ingest.validate.CompactCohort`).
    chunk : bool
        The frame is one chunk of a larger extract. Its row count is then
        logged at DEBUG level with its row numbers, because the caller's count
        for the whole extract is the one that reconciles.

    Returns
    -------
    IngestResult

    Raises
    ------
    ExtractError
        If the frame has no rows, or no row is usable (unless
        ``allow_empty``), or a column looks like the wrong unit while
        ``suspected_unit.action`` is ``error``, or validation fails while
        ``fail_on_validation`` is true.
    MappingError
        If the mapping names a source column the frame lacks.
    ConfigError
        If ``validate`` or ``validate_all_rows_up_to`` in the options has an
        invalid value, whether or not ``validate`` is true.

    Notes
    -----
    Duplicate patient ids are found within ``frame`` only. A caller that
    ingests chunks must check ids across chunks itself.
    """
    from hivcomorb.ingest.validate import RowsSetting

    opts = deep_merge(default_options(), options or {})
    # Checked before any parsing, so that an invalid setting fails at once.
    rows_setting = RowsSetting.from_options(opts)
    mapping = mapping if mapping is not None else load_mapping(None, contract)
    data = _to_polars(frame)
    n_rows = data.height
    if n_rows == 0 and not allow_empty:
        raise ExtractError(f"extract {source_name} has a header but no data rows; export the extract again")

    plan = plan_mapping(mapping, contract, data.columns, source_name, required=opts.get("required_columns") or ())
    if plan.unmapped:
        logger.info("Extract %s: %d unmapped columns ignored: %s", source_name, len(plan.unmapped), ", ".join(plan.unmapped))
    if plan.absent_optional:
        logger.info("Extract %s: optional mapped columns absent: %s", source_name, ", ".join(plan.absent_optional))

    entries: list[pl.DataFrame] = []
    ids, id_entries, duplicates = _parse_ids(data[plan.id_source], contract.id_column, opts)
    entries.extend(id_entries)

    outcomes: dict[str, _ColumnOutcome] = {
        name: _ColumnOutcome(values=numbers.values, censor=numbers.censor)
        for name, numbers in parse_clean_numbers(data, contract, plan.columns, opts).items()
    }
    recodes = mapping.get("recodes") or {}
    for column in contract.columns:
        column_plan = plan.columns.get(column.name)
        if column_plan is None or column.name in outcomes:
            continue
        outcome = _parse_column(data, column, column_plan, recodes.get(column.name) or {}, opts, source_name)
        outcomes[column.name] = outcome
        entries.extend(outcome.entries)

    quarantine_entries = _withhold_ids(pl.concat(entries) if entries else rules.empty_entries(), data[plan.id_source])
    bad_positions = quarantine_entries["position"].unique()
    kept_mask = np.ones(n_rows, dtype=bool)
    kept_mask[bad_positions.to_numpy()] = False
    kept = pl.Series("kept", kept_mask)

    canonical = _assemble(ids, outcomes, contract, n_rows, row_offset).filter(kept)
    rows_kept = canonical.height
    rows_quarantined = n_rows - rows_kept
    reconciliation = f"read {n_rows} = kept {rows_kept} + quarantined {rows_quarantined}"
    if chunk:
        # The caller logs the extract's own count once ids repeated across chunks are quarantined too.
        logger.debug("Extract %s, rows %d-%d: %s", source_name, row_offset + 1, row_offset + n_rows, reconciliation)
    else:
        logger.info("Extract %s: %s", source_name, reconciliation)

    quarantine = _quarantine_frame(quarantine_entries, row_offset)
    if rows_kept == 0 and not allow_empty:
        error = ExtractError(
            f"extract {source_name} has no usable rows: all {n_rows} rows were quarantined "
            f"({_top_reasons(quarantine)}); fix the extract or the mapping file and run again"
        )
        # The caller may write these out so the user can see each rejected row and reason.
        error.quarantine = quarantine
        raise error

    summary = _summarise(
        source_name=source_name,
        mapping=mapping,
        contract=contract,
        plan_unmapped=plan.unmapped,
        outcomes=outcomes,
        kept=kept,
        quarantine=quarantine,
        duplicates=duplicates,
        counts=(n_rows, rows_kept, rows_quarantined),
    )
    summary["reconciliation"] = reconciliation
    summary["content_hash"] = content_hash(canonical) if hash_content else None

    cohort = _to_pandas(canonical, contract)
    validation = _run_validation(canonical, cohort, contract, validate, rows_setting, opts)
    summary["validation"] = _validation_summary(validation)
    deciding = None
    if deciding_rows:
        from hivcomorb.ingest.validate import deciding_rows as find_deciding_rows

        positions = find_deciding_rows(canonical, build_suite(contract, columns=canonical.columns))
        deciding = cohort.iloc[positions].reset_index(drop=True)
    return IngestResult(cohort=cohort, quarantine=quarantine, summary=summary, validation=validation, deciding_rows=deciding)


def ingest_file(
    path: str | Path,
    contract: Contract,
    mapping: Mapping[str, Any] | str | Path | None = None,
    *,
    sheet: str | None = None,
    encoding: str | None = None,
    delimiter: str | None = None,
    **ingest_options: Any,
) -> IngestResult:
    """Read an extract file and ingest it with :func:`ingest_frame`.

    ``mapping`` is a mapping from :func:`load_mapping`, a mapping file path or
    ``None`` (identity). ``sheet``, ``encoding`` and ``delimiter`` go to
    :func:`~hivcomorb.ingest.readers.read_extract`; other keyword arguments
    go to :func:`ingest_frame`. The summary gains ``read``: the format and the
    detected or given encoding and delimiter.
    """
    if mapping is None or isinstance(mapping, (str, Path)):
        mapping = load_mapping(mapping, contract)
    frame, info = read_extract_with_info(path, sheet=sheet, encoding=encoding, delimiter=delimiter)
    result = ingest_frame(frame, contract, mapping, source_name=Path(path).name, **ingest_options)
    result.summary["read"] = info.as_dict()
    return result


def _to_polars(frame: pl.DataFrame | pd.DataFrame) -> pl.DataFrame:
    if isinstance(frame, pl.DataFrame):
        return frame
    if isinstance(frame, pd.DataFrame):
        converted = frame.reset_index(drop=True).copy()
        converted.columns = [str(c) for c in converted.columns]
        for name in converted.columns:
            if converted[name].dtype == object:
                converted[name] = converted[name].astype("string")
        return pl.from_pandas(converted)
    raise TypeError(f"frame must be a polars or pandas DataFrame, got {type(frame).__name__}")


def _parse_ids(raw: pl.Series, id_column: str, opts: Mapping[str, Any]) -> tuple[pl.Series, list[pl.DataFrame], dict[str, int]]:
    """Return the stripped ids, quarantine entries for missing and duplicated ids, and duplicate counts.

    The entries never carry the id itself: their raw value is empty.
    """
    ids = as_text(raw).str.strip_chars()
    missing_keys = {"".join(fold_text(t).split()) for t in opts.get("missing_tokens") or ()}
    frame = pl.DataFrame({"id": ids})
    flags = frame.select(
        (pl.col("id").is_null() | pl.col("id").str.to_lowercase().str.replace_all(r"\s+", "").is_in(sorted(missing_keys | {""}))).alias(
            "missing"
        )
    )
    missing = flags["missing"]
    ids = pl.select(pl.when(~missing).then(ids)).to_series().alias(id_column)
    duplicated = (ids.is_duplicated() & ~missing).fill_null(False)
    entries = []
    if missing.any():
        entries.append(rules.entries(missing.arg_true(), id_column, None, rules.MISSING_ID))
    counts = {"ids": 0, "rows": 0}
    if duplicated.any():
        positions = duplicated.arg_true()
        counts = {"ids": int(ids.gather(positions).n_unique()), "rows": int(positions.len())}
        entries.append(
            rules.entries(
                positions,
                id_column,
                None,
                rules.DUPLICATE_ID,
                f"{counts['rows']} rows share {counts['ids']} repeated patient id(s); every such row is quarantined",
            )
        )
        logger.warning("Duplicate patient ids: %d rows share %d ids and were quarantined", counts["rows"], counts["ids"])
    return ids, entries, counts


def _parse_column(
    data: pl.DataFrame,
    column: Column,
    plan: ColumnPlan,
    recodes: Mapping[str, Any],
    opts: Mapping[str, Any],
    source_name: str,
) -> _ColumnOutcome:
    raw = data[plan.source]
    missing_tokens = opts.get("missing_tokens") or ()
    if column.dtype in ("number", "integer"):
        return _parse_number_column(data, column, plan, opts, source_name)
    if column.dtype == "category":
        values, error = parse_category(raw, column.categories, recodes, missing_tokens)
        detail = (
            f"allowed values: {', '.join(column.categories)}; add a recode for this value under recodes.{column.name} "
            "in the mapping file"
        )
        return _ColumnOutcome(values=values.alias(column.name), entries=_error_entries(error, column.name, raw, detail))
    if column.dtype == "label":
        label_values = opts.get("label_values") or {}
        values, error = parse_label(
            raw, recodes, label_values.get("positive") or (), label_values.get("negative") or (), missing_tokens
        )
        return _ColumnOutcome(values=values.alias(column.name), entries=_error_entries(error, column.name, raw, None))
    values = as_text(raw).str.strip_chars()
    return _ColumnOutcome(values=values.alias(column.name))


def _error_entries(error: pl.Series, column: str, raw: pl.Series, detail: str | pl.Series | None) -> list[pl.DataFrame]:
    positions = error.is_not_null().arg_true()
    if positions.len() == 0:
        return []
    rule = error.gather(positions)
    if isinstance(detail, pl.Series):
        detail = detail.gather(positions)
    return [rules.entries(positions, column, as_text(raw), rule, detail)]


def _parse_number_column(
    data: pl.DataFrame, column: Column, plan: ColumnPlan, opts: Mapping[str, Any], source_name: str
) -> _ColumnOutcome:
    """Parse a number or integer column, convert its units and check its possible range."""
    raw = data[plan.source]
    is_lab = column.role == "lab"
    limit = plan.detection_limit if plan.detection_limit is not None else column.detection_limit
    cells = parse_numeric(
        raw,
        missing_tokens=opts.get("missing_tokens") or (),
        undetectable_tokens=opts.get("undetectable_tokens") or (),
        allow_censor=is_lab,
        has_detection_limit=limit is not None,
        decimal_comma=str(opts.get("decimal_comma", "auto")),
    )
    notes: dict[str, Any] = {}
    if cells.ambiguous_commas:
        notes["ambiguous_commas"] = {"cells": cells.ambiguous_commas, "read_as": cells.comma_reading}
        logger.warning(
            "Column %s (source %r): %d values such as '1,234' have one comma before three digits; read the comma as a %s "
            "(set ingest.decimal_comma to change this)",
            column.name,
            plan.source,
            cells.ambiguous_commas,
            cells.comma_reading,
        )

    declared = plan.unit or column.unit
    unit_source: pl.Series | None = None
    frame = pl.DataFrame({"number": cells.number, "error": cells.error, "detail": cells.detail})
    if _all_in_declared_unit(cells, plan):
        # _resolve_units would give every row the declared unit.
        frame = frame.with_columns(
            pl.lit(declared, dtype=pl.String).alias("unit_used"),
            pl.lit(UNIT_DECLARED).alias("unit_origin"),
            pl.lit(False).alias("unit_at_fault"),
        )
    else:
        frame, unit_source = _resolve_units(data, frame, cells, column, plan, declared, limit, opts)
    entries: list[pl.DataFrame] = []
    units_present = [u for u in frame["unit_used"].drop_nulls().unique().to_list() if u != column.unit]
    frame = frame.with_columns(
        convert_by_unit(pl.col("number"), pl.col("unit_used"), column, units_present).alias("value")
    )

    _check_suspected_unit(frame, column, declared, opts, source_name, notes)

    out_of_range = rules.outside_range(frame["value"], column.possible) & frame["error"].is_null()
    if out_of_range.any():
        detail = f"possible range {rules.format_range(column.possible, column.unit)}"
        suspected = notes.get("suspected_unit")
        if suspected:
            detail += (
                f"; the column looks like {suspected['suspected_unit']}, not {suspected['declared_unit']}: "
                "declare its unit in the mapping file"
            )
        frame = frame.with_columns(
            pl.when(out_of_range).then(pl.lit(rules.OUTSIDE_POSSIBLE_RANGE)).otherwise(pl.col("error")).alias("error"),
            pl.when(out_of_range).then(pl.lit(detail)).otherwise(pl.col("detail")).alias("detail"),
        )
    if column.dtype == "integer":
        fractional = ((frame["value"] != frame["value"].round(0)).fill_null(False)) & frame["error"].is_null()
        frame = frame.with_columns(
            pl.when(fractional).then(pl.lit(rules.NOT_AN_INTEGER)).otherwise(pl.col("error")).alias("error"),
            pl.when(fractional).then(pl.lit("a whole number is expected")).otherwise(pl.col("detail")).alias("detail"),
        )

    censor = cells.censor
    if plan.censor_column is not None:
        flags, flag_error = parse_censor_flags(data[plan.censor_column], opts.get("missing_tokens") or ())
        conflict = (censor.is_not_null() & flags.is_not_null() & (censor != flags)).fill_null(False)
        flag_error = pl.select(
            pl.when(conflict).then(pl.lit(rules.INVALID_CENSOR_FLAG)).otherwise(flag_error)
        ).to_series()
        flag_error = pl.select(pl.when(frame["error"].is_null()).then(flag_error)).to_series()
        entries.extend(
            _error_entries(
                flag_error,
                column.name,
                data[plan.censor_column],
                f"censoring-flag column {plan.censor_column!r} must hold <, > or nothing, and agree with a sign in the value",
            )
        )
        without_value = int((flags.is_not_null() & frame["value"].is_null() & frame["error"].is_null()).sum())
        if without_value:
            notes["censor_flags_without_value"] = without_value
            logger.warning(
                "Column %s: %d censoring flags in %r have no value beside them and were ignored; the rows were kept "
                "with the lab missing",
                column.name,
                without_value,
                plan.censor_column,
            )
        censor = pl.select(pl.when(frame["value"].is_not_null()).then(pl.coalesce(censor, flags))).to_series()

    error_positions = frame["error"].is_not_null().arg_true()
    if error_positions.len():
        entries.append(
            rules.entries(
                error_positions,
                column.name,
                _cells_at_fault(error_positions, raw, unit_source, frame["unit_at_fault"]),
                frame["error"].gather(error_positions),
                frame["detail"].gather(error_positions),
            )
        )
    values = frame["value"].alias(column.name)
    if column.dtype == "integer":
        values = values.round(0).cast(pl.Int64, strict=False)
    return _ColumnOutcome(
        values=values,
        censor=censor.alias(f"{column.name}{CENSOR_SUFFIX}") if is_lab else None,
        unit_used=frame["unit_used"],
        unit_origin=frame["unit_origin"],
        entries=entries,
        notes=notes,
    )


def _all_in_declared_unit(cells: NumericCells, plan: ColumnPlan) -> bool:
    """Return whether every value of a column is in its declared unit.

    That holds when the mapping names no unit column, no cell has a unit
    written in it and no cell is a detection-limit word.
    """
    return plan.unit_column is None and cells.unit_text.null_count() == cells.unit_text.len() and not cells.undetectable.any()


def _resolve_units(
    data: pl.DataFrame,
    frame: pl.DataFrame,
    cells: NumericCells,
    column: Column,
    plan: ColumnPlan,
    declared: str | None,
    limit: float | None,
    opts: Mapping[str, Any],
) -> tuple[pl.DataFrame, pl.Series | None]:
    """Give each row of a number column its unit and the source of that unit.

    Adds ``unit_used``, ``unit_origin`` and ``unit_at_fault`` (the unit cell,
    not the value, broke a rule) to ``frame``, quarantines unknown units and
    puts detection limits in place of detection-limit words. Returns the frame
    and the unit column as text, or None when the mapping names none.
    """
    lookup = known_units(column, opts.get("unit_aliases") or {})
    frame = frame.with_columns(
        cells.unit_text.alias("unit_text"), cells.undetectable.alias("undetectable"), pl.lit(False).alias("unit_at_fault")
    )
    unit_raw: pl.Series | None = None
    frame = frame.with_columns(_lookup_unit(pl.col("unit_text"), lookup).alias("cell_unit"))
    unknown_cell_unit = pl.col("unit_text").is_not_null() & pl.col("cell_unit").is_null() & pl.col("error").is_null()
    frame = frame.with_columns(
        pl.when(unknown_cell_unit).then(pl.lit(rules.UNKNOWN_UNIT)).otherwise(pl.col("error")).alias("error"),
        pl.when(unknown_cell_unit)
        .then(pl.lit(f"known units of {column.name}: {', '.join(sorted(set(lookup.values())))}"))
        .otherwise(pl.col("detail"))
        .alias("detail"),
    )

    if plan.unit_column is not None:
        unit_raw = as_text(data[plan.unit_column])
        frame = frame.with_columns(pl.Series("unit_source", unit_raw))
        unit_missing = pl.col("unit_source").is_null() | _fold_for_tokens(pl.col("unit_source")).is_in(
            sorted({"".join(fold_text(t).split()) for t in opts.get("missing_tokens") or ()})
        )
        frame = frame.with_columns(
            pl.when(~unit_missing).then(_lookup_unit(pl.col("unit_source"), lookup)).alias("row_unit"),
            unit_missing.alias("row_unit_missing"),
        )
        bad_unit = (
            pl.col("number").is_not_null()
            & pl.col("cell_unit").is_null()
            & ~pl.col("row_unit_missing")
            & pl.col("row_unit").is_null()
            & pl.col("error").is_null()
        )
        # The quarantine entry shows the unit cell, which is the value at fault.
        frame = frame.with_columns(
            pl.when(bad_unit).then(pl.lit(rules.UNKNOWN_UNIT)).otherwise(pl.col("error")).alias("error"),
            pl.when(bad_unit)
            .then(pl.lit(f"unit column {plan.unit_column!r}; known units of {column.name}: {', '.join(sorted(set(lookup.values())))}"))
            .otherwise(pl.col("detail"))
            .alias("detail"),
            bad_unit.alias("unit_at_fault"),
        )
    else:
        frame = frame.with_columns(
            pl.lit(None, dtype=pl.String).alias("row_unit"), pl.lit(plan.unit_column is None).alias("row_unit_missing")
        )

    if limit is not None and plan.detection_limit is not None:
        limit_unit = declared
    else:
        limit_unit = column.unit
    origin = (
        pl.when(pl.col("undetectable"))
        .then(pl.lit(UNIT_DETECTION_LIMIT))
        .when(pl.col("cell_unit").is_not_null())
        .then(pl.lit(UNIT_FROM_CELL))
        .when(pl.col("row_unit").is_not_null())
        .then(pl.lit(UNIT_FROM_UNIT_COLUMN))
        .when(pl.lit(plan.unit_column is not None))
        .then(pl.lit(UNIT_ASSUMED))
        .otherwise(pl.lit(UNIT_DECLARED))
    )
    frame = frame.with_columns(
        pl.when(pl.col("undetectable")).then(pl.lit(limit, dtype=pl.Float64)).otherwise(pl.col("number")).alias("number"),
        pl.when(pl.col("undetectable"))
        .then(pl.lit(limit_unit, dtype=pl.String))
        .otherwise(pl.coalesce(pl.col("cell_unit"), pl.col("row_unit"), pl.lit(declared, dtype=pl.String)))
        .alias("unit_used"),
        origin.alias("unit_origin"),
    )
    return frame.drop("unit_text", "undetectable", "cell_unit", "unit_source", "row_unit", "row_unit_missing", strict=False), unit_raw


def _cells_at_fault(positions: pl.Series, raw: pl.Series, unit_source: pl.Series | None, unit_at_fault: pl.Series) -> pl.Series:
    """Return a column with the source text of the cell at fault at ``positions`` and null elsewhere.

    That cell is the unit cell where the unit is unknown and the value cell
    otherwise. Only these positions are converted to text.
    """
    texts = as_text(raw.gather(positions))
    if unit_source is not None:
        texts = pl.select(
            pl.when(unit_at_fault.gather(positions)).then(unit_source.gather(positions)).otherwise(texts)
        ).to_series()
    return pl.repeat(None, raw.len(), dtype=pl.String, eager=True).scatter(positions, texts)


def _fold_for_tokens(expr: pl.Expr) -> pl.Expr:
    return expr.str.to_lowercase().str.replace_all(r"\s+", "")


def _lookup_unit(expr: pl.Expr, lookup: Mapping[str, str]) -> pl.Expr:
    keys = list(lookup)
    return normalise_unit_expr(expr).replace_strict(keys, [lookup[k] for k in keys], default=None, return_dtype=pl.String)


def _check_suspected_unit(
    frame: pl.DataFrame, column: Column, declared: str | None, opts: Mapping[str, Any], source_name: str, notes: dict[str, Any]
) -> None:
    """Flag a lab whose declared-unit values fit another unit; stop when configured to."""
    if column.role != "lab" or declared is None:
        return
    settings = opts.get("suspected_unit") or {}
    checked = frame.filter(
        pl.col("unit_origin").is_in([UNIT_DECLARED, UNIT_ASSUMED]) & pl.col("error").is_null() & pl.col("number").is_not_null()
    )["number"]
    finding = suspect_unit(
        column,
        declared,
        checked.to_numpy(),
        min_values=int(settings.get("min_values", 20)),
        max_share_declared=float(settings.get("max_share_declared", 0.5)),
        min_share_suspected=float(settings.get("min_share_suspected", 0.5)),
    )
    if finding is None:
        return
    notes["suspected_unit"] = finding.as_dict()
    if str(settings.get("action", "warn")) == "error":
        raise ExtractError(f"extract {source_name}: {finding.message()} (ingest.suspected_unit.action is 'error')")
    logger.warning("Extract %s: %s", source_name, finding.message())


def _assemble(
    ids: pl.Series, outcomes: Mapping[str, _ColumnOutcome], contract: Contract, n_rows: int, row_offset: int
) -> pl.DataFrame:
    series = [ids.alias(contract.id_column)]
    for column in contract.columns:
        outcome = outcomes.get(column.name)
        if outcome is None:
            continue
        series.append(outcome.values.alias(column.name))
        if column.role == "lab":
            censor = outcome.censor if outcome.censor is not None else pl.repeat(None, n_rows, dtype=pl.String, eager=True)
            series.append(censor.cast(pl.String).alias(f"{column.name}{CENSOR_SUFFIX}"))
    series.append(pl.Series(SOURCE_ROW, np.arange(row_offset + 1, row_offset + n_rows + 1, dtype=np.int64)))
    return pl.DataFrame(series)


def _withhold_ids(entries: pl.DataFrame, ids: pl.Series) -> pl.DataFrame:
    """Blank the raw value of each entry that equals a patient id of the chunk, such as an id shifted into another column.

    The quarantine file promises no patient id. An id of another chunk is not
    caught here.
    """
    if entries.height == 0:
        return entries
    known = as_text(ids).str.strip_chars().drop_nulls()
    raw = pl.col("raw_value").str.strip_chars()
    leaked = raw.is_in(known.implode()).fill_null(False)
    return entries.with_columns(
        pl.when(leaked).then(pl.lit(None, dtype=pl.String)).otherwise(pl.col("raw_value")).alias("raw_value"),
        pl.when(leaked)
        .then(pl.col("detail").fill_null("") + pl.lit(" (value withheld: it equals a patient id of the extract)"))
        .otherwise(pl.col("detail"))
        .str.strip_chars()
        .alias("detail"),
    )


def _quarantine_frame(entries: pl.DataFrame, row_offset: int) -> pd.DataFrame:
    frame = (
        entries.with_columns((pl.col("position") + row_offset + 1).alias(SOURCE_ROW))
        .sort([SOURCE_ROW, "column", "rule"])
        .select(list(rules.QUARANTINE_COLUMNS))
    )
    out = frame.to_pandas()
    out[SOURCE_ROW] = out[SOURCE_ROW].astype("int64")
    for name in ("column", "raw_value", "rule", "detail"):
        out[name] = out[name].astype("string")
    return out


def _top_reasons(quarantine: pd.DataFrame, limit: int = 5) -> str:
    counts = quarantine.groupby(["rule", "column"]).size().sort_values(ascending=False).head(limit)
    return ", ".join(f"{rule} in {column}: {count}" for (rule, column), count in counts.items())


def _to_pandas(canonical: pl.DataFrame, contract: Contract) -> pd.DataFrame:
    frame = canonical.to_pandas()
    dtypes = {c.name: c.dtype for c in contract.columns}
    for name in frame.columns:
        dtype = dtypes.get(name)
        if name == contract.id_column or dtype in ("category", "string") or name.endswith(CENSOR_SUFFIX):
            frame[name] = frame[name].astype("string")
        elif dtype == "label":
            frame[name] = frame[name].astype("Int8")
        elif dtype == "integer":
            frame[name] = frame[name].astype("Int64")
        elif dtype == "number":
            frame[name] = frame[name].astype("float64")
    frame[SOURCE_ROW] = frame[SOURCE_ROW].astype("int64")
    return frame


def content_hash(canonical: pl.DataFrame) -> str:
    """Return the SHA-256 of the cohort's column names, types and CSV text as polars writes it.

    The hash changes when a value, a column, a type or the row order changes,
    and does not depend on Parquet writer metadata.
    """
    digest = hashlib.sha256()
    digest.update(("|".join(f"{name}:{dtype}" for name, dtype in canonical.schema.items()) + "\n").encode("utf-8"))
    for start in range(0, canonical.height, _HASH_SLICE_ROWS):
        part = canonical.slice(start, _HASH_SLICE_ROWS)
        digest.update(part.write_csv(include_header=False).encode("utf-8"))
    return digest.hexdigest()


def _run_validation(
    canonical: pl.DataFrame,
    cohort: pd.DataFrame,
    contract: Contract,
    validate: bool,
    rows_setting: RowsSetting,
    opts: Mapping[str, Any],
) -> dict[str, Any]:
    from hivcomorb.ingest.validate import check_validation, skipped_validation, validate_kept_rows

    if not validate:
        return skipped_validation(contract, "validation was switched off by the caller")
    if len(cohort) == 0:
        return skipped_validation(contract, "no rows were kept")
    validation = validate_kept_rows(cohort, contract, rows_setting.mode_for(len(cohort)), rows=canonical)
    check_validation(validation, fail=bool(opts.get("fail_on_validation", True)))
    return validation


def _validation_summary(validation: Mapping[str, Any]) -> dict[str, Any]:
    """Return the validation part of ``ingest.json``: outcome, statistics, and which kept rows were checked."""
    from hivcomorb.ingest.validate import coverage_text

    summary = {k: validation[k] for k in ("success", "suite", "statistics")}
    if validation.get("skipped"):
        summary["skipped"] = validation["skipped"]
    if validation.get("mode"):
        summary["mode"] = validation["mode"]
        summary["rows_validated"] = validation["rows_validated"]
        summary["rows_represented"] = validation["rows_represented"]
        summary["coverage"] = coverage_text(validation)
    return summary


def _summarise(
    *,
    source_name: str,
    mapping: Mapping[str, Any],
    contract: Contract,
    plan_unmapped: list[str],
    outcomes: Mapping[str, _ColumnOutcome],
    kept: pl.Series,
    quarantine: pd.DataFrame,
    duplicates: dict[str, int],
    counts: tuple[int, int, int],
) -> dict[str, Any]:
    """Return the counts other stages, the report and MLflow read; no patient value enters it."""
    n_rows, rows_kept, rows_quarantined = counts
    out_of_usual: dict[str, int] = {}
    censored: dict[str, dict[str, int]] = {}
    conversions: dict[str, list[dict[str, Any]]] = {}
    units_assumed: dict[str, int] = {}
    suspected: list[dict[str, Any]] = []
    ambiguous: dict[str, Any] = {}
    flags_without_value: dict[str, int] = {}
    for column in contract.columns:
        outcome = outcomes.get(column.name)
        if outcome is None:
            continue
        if "suspected_unit" in outcome.notes:
            suspected.append(outcome.notes["suspected_unit"])
        if "ambiguous_commas" in outcome.notes:
            ambiguous[column.name] = outcome.notes["ambiguous_commas"]
        if "censor_flags_without_value" in outcome.notes:
            flags_without_value[column.name] = outcome.notes["censor_flags_without_value"]
        if column.dtype not in ("number", "integer"):
            continue
        values = outcome.values.filter(kept).cast(pl.Float64)
        if column.usual is not None:
            count = int(rules.outside_range(values, column.usual).sum())
            if count:
                out_of_usual[column.name] = count
        if outcome.censor is not None:
            flags = outcome.censor.filter(kept).drop_nulls().value_counts()
            if flags.height:
                censored[column.name] = {str(row[0]): int(row[1]) for row in flags.iter_rows()}
        if outcome.unit_used is not None and column.unit is not None and _any_unit_note(outcome, column):
            frame = pl.DataFrame({"unit": outcome.unit_used, "origin": outcome.unit_origin, "value": outcome.values})
            frame = frame.filter(kept).filter(pl.col("value").is_not_null())
            converted = frame.filter(pl.col("unit") != column.unit).group_by(["unit", "origin"]).len().sort(["unit", "origin"])
            if converted.height:
                conversions[column.name] = [
                    {"from": unit, "to": column.unit, "origin": origin, "count": int(n)} for unit, origin, n in converted.iter_rows()
                ]
                for unit, origin, n in converted.iter_rows():
                    logger.info("Column %s: converted %d values from %s to %s (unit %s)", column.name, n, unit, column.unit, _origin_text(origin))
            assumed = frame.filter(pl.col("origin") == UNIT_ASSUMED)
            if assumed.height:
                units_assumed[column.name] = assumed.height
                logger.warning(
                    "Column %s: %d values have an empty unit cell and were read in %s",
                    column.name,
                    assumed.height,
                    assumed["unit"][0],
                )

    by_rule = quarantine.groupby("rule")[SOURCE_ROW].nunique().sort_index()
    by_column_rule = quarantine.groupby(["column", "rule"])[SOURCE_ROW].nunique().sort_index()
    by_column: dict[str, dict[str, int]] = {}
    for (column_name, rule), count in by_column_rule.items():
        by_column.setdefault(str(column_name), {})[str(rule)] = int(count)
    if out_of_usual:
        logger.info(
            "Values outside the usual clinical range (kept): %s",
            ", ".join(f"{name} {count}" for name, count in out_of_usual.items()),
        )
    return {
        "source": source_name,
        "mapping": mapping.get("name"),
        "contract_version": contract.version,
        "rows_read": n_rows,
        "rows_kept": rows_kept,
        "rows_quarantined": rows_quarantined,
        "quarantine_entries": int(len(quarantine)),
        "quarantine_by_rule": {str(rule): int(count) for rule, count in by_rule.items()},
        "quarantine_by_column": by_column,
        "duplicate_ids": duplicates,
        "columns_present": [c.name for c in contract.columns if c.name in outcomes],
        "labs_absent": [name for name in contract.labs if name not in outcomes],
        "unmapped_columns": list(plan_unmapped),
        "out_of_usual_range": out_of_usual,
        "censored": censored,
        "unit_conversions": conversions,
        "units_assumed": units_assumed,
        "suspected_units": suspected,
        "ambiguous_commas": ambiguous,
        "censor_flags_without_value": flags_without_value,
    }


def _any_unit_note(outcome: _ColumnOutcome, column: Column) -> bool:
    """Return whether any row of ``outcome`` was converted or read in an assumed unit, kept or not.

    When no row was, the column has no conversion or assumed-unit count, and
    ``_summarise`` can skip the grouping of its rows.
    """
    converted = (outcome.unit_used != column.unit).any()
    assumed = (outcome.unit_origin == UNIT_ASSUMED).any()
    return bool(converted or assumed)


def _origin_text(origin: str) -> str:
    return {
        UNIT_FROM_CELL: "written in the cell",
        UNIT_FROM_UNIT_COLUMN: "from the unit column",
        UNIT_DECLARED: "declared in the mapping",
        UNIT_ASSUMED: "declared in the mapping; the unit cell was empty",
        UNIT_DETECTION_LIMIT: "of the mapping's detection limit",
    }.get(origin, origin)

