"""Reading extracts from CSV, Parquet and Excel files into polars.

CSV files are read with every column as text so that nothing is converted
before parsing. The encoding (UTF-8 with or without a byte order mark,
UTF-16 with one, Windows-1252 or Latin-1) and the delimiter (comma, semicolon, tab or pipe)
are detected and logged unless given. Quoted fields may contain delimiters
and line breaks, and CRLF line ends are accepted.
"""

from __future__ import annotations

import codecs
import csv
import io
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import polars as pl

from hivcomorb.errors import ExtractError

logger = logging.getLogger(__name__)

CSV_SUFFIXES = {".csv", ".tsv", ".txt", ".tab"}
PARQUET_SUFFIXES = {".parquet", ".pq"}
EXCEL_SUFFIXES = {".xlsx", ".xlsm", ".xls"}
DELIMITERS = (",", ";", "\t", "|")
_SAMPLE_BYTES = 1 << 16
_CHECK_CHUNK_BYTES = 1 << 22
_UTF16_BOMS = (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)
_UTF8_BOM = codecs.BOM_UTF8
# Bytes 0x81, 0x8D, 0x8F, 0x90 and 0x9D have no character in Windows-1252, so
# a file containing them is read as Latin-1, which maps every byte.
_CP1252_UNDEFINED_BYTES = (b"\x81", b"\x8d", b"\x8f", b"\x90", b"\x9d")


@dataclass(frozen=True)
class ReadInfo:
    """Reading details of an extract: format, and for text files the encoding and delimiter."""

    path: str
    format: str
    encoding: str | None = None
    delimiter: str | None = None
    sheet: str | None = None
    detected: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        """Return the fields as plain data for ``ingest.json``."""
        data = asdict(self)
        data["detected"] = list(self.detected)
        return data


def read_extract(
    path: str | Path,
    *,
    sheet: str | None = None,
    encoding: str | None = None,
    delimiter: str | None = None,
) -> pl.DataFrame:
    """Read an extract file into a polars DataFrame.

    Parameters
    ----------
    path : str or Path
        A CSV (``.csv``, ``.tsv``, ``.txt``), Parquet or Excel (``.xlsx``) file.
    sheet : str, optional
        Excel sheet name; the first sheet by default.
    encoding : str, optional
        Text encoding of a CSV file (any Python codec name); detected when omitted.
    delimiter : str, optional
        Field delimiter of a CSV file (``\\t`` or ``tab`` for a tab); detected when omitted.

    Returns
    -------
    polars.DataFrame
        CSV and Excel columns as strings; Parquet columns keep their types.

    Raises
    ------
    ExtractError
        If the file is missing, empty, unreadable or of an unknown format.
    """
    frame, _ = read_extract_with_info(path, sheet=sheet, encoding=encoding, delimiter=delimiter)
    return frame


def check_extract_file(path: str | Path) -> Path:
    """Return ``path`` as a Path; raise ExtractError if it is not a non-empty file."""
    path = Path(path)
    if path.is_dir():
        raise ExtractError(f"extract {path} is a directory, not a file; pass the extract file itself")
    if not path.is_file():
        raise ExtractError(f"extract file not found: {path}")
    if path.stat().st_size == 0:
        raise ExtractError(f"extract file {path} is empty (0 bytes); export the extract again")
    return path


def read_extract_with_info(
    path: str | Path,
    *,
    sheet: str | None = None,
    encoding: str | None = None,
    delimiter: str | None = None,
) -> tuple[pl.DataFrame, ReadInfo]:
    """Read an extract like :func:`read_extract` and also return how it was read."""
    path = check_extract_file(path)
    suffix = path.suffix.lower()
    if suffix in PARQUET_SUFFIXES:
        frame, info = _read_parquet(path)
    elif suffix in EXCEL_SUFFIXES:
        frame, info = _read_excel(path, sheet)
    elif suffix in CSV_SUFFIXES or not suffix:
        frame, info = _read_csv(path, encoding, delimiter)
    else:
        raise ExtractError(
            f"extract file {path} has an unknown format {suffix!r}; use CSV (.csv, .tsv, .txt), Parquet (.parquet) or Excel (.xlsx)"
        )
    _check_header(frame, path)
    logger.info(
        "Read %s: %s, %d rows, %d columns%s",
        path.name,
        info.format,
        frame.height,
        frame.width,
        _describe_detection(info),
    )
    return frame, info


