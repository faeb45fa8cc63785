"""The audit stage end to end on small trained models, with a real MLflow store.

The cohort contains an ethnicity group of four patients and recognisable
patient ids; neither may reach any output of the stage.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import matplotlib.text
import mlflow
import pytest

import hivcomorb.audit as audit_stage
from hivcomorb.audit import figures as audit_figures
from hivcomorb.config import load_config
from hivcomorb.context import RunContext
from hivcomorb.errors import DataNotFoundError
from hivcomorb.pipeline import load_run_ids, run_single_stage

from test_audit_support import ID_PREFIX, SITE, SMALL_GROUP, make_cohort, write_inputs

OVERRIDES = {
    "device": "cpu",
    "site": SITE,
    "audit": {
        "bootstrap": 50,
        "explain": {"shap_sample": 150, "permutation_repeats": 2},
        "mitigation": {"threshold_optimizer": {"grid_size": 200}},
    },
}
SECRETS = (SMALL_GROUP, ID_PREFIX)


def _context(root: Path) -> RunContext:
    overrides = {"paths": {"artifacts": str(root / "artifacts"), "reports": str(root / "reports")}, **OVERRIDES}
    ctx = RunContext.from_config(load_config("demo", overrides))
    ctx.device = "cpu"
    return ctx


@pytest.fixture(scope="module")
def stage(tmp_path_factory):
    """Run the audit stage once under MLflow; collect its outputs, figure texts and log records."""
    root = tmp_path_factory.mktemp("audit_stage")
    figure_texts: list[str] = []
    records: list[logging.LogRecord] = []
    original_save = audit_figures._save

    def recording_save(fig, path):
        fig.canvas.draw()
        figure_texts.extend(t.get_text() for t in fig.findobj(matplotlib.text.Text))
        return original_save(fig, path)

    class Collect(logging.Handler):
        def emit(self, record):
            records.append(record)

    handler = Collect(level=logging.DEBUG)
    logger = logging.getLogger("hivcomorb")
    previous_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    uri = f"sqlite:///{(root / 'mlflow.db').as_posix()}"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", uri)
        patch.chdir(root)
        patch.setattr(audit_figures, "_save", recording_save)
        mlflow.set_tracking_uri(uri)
        ctx = _context(root)
        write_inputs(ctx.artifacts, make_cohort(n=360, seed=1), ctx.contract, {"aware": "xgboost", "unaware": "lightgbm"})
        try:
            run_single_stage(ctx, "audit")
            run_id = load_run_ids(ctx)["audit"]
            client = mlflow.MlflowClient()
            run = client.get_run(run_id)
            downloaded = Path(mlflow.artifacts.download_artifacts(run_id=run_id, dst_path=str(root / "downloaded")))
            html = audit_stage.report_section(ctx)
        finally:
            logger.removeHandler(handler)
            logger.setLevel(previous_level)
            while mlflow.active_run() is not None:
                mlflow.end_run()
    return {
        "ctx": ctx,
        "run_id": run_id,
        "run": run,
        "downloaded": downloaded,
        "html": html,
        "json_text": (ctx.artifacts / "audit" / "audit.json").read_text(encoding="utf-8"),
        "figure_texts": figure_texts,
        "log_text": "\n".join(r.getMessage() for r in records),
    }


def _artifact_texts(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@pytest.mark.parametrize(
    "key",
    ["explanations", "fairness", "mitigation", "cohort_table", "suppressed", "summary", "figures"],
)
def test_audit_json_has_section(stage, key):
    assert key in json.loads(stage["json_text"])


def test_audit_summary_sentences_present(stage):
    assert len(json.loads(stage["json_text"])["summary"]) >= 3


def test_audit_small_group_counted(stage):
    # The 4-patient group, and the smallest other group, hidden so that subtraction cannot reveal the 4.
    assert json.loads(stage["json_text"])["suppressed"]["ethnicity"] == 2


@pytest.mark.parametrize("secret", SECRETS)
def test_audit_json_hides(stage, secret):
    assert secret not in stage["json_text"]


@pytest.mark.parametrize("secret", SECRETS)
def test_audit_html_hides(stage, secret):
    assert secret not in stage["html"]


@pytest.mark.parametrize("secret", SECRETS)
def test_audit_figures_hide(stage, secret):
    assert not [t for t in stage["figure_texts"] if secret in t]


def test_audit_figure_texts_recorded(stage):
    assert any("white" in t for t in stage["figure_texts"])


@pytest.mark.parametrize("secret", SECRETS)
def test_audit_mlflow_artifacts_hide(stage, secret):
    leaks = [name for name, data in _artifact_texts(stage["downloaded"]).items() if secret.encode() in data]
    assert leaks == []


def test_audit_mlflow_artifacts_logged(stage):
    names = _artifact_texts(stage["downloaded"])
    assert "audit/audit.json" in names


@pytest.mark.parametrize("secret", SECRETS)
def test_audit_mlflow_params_and_metrics_hide(stage, secret):
    data = stage["run"].data
    text = json.dumps({"params": data.params, "metrics": data.metrics, "tags": data.tags})
    assert secret not in text


@pytest.mark.parametrize("secret", SECRETS)
def test_audit_logs_hide(stage, secret):
    assert secret not in stage["log_text"]


def test_audit_html_figures_link_run(stage):
    assert stage["html"].count(stage["run_id"]) == stage["html"].count("<figure>")


def test_audit_html_figures_embedded(stage):
    assert "data:image/png;base64," in stage["html"]


@pytest.mark.parametrize("anchor", ["audit-cohort", "audit-explanations", "audit-fairness", "audit-mitigation"])
def test_audit_html_has_section(stage, anchor):
    assert f'id="{anchor}"' in stage["html"]


@pytest.mark.parametrize("scheme", ["http://", "https://"])
def test_audit_html_has_no_network_reference(stage, scheme):
    assert scheme not in stage["html"]


def test_audit_rerun_same_numbers(stage):
    first = json.loads(stage["json_text"])
    audit_stage.run(stage["ctx"])
    second = json.loads((stage["ctx"].artifacts / "audit" / "audit.json").read_text(encoding="utf-8"))
    assert second == first


def test_audit_missing_training_output(make_context):
    ctx = make_context("demo", {"site": SITE})
    (ctx.artifacts / "ingest").mkdir(parents=True)
    make_cohort(n=50).to_parquet(ctx.artifacts / "ingest" / "cohort.parquet")
    with pytest.raises(DataNotFoundError, match="hivcomorb train"):
        audit_stage.run(ctx)


def test_audit_report_section_before_run(make_context):
    assert "has not run" in audit_stage.report_section(make_context("demo"))


def test_audit_cli_registered():
    parser = argparse.ArgumentParser(prog="hivcomorb")
    audit_stage.register_cli(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["audit", "--config", "demo", "--device", "cpu"])
    assert args.func is not None
