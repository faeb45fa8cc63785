"""Chunked reading of an extract, with the same parsing options as :mod:`hivcomorb.ingest`.

CSV and Parquet files are read in chunks of ``chunk_rows`` rows, so memory
does not grow with the file size. Each Parquet chunk reads only its own rows.
CSV chunks come from the polars streaming engine, which parses ahead of the
consumer: about 0.7 GB of text columns at most, whatever the file size
(polars 2.1, measured on 2- and 6-million-row extracts). A CSV file that is
not UTF-8 is first transcoded to a temporary UTF-8 copy, because polars reads
UTF-8 only. Excel files are read whole (a worksheet has at most 1,048,576
rows) and then cut into chunks.

Before scoring, one pass over the id column counts the rows and finds patient
ids that occur more than once anywhere in the file, since
``ingest_frame`` sees one chunk at a time.
"""

from __future__ import annotations

import codecs
import logging
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import polars as pl

from hivcomorb.errors import ExtractError
from hivcomorb.ingest.parse import as_text
from hivcomorb.ingest.readers import (
    CSV_SUFFIXES,
    EXCEL_SUFFIXES,
    PARQUET_SUFFIXES,
    check_extract_file,
    detect_delimiter,
    describe_csv_problem,
    detect_encoding,
    read_extract,
)

logger = logging.getLogger(__name__)

_SAMPLE_BYTES = 1 << 16
_TRANSCODE_CHUNK_CHARS = 1 << 22


@dataclass
class ExtractSource:
    """An extract file opened for chunked reading.

    Use it as a context manager: a temporary UTF-8 copy of a CSV file, if one
    was needed, is removed on exit.
    """

    path: Path
    format: str
    chunk_rows: int
    encoding: str | None = None
    delimiter: str | None = None
    sheet: str | None = None
    _scan_path: Path | None = None
    _frame: pl.DataFrame | None = None
    _tmpdir: Any = field(default=None, repr=False)

    def __enter__(self) -> "ExtractSource":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        """Remove the temporary UTF-8 copy, if any."""
        if self._tmpdir is not None:
            self._tmpdir.cleanup()
            self._tmpdir = None

    def _lazy(self) -> pl.LazyFrame:
        if self.format == "csv":
            return pl.scan_csv(
                self._scan_path,
                separator=self.delimiter,
                infer_schema=False,
                quote_char='"',
                truncate_ragged_lines=False,
            )
        if self.format == "parquet":
            return pl.scan_parquet(self.path)
        assert self._frame is not None
        return self._frame.lazy()

    @property
    def columns(self) -> list[str]:
        """Header of the extract, as ingestion reads it."""
        try:
            return list(self._lazy().collect_schema().names())
        except pl.exceptions.PolarsError:
            raise ExtractError(f"extract file {self.path} could not be read: {self._problem()}") from None

    def _problem(self) -> str:
        """Describe why the reader failed, without the rows that the parser's own message quotes."""
        if self.format == "csv" and self._scan_path is not None:
            # The scanned file is UTF-8: the extract itself, or its transcoded copy.
            return describe_csv_problem(self._scan_path, self.delimiter or ",", "utf-8")
        return "the file may be truncated or damaged; export the extract again"

    def chunks(self) -> Iterator[tuple[pl.DataFrame, int]]:
        """Yield ``(frame, row_offset)`` for consecutive chunks; ``row_offset`` rows precede the chunk."""
        if self.format == "parquet":
            yield from self._parquet_chunks()
            return
        offset = 0
        try:
            for frame in self._lazy().collect_batches(chunk_size=self.chunk_rows):
                if frame.height == 0:
                    continue
                # The streaming engine may return batches larger than the requested size.
                for start in range(0, frame.height, self.chunk_rows):
                    piece = frame.slice(start, self.chunk_rows)
                    yield piece, offset
                    offset += piece.height
        except pl.exceptions.PolarsError:
            raise ExtractError(f"extract file {self.path} could not be read: {self._problem()}") from None

    def _parquet_chunks(self) -> Iterator[tuple[pl.DataFrame, int]]:
        # Each chunk reads only its own row range, when scoring requests it. With polars 2.1
        # the streaming engine's batches ran ahead of scoring and held about 1.8 GB of a
        # 10-million-row extract in memory while scoring used one chunk.
        lazy = self._lazy()
        offset = 0
        try:
            while True:
                piece = lazy.slice(offset, self.chunk_rows).collect()
                if piece.height == 0:
                    return
                yield piece, offset
                offset += piece.height
        except pl.exceptions.PolarsError as exc:
            raise ExtractError(
                f"extract file {self.path} could not be read after row {offset} ({type(exc).__name__}). "
                "The file may be truncated or damaged, so export the extract again"
            ) from None

    def id_census(self, id_column: str) -> tuple[int, set[str]]:
        """Count the rows and return the patient ids that occur more than once.

        Ids are compared as ingestion compares them (as text, whitespace
        trimmed). A first pass keeps one 64-bit hash per row (8 bytes a row,
        80 MB for 10 million rows). A second pass reads back only the ids
        whose hash repeats, so a hash collision never makes two different ids
        duplicates.
        """
        raw = pl.col(id_column).cast(pl.String).str.strip_chars()
        try:
            hashes = self._lazy().select(raw.hash(seed=0).alias("h")).collect(engine="streaming")["h"].to_numpy()
        except pl.exceptions.ColumnNotFoundError as exc:
            raise ExtractError(f"extract file {self.path} has no id column {id_column!r}; check the mapping's id_column") from exc
        except pl.exceptions.PolarsError:
            raise ExtractError(f"extract file {self.path} could not be read: {self._problem()}") from None
        n_rows = int(hashes.size)
        ordered = np.sort(hashes)
        repeated = np.unique(ordered[1:][ordered[1:] == ordered[:-1]])
        if repeated.size == 0:
            return n_rows, set()
        candidates = (
            self._lazy()
            .filter(raw.hash(seed=0).is_in(pl.Series(repeated, dtype=pl.UInt64).implode()))
            .select(pl.col(id_column))
            .collect(engine="streaming")
            .to_series()
        )
        ids = as_text(candidates).str.strip_chars().drop_nulls()
        return n_rows, set(ids.filter(ids.is_duplicated()).to_list())


