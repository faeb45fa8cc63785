"""End-to-end runs of the pipeline on small synthetic cohorts, with a real MLflow store."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pandas as pd
import pytest

from hivcomorb.config import deep_merge
from hivcomorb.errors import ConfigError
from hivcomorb.pipeline import load_pipeline, run_pipeline

# Small enough for a few minutes on two cores, large enough for every label to train.
SMALL = {
    "source": {"n_patients": 700},
    "train": {"folds": 3},
    "probe": {"permutations": 9, "bootstrap": 50},
    "audit": {"bootstrap": 50, "shap_sample": 100},
}
N_PATIENTS = 700
PLANTED_ID = "PLANTED-ID-7Q4X"
PLANTED_QUARANTINED_ID = "PLANTED-QUARANTINED-9Z2K"


def quick_overrides(extra: dict | None = None) -> dict:
    return deep_merge(deep_merge(load_pipeline("quick").get("overrides") or {}, SMALL), extra or {})


def output_files(tmp: Path) -> list[Path]:
    """Every file a run wrote, except its input and the canonical cohort snapshot (which keeps ids)."""
    skip = {"extract.csv", "extract.truth.parquet", "cohort.parquet", "truth.parquet"}
    return [p for p in tmp.rglob("*") if p.is_file() and p.name not in skip]


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """One quick pipeline run on a synthetic extract with planted identifiers.

    The extract is written as a hospital CSV (source kind ``file``) with its
    true risks beside it. One kept patient carries ``PLANTED_ID`` and one row,
    aged 15, is quarantined with ``PLANTED_QUARANTINED_ID``: neither may appear
    in any output except the canonical cohort snapshot, which keeps ids for joins.
    """
    import logging

    from hivcomorb.config import load_config
    from hivcomorb.context import RunContext
    from hivcomorb.synth import generate

    tmp = tmp_path_factory.mktemp("demo-run")
    cohort = generate(N_PATIENTS, 20261204)
    extract = cohort.extract.copy()
    truth = cohort.truth.copy()
    extract.loc[3, "patient_id"] = PLANTED_ID
    truth.loc[3, "patient_id"] = PLANTED_ID
    extract.loc[10, "patient_id"] = PLANTED_QUARANTINED_ID
    truth.loc[10, "patient_id"] = PLANTED_QUARANTINED_ID
    extract.loc[10, "age"] = 15.0
    extract.to_csv(tmp / "extract.csv", index=False)
    truth.to_parquet(tmp / "extract.truth.parquet", index=False)

    monkeypatch = pytest.MonkeyPatch()
    uri = f"sqlite:///{(tmp / 'mlflow.db').as_posix()}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.chdir(tmp)
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment("Default")
    base = {
        "paths": {"artifacts": str(tmp / "artifacts"), "reports": str(tmp / "reports")},
        "device": "cpu",
        "source": {"kind": "file", "path": str(tmp / "extract.csv"), "truth": str(tmp / "extract.truth.parquet")},
    }
    config = load_config("demo", deep_merge(quick_overrides(), base))
    ctx = RunContext.from_config(config)
    ctx.device = "cpu"

    records: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: records.append(record.getMessage())
    logging.getLogger().addHandler(handler)
    previous_level = logging.getLogger().level
    logging.getLogger().setLevel(logging.INFO)
    try:
        run_pipeline(ctx, load_pipeline("quick")["stages"])
    finally:
        logging.getLogger().removeHandler(handler)
        logging.getLogger().setLevel(previous_level)
    ctx.config["_test_tmp"] = str(tmp)
    ctx.config["_test_logs"] = records
    yield ctx
    monkeypatch.undo()


@pytest.mark.slow
def test_pipeline_writes_report_and_metrics(demo_run):
    assert (demo_run.reports / "report.html").is_file()
    metrics = json.loads((demo_run.reports / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["dataset"] == "demo"
    assert metrics["n_patients"] == N_PATIENTS - 1
    assert metrics["reconciliation"] == {"rows_read": N_PATIENTS, "rows_kept": N_PATIENTS - 1, "rows_quarantined": 1}
    for setting in ("aware", "unaware"):
        block = metrics["settings"][setting]
        assert 0.0 <= block["macro_f1"] <= 1.0
        assert 0.5 <= block["macro_auroc"] <= 1.0
        assert set(block["per_label"]) == set(metrics["labels"])
    assert metrics["oracle"] is not None


@pytest.mark.slow
def test_pipeline_metrics_has_probe_block(demo_run):
    metrics = json.loads((demo_run.reports / "metrics.json").read_text(encoding="utf-8"))
    assert "gender" in metrics["probe"]
    assert "age" in metrics["probe"]


@pytest.mark.slow
def test_pipeline_report_has_every_section(demo_run):
    html = (demo_run.reports / "report.html").read_text(encoding="utf-8")
    for anchor in ("summary", "ingest", "train", "probe", "audit", "model-card", "limitations"):
        assert f'id="{anchor}"' in html, anchor
    assert "did not run" not in html
    assert "http://" not in html.replace("http://www.w3.org", "")


@pytest.mark.slow
def test_pipeline_tracks_parent_and_stage_runs(demo_run):
    runs = mlflow.search_runs(search_all_experiments=True, output_format="list")
    parent_id = demo_run.run_ids["pipeline"]
    stages = {run.data.tags.get("hivcomorb.stage") for run in runs if run.data.tags.get("mlflow.parentRunId") == parent_id}
    assert {"source", "ingest", "train", "register", "probe", "audit", "report"} <= stages


@pytest.mark.slow
def test_pipeline_registers_champions(demo_run):
    client = mlflow.MlflowClient()
    for setting in ("aware", "unaware"):
        version = client.get_model_version_by_alias(f"hivcomorb-demo-{setting}", f"champion-{setting}")
        assert int(version.version) >= 1


@pytest.mark.slow
def test_pipeline_tracks_data_hash(demo_run):
    client = mlflow.MlflowClient()
    ingest_run = client.get_run(demo_run.run_ids["ingest"])
    ingest = json.loads((demo_run.artifacts / "ingest" / "ingest.json").read_text(encoding="utf-8"))
    assert ingest["content_hash"] in ingest_run.data.params.values()


def test_pipeline_unknown_stage_raises(tmp_path, monkeypatch):
    pipelines = tmp_path / "pipelines"
    pipelines.mkdir()
    (pipelines / "bad.yaml").write_text("stages: [source, teleport]\n", encoding="utf-8")
    monkeypatch.setenv("HIVCOMORB_HOME", str(tmp_path))
    with pytest.raises(ConfigError, match=r"unknown stages \['teleport'\]"):
        load_pipeline("bad")


@pytest.mark.slow
@pytest.mark.parametrize("planted", [PLANTED_ID, PLANTED_QUARANTINED_ID])
def test_pipeline_outputs_contain_no_patient_id(demo_run, planted):
    files = output_files(Path(demo_run.config["_test_tmp"]))
    assert any(p.name == "mlflow.db" for p in files)
    assert any(p.name == "report.html" for p in files)
    leaking = [str(p) for p in files if planted.encode() in p.read_bytes()]
    assert leaking == []


@pytest.mark.slow
@pytest.mark.parametrize("planted", [PLANTED_ID, PLANTED_QUARANTINED_ID])
def test_pipeline_logs_contain_no_patient_id(demo_run, planted):
    assert demo_run.config["_test_logs"]
    assert not [line for line in demo_run.config["_test_logs"] if planted in line]


@pytest.mark.slow
def test_pipeline_quarantine_names_row_not_id(demo_run):
    quarantine = pd.read_csv(demo_run.artifacts / "ingest" / "quarantine.csv")
    assert quarantine["source_row"].tolist() == [11]
    assert quarantine["column"].tolist() == ["age"]


@pytest.mark.slow
def test_pipeline_keeps_mlflow_artifacts_beside_store(demo_run):
    tmp = Path(demo_run.config["_test_tmp"])
    assert not (tmp / "mlruns").exists()
    assert any((tmp / "artifacts").rglob("MLmodel"))
