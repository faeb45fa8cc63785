"""Tests of the SHAP explainers behind scoring reasons, on real zoo models fitted to a small synthetic cohort.

Champions are fitted with :func:`hivcomorb.models.fit_label` and the zoo
entries of ``conf/stages/train.yaml``, as training fits them. Boosting models
get fewer trees to keep the module fast. Planted rows carry extreme values
whose effect on the label is known.
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import pytest
import shap
from sklearn.impute import SimpleImputer
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler

from hivcomorb import registry, tracking
from hivcomorb.bundle import ModelBundle
from hivcomorb.config import load_config
from hivcomorb.contract import Contract, load_contract
from hivcomorb.features import build_matrix, input_columns
from hivcomorb.models import (
    ConstantModel,
    FitOptions,
    LabelModel,
    StackedLabelModel,
    _spec_from_entry,
    fit_label,
    signed_log,
    stack_features,
)
from hivcomorb.score.explainers import (
    RESCALE_FLOOR,
    _reference,
    column_players,
    output_sources,
    permutation_values,
    propagate,
    shap_values,
)
from hivcomorb.score.reasons import ValueTexts, column_groups, top_reasons
from test_registry import make_cohort, make_test_context, sqlite_store

LABELS = ("diabetes", "hypertension", "chronic_kidney_disease")
REASON_PATTERN = re.compile(r"^(?P<column>[a-z0-9_]+)=.+ (raises|lowers) risk$")
SETTING = "unaware"

# Rows of the scored frame with planted values: very high HbA1c (mmol/mol).
HIGH_HBA1C_ROWS = (0, 1, 2, 3)
HIGH_HBA1C = 130.0
# Rows with a low HbA1c, below every diabetic range.
LOW_HBA1C_ROWS = (4, 5, 6, 7)
LOW_HBA1C = 26.0
# A planted row whose glucose is missing, so that its missing-value indicator matters.
MISSING_GLUCOSE_ROW = 1


@dataclass
class Data:
    """Training cohort and matrix, and a scored frame with planted rows."""

    contract: Contract
    cohort: pd.DataFrame
    columns: list[str]
    matrix: pd.DataFrame
    targets: dict[str, np.ndarray]
    frame: pd.DataFrame
    scored: pd.DataFrame


def _plant(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame.reset_index(drop=True).copy()
    frame.loc[list(HIGH_HBA1C_ROWS), "hba1c"] = HIGH_HBA1C
    frame.loc[list(LOW_HBA1C_ROWS), "hba1c"] = LOW_HBA1C
    frame.loc[MISSING_GLUCOSE_ROW, "glucose"] = np.nan
    for column in ("hba1c_censored", "glucose_censored"):
        if column in frame.columns:
            frame[column] = pd.NA
    return frame


@pytest.fixture(scope="module")
def data() -> Data:
    contract = load_contract()
    cohort = make_cohort(600, seed=21)
    columns = input_columns(contract, cohort.columns, SETTING)
    matrix = build_matrix(cohort, contract, columns)
    rng = np.random.default_rng(5)
    hba1c = pd.to_numeric(cohort["hba1c"]).to_numpy(dtype=np.float64)
    # Diabetes is replanted as a steep monotone function of HbA1c, so that
    # every model learns its direction.
    logit = 0.25 * (np.nan_to_num(hba1c, nan=40.0) - 48.0)
    diabetes = (rng.random(len(cohort)) < 1 / (1 + np.exp(-logit))).astype(np.float64)
    targets = {label: pd.to_numeric(cohort[label]).to_numpy(dtype=np.float64) for label in LABELS}
    targets["diabetes"] = diabetes
    frame = _plant(cohort.head(40))
    return Data(contract, cohort, columns, matrix, targets, frame, build_matrix(frame, contract, columns))


ZOO = load_config("demo")["train"]["zoo"]
FAST_BOOSTING = {"n_estimators": 60}


def _inner_splits(n_rows: int) -> list[tuple[np.ndarray, np.ndarray]]:
    fold = np.arange(n_rows) % 3
    return [(np.flatnonzero(fold != k), np.flatnonzero(fold == k)) for k in range(3)]


def _spec(name: str):
    spec = _spec_from_entry(name, ZOO)
    if spec.kind in ("xgboost", "lightgbm"):
        spec = dataclasses.replace(spec, params={**spec.params, **FAST_BOOSTING}, grid=({},))
    return spec


def fit_champion(name: str, data: Data, labels: tuple[str, ...] = LABELS) -> dict[str, LabelModel | StackedLabelModel]:
    """Fit the zoo entry ``name`` for each label as training's final refit does, stacked entries included."""
    features = data.matrix.to_numpy(dtype=np.float32)
    inner = _inner_splits(len(features))
    options = FitOptions(n_jobs=1, seed=0)
    spec = _spec(name)
    if not spec.label_dependence:
        return {label: fit_label(features, data.targets[label], inner, spec, options).model for label in labels}
    base = _spec(spec.first_stage)
    first = {label: fit_label(features, data.targets[label], inner, base, options) for label in labels}
    models: dict[str, Any] = {}
    for label in labels:
        others = [other for other in labels if other != label]
        extra = np.column_stack([first[other].inner_probability for other in others]).astype(np.float32)
        fit = fit_label(np.column_stack([features, extra]), data.targets[label], inner, spec, options)
        models[label] = StackedLabelModel({other: first[other].model for other in others}, others, fit.model)
    return models