def _describe_detection(info: ReadInfo) -> str:
    parts = []
    if info.encoding:
        parts.append(f"encoding {info.encoding} ({'detected' if 'encoding' in info.detected else 'given'})")
    if info.delimiter:
        shown = "tab" if info.delimiter == "\t" else repr(info.delimiter)
        parts.append(f"delimiter {shown} ({'detected' if 'delimiter' in info.detected else 'given'})")
    if info.sheet:
        parts.append(f"sheet {info.sheet!r}")
    return ", " + ", ".join(parts) if parts else ""


def _check_header(frame: pl.DataFrame, path: Path) -> None:
    blank = [i + 1 for i, name in enumerate(frame.columns) if not str(name).strip()]
    if blank:
        raise ExtractError(f"extract file {path} has header cells without a name at positions {blank}; name every column")


def _read_parquet(path: Path) -> tuple[pl.DataFrame, ReadInfo]:
    try:
        frame = pl.read_parquet(path)
    except (OSError, pl.exceptions.ComputeError) as exc:
        raise ExtractError(f"extract file {path} could not be read as Parquet: {exc}") from exc
    if frame.width == 0:
        raise ExtractError(f"extract file {path} has no columns")
    return frame, ReadInfo(path=str(path), format="parquet")


def _sheet_names(path: Path) -> list[str]:
    """Return the workbook's sheet names, or an empty list if they cannot be read."""
    try:
        import fastexcel

        return list(fastexcel.read_excel(path).sheet_names)
    except Exception:  # a damaged workbook is reported by the read itself
        return []


def _read_excel(path: Path, sheet: str | None) -> tuple[pl.DataFrame, ReadInfo]:
    sheets = _sheet_names(path)
    if sheet is not None and sheets and sheet not in sheets:
        raise ExtractError(f"extract file {path} has no sheet {sheet!r}; its sheets are {sheets}. Pass one of them with --sheet")
    try:
        if sheet is None:
            frame = pl.read_excel(path, sheet_id=1, infer_schema_length=0)
        else:
            frame = pl.read_excel(path, sheet_name=sheet, infer_schema_length=0)
    except ValueError as exc:
        raise ExtractError(f"extract file {path}: sheet {sheet!r} could not be read: {exc}") from exc
    except Exception as exc:  # fastexcel raises its own exception types for damaged workbooks
        if sheet is not None and "not found" in str(exc).lower():
            raise ExtractError(f"extract file {path} has no sheet {sheet!r}; its sheets are {sheets}. Pass one of them with --sheet") from exc
        raise ExtractError(f"extract file {path} could not be read as Excel: {exc}") from exc
    if sheet is None and len(sheets) > 1:
        logger.warning(
            "Extract %s has %d sheets %s; reading the first, %r. Choose another with --sheet",
            path.name, len(sheets), sheets, sheets[0],
        )
    if frame.width == 0:
        raise ExtractError(f"extract file {path}: the sheet {sheet or '(first)'} is empty; its sheets are {sheets}. Choose one with --sheet")
    frame = frame.with_columns(pl.all().cast(pl.String))
    return frame, ReadInfo(path=str(path), format="excel", sheet=sheet or "(first sheet)")


def _read_csv(path: Path, encoding: str | None, delimiter: str | None) -> tuple[pl.DataFrame, ReadInfo]:
    detected: list[str] = []
    if encoding is None:
        encoding = detect_encoding(path)
        detected.append("encoding")
    else:
        try:
            codecs.lookup(encoding)
        except LookupError as exc:
            raise ExtractError(f"encoding {encoding!r} given for {path} is not a known codec; try utf-8, cp1252 or latin-1") from exc

    is_utf8 = codecs.lookup(encoding).name in ("utf-8", "utf-8-sig")
    if is_utf8:
        source: Any = path
        sample = _read_sample(path).decode("utf-8", errors="replace")
    else:
        try:
            text = path.read_bytes().decode(encoding)
        except UnicodeDecodeError as exc:
            raise ExtractError(f"extract file {path} is not valid {encoding} at byte {exc.start}; give the right --encoding") from exc
        source = io.BytesIO(text.encode("utf-8"))
        sample = text[:_SAMPLE_BYTES]
    sample = sample.lstrip("\ufeff")
    if not sample.strip():
        raise ExtractError(f"extract file {path} is empty (no header line); export the extract again")

    if delimiter is None:
        delimiter = detect_delimiter(sample)
        detected.append("delimiter")
    elif delimiter.lower() in ("tab", "\\t"):
        delimiter = "\t"
    if len(delimiter) != 1:
        raise ExtractError(f"delimiter {delimiter!r} must be one character (or 'tab')")

    try:
        frame = pl.read_csv(
            source,
            separator=delimiter,
            infer_schema=False,
            quote_char='"',
            truncate_ragged_lines=False,
        )
    except pl.exceptions.PolarsError as exc:
        # The parser's own message quotes the rows around the fault, patient ids included, so it is not shown.
        raise ExtractError(
            f"extract file {path} could not be read as CSV with delimiter {delimiter!r} and encoding {encoding}: "
            f"{describe_csv_problem(path, delimiter, encoding)}"
        ) from None
    return frame, ReadInfo(path=str(path), format="csv", encoding=encoding, delimiter=delimiter, detected=tuple(detected))


