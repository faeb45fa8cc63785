"""Tests of the synthetic cohort generator (hivcomorb.synth)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.metrics import roc_auc_score

from hivcomorb.cli import build_parser, main
from hivcomorb.config import stage_defaults
from hivcomorb.contract import load_contract
from hivcomorb.errors import ConfigError
from hivcomorb.synth import generate, write_cohort

CONTRACT = load_contract()
DEFAULTS = stage_defaults()["synth"]
LARGE = 20_000


@pytest.fixture(scope="module")
def cohort():
    return generate(LARGE, seed=7)


@pytest.fixture(scope="module")
def cohort_without_signatures():
    return generate(LARGE, seed=7, options={"signatures": {"gender": False, "age": False}})


def test_generate_same_seed_identical():
    first, second = generate(300, seed=3), generate(300, seed=3)
    pd.testing.assert_frame_equal(first.extract, second.extract)
    pd.testing.assert_frame_equal(first.truth, second.truth)


def test_generate_other_seed_differs():
    first, second = generate(300, seed=3), generate(300, seed=4)
    assert not first.extract["haemoglobin"].equals(second.extract["haemoglobin"])


def test_generate_columns_follow_contract(cohort):
    expected = [
        CONTRACT.id_column,
        *CONTRACT.demographics,
        *CONTRACT.social,
        *CONTRACT.labs,
        *CONTRACT.labels,
        *(f"{lab}_censored" for lab in CONTRACT.labs),
    ]
    assert list(cohort.extract.columns) == expected


def test_generate_truth_columns(cohort):
    assert list(cohort.truth.columns) == [CONTRACT.id_column, *CONTRACT.labels]


def test_generate_truth_ids_match_extract(cohort):
    assert cohort.truth[CONTRACT.id_column].equals(cohort.extract[CONTRACT.id_column])


def test_generate_patient_id_format(cohort):
    ids = cohort.extract[CONTRACT.id_column]
    assert ids.iloc[0] == "P0000001"
    assert ids.is_unique
    assert ids.str.fullmatch(r"P\d{7}").all()


@pytest.mark.parametrize("lab", CONTRACT.labs)
def test_generate_lab_dtype_float(cohort, lab):
    assert cohort.extract[lab].dtype == np.float64


@pytest.mark.parametrize("label", CONTRACT.labels)
def test_generate_label_dtype_int8(cohort, label):
    assert cohort.extract[label].dtype == pd.Int8Dtype()


def test_generate_deprivation_nullable_quintile(cohort):
    deprivation = cohort.extract["deprivation_quintile"]
    assert deprivation.dtype == pd.Int64Dtype()
    assert set(deprivation.dropna().unique()) == {1, 2, 3, 4, 5}
    assert deprivation.isna().any()


@pytest.mark.parametrize("column", [c.name for c in CONTRACT.columns if c.dtype == "category"])
def test_generate_categories_from_contract(cohort, column):
    values = set(cohort.extract[column].dropna().unique())
    assert values <= set(CONTRACT.column(column).categories)


@pytest.mark.parametrize("lab", CONTRACT.labs)
def test_generate_lab_within_possible_range(cohort, lab):
    low, high = CONTRACT.column(lab).possible
    values = cohort.extract[lab].dropna()
    assert values.between(low, high).all()


@pytest.mark.parametrize("lab", CONTRACT.labs)
def test_generate_lab_mostly_measured(cohort, lab):
    # Every lab has values, and none is missing for nearly everybody.
    assert cohort.extract[lab].notna().mean() > 0.3


@pytest.mark.parametrize(
    ("lab", "column", "group", "low", "high"),
    [
        # Medians inside the published ranges the generator draws from.
        ("cd4_count", None, None, 480, 640),
        ("cd8_count", None, None, 640, 820),
        ("cd4_cd8_ratio", None, None, 0.65, 0.95),
        ("haemoglobin", "gender", "male", 134, 170),
        ("haemoglobin", "gender", "female", 117, 153),
        ("creatinine", "gender", "female", 45, 90),
        ("creatinine", "gender", "male", 60, 105),
        ("alt", "gender", "male", 9, 50),
        ("alt", "gender", "female", 8, 38),
        ("egfr", None, None, 60, 110),
        ("hba1c", None, None, 30, 45),
        ("total_cholesterol", None, None, 4.0, 5.8),
    ],
)
def test_generate_lab_median_plausible(cohort, lab, column, group, low, high):
    frame = cohort.extract if column is None else cohort.extract[cohort.extract[column] == group]
    assert low <= frame[lab].median() <= high


@pytest.mark.parametrize("label", CONTRACT.labels)
def test_generate_prevalence_within_band(cohort, label):
    low, high = DEFAULTS["labels"][label]["band"]
    assert low <= cohort.extract[label].mean() <= high


@pytest.mark.parametrize("label", CONTRACT.labels)
def test_generate_truth_strictly_between_0_and_1(cohort, label):
    truth = cohort.truth[label]
    assert truth.gt(0).all()
    assert truth.lt(1).all()


@pytest.mark.parametrize("label", CONTRACT.labels)
def test_generate_label_rate_matches_truth(cohort, label):
    known = cohort.extract[label].notna()
    expected = cohort.truth.loc[known, label].mean()
    tolerance = 4 * math.sqrt(expected * (1 - expected) / known.sum())
    assert abs(cohort.extract.loc[known, label].mean() - expected) < tolerance


@pytest.mark.parametrize("label", CONTRACT.labels)
def test_generate_unknown_labels_present(cohort, label):
    share = cohort.extract[label].isna().mean()
    assert 0.01 < share < 0.06


def test_generate_suppressed_viral_load_censored_at_limit(cohort):
    extract = cohort.extract
    censored = extract["viral_load_censored"] == "<"
    limit = CONTRACT.column("viral_load").detection_limit
    assert censored.mean() > 0.85
    assert (extract.loc[censored, "viral_load"] == limit).all()


def test_generate_detectable_viral_load_not_censored(cohort):
    extract = cohort.extract
    above = extract["viral_load"] > CONTRACT.column("viral_load").detection_limit
    assert above.any()
    assert extract.loc[above, "viral_load_censored"].isna().all()


def test_generate_censor_flag_only_where_measured(cohort):
    extract = cohort.extract
    for lab in CONTRACT.labs:
        assert not (extract[f"{lab}_censored"].notna() & extract[lab].isna()).any(), lab


def test_generate_ldl_missing_above_friedewald_limit(cohort):
    extract = cohort.extract
    high_triglycerides = extract["triglycerides"] > 4.5
    assert high_triglycerides.any()
    assert extract.loc[high_triglycerides, "ldl_cholesterol"].isna().all()


@pytest.mark.parametrize("lab", sorted(DEFAULTS["missing"]["not_at_random"]))
def test_generate_missing_not_at_random(lab):
    # Labs come from their own random stream, so the same seed with every
    # value requested shows the values that the default cohort left out.
    default = generate(LARGE, seed=11)
    complete = generate(LARGE, seed=11, options={"missing": {"not_at_random": {lab: {"measured": 1.0}}}})
    full = complete.extract[lab]
    missing = default.extract[lab].isna()
    assert full.notna().mean() > 0.85
    assert full[missing].mean() < full[~missing].mean()


def test_generate_hba1c_request_rate_near_target(cohort):
    measured = cohort.extract["hba1c"].notna().mean()
    assert abs(measured - DEFAULTS["missing"]["not_at_random"]["hba1c"]["measured"]) < 0.03


@pytest.mark.parametrize("lab", ["haemoglobin", "creatinine", "alt", "ggt"])
def test_generate_gender_signature_present(cohort, lab):
    extract = cohort.extract
    female = extract.loc[extract["gender"] == "female", lab].mean()
    male = extract.loc[extract["gender"] == "male", lab].mean()
    assert female < male * 0.92


@pytest.mark.parametrize("lab", ["haemoglobin", "creatinine", "alt", "ggt"])
def test_generate_gender_signature_absent_when_off(cohort_without_signatures, lab):
    extract = cohort_without_signatures.extract
    female = extract.loc[extract["gender"] == "female", lab]
    male = extract.loc[extract["gender"] == "male", lab]
    standard_error = math.sqrt(female.var() / female.count() + male.var() / male.count())
    assert abs(female.mean() - male.mean()) < 4 * standard_error


@pytest.mark.parametrize("lab", ["egfr", "urea", "albumin"])
def test_generate_age_signature_absent_when_off(cohort_without_signatures, lab):
    extract = cohort_without_signatures.extract[["age", lab]].dropna()
    assert abs(extract["age"].corr(extract[lab])) < 4 / math.sqrt(len(extract))


def test_generate_age_signature_present_in_egfr(cohort):
    extract = cohort.extract[["age", "egfr"]].dropna()
    assert extract["age"].corr(extract["egfr"]) < -0.4


def _probe_auroc(extract: pd.DataFrame, target: pd.Series) -> float:
    """Return the held-out AUROC of predicting ``target`` from the first 8,000 patients' labs."""
    labs = extract[CONTRACT.labs].to_numpy()[:8000]
    target = target[:8000]
    half = len(labs) // 2
    model = HistGradientBoostingClassifier(max_iter=40, random_state=0)
    model.fit(labs[:half], target[:half])
    return roc_auc_score(target[half:], model.predict_proba(labs[half:])[:, 1])