def open_extract(
    path: str | Path,
    *,
    chunk_rows: int,
    sheet: str | None = None,
    encoding: str | None = None,
    delimiter: str | None = None,
) -> ExtractSource:
    """Open an extract for chunked reading.

    Parameters
    ----------
    path : str or Path
        CSV (``.csv``, ``.tsv``, ``.txt``, ``.tab``), Parquet or Excel file.
    chunk_rows : int
        Rows per chunk.
    sheet, encoding, delimiter : str, optional
        As for :func:`hivcomorb.ingest.read_extract`; detected when omitted.

    Raises
    ------
    ExtractError
        If the file is missing, empty or of an unknown format.
    """
    path = Path(path)
    if chunk_rows < 1:
        raise ExtractError(f"chunk size must be at least 1 row, got {chunk_rows}; set --chunk-rows or score.chunk_rows")
    path = check_extract_file(path)
    suffix = path.suffix.lower()
    if suffix in PARQUET_SUFFIXES:
        return ExtractSource(path=path, format="parquet", chunk_rows=chunk_rows)
    if suffix in EXCEL_SUFFIXES:
        frame = read_extract(path, sheet=sheet)
        return ExtractSource(path=path, format="excel", chunk_rows=chunk_rows, sheet=sheet, _frame=frame)
    if suffix in CSV_SUFFIXES or not suffix:
        return _open_csv(path, chunk_rows, encoding, delimiter)
    raise ExtractError(
        f"extract file {path} has an unknown format {suffix!r}; use CSV (.csv, .tsv, .txt), Parquet (.parquet) or Excel (.xlsx)"
    )


def _open_csv(path: Path, chunk_rows: int, encoding: str | None, delimiter: str | None) -> ExtractSource:
    if encoding is None:
        encoding = detect_encoding(path)
    try:
        codec = codecs.lookup(encoding).name
    except LookupError as exc:
        raise ExtractError(f"encoding {encoding!r} given for {path} is not a known codec; try utf-8, cp1252 or latin-1") from exc

    source = ExtractSource(path=path, format="csv", chunk_rows=chunk_rows, encoding=encoding, _scan_path=path)
    if codec != "utf-8" or _has_bom(path):
        source._tmpdir = tempfile.TemporaryDirectory(prefix="hivcomorb-score-")
        source._scan_path = Path(source._tmpdir.name) / "extract-utf8.csv"
        _transcode(path, encoding, source._scan_path)

    with open(source._scan_path, "rb") as handle:
        sample = handle.read(_SAMPLE_BYTES).decode("utf-8", errors="replace")
    if not sample.strip():
        source.close()
        raise ExtractError(f"extract file {path} is empty (no header line); export the extract again")
    if delimiter is None:
        delimiter = detect_delimiter(sample)
    elif delimiter.lower() in ("tab", "\\t"):
        delimiter = "\t"
    if len(delimiter) != 1:
        source.close()
        raise ExtractError(f"delimiter {delimiter!r} must be one character (or 'tab')")
    source.delimiter = delimiter
    delimiter_name = "tab" if delimiter == "\t" else repr(delimiter)
    logger.info("Reading %s in chunks of %d rows: encoding %s, delimiter %s", path.name, chunk_rows, encoding, delimiter_name)
    return source


def _has_bom(path: Path) -> bool:
    with open(path, "rb") as handle:
        return handle.read(len(codecs.BOM_UTF8)) == codecs.BOM_UTF8


def _transcode(path: Path, encoding: str, target: Path) -> None:
    """Copy a text file to UTF-8 without a byte order mark, in bounded memory."""
    codec = "utf-8-sig" if codecs.lookup(encoding).name == "utf-8" else encoding
    try:
        with open(path, encoding=codec, newline="") as src, open(target, "w", encoding="utf-8", newline="") as dst:
            shutil.copyfileobj(src, dst, _TRANSCODE_CHUNK_CHARS)
    except UnicodeDecodeError as exc:
        raise ExtractError(f"extract file {path} is not valid {encoding} ({exc.reason}); give the right --encoding") from exc
