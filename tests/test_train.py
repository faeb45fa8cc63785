"""The train stage end to end on a small synthetic cohort, with a real MLflow store."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest

from hivcomorb.bundle import ModelBundle
from hivcomorb.config import deep_merge, load_config
from hivcomorb.context import RunContext
from hivcomorb.errors import ConfigError, ModelError
from hivcomorb.pipeline import run_stage
from hivcomorb.synth import generate

N_PATIENTS = 260
SKIPPED_LABEL = "respiratory_disease"
ABSENT_LAB = "cd4_count"
# Small models keep the module fast; the stacked model stacks on logistic regression
# because that is the cheapest base.
SMALL_TRAIN = {
    "models": ["prevalence", "logistic", "xgboost", "logistic_stacked"],
    "folds": 3,
    "inner_folds": 2,
    "bootstrap": 60,
    "min_positives": 8,
    "workers": 1,
    "threads_per_model": 1,
    "calibration": "sigmoid",
    "champion_rule": "best",
    "zoo": {
        "xgboost": {"params": {"n_estimators": 20, "learning_rate": 0.1}, "grid": [{"max_depth": 2}]},
        "logistic_stacked": {"base": "logistic", "label_dependence": True},
    },
}


def small_context(tmp: Path, extra: dict | None = None) -> RunContext:
    base = {"paths": {"artifacts": str(tmp / "artifacts"), "reports": str(tmp / "reports")}, "device": "cpu", "train": SMALL_TRAIN}
    config = load_config("demo", deep_merge(base, extra or {}))
    ctx = RunContext.from_config(config)
    ctx.device = "cpu"
    return ctx


def write_inputs(ctx: RunContext) -> pd.DataFrame:
    """Write a synthetic cohort with one label made too rare to train and one lab removed."""
    cohort = generate(N_PATIENTS, ctx.seed)
    extract = cohort.extract.copy()
    positives = np.flatnonzero(extract[SKIPPED_LABEL].astype("float64").to_numpy() == 1)
    extract.loc[positives[3:], SKIPPED_LABEL] = 0
    extract = extract.drop(columns=[ABSENT_LAB, f"{ABSENT_LAB}_censored"], errors="ignore")
    (ctx.artifacts / "ingest").mkdir(parents=True, exist_ok=True)
    (ctx.artifacts / "source").mkdir(parents=True, exist_ok=True)
    extract.to_parquet(ctx.artifacts / "ingest" / "cohort.parquet")
    cohort.truth.to_parquet(ctx.artifacts / "source" / "truth.parquet")
    return extract


def run_train(ctx: RunContext) -> dict:
    with mlflow.start_run(run_name="test-pipeline"):
        return run_stage(ctx, "train")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One small train run shared by the checks below."""
    tmp = tmp_path_factory.mktemp("train-run")
    monkeypatch = pytest.MonkeyPatch()
    uri = f"sqlite:///{(tmp / 'mlflow.db').as_posix()}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.chdir(tmp)
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment("train-tests")
    ctx = small_context(tmp)
    cohort = write_inputs(ctx)
    summary = run_train(ctx)
    yield {"ctx": ctx, "cohort": cohort, "summary": summary, "tmp": tmp}
    while mlflow.active_run() is not None:
        mlflow.end_run()
    monkeypatch.undo()


def train_dir(trained) -> Path:
    return trained["ctx"].artifacts / "train"


def document(trained) -> dict:
    return json.loads((train_dir(trained) / "train.json").read_text(encoding="utf-8"))


@pytest.mark.parametrize(
    "relative",
    [
        "folds.parquet",
        "oof.parquet",
        "train.json",
        "models/aware.joblib",
        "models/unaware.joblib",
        "figures/forest_aware_minus_unaware.png",
        "figures/calibration_curves.png",
        "figures/roc_curves.png",
        "figures/precision_recall_curves.png",
    ],
)
def test_train_writes_output(trained, relative):
    assert (train_dir(trained) / relative).is_file()


def test_train_folds_layout(trained):
    folds = pd.read_parquet(train_dir(trained) / "folds.parquet")
    assert list(folds.columns) == ["row", "repeat", "fold"]
    assert sorted(folds["row"]) == list(range(N_PATIENTS))
    assert set(folds["fold"]) == {0, 1, 2}


def test_train_oof_layout(trained):
    oof = pd.read_parquet(train_dir(trained) / "oof.parquet")
    labels = document(trained)["labels"]
    expected = ["row", "repeat", "fold", "setting", "model", *(f"{p}_{label}" for label in labels for p in ("p", "t"))]
    assert sorted(oof.columns) == sorted(expected)
    assert len(oof) == N_PATIENTS * 2 * len(SMALL_TRAIN["models"])


