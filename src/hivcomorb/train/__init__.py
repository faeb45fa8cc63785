"""The ``train`` stage: every model of the zoo in both settings, compared like a clinical study.

Each model is cross-validated on the same repeated, multi-label stratified
folds in the demographic-aware setting (labs, social and demographic columns)
and the demographic-unaware setting (labs and social columns). Tuning,
calibration and decision thresholds are chosen on inner folds only (see
:mod:`hivcomorb.models`). Out-of-fold predictions are scored with bootstrap
confidence intervals over patients, the two settings are compared with a
paired bootstrap on the same patients and, on the synthetic cohort, every model
is compared with the true risks (the oracle). The champion of each setting is
refitted on every patient with a known label and saved as a
:class:`~hivcomorb.bundle.ModelBundle`.

Outputs under ``artifacts/<dataset>/train/``: ``folds.parquet``,
``oof.parquet``, ``models/<setting>.joblib``, ``train.json`` and
``figures/*.png``. None of them contains a patient identifier.
"""

from __future__ import annotations

from hivcomorb.train._report import report_section
from hivcomorb.train._stage import register_cli, run

__all__ = ["run", "report_section", "register_cli"]
