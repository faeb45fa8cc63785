"""The ``report`` stage: the auditor's HTML report and ``metrics.json``.

The report reads what the earlier stages wrote (their JSON files and figures),
never live model objects. Each stage contributes its own section through its
``report_section(ctx)`` function and plain-language ``summary`` sentences,
which open the report as the executive summary. This module adds the header,
the model card with a TRIPOD+AI checklist, and the limitations, and writes
``reports/<dataset>/report.html``, ``metrics.json`` and ``audit.json``.
"""

from __future__ import annotations

import datetime as dt
import importlib
import json
import logging
import platform
from pathlib import Path
from typing import Any, Callable

from hivcomorb import __version__
from hivcomorb import htmlkit as hk
from hivcomorb.context import RunContext
from hivcomorb.files import write_json_atomic, write_text_atomic

logger = logging.getLogger(__name__)

# Stage JSON files, in report order: (stage, module, JSON path below artifacts, section title).
_STAGES = (
    ("ingest", "hivcomorb.ingest", "ingest/ingest.json", "Data and validation"),
    ("train", "hivcomorb.train", "train/train.json", "Model performance"),
    ("probe", "hivcomorb.probe", "probe/probe.json", "Demographic recoverability"),
    ("audit", "hivcomorb.audit", "audit/audit.json", "Explanations and fairness"),
    ("register", "hivcomorb.registry", "register/registry.json", "Registered models"),
)

# The executive summary shows this many findings per stage; each section lists all of them.
_SUMMARY_SENTENCES_PER_STAGE = 4

_STYLE = """
body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#1b1b1b;line-height:1.45}
h1{border-bottom:3px solid #2c5d8f;padding-bottom:.3em}h2{border-bottom:1px solid #ccc;margin-top:2em;color:#2c5d8f}
table{border-collapse:collapse;margin:1em 0;font-size:.9em}th,td{border:1px solid #ccc;padding:.3em .6em;text-align:left;vertical-align:top}
th{background:#eef3f8}caption{caption-side:top;text-align:left;font-weight:600;padding:.3em 0}
figure{margin:1em 0}figure img{max-width:100%;border:1px solid #ddd}figcaption{font-size:.85em;color:#444}
.runref{color:#777}.meta td:first-child{font-weight:600}.summary li{margin:.3em 0}
.green{background:#d9f2d9}.amber{background:#ffe9b3}.red{background:#f7c6c6}.site{color:#8a5a00;font-style:italic}
nav ol{columns:2}code{font-size:.9em}\n.table1{font-size:.8em}@media print{table{font-size:.7em;max-width:100%}td,th{overflow-wrap:break-word}}
"""


