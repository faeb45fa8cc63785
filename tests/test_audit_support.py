"""Builders of small audit inputs: a cohort, trained bundles and out-of-fold predictions.

The audit reads what ingestion and training write. These builders write the
same files from a small synthetic cohort with known structure, so the audit
tests run on real XGBoost, LightGBM and scikit-learn models in seconds.
"""

from __future__ import annotations

import json
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pandas as pd
import xgboost as xgb
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from hivcomorb.bundle import ModelBundle
from hivcomorb.contract import Contract
from hivcomorb.features import build_matrix, encoded_names, input_columns

LABS = ("haemoglobin", "creatinine", "egfr", "glucose", "hba1c", "total_cholesterol")
LABELS = ("hypertension", "diabetes", "chronic_kidney_disease")
ID_PREFIX = "HCMSENTINELID-"
SMALL_GROUP = "zz_sentinel_group"
SMALL_GROUP_SIZE = 4
SITE = {"categories": {"ethnicity": ["white", "black_african", "asian", "other", SMALL_GROUP]}}


def make_cohort(n: int = 400, seed: int = 0) -> pd.DataFrame:
    """Return a canonical cohort with six labs, three labels and one ethnicity group of four patients."""
    rng = np.random.default_rng(seed)
    ethnicity = rng.choice(["white", "black_african", "asian", "other"], size=n, p=[0.5, 0.25, 0.15, 0.1]).astype(object)
    ethnicity[:SMALL_GROUP_SIZE] = SMALL_GROUP
    gender = rng.choice(["male", "female"], size=n, p=[0.65, 0.35])
    age = np.clip(rng.normal(48, 11, size=n), 18, 90)
    frame = pd.DataFrame(
        {
            "patient_id": [f"{ID_PREFIX}{i:05d}" for i in range(n)],
            "age": age,
            "gender": pd.Series(gender, dtype="string"),
            "ethnicity": pd.Series(ethnicity, dtype="string"),
            "continent_of_birth": pd.Series(rng.choice(["europe", "africa", "asia"], size=n), dtype="string"),
            "hiv_exposure": pd.Series(rng.choice(["msm", "heterosexual"], size=n), dtype="string"),
            "deprivation_quintile": pd.array(rng.integers(1, 6, size=n), dtype="Int64"),
            "smoking_status": pd.Series(rng.choice(["never", "former", "current"], size=n), dtype="string"),
        }
    )
    frame["haemoglobin"] = rng.normal(140, 12, size=n) - 10 * (gender == "female")
    frame["creatinine"] = rng.normal(85, 15, size=n)
    frame["egfr"] = np.clip(rng.normal(95, 18, size=n) - 0.6 * (age - 48), 10, 150)
    frame["glucose"] = rng.lognormal(np.log(5.4), 0.15, size=n)
    frame["hba1c"] = rng.normal(38, 6, size=n) + 4 * (frame["glucose"] - 5.4)
    frame["total_cholesterol"] = rng.normal(5.0, 0.9, size=n)
    frame.loc[rng.random(n) < 0.08, "glucose"] = np.nan
    for lab in LABS:
        frame[f"{lab}_censored"] = pd.Series([pd.NA] * n, dtype="string")

    def draw(logit: np.ndarray) -> pd.Series:
        y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(float)
        y[rng.random(n) < 0.05] = np.nan
        return pd.array(pd.Series(y).astype("Float64").round(), dtype="Int8")

    frame["hypertension"] = draw(-1.0 + 0.07 * (age - 48) + 0.8 * (ethnicity == "black_african"))
    frame["diabetes"] = draw(-2.2 + 0.35 * (frame["hba1c"].to_numpy() - 38))
    frame["chronic_kidney_disease"] = draw(-2.0 - 0.08 * (frame["egfr"].to_numpy() - 75))
    frame["source_row"] = np.arange(1, n + 1)
    return frame


def fit_estimator(kind: str, X: pd.DataFrame, y: np.ndarray, seed: int):
    """Fit one small binary model of ``kind``: xgboost, lightgbm or logistic."""
    if kind == "xgboost":
        model = xgb.XGBClassifier(n_estimators=40, max_depth=3, learning_rate=0.2, n_jobs=1, random_state=seed, tree_method="hist")
    elif kind == "lightgbm":
        model = lgb.LGBMClassifier(n_estimators=40, num_leaves=7, learning_rate=0.2, n_jobs=1, random_state=seed, verbose=-1)
    elif kind == "logistic":
        model = make_pipeline(SimpleImputer(keep_empty_features=True), StandardScaler(), LogisticRegression(max_iter=500))
    else:
        raise ValueError(kind)
    return model.fit(X, y)


