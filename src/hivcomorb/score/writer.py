"""Streaming, atomic writers for the scores and the quarantine file.

Each writer appends chunk after chunk to a temporary file beside its final
path (:func:`hivcomorb.files.atomic_path`). :meth:`ChunkWriter.commit` closes
the file and moves it into place. If scoring fails or is interrupted first,
:meth:`ChunkWriter.discard` (called by the ``with`` block on error) removes the
temporary file, so no partial file ever carries a final name.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any, Mapping, Sequence

import pandas as pd
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from hivcomorb.errors import ExtractError
from hivcomorb.files import atomic_path

FORMATS = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv"}
METADATA_KEY = b"hivcomorb"

QUARANTINE_SCHEMA = pa.schema(
    [
        pa.field("source_row", pa.int64()),
        pa.field("column", pa.string()),
        pa.field("raw_value", pa.string()),
        pa.field("rule", pa.string()),
        pa.field("detail", pa.string()),
    ]
)


def output_format(path: str | Path) -> str:
    """Return ``parquet`` or ``csv`` from the file suffix; raise ExtractError for any other."""
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        raise ExtractError(f"output file {path} must end in .parquet or .csv, got {suffix or 'no suffix'!r}")
    return FORMATS[suffix]


class ChunkWriter:
    """Append pandas chunks to a Parquet or CSV file that appears only on :meth:`commit`.

    Parameters
    ----------
    path : str or Path
        Final file path; the format follows the suffix.
    schema : pyarrow.Schema
        Column types of every chunk. Chunks are cast to it, so a chunk whose
        reason columns are all empty still writes strings.
    metadata : mapping, optional
        Written as JSON under the ``hivcomorb`` key of the Parquet file's
        key-value metadata (ignored for CSV).
    repeated : sequence of str, optional
        Parquet columns whose values repeat, such as stamps and reason texts.
        Only these are dictionary-encoded: trying it on probabilities, which
        never repeat, took about 40% of the time of writing a chunk.
    """

    def __init__(
        self,
        path: str | Path,
        schema: pa.Schema,
        metadata: Mapping[str, Any] | None = None,
        file_format: str | None = None,
        repeated: Sequence[str] = (),
    ):
        self.path = Path(path)
        self.format = file_format or output_format(path)
        self.repeated = list(repeated)
        if metadata:
            schema = schema.with_metadata({METADATA_KEY: json.dumps(dict(metadata), sort_keys=True).encode("utf-8")})
        self.schema = schema
        self.rows = 0
        self._stack = contextlib.ExitStack()
        self._tmp: Path = self._stack.enter_context(atomic_path(self.path))
        self._writer: Any = None

    def write(self, frame: pd.DataFrame) -> None:
        """Append ``frame``; its columns must match the schema's names."""
        table = pa.Table.from_pandas(frame, schema=self.schema, preserve_index=False)
        if self._writer is None:
            if self.format == "parquet":
                self._writer = pq.ParquetWriter(self._tmp, self.schema, compression="zstd", use_dictionary=self.repeated)
            else:
                self._writer = pa_csv.CSVWriter(self._tmp, self.schema)
        self._writer.write_table(table)
        self.rows += len(frame)

    def _close(self) -> None:
        if self._writer is None:
            # No chunk arrived: write the header (CSV) or an empty table (Parquet).
            self.write(pd.DataFrame({name: pd.Series([], dtype=object) for name in self.schema.names}))
        self._writer.close()

    def commit(self) -> Path:
        """Close the file and move it to its final path."""
        self._close()
        self._stack.close()
        return self.path

    def discard(self) -> None:
        """Close and remove the temporary file; the final path is left as it was."""
        try:
            if self._writer is not None:
                self._writer.close()
        finally:
            # Leaving the atomic_path context with an exception removes the file.
            self._stack.__exit__(ExtractError, ExtractError("scoring did not finish"), None)

    def __enter__(self) -> "ChunkWriter":
        return self

    def __exit__(self, exc_type: Any, exc: Any, traceback: Any) -> None:
        if exc_type is not None:
            self.discard()


def read_parquet_metadata(path: str | Path) -> dict[str, Any]:
    """Return the stamps stored in a scores Parquet file's ``hivcomorb`` metadata."""
    metadata = pq.read_schema(path).metadata or {}
    raw = metadata.get(METADATA_KEY)
    return json.loads(raw.decode("utf-8")) if raw else {}