def make_bundle(name: str, data: Data, models: dict[str, Any]) -> ModelBundle:
    ranges = {c: (float(data.cohort[c].min()), float(data.cohort[c].max())) for c in data.columns if data.contract.column(c).dtype != "category"}
    return ModelBundle(
        setting=SETTING,
        model_name=name,
        labels=list(models),
        input_columns=list(data.columns),
        feature_names=list(data.matrix.columns),
        estimators=models,
        thresholds={label: 0.3 for label in models},
        contract_version=data.contract.version,
        training_ranges=ranges,
        metadata={"built_by": "tests"},
    )


def reasons_of(model: Any, data: Data, rows: np.ndarray, n_reasons: int = 3) -> list[list[str | None]]:
    """Return the reason texts of ``rows`` of the scored frame, as scoring computes them."""
    values = shap_values(model, data.scored.iloc[rows])
    groups = column_groups(list(data.matrix.columns), data.columns, data.contract)
    texts = ValueTexts(data.frame, data.contract)
    series = top_reasons(values, texts, rows, groups, n_reasons)
    return [list(row) for row in zip(*(s.to_list() for s in series))]


def reason_column(text: str) -> str:
    match = REASON_PATTERN.match(text)
    assert match, f"reason {text!r} does not read column=value raises/lowers risk"
    return match["column"]


def column_values(values: np.ndarray, data: Data) -> dict[str, np.ndarray]:
    """Sum feature values into input columns, as reasons do."""
    return {column: values[:, idx].sum(axis=1) for column, idx in column_groups(list(data.matrix.columns), data.columns, data.contract)}


def log_odds(estimator: Any, matrix: pd.DataFrame) -> np.ndarray:
    probability = np.clip(estimator.predict_proba(matrix.to_numpy(dtype=np.float32))[:, 1], 1e-6, 1 - 1e-6)
    return np.log(probability / (1 - probability))


@pytest.fixture(scope="module")
def logistic(data: Data) -> dict[str, Any]:
    return fit_champion("logistic", data, ("diabetes",))


@pytest.fixture(scope="module")
def mlp(data: Data) -> dict[str, Any]:
    return fit_champion("mlp", data, ("diabetes",))


@pytest.fixture(scope="module")
def stacked(data: Data) -> dict[str, Any]:
    return fit_champion("xgboost_stacked", data)


