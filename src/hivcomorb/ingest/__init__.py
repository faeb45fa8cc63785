"""Ingestion of hospital extracts into the canonical cohort (the ``ingest`` stage).

Public API
----------
read_extract
    Read a CSV, Parquet or Excel file into polars, detecting encoding and delimiter.
load_mapping
    Read and check a site mapping file (``conf/mappings/*.yaml``).
ingest_frame, ingest_file
    Turn an extract into an :class:`IngestResult`: canonical cohort, quarantine
    list and summary. ``ingest_frame`` accepts chunks with a ``row_offset``.
run, report_section, register_cli
    The pipeline stage, its report section and ``hivcomorb ingest``.
"""

from hivcomorb.ingest.canonical import IngestResult, default_options, ingest_file, ingest_frame
from hivcomorb.ingest.mapping import identity_mapping, load_mapping
from hivcomorb.ingest.readers import read_extract
from hivcomorb.ingest.stage import register_cli, report_section, run

__all__ = [
    "IngestResult",
    "default_options",
    "identity_mapping",
    "ingest_file",
    "ingest_frame",
    "load_mapping",
    "read_extract",
    "register_cli",
    "report_section",
    "run",
]
