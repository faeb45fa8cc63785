"""The ``ingest`` stage: extract file in, validated canonical cohort out.

Outputs, in ``artifacts/<dataset>/ingest/`` (or ``ingest.out_dir``):

``cohort.parquet``   the kept rows in canonical form
``quarantine.csv``   one line per broken rule: source_row, column, raw_value, rule, detail
``ingest.json``      counts, content hash, conversions, warnings, validation statistics
                     and the plain-language ``summary`` sentences
``validation.html``  the Great Expectations results for auditors

Great Expectations checks every kept row, or above
``ingest.validate_all_rows_up_to`` kept rows only the rows that decide each
expectation (``ingest.validate``). ``ingest.json`` and ``validation.html``
record which mode ran, with both row counts.

The four files are written to temporary names and moved into place only
after all of them are complete, ``ingest.json`` last.

When more than ``ingest.max_quarantined_share`` of the rows read are
quarantined, the stage logs a warning and goes on, so that ``hivcomorb run``
still reaches the report. ``hivcomorb ingest`` writes the same outputs and then
exits with status 3, so that a scheduled job notices a broken mapping or export.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import logging
import math
from pathlib import Path
from typing import Any, Mapping

from hivcomorb import __version__, htmlkit
from hivcomorb.config import deep_merge, exceeds_share, nested_get, share_or_none
from hivcomorb.context import RunContext, mapping_site
from hivcomorb.contract import Contract, load_contract
from hivcomorb.errors import EXIT_TOO_MANY_QUARANTINED, DataNotFoundError, ExtractError
from hivcomorb.files import atomic_path, file_sha256
from hivcomorb.ingest import rules
from hivcomorb.ingest.canonical import IngestResult, ingest_file
from hivcomorb.ingest.mapping import IDENTITY, load_mapping, resolve_mapping_path
from hivcomorb.ingest.validate import VALIDATE_COMPACT, RowsSetting, render_validation_html
from hivcomorb.paths import project_root

logger = logging.getLogger(__name__)

STAGE = "ingest"
COHORT_FILE = "cohort.parquet"
QUARANTINE_FILE = "quarantine.csv"
SUMMARY_FILE = "ingest.json"
VALIDATION_FILE = "validation.html"
OUTPUT_FILES = (COHORT_FILE, QUARANTINE_FILE, SUMMARY_FILE, VALIDATION_FILE)
# Settings that do not change what ingestion produces, left out of the cache key.
_NOT_IN_CACHE_KEY = ("cache", "out_dir", "mapping", "max_quarantined_share")
# Applies when the configuration has no ingest.max_quarantined_share, and equals the default of score.max_quarantined_share.
DEFAULT_MAX_QUARANTINED_SHARE = 0.25


# Written instead of the four outputs when every row is quarantined.
REJECTED_FILE = "rejected_rows.csv"


def extract_path(ctx: RunContext) -> Path:
    """Return the extract the stage reads: ``source.path`` for a file source, else the source stage's output."""
    source = ctx.config.get("source") or {}
    if source.get("kind") == "file":
        raw = source.get("path")
        if not raw:
            raise DataNotFoundError("source.kind is 'file' but source.path is not set; set it in the dataset configuration")
        path = Path(raw)
        return path if path.is_absolute() else project_root() / path
    return ctx.artifacts / "source" / "extract.parquet"


def output_dir(ctx: RunContext) -> Path:
    """Return the folder the stage writes to: ``ingest.out_dir`` or ``artifacts/<dataset>/ingest``."""
    configured = nested_get(ctx.config, "ingest.out_dir")
    if configured:
        path = Path(configured)
        path.mkdir(parents=True, exist_ok=True)
        return path
    return ctx.stage_dir(STAGE)


def quarantine_limit(options: Mapping[str, Any]) -> float | None:
    """Read ``ingest.max_quarantined_share`` from the ``ingest`` settings.

    Parameters
    ----------
    options : mapping
        The ``ingest`` block of the configuration.

    Returns
    -------
    float or None
        The share of rows read (0 to 1) above which too many rows are
        quarantined, or None when the setting is null (no limit).

    Raises
    ------
    ConfigError
        If the setting is neither null nor a number between 0 and 1.
    """
    value = options.get("max_quarantined_share", DEFAULT_MAX_QUARANTINED_SHARE)
    return share_or_none(value, "ingest.max_quarantined_share (or --max-quarantined-share)")