# Logistic regression: exact linear SHAP


def hand_contributions(pipeline: Any, row: pd.Series, data: Data) -> dict[str, float]:
    """Compute coefficient x (transformed value - training mean) for each input column of one raw row.

    Written out step by step from the fitted pipeline's parts: signed log,
    median imputation with missing-value indicators, standard scaling and
    the logistic coefficients.
    """
    log_step, imputer, scaler, model = (step for _, step in pipeline.steps)
    assert isinstance(log_step, FunctionTransformer)
    coefficients = model.coef_[0]
    names = list(data.matrix.columns)
    n_features = len(names)
    flagged = list(imputer.indicator_.features_)
    contributions: dict[str, float] = {}
    for column, idx in column_groups(names, data.columns, data.contract):
        total = 0.0
        for j in idx:
            raw = float(row.iloc[j])
            missing = np.isnan(raw)
            value = imputer.statistics_[j] if missing else float(signed_log(np.array([raw]))[0])
            total += coefficients[j] * (value - scaler.mean_[j]) / scaler.scale_[j]
            if j in flagged:
                k = n_features + flagged.index(j)
                total += coefficients[k] * (float(missing) - scaler.mean_[k]) / scaler.scale_[k]
        contributions[column] = total
    return contributions


def test_logistic_top_reason_matches_hand_computed(logistic, data):
    pipeline = logistic["diabetes"].estimator
    row = HIGH_HBA1C_ROWS[1]
    hand = hand_contributions(pipeline, data.scored.iloc[row], data)
    largest = max(hand, key=lambda column: abs(hand[column]))
    (reasons,) = reasons_of(logistic["diabetes"], data, np.array([row]))
    assert largest == "hba1c"
    assert reason_column(reasons[0]) == largest
    assert reasons[0].endswith("raises risk")


def test_logistic_values_equal_hand_computed(logistic, data):
    pipeline = logistic["diabetes"].estimator
    values = column_values(shap_values(logistic["diabetes"], data.scored.iloc[[MISSING_GLUCOSE_ROW]]), data)
    hand = hand_contributions(pipeline, data.scored.iloc[MISSING_GLUCOSE_ROW], data)
    for column, expected in hand.items():
        assert values[column][0] == pytest.approx(expected, abs=1e-4), column


def test_logistic_missing_indicator_goes_to_lab(logistic, data):
    pipeline = logistic["diabetes"].estimator
    imputer = pipeline.named_steps["impute"]
    glucose = list(data.matrix.columns).index("glucose")
    assert glucose in imputer.indicator_.features_
    values = shap_values(logistic["diabetes"], data.scored.iloc[[MISSING_GLUCOSE_ROW]])
    assert values.shape == (1, data.matrix.shape[1])
    hand = hand_contributions(pipeline, data.scored.iloc[MISSING_GLUCOSE_ROW], data)
    assert values[0, glucose] == pytest.approx(hand["glucose"], abs=1e-4)


def test_logistic_values_sum_to_log_odds(logistic, data):
    pipeline = logistic["diabetes"].estimator
    values = shap_values(logistic["diabetes"], data.scored)
    offset = pipeline.decision_function(data.scored.to_numpy(dtype=np.float32)) - values.sum(axis=1)
    assert np.ptp(offset) < 1e-3


# Stacked label models: propagation through the first stage


def test_stacked_values_name_input_features(stacked, data):
    values = shap_values(stacked["hypertension"], data.scored)
    assert values.shape == data.scored.shape
    assert np.isfinite(values).all()


def test_stacked_reasons_name_raw_columns(stacked, data):
    for label in LABELS:
        for reasons in reasons_of(stacked[label], data, np.arange(len(data.frame))):
            for text in filter(None, reasons):
                assert reason_column(text) in data.columns, (label, text)