def test_train_oof_probabilities_valid(trained):
    oof = pd.read_parquet(train_dir(trained) / "oof.parquet")
    probabilities = oof.filter(like="p_").to_numpy()
    assert np.isfinite(probabilities).all()
    assert ((probabilities >= 0) & (probabilities <= 1)).all()


def test_train_oof_one_threshold_per_fold(trained):
    oof = pd.read_parquet(train_dir(trained) / "oof.parquet")
    per_fold = oof.groupby(["setting", "model", "repeat", "fold"])[[c for c in oof.columns if c.startswith("t_")]].nunique()
    assert (per_fold == 1).all().all()


def test_train_oof_folds_match_folds_file(trained):
    oof = pd.read_parquet(train_dir(trained) / "oof.parquet")
    folds = pd.read_parquet(train_dir(trained) / "folds.parquet")
    one = oof[(oof["model"] == "logistic") & (oof["setting"] == "aware")].merge(folds, on=["row", "repeat"], suffixes=("", "_file"))
    assert (one["fold"] == one["fold_file"]).all()


@pytest.mark.parametrize("setting", ["aware", "unaware"])
def test_train_json_setting_block(trained, setting):
    block = document(trained)["settings"][setting]
    assert block["model"] in SMALL_TRAIN["models"]
    assert 0.0 <= block["macro_f1"] <= 1.0
    assert 0.0 <= block["macro_auroc"] <= 1.0
    assert set(block["per_label"]) == set(document(trained)["labels"])
    low, high = block["ci"]["macro_f1"]
    assert low <= block["macro_f1"] <= high


def test_train_json_models_have_intervals(trained):
    models = document(trained)["models"]
    assert set(models) == set(SMALL_TRAIN["models"])
    block = models["logistic"]["aware"]["macro_auroc"]
    assert set(block) == {"estimate", "ci_low", "ci_high"}


def test_train_json_comparison_has_p_values(trained):
    comparison = document(trained)["comparison"]["xgboost"]
    assert set(comparison["macro_f1"]) == {"diff", "ci_low", "ci_high", "p_value"}
    assert 0.0 < comparison["macro_f1"]["p_value"] <= 1.0


def test_train_json_oracle_and_gap(trained):
    doc = document(trained)
    assert doc["oracle"]["macro_auroc"] > 0.5
    gap = doc["oracle_gap"]["champions"]["aware"]["macro_auroc"]["diff"]
    assert gap == pytest.approx(doc["oracle"]["macro_auroc"] - doc["settings"]["aware"]["macro_auroc"])


def test_train_json_champions_best_by_macro_f1(trained):
    doc = document(trained)
    for setting in ("aware", "unaware"):
        best = max(doc["models"], key=lambda name: doc["models"][name][setting]["macro_f1"]["estimate"])
        assert doc["champions"][setting] == best


def test_train_skipped_label_reported_with_counts(trained):
    doc = document(trained)
    assert SKIPPED_LABEL not in doc["labels"]
    assert doc["skipped_labels"][SKIPPED_LABEL]["positives"] == 3


def test_train_absent_lab_reported(trained):
    doc = document(trained)
    assert ABSENT_LAB in doc["dropped_labs"]["absent"]
    assert ABSENT_LAB not in doc["features"]["aware"]


def test_train_unaware_features_lack_demographics(trained):
    features = document(trained)["features"]
    assert "age" in features["aware"]
    assert "age" not in features["unaware"]


def test_train_summary_sentences(trained):
    summary = document(trained)["summary"]
    assert any("macro-F1" in sentence and "CI" in sentence for sentence in summary)
    assert any("true risks" in sentence for sentence in summary)


def test_train_champion_bundle_predicts(trained):
    bundle = ModelBundle.load(train_dir(trained) / "models" / "aware.joblib")
    probabilities = bundle.predict_proba(trained["cohort"], trained["ctx"].contract)
    assert list(probabilities.columns) == document(trained)["labels"]
    assert ((probabilities.to_numpy() >= 0) & (probabilities.to_numpy() <= 1)).all()


def test_train_champion_bundle_metadata(trained):
    bundle = ModelBundle.load(train_dir(trained) / "models" / "unaware.joblib")
    assert bundle.setting == "unaware"
    assert bundle.model_name == document(trained)["champions"]["unaware"]
    assert "haemoglobin" in bundle.training_ranges
    assert set(bundle.metadata["n_train"]) == set(bundle.labels)
    assert bundle.metadata["champion_metric"] == "macro_f1"