def too_many_quarantined(summary: Mapping[str, Any], limit: float | None) -> bool:
    """Return whether more than ``limit`` of the rows read were quarantined (False when ``limit`` is None)."""
    return exceeds_share(summary["rows_quarantined"], summary["rows_read"], limit)


def quarantine_limit_message(summary: Mapping[str, Any], limit: float, quarantine_path: Path) -> str:
    """Return the sentence that reports too many quarantined rows: counts, share, limit and quarantine file."""
    read, quarantined = summary["rows_read"], summary["rows_quarantined"]
    return (
        f"{quarantined:,} of {read:,} rows ({100.0 * quarantined / read:.1f}%) were quarantined, more than "
        f"ingest.max_quarantined_share ({100.0 * limit:g}%). This many rejected rows usually means a mapping or "
        f"export problem: read the rule each row broke in {quarantine_path}, fix the mapping or the export, and "
        "ingest again"
    )


def _site_contract(ctx: RunContext, mapping: Mapping[str, Any]) -> Contract:
    """Return the contract for this extract: the context's, extended by the mapping's ``site`` block.

    The extended contract replaces ``ctx.contract`` so that later stages of
    the same pipeline run see the same columns.
    """
    site = mapping.get("site") or {}
    if not site:
        return ctx.contract
    merged = deep_merge(ctx.config.get("site") or {}, site)
    contract = load_contract(site=merged)
    if [c.name for c in contract.columns] != [c.name for c in ctx.contract.columns] or contract != ctx.contract:
        # The context merges the site block of the mapping that ingest.mapping names, so this happens only
        # when ingest.mapping changed after the context was built.
        logger.warning(
            "Mapping file %s has a site block that the dataset configuration does not read; set ingest.mapping "
            "in the dataset configuration to this file so that stages run on their own use the same contract",
            mapping.get("path"),
        )
        ctx.contract = contract
    return contract


def cache_key(path: Path, mapping: Mapping[str, Any], contract: Contract, options: Mapping[str, Any]) -> str:
    """Return the key under which outputs may be reused: extract bytes, mapping, contract, settings and version."""
    mapping_path = mapping.get("path")
    parts = {
        "extract_sha256": file_sha256(path),
        "mapping_sha256": file_sha256(mapping_path) if mapping_path else IDENTITY,
        "contract_version": contract.version,
        "contract_columns": hashlib.sha256(repr(contract.columns).encode("utf-8")).hexdigest(),
        "options": {k: v for k, v in sorted(options.items()) if k not in _NOT_IN_CACHE_KEY},
        "hivcomorb_version": __version__,
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode("utf-8")).hexdigest()