def test_stacked_planted_feature_dominates(stacked, data):
    rows = np.array(HIGH_HBA1C_ROWS)
    for reasons in reasons_of(stacked["diabetes"], data, rows):
        assert reasons[0].startswith("hba1c=130 mmol/mol raises risk")


def test_stacked_values_add_propagated_stage(stacked, data):
    """Rows that never reach the rescale floor sum to the second stage's values, and every row adds the propagated shares."""
    model = stacked["hypertension"]
    features = data.scored.to_numpy(dtype=np.float32)
    second = shap_values(model.second_stage, pd.DataFrame(stack_features(features, model.first_stage, model.other_labels)))
    n_inputs = features.shape[1]
    first = {label: shap_values(model.first_stage[label], data.scored) for label in model.other_labels}
    unfloored = np.all(
        [np.abs(v.sum(axis=1)) >= RESCALE_FLOOR * np.abs(v).sum(axis=1) for v in first.values()], axis=0
    )
    values = shap_values(model, data.scored)
    assert unfloored.any()
    np.testing.assert_allclose(values.sum(axis=1)[unfloored], second.sum(axis=1)[unfloored], atol=1e-4)
    expected = second[:, :n_inputs] + sum(propagate(second[:, n_inputs + k], first[label]) for k, label in enumerate(model.other_labels))
    np.testing.assert_allclose(values, expected, atol=1e-6)


@pytest.mark.parametrize(
    ("stage", "first", "expected"),
    [
        (np.array([1.0]), np.array([[2.0, 1.0, 1.0]]), np.array([[0.5, 0.25, 0.25]])),
        (np.array([1.0]), np.array([[-2.0, -1.0, 0.0]]), np.array([[2 / 3, 1 / 3, 0.0]])),
        (np.array([-0.6]), np.array([[0.3, 0.0, 0.3]]), np.array([[-0.3, 0.0, -0.3]])),
        (np.array([0.8]), np.array([[0.0, 0.0, 0.0]]), np.array([[0.0, 0.0, 0.0]])),
    ],
    ids=["shares", "negative-total", "negative-stage", "zero-first-stage"],
)
def test_propagate_rescale_rule(stage, first, expected):
    np.testing.assert_allclose(propagate(stage, first), expected)


def test_propagate_bounds_cancelling_first_stage():
    stage = np.array([1.0])
    first = np.array([[5.0, -4.99, 0.0]])
    shares = propagate(stage, first)
    assert np.abs(shares).sum() <= abs(stage[0]) / RESCALE_FLOOR + 1e-12
    assert np.sign(shares[0, 0]) == 1.0
    assert np.sign(shares[0, 1]) == -1.0


# Other models: permutation sampling against a reference patient


def test_mlp_reasons_exist_for_flagged_rows(mlp, data):
    rows = np.array(HIGH_HBA1C_ROWS)
    for reasons in reasons_of(mlp["diabetes"], data, rows):
        assert reasons[0] is not None
        assert all(reason_column(text) in data.columns for text in filter(None, reasons))


def test_mlp_sign_follows_planted_effect(mlp, data):
    hba1c = list(data.matrix.columns).index("hba1c")
    values = shap_values(mlp["diabetes"], data.scored)
    assert (values[list(HIGH_HBA1C_ROWS), hba1c] > 0).all()
    assert (values[list(LOW_HBA1C_ROWS), hba1c] < 0).all()


def test_mlp_top_reason_is_planted_feature(mlp, data):
    for reasons in reasons_of(mlp["diabetes"], data, np.array(HIGH_HBA1C_ROWS)):
        assert reasons[0].startswith("hba1c=130 mmol/mol raises risk")