def _read_json(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8"))


def _stage_outputs(ctx: RunContext) -> dict[str, dict[str, Any] | None]:
    return {stage: _read_json(ctx.artifacts / rel) for stage, _module, rel, _title in _STAGES}


def build_metrics(ctx: RunContext, outputs: dict[str, dict[str, Any] | None]) -> dict[str, Any]:
    """Assemble ``metrics.json`` from the stage outputs.

    Returns
    -------
    dict
        ``dataset``, ``n_patients``, ``reconciliation``, ``settings`` (aware and
        unaware champions), ``models``, ``comparison``, ``oracle``,
        ``oracle_gap`` and ``probe``; a block is ``None`` when its stage did
        not run.
    """
    ingest = outputs.get("ingest") or {}
    train = outputs.get("train") or {}
    probe = outputs.get("probe") or {}
    return {
        "dataset": ctx.dataset,
        "n_patients": ingest.get("rows_kept"),
        "reconciliation": {key: ingest.get(key) for key in ("rows_read", "rows_kept", "rows_quarantined")},
        "data_hash": ingest.get("content_hash"),
        "contract_version": ctx.contract.version,
        "labels": train.get("labels"),
        "skipped_labels": train.get("skipped_labels"),
        "settings": train.get("settings"),
        "champions": train.get("champions"),
        "models": train.get("models"),
        "comparison": train.get("comparison"),
        "oracle": train.get("oracle"),
        "oracle_gap": train.get("oracle_gap"),
        "probe": probe.get("block"),
    }


def _header(ctx: RunContext, outputs: dict[str, Any], run_ids: dict[str, str]) -> str:
    ingest = outputs.get("ingest") or {}
    rows = [
        ("Dataset", ctx.dataset),
        ("Generated", dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")),
        ("hivcomorb version", __version__),
        ("Data contract version", ctx.contract.version),
        ("Data content hash (SHA-256)", ingest.get("content_hash", "not available")),
        ("Patients analysed", ingest.get("rows_kept", "not available")),
        ("Boosting device", ctx.device),
        ("Pipeline MLflow run", run_ids.get("pipeline", "not tracked")),
    ]
    return hk.table(["Item", "Value"], rows, css_class="meta")


def _executive_summary(outputs: dict[str, Any], per_stage: int = _SUMMARY_SENTENCES_PER_STAGE) -> str:
    """Return the first findings of each stage as a bullet list, with links to the rest."""
    items: list[str] = []
    for stage, _module, _rel, title in _STAGES:
        data = outputs.get(stage) or {}
        sentences = [str(s) for s in data.get("summary") or []]
        items.extend(f"<li>{hk.escape(s)}</li>" for s in sentences[:per_stage])
        if len(sentences) > per_stage:
            more = len(sentences) - per_stage
            items.append(f'<li class="more"><a href="#{stage}">{more} more finding(s) in "{hk.escape(title)}"</a></li>')
    if not items:
        return hk.paragraph("No stage wrote a summary; see the sections below.")
    return '<ul class="summary">' + "".join(items) + "</ul>"


def _stage_section(ctx: RunContext, stage: str, module_name: str, title: str, data: dict[str, Any] | None) -> str:
    if data is None:
        return hk.section(stage, title, hk.paragraph(f"The {stage} stage did not run in this pipeline, so this section is empty."))
    module = importlib.import_module(module_name)
    render: Callable[[RunContext], str] | None = getattr(module, "report_section", None)
    if render is None:
        return hk.section(stage, title, hk.paragraph(f"The {stage} stage has no report section."))
    body = render(ctx)
    # A stage may return complete <section> elements with their own headings, or only a body.
    if body.lstrip().startswith("<section"):
        return f'<div id="{hk.escape(stage)}" class="stage">{body}</div>'
    return hk.section(stage, title, body)


def _model_card(ctx: RunContext, outputs: dict[str, Any]) -> str:
    """Return the model card with a TRIPOD+AI checklist filled from the run's metadata."""
    ingest = outputs.get("ingest") or {}
    train = outputs.get("train") or {}
    probe = outputs.get("probe") or {}
    audit = outputs.get("audit") or {}
    registry = outputs.get("register") or {}
    source = ctx.config.get("source") or {}
    settings = train.get("settings") or {}
    site = '<span class="site">to be completed by the site</span>'

    def champion_line(setting: str) -> str:
        info = settings.get(setting) or {}
        if not info:
            return "not trained"
        return (
            f"{info.get('model', '?')}: macro-F1 {hk.fmt(info.get('macro_f1'))}, "
            f"macro-AUROC {hk.fmt(info.get('macro_auroc'))}"
        )

    source_text = {
        "synth": "synthetic cohort generated by hivcomorb (known true risks); not real patients",
        "nhanes": "NHANES 2017-2018 public-use files (US CDC); a general adult population, not people living with HIV",
        "file": "hospital extract supplied by the site",
    }.get(source.get("kind"), "unknown")
    registered = ", ".join(f"{m.get('name')} v{m.get('version')}" for m in (registry.get("models") or []) if isinstance(m, dict))
    rows = [
        ("Title and intended use", "Multi-label screening support: flags people living with HIV who may have an unrecorded comorbidity, for clinician review. Not a diagnostic device."),
        ("Out-of-scope use", "Diagnosis, treatment decisions without clinician review, populations unlike the training cohort, children (under 18)."),
        ("Data source", source_text),
        ("Data collection dates", hk.Raw(site) if source.get("kind") != "synth" else "not applicable (synthetic)"),
        ("Participants", f"{ingest.get('rows_kept', '?')} patients kept of {ingest.get('rows_read', '?')} read; {ingest.get('rows_quarantined', '?')} quarantined with reasons"),
        ("Outcomes", ", ".join(train.get("labels") or []) or "not available"),
        ("Predictors", f"{len(ctx.contract.labs)} contract lab markers (those present), social columns; demographic columns in the aware setting only"),
        ("Missing data", "Boosting models handle missing lab values natively; other models impute inside the cross-validation pipeline (fitted on training folds only). Unknown labels are masked per label, never treated as negative."),
        ("Model", f"aware: {champion_line('aware')}; unaware: {champion_line('unaware')}"),
        ("Validation method", "Internal validation: stratified K-fold cross-validation with out-of-fold predictions; thresholds and calibration chosen on inner folds; 95% bootstrap confidence intervals over patients."),
        ("External validation", hk.Raw(site)),
        ("Performance", "See 'Model performance'; oracle gap reported where true risks are known."),
        ("Fairness", f"See 'Explanations and fairness'; groups under {ctx.config.get('disclosure', {}).get('min_group_size', 10)} patients are suppressed, with larger partner groups where subtraction would reveal them" + (f"; {sum((audit.get('suppressed') or {}).values())} group(s) suppressed" if isinstance(audit.get("suppressed"), dict) else "")),
        ("Demographic recoverability", "See 'Demographic recoverability'" if probe else "probe not run"),
        ("Registered models", registered or "none registered in this run"),
        ("Clinical oversight and governance", hk.Raw(site)),
        ("Funding and conflicts of interest", hk.Raw(site)),
    ]
    intro = hk.paragraph(
        "Items follow the TRIPOD+AI reporting checklist as far as a pipeline run can fill them; "
        "items marked in italics need the site's own information."
    )
    return intro + hk.table(["Checklist item", "This run"], rows)


def _limitations(ctx: RunContext) -> str:
    kind = (ctx.config.get("source") or {}).get("kind")
    items = [
        "Internal cross-validation only: performance on another clinic, period or population is unknown until validated there.",
        "Labels record what was diagnosed and coded; an unrecorded condition counts as negative, so flagged patients may be true cases not yet recorded.",
        "Removing demographic columns does not remove demographic information: see the recoverability probe before calling a model 'unaware'.",
        "Confidence intervals come from bootstrap resampling of patients and do not cover shifts in case mix or coding practice.",
    ]
    if kind == "synth":
        items.insert(0, "The cohort is synthetic: figures show that the pipeline works and how close models come to the known true risks, not clinical performance.")
    if kind == "nhanes":
        items.insert(0, "NHANES is a general US adult population survey, not a cohort of people living with HIV; labels are self-reported diagnoses, and HIV-specific labs are absent.")
    return hk.bullet_list(items)


def render(ctx: RunContext) -> str:
    """Return the complete HTML report of the run."""
    from hivcomorb.pipeline import load_run_ids

    outputs = _stage_outputs(ctx)
    run_ids = load_run_ids(ctx)
    sections = [
        hk.section("summary", "Executive summary", _executive_summary(outputs)),
    ]
    for stage, module_name, _rel, title in _STAGES:
        sections.append(_stage_section(ctx, stage, module_name, title, outputs.get(stage)))
    sections.append(hk.section("model-card", "Model card and TRIPOD+AI checklist", _model_card(ctx, outputs)))
    sections.append(hk.section("limitations", "Limitations", _limitations(ctx)))
    toc_items = [("summary", "Executive summary"), *((stage, title) for stage, _m, _r, title in _STAGES)]
    toc_items += [("model-card", "Model card and TRIPOD+AI checklist"), ("limitations", "Limitations")]
    toc = "<nav><ol>" + "".join(f'<li><a href="#{hk.escape(a)}">{hk.escape(t)}</a></li>' for a, t in toc_items) + "</ol></nav>"
    title = f"hivcomorb report: {ctx.dataset}"
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"/>"
        f"<title>{hk.escape(title)}</title><style>{_STYLE}</style></head><body>"
        f"<h1>{hk.escape(title)}</h1>{_header(ctx, outputs, run_ids)}{toc}"
        + "\n".join(sections)
        + f"<footer><p>Generated by hivcomorb {hk.escape(__version__)} on Python {hk.escape(platform.python_version())}.</p></footer>"
        "</body></html>\n"
    )


def run(ctx: RunContext) -> dict[str, Any]:
    """Write ``report.html``, ``metrics.json`` and ``audit.json`` to ``reports/<dataset>``."""
    import mlflow

    outputs = _stage_outputs(ctx)
    ctx.reports.mkdir(parents=True, exist_ok=True)
    metrics = build_metrics(ctx, outputs)
    write_json_atomic(ctx.reports / "metrics.json", metrics)
    if outputs.get("audit") is not None:
        write_json_atomic(ctx.reports / "audit.json", outputs["audit"])
    html_text = render(ctx)
    write_text_atomic(ctx.reports / "report.html", html_text)
    for name in ("report.html", "metrics.json", "audit.json"):
        path = ctx.reports / name
        if path.is_file():
            mlflow.log_artifact(str(path))
    logger.info("Report written to %s", ctx.reports / "report.html")
    return {"report": str(ctx.reports / "report.html"), "bytes": len(html_text.encode("utf-8"))}




def register_cli(subparsers: Any) -> None:
    """Add ``hivcomorb report``."""
    from hivcomorb.pipeline import add_stage_command

    add_stage_command(
        subparsers,
        "report",
        help="write the auditor's report from the outputs of earlier stages",
        description="Assemble reports/<dataset>/report.html, metrics.json and audit.json from the files the "
        "earlier stages wrote under artifacts/<dataset>/.",
        device=False,
    )