@pytest.mark.parametrize(
    ("fixture", "signal"),
    [("cohort", True), ("cohort_without_signatures", False)],
)
def test_probe_gender_from_labs(request, fixture, signal):
    extract = request.getfixturevalue(fixture).extract
    extract = extract[extract["gender"].isin(["female", "male"])]
    auroc = _probe_auroc(extract, (extract["gender"] == "female").to_numpy())
    assert (auroc > 0.8) if signal else (auroc < 0.56)


@pytest.mark.parametrize(
    ("fixture", "signal"),
    [("cohort", True), ("cohort_without_signatures", False)],
)
def test_probe_age_from_labs(request, fixture, signal):
    extract = request.getfixturevalue(fixture).extract
    auroc = _probe_auroc(extract, (extract["age"] >= 50).to_numpy())
    assert (auroc > 0.7) if signal else (auroc < 0.56)


def test_generate_signature_off_keeps_labels_tied_to_age(cohort_without_signatures):
    extract = cohort_without_signatures.extract
    older = extract.loc[extract["age"] >= 60, "hypertension"].mean()
    younger = extract.loc[extract["age"] < 40, "hypertension"].mean()
    assert older > younger + 0.2


@pytest.mark.parametrize(
    ("n_patients", "message"),
    [(0, "positive integer"), (-5, "positive integer"), (2.5, "positive integer"), (True, "positive integer")],
)
def test_generate_invalid_size_raises(n_patients, message):
    with pytest.raises(ConfigError, match=message):
        generate(n_patients, seed=1)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"unknown_label_rate": 1.5}, "between 0 and 1"),
        ({"population": {"ethnicity": {"martian": 0.1}}}, "not categories of 'ethnicity'"),
        ({"signatures": {"height": False}}, "synth.signatures names"),
        ({"signatures": {"gender": "no"}}, "true or false"),
        ({"labels": {"cancer": {"target": 0.5}}}, "outside its band"),
        ({"missing": {"labs": {"ferritin": 0.1}}}, "not a lab of the contract"),
        ({"censoring": {"crp": {"under": 1.0}}}, "'below' or 'above'"),
        ({"population": {"deprivation": [0.5, 0.5]}}, "5 shares"),
    ],
)
def test_generate_invalid_options_raise(options, message):
    with pytest.raises(ConfigError, match=message):
        generate(10, seed=1, options=options)


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_write_cohort_round_trip(tmp_path, suffix):
    cohort = generate(200, seed=5)
    extract_path, truth_path = write_cohort(cohort, tmp_path / f"extract{suffix}")
    assert truth_path == tmp_path / "extract.truth.parquet"
    read = pd.read_csv(extract_path) if suffix == ".csv" else pd.read_parquet(extract_path)
    assert list(read.columns) == list(cohort.extract.columns)
    assert read[CONTRACT.id_column].astype(str).tolist() == cohort.extract[CONTRACT.id_column].tolist()
    np.testing.assert_allclose(read[CONTRACT.labs].to_numpy(float), cohort.extract[CONTRACT.labs].to_numpy(float), equal_nan=True)
    np.testing.assert_array_equal(
        read[CONTRACT.labels].to_numpy(float, na_value=np.nan),
        cohort.extract[CONTRACT.labels].to_numpy(float, na_value=np.nan),
    )
    pd.testing.assert_frame_equal(pd.read_parquet(truth_path), cohort.truth)