def test_permutation_values_sum_to_log_odds_from_reference(mlp, data):
    pipeline = mlp["diabetes"].estimator
    head, tail, reference = _reference(pipeline, data.matrix.columns)
    values = permutation_values(pipeline, data.scored)
    probability = np.clip(tail.predict_proba(reference[None, :])[:, 1], 1e-6, 1 - 1e-6)
    reference_log_odds = np.log(probability / (1 - probability))
    row_log_odds = log_odds(pipeline, data.scored)
    np.testing.assert_allclose(values.sum(axis=1), row_log_odds - reference_log_odds, atol=1e-3)


def test_permutation_values_independent_of_batch(mlp, data):
    pipeline = mlp["diabetes"].estimator
    alone = permutation_values(pipeline, data.scored.iloc[5:8])
    together = permutation_values(pipeline, data.scored)[5:8]
    np.testing.assert_allclose(alone, together, atol=1e-9)


def test_permutation_values_match_shap_on_additive_model(logistic, data):
    """On a logistic pipeline, additive over input columns, sampling is exact and agrees with shap's explainer."""
    pipeline = logistic["diabetes"].estimator
    head, tail, reference = _reference(pipeline, data.matrix.columns)
    # Unplanted rows: a planted extreme saturates the clipped log-odds, which is not additive.
    rows = data.scored.iloc[10:20]
    ours = permutation_values(pipeline, rows, max_evals=1)

    def tail_log_odds(matrix: np.ndarray) -> np.ndarray:
        probability = np.clip(tail.predict_proba(matrix)[:, 1], 1e-6, 1 - 1e-6)
        return np.log(probability / (1 - probability))

    transformed = np.asarray(head.transform(rows.to_numpy(dtype=np.float32)), dtype=np.float64)
    explainer = shap.PermutationExplainer(tail_log_odds, shap.maskers.Independent(reference[None, :], max_samples=1), seed=0)
    theirs = explainer(transformed, max_evals=2 * transformed.shape[1] + 1, silent=True).values
    for indices in column_players(data.matrix.columns):
        np.testing.assert_allclose(ours[:, indices].sum(axis=1), theirs[:, indices].sum(axis=1), atol=1e-6)


def test_permutation_reference_uses_most_frequent_category(logistic, data):
    pipeline = logistic["diabetes"].estimator
    _, _, reference = _reference(pipeline, data.matrix.columns)
    names = list(data.matrix.columns)
    smoking = [i for i, name in enumerate(names) if name.startswith("smoking_status=")]
    counts = data.cohort["smoking_status"].fillna("unknown").value_counts()
    present = [names[i] for i in smoking if reference[i] > 0]
    assert present == [f"smoking_status={counts.index[0]}"]


@pytest.mark.parametrize("name", ["knn", "svm", "random_forest"])
def test_other_champions_give_reasons(name, data):
    models = fit_champion(name, data, ("diabetes",))
    values = shap_values(models["diabetes"], data.scored)
    assert values.shape == data.scored.shape
    assert np.isfinite(values).all()
    hba1c = list(data.matrix.columns).index("hba1c")
    assert (values[list(HIGH_HBA1C_ROWS), hba1c] > 0).all()
    for reasons in reasons_of(models["diabetes"], data, np.array(HIGH_HBA1C_ROWS)):
        assert reason_column(reasons[0]) in data.columns


@pytest.mark.parametrize("model", [ConstantModel(0.2), LabelModel(ConstantModel(0.7), None)], ids=["constant", "wrapped-constant"])
def test_constant_model_has_no_reasons(model, data):
    values = shap_values(model, data.scored)
    assert not values.any()


def test_prevalence_champion_has_no_reasons(data):
    models = fit_champion("prevalence", data, ("diabetes",))
    for reasons in reasons_of(models["diabetes"], data, np.arange(5)):
        assert reasons == [None, None, None]


# Mapping preprocessed columns back to inputs


