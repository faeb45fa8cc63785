"""The demographic recoverability probe (``hivcomorb probe``).

Measures how well each demographic column can be predicted from lab values
alone and from labs plus social columns, against chance, and whether the
demographic-unaware comorbidity models encode the same information. Writes
``artifacts/<dataset>/probe/probe.json`` and figures in ``probe/figures``.
"""

from __future__ import annotations

from typing import Any

from hivcomorb.probe.report import report_section
from hivcomorb.probe.stage import run

__all__ = ["run", "report_section", "register_cli"]




def register_cli(subparsers: Any) -> None:
    """Add ``hivcomorb probe``."""
    from hivcomorb.pipeline import add_stage_command

    add_stage_command(
        subparsers,
        "probe",
        help="test whether demographics can be recovered from lab values",
        description="Predict each demographic column from lab values (and labs plus social columns) with "
        "bootstrap intervals and permutation tests, and probe the demographic-unaware models for the same "
        "information. Reads the ingest and train outputs; writes artifacts/<dataset>/probe/probe.json.",
    )