def _cached_summary(out_dir: Path, key: str) -> dict[str, Any] | None:
    summary_path = out_dir / SUMMARY_FILE
    if not all((out_dir / name).is_file() for name in OUTPUT_FILES):
        return None
    try:
        summary = json.loads(summary_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    return summary if summary.get("cache_key") == key else None


def summary_sentences(summary: Mapping[str, Any]) -> list[str]:
    """Return the plain-language sentences the report's executive summary reuses."""
    read, kept, quarantined = summary["rows_read"], summary["rows_kept"], summary["rows_quarantined"]
    share = 100.0 * quarantined / read if read else 0.0
    sentences = [
        f"Ingestion read {read:,} rows from {summary['source']}: {kept:,} were kept and {quarantined:,} "
        f"({share:.1f}%) were quarantined."
    ]
    by_rule = sorted((summary.get("quarantine_by_rule") or {}).items(), key=lambda item: -item[1])
    if by_rule:
        reasons = ", ".join(f"{rule.replace('_', ' ')} ({count:,} rows)" for rule, count in by_rule[:3])
        sentences.append(f"The most common quarantine reasons were {reasons}.")
    absent = summary.get("labs_absent") or []
    if absent:
        sentences.append(f"The extract lacks {len(absent)} contract labs: {', '.join(absent)}.")
    conversions = summary.get("unit_conversions") or {}
    if conversions:
        total = sum(entry["count"] for entries in conversions.values() for entry in entries)
        sentences.append(f"{total:,} values in {len(conversions)} lab columns were converted to canonical units.")
    usual = summary.get("out_of_usual_range") or {}
    if usual:
        sentences.append(
            f"{sum(usual.values()):,} kept values in {len(usual)} columns lie outside the usual clinical range; they were kept."
        )
    censored = summary.get("censored") or {}
    if censored:
        total = sum(sum(flags.values()) for flags in censored.values())
        sentences.append(f"{total:,} lab results were censored at a limit (< or >) in {len(censored)} columns.")
    for finding in summary.get("suspected_units") or []:
        sentences.append(
            f"Column {finding['column']} looks like {finding['suspected_unit']} rather than the declared "
            f"{finding['declared_unit']}; its values were not converted."
        )
    validation = summary.get("validation") or {}
    stats = validation.get("statistics") or {}
    if stats.get("evaluated_expectations"):
        sentences.append(
            f"Great Expectations validation: {stats['successful_expectations']} of {stats['evaluated_expectations']} "
            "expectations of the contract suite were met."
        )
        if validation.get("mode") == VALIDATE_COMPACT:
            sentences.append(
                f"Great Expectations checked the {validation['rows_validated']:,} rows that decide these expectations, "
                f"which represent all {validation['rows_represented']:,} kept rows, so each outcome is the one that "
                "all kept rows would give."
            )
    return sentences


def write_outputs(out_dir: Path, result: IngestResult, summary: Mapping[str, Any]) -> None:
    """Write the four stage outputs so that either all are replaced or none is."""
    html = render_validation_html(summary, result.validation)
    with contextlib.ExitStack() as stack:
        # ExitStack moves files into place in reverse order of entry, so ingest.json comes last.
        summary_tmp = stack.enter_context(atomic_path(out_dir / SUMMARY_FILE))
        validation_tmp = stack.enter_context(atomic_path(out_dir / VALIDATION_FILE))
        quarantine_tmp = stack.enter_context(atomic_path(out_dir / QUARANTINE_FILE))
        cohort_tmp = stack.enter_context(atomic_path(out_dir / COHORT_FILE))
        result.cohort.to_parquet(cohort_tmp, index=False)
        result.quarantine.to_csv(quarantine_tmp, index=False)
        validation_tmp.write_text(html, encoding="utf-8")
        summary_tmp.write_text(json_text(summary), encoding="utf-8")


def json_text(data: Any) -> str:
    """Return ``data`` as indented JSON; NaN and infinities become null."""

    def finite(value: Any) -> Any:
        if isinstance(value, float) and not math.isfinite(value):
            return None
        if isinstance(value, Mapping):
            return {str(k): finite(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [finite(v) for v in value]
        return value

    return json.dumps(finite(data), indent=2, default=str, allow_nan=False) + "\n"


def _track(summary: Mapping[str, Any], out_dir: Path) -> None:
    """Log counts, the content hash and the aggregate files to the active MLflow run, if any."""
    import mlflow

    from hivcomorb import tracking

    if mlflow.active_run() is None:
        return
    tracking.log_params(
        {
            "data": {"content_hash": summary["content_hash"]},
            "ingest": {
                "source_file": summary["source"],
                "mapping": summary.get("mapping"),
                "reconciliation": summary["reconciliation"],
                "reused_previous_outputs": summary.get("reused_previous_outputs", False),
                "validation_mode": (summary.get("validation") or {}).get("mode"),
            },
        }
    )
    mlflow.set_tag("data.content_hash", summary["content_hash"])
    metrics = {
        "rows_read": summary["rows_read"],
        "rows_kept": summary["rows_kept"],
        "rows_quarantined": summary["rows_quarantined"],
        "quarantine_by_rule": summary.get("quarantine_by_rule") or {},
        "out_of_usual_range": summary.get("out_of_usual_range") or {},
        "labs_absent": len(summary.get("labs_absent") or []),
        "validation_success_percent": ((summary.get("validation") or {}).get("statistics") or {}).get("success_percent"),
        "validation_rows_validated": (summary.get("validation") or {}).get("rows_validated"),
    }
    tracking.log_metrics(metrics, prefix="ingest")
    for name in (SUMMARY_FILE, VALIDATION_FILE):
        mlflow.log_artifact(str(out_dir / name), artifact_path="ingest")


def run(ctx: RunContext) -> dict[str, Any]:
    """Ingest the configured extract and write the stage outputs.

    Returns
    -------
    dict
        The summary written to ``ingest.json``: counts, reconciliation line,
        content hash, conversions, warnings, validation statistics and the
        ``summary`` sentences.
    """
    options = dict(ctx.config.get(STAGE) or {})
    # An invalid validation setting or quarantine limit fails here, before the extract is read.
    RowsSetting.from_options(options)
    limit = quarantine_limit(options)
    path = extract_path(ctx)
    if not path.is_file():
        from_file = (ctx.config.get("source") or {}).get("kind") == "file"
        hint = "check the EXTRACT argument or source.path in the dataset configuration" if from_file else "run the source stage first"
        problem = "is a directory, not a file" if path.is_dir() else "not found"
        raise DataNotFoundError(f"extract {path} {problem}; {hint}")
    mapping_setting = options.get("mapping")
    mapping_path = resolve_mapping_path(mapping_setting) if mapping_setting else None
    mapping = load_mapping(mapping_path, ctx.contract)
    contract = _site_contract(ctx, mapping)
    out_dir = output_dir(ctx)

    key = cache_key(path, mapping, contract, options)
    if options.get("cache", True):
        cached = _cached_summary(out_dir, key)
        if cached is not None:
            logger.info("Ingest: extract, mapping, contract and settings unchanged; reusing the outputs in %s", out_dir)
            logger.info("Extract %s: %s", cached["source"], cached["reconciliation"])
            cached["reused_previous_outputs"] = True
            _check_quarantined_share(cached, limit, out_dir)
            _track(cached, out_dir)
            return cached

    try:
        result = ingest_file(
            path,
            contract,
            mapping,
            sheet=options.get("sheet"),
            encoding=options.get("encoding"),
            delimiter=options.get("delimiter"),
            options=options,
        )
    except ExtractError as exc:
        rejected = getattr(exc, "quarantine", None)
        if rejected is None:
            raise
        # No cohort is written, but every rejected row and its reason is, beside the outputs.
        rejected_path = out_dir / REJECTED_FILE
        with atomic_path(rejected_path) as tmp:
            rejected.to_csv(tmp, index=False)
        raise ExtractError(f"{exc}. Each rejected row, column, raw value and rule is listed in {rejected_path}") from exc
    summary = dict(result.summary)
    summary["source_sha256"] = file_sha256(path)
    summary["cache_key"] = key
    summary["hivcomorb_version"] = __version__
    summary["outputs"] = {name: str(out_dir / name) for name in OUTPUT_FILES}
    summary["summary"] = summary_sentences(summary)
    write_outputs(out_dir, result, summary)
    logger.info("Ingest: wrote %s", ", ".join(OUTPUT_FILES))
    summary["reused_previous_outputs"] = False
    _check_quarantined_share(summary, limit, out_dir)
    _track(summary, out_dir)
    return summary


def _check_quarantined_share(summary: dict[str, Any], limit: float | None, out_dir: Path) -> None:
    """Record the quarantine limit and its outcome in ``summary``, and log a warning when it is exceeded.

    Both keys stay out of ``ingest.json`` because the limit is not in the
    cache key, so reused outputs may have been written under another limit.
    """
    summary["max_quarantined_share"] = limit
    summary["too_many_quarantined"] = too_many_quarantined(summary, limit)
    if summary["too_many_quarantined"]:
        logger.warning("%s", quarantine_limit_message(summary, limit, out_dir / QUARANTINE_FILE))


def report_section(ctx: RunContext) -> str:
    """Return the report's ingestion section: reconciliation, quarantine, ranges, units, validation."""
    from hivcomorb.pipeline import load_run_ids

    summary_path = output_dir(ctx) / SUMMARY_FILE
    if not summary_path.is_file():
        return htmlkit.section("ingest", "Data ingestion", htmlkit.paragraph(f"Ingestion has not run: {summary_path} not found."))
    summary = json.loads(summary_path.read_text(encoding="utf-8"))
    run_id = load_run_ids(ctx).get(STAGE)
    parts = [htmlkit.paragraph(f"Reconciliation: {summary['reconciliation']}.")]
    parts.append(htmlkit.bullet_list(summary.get("summary") or []))

    by_rule = summary.get("quarantine_by_rule") or {}
    if by_rule:
        parts.append(
            htmlkit.table(
                ["rule", "meaning", "rows"],
                [[rule, rules.DESCRIPTIONS.get(rule, ""), count] for rule, count in sorted(by_rule.items())],
                caption="Quarantined rows by rule (a row may break several rules)",
            )
        )
        by_column = summary.get("quarantine_by_column") or {}
        parts.append(
            htmlkit.table(
                ["column", "rule", "rows"],
                [[column, rule, count] for column, counts in sorted(by_column.items()) for rule, count in sorted(counts.items())],
                caption="Quarantined rows by column and rule",
            )
        )
    usual = summary.get("out_of_usual_range") or {}
    if usual:
        parts.append(
            htmlkit.table(["column", "kept values outside the usual range"], sorted(usual.items()), caption="Unusual but possible values (kept)")
        )
    conversions = summary.get("unit_conversions") or {}
    if conversions:
        rows = [
            [column, entry["from"], entry["to"], entry["origin"], entry["count"]]
            for column, entries in sorted(conversions.items())
            for entry in entries
        ]
        parts.append(htmlkit.table(["column", "from", "to", "unit source", "values"], rows, caption="Unit conversions"))
    suspected = summary.get("suspected_units") or []
    if suspected:
        rows = [
            [f["column"], f["declared_unit"], f["suspected_unit"], f["share_usual_declared"], f["share_usual_suspected"]]
            for f in suspected
        ]
        parts.append(
            htmlkit.table(
                ["column", "declared unit", "suspected unit", "share in usual range (declared)", "share in usual range (suspected)"],
                rows,
                caption="Columns that look like the wrong unit (not converted)",
            )
        )
    absent = summary.get("labs_absent") or []
    parts.append(htmlkit.paragraph("Contract labs absent from the extract: " + (", ".join(absent) if absent else "none") + "."))
    validation = summary.get("validation") or {}
    stats = validation.get("statistics") or {}
    parts.append(
        htmlkit.table(
            ["suite", "expectations", "met", "failed", "success %"],
            [[validation.get("suite"), stats.get("evaluated_expectations"), stats.get("successful_expectations"),
              stats.get("unsuccessful_expectations"), stats.get("success_percent")]],
            caption="Great Expectations validation (details in validation.html)",
        )
    )
    if validation.get("mode") == VALIDATE_COMPACT and validation.get("coverage"):
        parts.append(htmlkit.paragraph(validation["coverage"]))
    parts.append(htmlkit.paragraph(f"Cohort content hash (SHA-256): {summary.get('content_hash')}"))
    if run_id:
        parts.append(htmlkit.paragraph(f"MLflow run {run_id}"))
    return htmlkit.section("ingest", "Data ingestion", "\n".join(parts))


_CLI_EPILOG = """\
mapping file (YAML; conf/mappings/example_site.yaml explains every key):
  name: my_site
  id_column: MRN_pseudo          source column with the pseudonymised patient id
  columns:                       source column -> canonical column
    Age: age
    Hb: {to: haemoglobin, unit: g/dL}
    Creat: {to: creatinine, unit_column: Creat_units}
    VL: {to: viral_load, detection_limit: 50}
  recodes:                       canonical column -> {source value: canonical value}
    gender: {M: male, F: female}
  Without --mapping, columns named as in data_schema/contract.yaml are taken
  as they are, in canonical units. Unmapped columns are logged and ignored.

overrides:
  --mapping, --sheet, --encoding and --delimiter win over ingest.mapping,
  ingest.sheet, ingest.encoding and ingest.delimiter of the configuration
  (conf/stages/ingest.yaml, then conf/<dataset>.yaml).

outputs (in --out, default artifacts/<dataset>/ingest):
  cohort.parquet   kept rows in canonical form, with source_row
  quarantine.csv   source_row, column, raw_value, rule, detail for each rejected cell;
                   no patient id
  ingest.json      counts, content hash, unit conversions, warnings, validation statistics
  validation.html  Great Expectations results for auditors
The log line "read N = kept K + quarantined Q" reconciles every row.
"""

_EXIT_STATUS_EPILOG = """
exit status:
  0 when the outputs are written, 1 when ingestion stops with an error, and
  {code} when the outputs are written but more than ingest.max_quarantined_share
  (--max-quarantined-share) of the rows read were quarantined.
"""


def _command(args: argparse.Namespace) -> int:
    from hivcomorb.cli import context_from_args
    from hivcomorb.pipeline import run_single_stage

    overrides: dict[str, Any] = {STAGE: {}}
    if args.extract:
        overrides["source"] = {"kind": "file", "path": str(Path(args.extract).resolve())}
    if args.mapping:
        mapping = Path(args.mapping)
        overrides[STAGE]["mapping"] = str(mapping.resolve()) if mapping.is_file() else args.mapping
    for name in ("sheet", "encoding", "delimiter"):
        if getattr(args, name) is not None:
            overrides[STAGE][name] = getattr(args, name)
    if args.out:
        overrides[STAGE]["out_dir"] = str(Path(args.out).resolve())
    if args.no_cache:
        overrides[STAGE]["cache"] = False
    if args.max_quarantined_share is not None:
        overrides[STAGE]["max_quarantined_share"] = args.max_quarantined_share
    ctx = context_from_args(args, overrides)
    if args.mapping and mapping_site(ctx.config):
        # The contract of this run includes the site block, but later stages started on their own
        # read ingest.mapping from the dataset configuration, not this option.
        logger.warning(
            "Mapping file %s has a site block. Set ingest.mapping to this file in the dataset configuration, so "
            "that stages run on their own (hivcomorb train, score) use the same contract",
            args.mapping,
        )
    status = run_single_stage(ctx, STAGE)
    out_dir = output_dir(ctx)
    # The outcome is computed from ingest.json, so reused outputs give the same exit status as a fresh run.
    summary = json.loads((out_dir / SUMMARY_FILE).read_text(encoding="utf-8"))
    print(f"{summary['source']}: {summary['reconciliation']}")
    print(f"outputs in {out_dir}")
    limit = quarantine_limit(ctx.config.get(STAGE) or {})
    if too_many_quarantined(summary, limit):
        message = quarantine_limit_message(summary, limit, out_dir / QUARANTINE_FILE)
        logger.error("%s. Exit status %d", message, EXIT_TOO_MANY_QUARANTINED)
        return EXIT_TOO_MANY_QUARANTINED
    return status


def register_cli(subparsers: Any) -> None:
    """Add ``hivcomorb ingest``."""
    from hivcomorb.cli import add_common_arguments, share_argument

    parser = subparsers.add_parser(
        STAGE,
        help="read an extract, map it to the contract, quarantine bad rows and validate the rest",
        description=(
            "Read a CSV, Parquet or Excel extract, map its columns to the canonical contract, parse censored "
            "results, decimal commas and units, quarantine rows that break a rule, validate the kept rows with "
            "Great Expectations and write the canonical cohort. Without EXTRACT, the configured source is read."
        ),
        epilog=_CLI_EPILOG + _EXIT_STATUS_EPILOG.format(code=EXIT_TOO_MANY_QUARANTINED),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("extract", nargs="?", default=None, metavar="EXTRACT", help="extract file (.csv, .tsv, .txt, .parquet, .xlsx)")
    add_common_arguments(parser, device=False)
    parser.add_argument("--mapping", default=None, metavar="FILE", help="site mapping YAML file (default: ingest.mapping, else identity)")
    parser.add_argument("--sheet", default=None, metavar="NAME", help="Excel sheet to read (default: the first sheet)")
    parser.add_argument("--encoding", default=None, metavar="ENC", help="text encoding of a CSV file, e.g. utf-8, cp1252, latin-1 (default: detected)")
    parser.add_argument("--delimiter", default=None, metavar="CHAR", help="CSV field delimiter, e.g. ',' ';' or 'tab' (default: detected)")
    parser.add_argument("--out", default=None, metavar="DIR", help="output folder (default: artifacts/<dataset>/ingest)")
    parser.add_argument("--no-cache", action="store_true", help="ingest again even when the inputs are unchanged")
    parser.add_argument(
        "--max-quarantined-share",
        type=share_argument,
        default=None,
        metavar="SHARE",
        help=f"exit with status {EXIT_TOO_MANY_QUARANTINED} after writing the outputs when more than this share "
        "of the rows read (0 to 1, or none for no limit) is quarantined (default: ingest.max_quarantined_share, 0.25)",
    )
    parser.set_defaults(func=_command)
