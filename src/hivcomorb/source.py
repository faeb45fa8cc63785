"""The ``source`` stage: put the dataset's raw extract where ingestion reads it.

``source.kind`` in the dataset configuration chooses how:

``synth``
    Generate the synthetic cohort (``source.n_patients``, the run's seed) and
    write ``source/extract.parquet`` and the true risks ``source/truth.parquet``.
``nhanes``
    Build the NHANES site extract from the public survey files in
    ``source.path`` (default ``../shared/data/nhanes-2017-2018``).
``file``
    Use the hospital extract at ``source.path`` as it is; ingestion reads it
    directly, so nothing is copied. When ``source.truth`` names a Parquet file
    of true label probabilities (a simulation study), it is copied to
    ``source/truth.parquet`` so that evaluation reports oracle figures.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

from hivcomorb.context import RunContext
from hivcomorb.errors import ConfigError, DataNotFoundError
from hivcomorb.files import atomic_path, file_sha256

logger = logging.getLogger(__name__)

KINDS = ("synth", "nhanes", "file")


def extract_path(ctx: RunContext) -> Path:
    """Return the raw extract that ingestion reads for this run."""
    source = ctx.config.get("source") or {}
    if source.get("kind") == "file":
        return _configured_path(ctx)
    return ctx.artifacts / "source" / "extract.parquet"


def _configured_path(ctx: RunContext) -> Path:
    raw = (ctx.config.get("source") or {}).get("path")
    if not raw:
        raise ConfigError(f"dataset {ctx.dataset!r}: source.kind is 'file' but source.path is not set")
    path = Path(raw)
    if not path.is_absolute():
        path = ctx.root / path
    if not path.is_file():
        raise DataNotFoundError(f"dataset {ctx.dataset!r}: extract {path} not found; check source.path in its configuration")
    return path


def _copy_truth(ctx: RunContext, out_dir: Path) -> None:
    target = out_dir / "truth.parquet"
    raw = (ctx.config.get("source") or {}).get("truth")
    if not raw:
        target.unlink(missing_ok=True)
        return
    truth = Path(raw) if Path(raw).is_absolute() else ctx.root / raw
    if not truth.is_file():
        raise DataNotFoundError(f"dataset {ctx.dataset!r}: truth file {truth} not found; check source.truth in its configuration")
    with atomic_path(target) as tmp:
        shutil.copyfile(truth, tmp)
    logger.info("Source: true label probabilities copied from %s", truth.name)


def run(ctx: RunContext) -> dict[str, Any]:
    """Write or locate the raw extract of the run; return its row count and hash."""
    from hivcomorb import tracking

    source = ctx.config.get("source") or {}
    kind = source.get("kind")
    if kind not in KINDS:
        raise ConfigError(f"dataset {ctx.dataset!r}: source.kind {kind!r} is invalid; expected one of {KINDS}")
    out_dir = ctx.stage_dir("source")
    summary: dict[str, Any] = {"kind": kind}

    if kind == "synth":
        from hivcomorb import synth

        n_patients = int(source.get("n_patients", (ctx.config.get("synth") or {}).get("n_patients", 2200)))
        cohort = synth.generate(n_patients, ctx.seed, options=ctx.config.get("synth"), contract=ctx.contract)
        synth.write_cohort(cohort, out_dir / "extract.parquet", truth_path=out_dir / "truth.parquet")
        summary["rows"] = len(cohort.extract)
    elif kind == "nhanes":
        from hivcomorb.adapters import nhanes

        folder = source.get("path")
        frame = nhanes.build_site_extract(Path(folder) if folder else None)
        with atomic_path(out_dir / "extract.parquet") as tmp:
            frame.to_parquet(tmp, index=False)
        summary["rows"] = len(frame)
    else:
        path = _configured_path(ctx)
        summary["rows"] = None
        logger.info("Source: hospital extract %s is read in place by ingestion", path.name)
        _copy_truth(ctx, out_dir)

    path = extract_path(ctx)
    summary["extract_sha256"] = file_sha256(path)
    logger.info("Source: %s extract ready (%s rows, sha256 %s)", kind, summary["rows"] if summary["rows"] is not None else "?", summary["extract_sha256"][:12])
    tracking.log_params({"source": {"kind": kind, "extract_sha256": summary["extract_sha256"]}})
    return summary