def make_bundle(cohort: pd.DataFrame, contract: Contract, setting: str, kind: str, labels=LABELS, seed: int = 0) -> ModelBundle:
    """Train one ``kind`` estimator per label on the whole cohort and wrap them in a bundle."""
    columns = input_columns(contract, cohort.columns, setting)
    X = build_matrix(cohort, contract, columns)
    estimators, thresholds = {}, {}
    for label in labels:
        y = pd.to_numeric(cohort[label]).to_numpy(dtype=float, na_value=np.nan)
        known = np.isfinite(y)
        estimators[label] = fit_estimator(kind, X[known], y[known].astype(int), seed)
        thresholds[label] = float(y[known].mean())
    return ModelBundle(
        setting=setting,
        model_name=kind,
        labels=list(labels),
        input_columns=columns,
        feature_names=encoded_names(contract, columns),
        estimators=estimators,
        thresholds=thresholds,
        contract_version=contract.version,
    )


def make_oof(cohort: pd.DataFrame, contract: Contract, models: dict[str, list[str]], labels=LABELS, folds: int = 3, seed: int = 0) -> pd.DataFrame:
    """Return out-of-fold predictions in the training stage's format.

    Each fold's threshold is the positive share of its training rows.
    """
    rng = np.random.default_rng(seed)
    fold_of = rng.permutation(np.arange(len(cohort)) % folds)
    parts = []
    for setting, kinds in models.items():
        columns = input_columns(contract, cohort.columns, setting)
        X = build_matrix(cohort, contract, columns)
        for kind in kinds:
            for fold in range(folds):
                train, test = fold_of != fold, fold_of == fold
                part = {"row": np.flatnonzero(test), "repeat": 0, "fold": fold, "setting": setting, "model": kind}
                for label in labels:
                    y = pd.to_numeric(cohort[label]).to_numpy(dtype=float, na_value=np.nan)
                    known = train & np.isfinite(y)
                    model = fit_estimator(kind, X[known], y[known].astype(int), seed)
                    part[f"p_{label}"] = model.predict_proba(X[test])[:, 1]
                    part[f"t_{label}"] = float(y[known].mean())
                parts.append(pd.DataFrame(part))
    return pd.concat(parts, ignore_index=True)


def write_inputs(
    artifacts: Path,
    cohort: pd.DataFrame,
    contract: Contract,
    champions: dict[str, str],
    labels=LABELS,
    other_model: str | None = "logistic",
) -> None:
    """Write the cohort, the out-of-fold predictions, train.json and the champion bundles under ``artifacts``.

    ``other_model`` adds out-of-fold rows of a model that is not a champion,
    which the audit must ignore.
    """
    (artifacts / "ingest").mkdir(parents=True, exist_ok=True)
    (artifacts / "train" / "models").mkdir(parents=True, exist_ok=True)
    cohort.to_parquet(artifacts / "ingest" / "cohort.parquet", index=False)
    models = {setting: sorted({kind, other_model} - {None}) for setting, kind in champions.items()}
    make_oof(cohort, contract, models, labels).to_parquet(artifacts / "train" / "oof.parquet", index=False)
    (artifacts / "train" / "train.json").write_text(json.dumps({"champions": champions}), encoding="utf-8")
    for setting, kind in champions.items():
        make_bundle(cohort, contract, setting, kind, labels).save(artifacts / "train" / "models" / f"{setting}.joblib")


def test_disparity_sentence_gives_attribute_coding():
    from hivcomorb.audit.fairness import AMBER, RED
    from hivcomorb.audit.summary import fairness_sentences

    flagged = {
        "metric": "tpr",
        "label": "mental_health",
        "flag": RED,
        "difference": -0.93,
        "difference_low": -0.96,
        "difference_high": -0.89,
        "group": "5",
        "reference": "1",
        "attribute": "deprivation_quintile",
        "setting": "unaware",
    }
    fairness = {"flag_counts": {"unaware": {RED: 1, AMBER: 0}}, "models": {"unaware": "lasso"}, "attributes": ["deprivation_quintile"], "flagged": [flagged]}
    sentence = fairness_sentences(fairness)[-1]
    assert "reference group 1 of deprivation_quintile (coded 1 = most deprived) (unaware setting)" in sentence