def describe_csv_problem(path: str | Path, delimiter: str, encoding: str) -> str:
    """Return where a CSV file breaks the format, by data row number, and the fix, without any cell content.

    Called after the fast reader has failed; reads the file once more with
    Python's strict CSV reader, which stops at the first bad row. Rows are
    counted as everywhere in hivcomorb: data row 1 is the first after the header.
    """
    row = 0
    try:
        with open(path, encoding=encoding, newline="") as handle:
            reader = csv.reader(handle, delimiter=delimiter, quotechar='"', strict=True)
            header = next(reader, None)
            if header is None:
                return "it has no header row; export the extract again with its header"
            for row, fields in enumerate(reader, start=1):
                if fields and len(fields) != len(header):
                    return (
                        f"data row {row} has {len(fields)} fields where the header has {len(header)}; check the "
                        "delimiters and quotes of that row, or pass --delimiter"
                    )
    except csv.Error:
        return (
            f"the quotes of data row {row + 1} do not pair up (a quote that is never closed, or text after a closing "
            "quote); fix that row's quotes and export again"
        )
    except UnicodeDecodeError:
        return f"it is not valid {encoding} text; pass the right --encoding"
    return "the CSV reader stopped at a row it could not parse; check the file's quotes and delimiters, or pass --delimiter and --encoding"


def _read_sample(path: Path) -> bytes:
    with open(path, "rb") as handle:
        return handle.read(_SAMPLE_BYTES)


def detect_encoding(path: str | Path) -> str:
    """Return the encoding of a text file: ``utf-16``, ``utf-8-sig``, ``utf-8``, ``cp1252`` or ``latin-1``.

    A UTF-16 byte order mark gives ``utf-16``. Otherwise the whole file is
    checked as UTF-8 in chunks without keeping it in memory. A file that is
    not valid UTF-8 is read as Windows-1252 unless it contains a byte that
    Windows-1252 leaves undefined; then it is Latin-1.

    Raises
    ------
    ExtractError
        If the start of the file contains NUL bytes without a UTF-16 byte
        order mark, as UTF-16 or UTF-32 text without one does.
    """
    path = Path(path)
    sample = _read_sample(path)
    if sample.startswith(_UTF16_BOMS):
        return "utf-16"
    if b"\x00" in sample:
        raise ExtractError(
            f"extract file {path} contains NUL bytes, so it is not UTF-8, Windows-1252 or Latin-1 text; "
            "if it is UTF-16 without a byte order mark, pass --encoding utf-16-le (or utf-16-be), "
            "or export it again as UTF-8"
        )
    decoder = codecs.getincrementaldecoder("utf-8")()
    try:
        with open(path, "rb") as handle:
            has_bom = handle.read(len(_UTF8_BOM)) == _UTF8_BOM
            handle.seek(0)
            for chunk in iter(lambda: handle.read(_CHECK_CHUNK_BYTES), b""):
                decoder.decode(chunk)
            decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        data = path.read_bytes()
        return "latin-1" if any(byte in data for byte in _CP1252_UNDEFINED_BYTES) else "cp1252"
    return "utf-8-sig" if has_bom else "utf-8"


def detect_delimiter(sample: str) -> str:
    """Return the delimiter among comma, semicolon, tab and pipe that splits ``sample`` most consistently.

    Each candidate parses the complete records of the sample (quotes
    respected). The winner gives every record the same field count, and the
    most fields; a comma is returned when no candidate splits the header.
    """
    lines = sample.splitlines(keepends=True)
    if len(lines) > 1 and not sample.endswith(("\n", "\r")):
        lines = lines[:-1]
    text = "".join(lines)
    best: tuple[int, int, str] | None = None
    for candidate in DELIMITERS:
        try:
            records = [r for r in csv.reader(io.StringIO(text, newline=""), delimiter=candidate) if r]
        except csv.Error:
            continue
        records = records[:200]
        if not records or len(records[0]) < 2:
            continue
        width = len(records[0])
        consistent = sum(1 for r in records if len(r) == width)
        score = (consistent, width, candidate)
        if best is None or score[:2] > best[:2]:
            best = score
    return best[2] if best else ","