def test_write_cohort_parquet_keeps_dtypes(tmp_path):
    cohort = generate(100, seed=5)
    extract_path, _ = write_cohort(cohort, tmp_path / "extract.parquet")
    pd.testing.assert_frame_equal(pd.read_parquet(extract_path), cohort.extract)


def test_write_cohort_custom_truth_path(tmp_path):
    _, truth_path = write_cohort(generate(20, seed=5), tmp_path / "extract.parquet", truth_path=tmp_path / "truth.parquet")
    assert truth_path == tmp_path / "truth.parquet"
    assert truth_path.is_file()


def test_write_cohort_invalid_suffix_raises(tmp_path):
    with pytest.raises(ConfigError, match=r"ending in \.csv or \.parquet"):
        write_cohort(generate(20, seed=5), tmp_path / "extract.xlsx")
    assert not list(tmp_path.iterdir())


def test_cli_help_lists_options(capsys):
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(["synth", "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for option in ("--n-patients", "--seed", "--out", "--no-gender-signature", "--no-age-signature", "--config"):
        assert option in text, option


def test_cli_writes_cohort(tmp_path, capsys):
    out = tmp_path / "extract.csv"
    status = main(["synth", "--n-patients", "60", "--seed", "3", "--out", str(out), "--no-gender-signature"])
    assert status == 0
    assert len(pd.read_csv(out)) == 60
    assert (tmp_path / "extract.truth.parquet").is_file()
    assert str(out) in capsys.readouterr().out


def test_cli_defaults_from_dataset_config(tmp_path: Path):
    config = tmp_path / "tiny.yaml"
    config.write_text(
        f"dataset: tiny\nseed: 9\nsource: {{kind: synth, n_patients: 40}}\npaths: {{artifacts: {tmp_path / 'artifacts'}}}\n",
        encoding="utf-8",
    )
    assert main(["synth", "--config", str(config)]) == 0
    written = pd.read_parquet(tmp_path / "artifacts" / "tiny" / "source" / "extract.parquet")
    expected = generate(40, seed=9).extract
    pd.testing.assert_frame_equal(written, expected)


def test_cli_invalid_size_rejected(capsys):
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(["synth", "--n-patients", "0"])
    assert exit_info.value.code == 2
    assert "positive whole number" in capsys.readouterr().err


@pytest.mark.slow
def test_generate_signal_learnable_near_oracle():
    # Plain XGBoost on 2,200 patients should come close to the true risks on
    # new patients; the measured gap with these settings was 0.025.
    xgboost = pytest.importorskip("xgboost")
    from hivcomorb.features import build_matrix, input_columns

    train, test = generate(2200, seed=11), generate(10_000, seed=12)
    columns = input_columns(CONTRACT, train.extract.columns, "aware")
    train_matrix = build_matrix(train.extract, CONTRACT, columns)
    test_matrix = build_matrix(test.extract, CONTRACT, columns)
    gaps = []
    for label in CONTRACT.labels:
        known_train = train.extract[label].notna().to_numpy()
        known_test = test.extract[label].notna().to_numpy()
        model = xgboost.XGBClassifier(
            n_estimators=300, max_depth=2, learning_rate=0.04, subsample=0.8, colsample_bytree=0.8,
            min_child_weight=2, reg_lambda=2, n_jobs=2, random_state=0,
        )
        model.fit(train_matrix[known_train], train.extract.loc[known_train, label].astype(int))
        outcome = test.extract.loc[known_test, label].astype(int)
        model_auroc = roc_auc_score(outcome, model.predict_proba(test_matrix[known_test])[:, 1])
        oracle_auroc = roc_auc_score(outcome, test.truth.loc[known_test, label])
        gaps.append(oracle_auroc - model_auroc)
    assert np.mean(gaps) < 0.035