def test_train_child_runs_per_model_and_setting(trained):
    runs = mlflow.search_runs(experiment_names=["train-tests"], output_format="list")
    names = {run.info.run_name for run in runs}
    expected = {f"{model}-{setting}" for model in SMALL_TRAIN["models"] for setting in ("aware", "unaware")}
    assert expected <= names


def test_train_outputs_hold_no_patient_id(trained):
    ids = trained["cohort"]["patient_id"].astype(str).head(50).tolist()
    for path in train_dir(trained).rglob("*.json"):
        text = path.read_text(encoding="utf-8")
        assert not any(pid in text for pid in ids), path
    for path in train_dir(trained).glob("*.parquet"):
        assert "patient_id" not in pd.read_parquet(path).columns, path


def test_train_report_section(trained):
    from hivcomorb.train import report_section

    html = report_section(trained["ctx"])
    assert "Does demographic information help?" in html
    assert "data:image/png;base64," in html
    assert "Gap to the true risks" in html
    assert html.startswith('<section id="train">')


@pytest.mark.slow
def test_train_rerun_same_seed_identical(trained):
    ctx = small_context(trained["tmp"] / "rerun")
    write_inputs(ctx)
    run_train(ctx)
    first = document(trained)
    second = json.loads((ctx.artifacts / "train" / "train.json").read_text(encoding="utf-8"))
    assert second["models"] == first["models"]
    assert second["comparison"] == first["comparison"]


# ---------------------------------------------------------------------------
# Configuration and inputs


@pytest.mark.parametrize(
    ("train", "message"),
    [
        ({"folds": 1}, "train.folds must be an integer of at least 2"),
        ({"repeats": 0}, "train.repeats"),
        ({"champion_metric": "accuracy"}, "train.champion_metric"),
        ({"champion_rule": "simplest"}, "train.champion_rule must be one of"),
        ({"workers": 0}, "train.workers"),
        ({"threads_per_model": "many"}, "train.threads_per_model"),
        ({"alpha": 1.5}, "train.alpha"),
        ({"calibration": "platt"}, "train.calibration"),
        ({"backend": "spark"}, "train.backend must be 'local' or 'dask'"),
    ],
)
def test_read_settings_invalid(tmp_path, train, message):
    from hivcomorb.train._stage import read_settings

    ctx = small_context(tmp_path, {"train": train})
    with pytest.raises(ConfigError, match=message):
        read_settings(ctx)


def test_prepare_no_trainable_label(tmp_path):
    from hivcomorb.train._data import prepare

    ctx = small_context(tmp_path)
    cohort = generate(60, 1).extract
    with pytest.raises(ModelError, match="no label has at least 500"):
        prepare(cohort, ctx.contract, 500)


def test_run_without_cohort_names_command(tmp_path, mlflow_store):
    from hivcomorb.errors import DataNotFoundError
    from hivcomorb.train import run

    ctx = small_context(tmp_path)
    with pytest.raises(DataNotFoundError, match="hivcomorb ingest"):
        run(ctx)


def test_register_cli_adds_train():
    from hivcomorb.cli import build_parser

    args = build_parser().parse_args(["train", "--config", "demo", "--device", "cpu"])
    assert args.command == "train"
    assert callable(args.func)


@pytest.mark.slow
def test_train_dask_backend_matches_local(tmp_path, mlflow_store):
    """XGBoost trained on a local two-worker Dask cluster predicts like the local fit.

    Distributed histogram sketches differ slightly from local ones, and inner-fold
    tuning can then pick another grid candidate, so agreement is close, not exact
    (tests/test_distributed.py checks exact equality where the sketches agree).
    """
    xgboost_only = {"models": ["xgboost"], "folds": 2, "inner_folds": 2, "bootstrap": 20}
    dask = {"backend": "dask", "dask": {"n_workers": 2, "threads_per_worker": 1}}
    results = {}
    for name, extra in (("local", {}), ("dask", dask)):
        ctx = small_context(tmp_path / name, {"train": {**xgboost_only, **extra}})
        cohort = write_inputs(ctx)
        run_train(ctx)
        bundle = ModelBundle.load(ctx.artifacts / "train" / "models" / "aware.joblib")
        results[name] = bundle.predict_proba(cohort, ctx.contract)
    difference = (results["dask"] - results["local"]).abs()
    assert difference.mean().max() < 0.06
    # Correlation means something only for labels whose predictions vary.
    varying = results["local"].columns[results["local"].std() > 0.05]
    assert len(varying) >= 3
    assert results["dask"][varying].corrwith(results["local"][varying]).min() > 0.9