def test_output_sources_follow_imputer_indicators():
    features = np.array([[1.0, np.nan, 3.0], [2.0, 5.0, np.nan], [3.0, 6.0, 4.0]])
    preprocessing = make_pipeline(FunctionTransformer(signed_log), SimpleImputer(strategy="median", add_indicator=True), StandardScaler())
    transformed = preprocessing.fit_transform(features)
    sources = output_sources(preprocessing, 3)
    assert sources.tolist() == [0, 1, 2, 1, 2]
    assert sources.size == transformed.shape[1]


def test_output_sources_drop_empty_feature():
    features = np.array([[1.0, np.nan], [2.0, np.nan]])
    preprocessing = make_pipeline(SimpleImputer(strategy="median", add_indicator=True))
    preprocessing.fit(features)
    assert output_sources(preprocessing, 2).tolist() == [0, 1]


def test_column_players_group_category_indicators():
    players = column_players(["hba1c", "smoking_status=never", "smoking_status=current", "glucose"])
    assert [p.tolist() for p in players] == [[0], [1, 2], [3]]


# hivcomorb score with a registered stacked champion


@pytest.fixture(scope="module")
def stacked_command(tmp_path_factory: pytest.TempPathFactory, data: Data, stacked: dict[str, Any]):
    from hivcomorb.cli import main

    root = tmp_path_factory.mktemp("stacked-score")
    with sqlite_store(root):
        ctx = make_test_context(root)
        (ctx.artifacts / "ingest").mkdir(parents=True, exist_ok=True)
        data.cohort.to_parquet(ctx.artifacts / "ingest" / "cohort.parquet", index=False)
        bundle = make_bundle("xgboost_stacked", data, stacked)
        path = registry.bundle_path(ctx, SETTING)
        path.parent.mkdir(parents=True, exist_ok=True)
        bundle.save(path)
        tracking.configure()
        mlflow.set_experiment(experiment_id=tracking.ensure_experiment("hivcomorb-tests"))
        with tracking.stage_run("register"):
            registry.run(ctx)
        extract = root / "monthly.csv"
        extract_frame = data.frame.drop(columns=[c for c in data.contract.labels if c in data.frame.columns])
        extract_frame.to_csv(extract, index=False)
        out = root / "scores.parquet"
        config = root / "config.yaml"
        config.write_text(
            "dataset: demo\nseed: 1\n"
            f"paths: {{artifacts: {root / 'artifacts'}, reports: {root / 'reports'}}}\n"
            "score: {progress: false, validate: 'off'}\n",
            encoding="utf-8",
        )
        code = main(["score", str(extract), "--model", "champion-unaware", "--out", str(out), "--config", str(config)])
        yield code, pd.read_parquet(out), bundle, json.loads(out.with_name(out.name + ".summary.json").read_text(encoding="utf-8"))


def test_score_command_stacked_exits_zero(stacked_command):
    code, _, _, _ = stacked_command
    assert code == 0


def test_score_command_stacked_writes_reasons(stacked_command):
    _, scores, bundle, _ = stacked_command
    assert scores["model_name"].iloc[0] == "hivcomorb-demo-unaware"
    for label in bundle.labels:
        flagged = scores[f"flag_{label}"]
        assert flagged.any(), label
        assert scores.loc[flagged, f"reason1_{label}"].notna().all(), label
        assert scores.loc[~flagged, f"reason1_{label}"].isna().all(), label


def test_score_command_stacked_reasons_name_inputs(stacked_command):
    _, scores, bundle, _ = stacked_command
    texts = pd.concat([scores[f"reason{k}_{label}"] for label in bundle.labels for k in (1, 2, 3)]).dropna()
    assert len(texts) > 0
    assert {reason_column(text) for text in texts} <= set(bundle.input_columns)


def test_score_command_stacked_planted_reason(stacked_command):
    _, scores, _, _ = stacked_command
    planted = scores.loc[scores["source_row"].isin([r + 1 for r in HIGH_HBA1C_ROWS])]
    assert planted["flag_diabetes"].all()
    assert planted["reason1_diabetes"].str.startswith("hba1c=130 mmol/mol raises risk").all()
