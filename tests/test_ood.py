"""The out-of-distribution detector: signed-log Mahalanobis distance, and the isolation forest it replaced."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.covariance import LedoitWolf

from hivcomorb.errors import ModelError
from hivcomorb.models import signed_log
from hivcomorb.ood import SignedLogMahalanobis
from hivcomorb.pyfunc import OutOfDistributionDetector

NAMES = ["creatinine", "egfr", "hba1c", "alt", "haemoglobin"]


def correlated(n: int, seed: int) -> pd.DataFrame:
    """Lognormal labs where creatinine and eGFR move against each other, with missing ALT values."""
    rng = np.random.default_rng(seed)
    kidney = rng.normal(size=n)
    values = np.column_stack(
        [
            np.exp(4.4 + 0.25 * kidney + 0.05 * rng.normal(size=n)),
            np.exp(4.5 - 0.25 * kidney + 0.05 * rng.normal(size=n)),
            np.exp(3.6 + 0.15 * rng.normal(size=n)),
            np.exp(3.2 + 0.4 * rng.normal(size=n)),
            np.exp(4.9 + 0.08 * rng.normal(size=n)),
        ]
    ).astype(np.float32)
    values[rng.random(n) < 0.1, 3] = np.nan
    return pd.DataFrame(values, columns=NAMES)


def test_distance_matches_direct_computation():
    train = correlated(800, 0).to_numpy()
    scorer = SignedLogMahalanobis().fit(train)
    rows = correlated(50, 1).to_numpy()

    def expand(x):
        logged = signed_log(x.astype(np.float64))
        missing = np.isnan(logged)
        imputed = np.where(missing, scorer.medians_, logged)
        return np.column_stack([imputed, missing[:, [3]].astype(float)])

    raw = expand(train)
    standardised = (raw - raw.mean(0)) / raw.std(0)
    direct = LedoitWolf().fit(standardised)
    expected = np.sqrt(direct.mahalanobis((expand(rows) - raw.mean(0)) / raw.std(0)))
    np.testing.assert_allclose(-scorer.score_samples(rows), expected, rtol=1e-5)
    np.testing.assert_array_equal(scorer.indicated_, [3])


def test_unusual_combination_in_range_is_flagged_and_named():
    train = correlated(2000, 0)
    detector = OutOfDistributionDetector.fit(train, quantile=0.01, seed=0)
    fresh = correlated(4000, 2)
    # High creatinine with high eGFR: each value within the training range, the pair unseen.
    odd = fresh.head(20).copy()
    odd["creatinine"] = np.float32(np.quantile(train["creatinine"], 0.97))
    odd["egfr"] = np.float32(np.quantile(train["egfr"], 0.97))
    for column in ("creatinine", "egfr"):
        assert train[column].min() < odd[column].min()
        assert odd[column].max() < train[column].max()
    scores, flags = detector.is_outlier(odd)
    assert flags.all()
    texts = detector.describe(odd, scores)
    assert all("creatinine" in text and "egfr" in text for text in texts)
    assert all(text.startswith("unlike the training cohort (distance ") for text in texts)
    # The out-of-fold threshold flags about the chosen share of new patients like the training cohort.
    share = detector.is_outlier(fresh)[1].mean()
    assert 0.003 < share < 0.03


def test_detector_reads_only_the_chosen_columns():
    train = correlated(500, 0).assign(**{"gender=female": np.float32(1.0)})
    detector = OutOfDistributionDetector.fit(train, columns=NAMES, seed=0)
    assert detector.feature_names == NAMES
    rows = train.head(5).copy()
    rows["gender=female"] = np.float32(0.0)
    np.testing.assert_array_equal(detector.score(rows), detector.score(train.head(5)))


def test_isolation_forest_remains_available():
    train = correlated(500, 0)
    detector = OutOfDistributionDetector.fit(train, method="isolation_forest", n_estimators=20, seed=0)
    assert detector.method == "isolation_forest"
    scores, flags = detector.is_outlier(train.head(10))
    assert scores.shape == (10,)
    assert flags.dtype == bool
    assert detector.describe(train.head(2), scores[:2]) == [f"unlike the training cohort (isolation score below {detector.threshold:.3f})"] * 2


def test_detector_saved_before_methods_reads_as_isolation_forest():
    detector = OutOfDistributionDetector.fit(correlated(300, 0), method="isolation_forest", n_estimators=10, seed=0)
    del detector.__dict__["method"]
    assert detector.method == "isolation_forest"


def test_unknown_method_is_rejected():
    with pytest.raises(ModelError, match="score.ood.method"):
        OutOfDistributionDetector.fit(correlated(100, 0), method="distance")


def test_distance_is_the_same_whatever_the_seed():
    train = correlated(600, 0)
    first = OutOfDistributionDetector.fit(train, seed=1)
    second = OutOfDistributionDetector.fit(train, seed=2)
    np.testing.assert_array_equal(first.score(train.head(30)), second.score(train.head(30)))


def test_reason_says_when_a_column_is_missing():
    train = correlated(2000, 0)
    # HbA1c is missing for 4 training patients only, so a missing HbA1c is itself unusual.
    train.loc[:3, "hba1c"] = np.nan
    detector = OutOfDistributionDetector.fit(train, quantile=0.01, seed=0)
    row = train.iloc[[10]].copy()
    row["hba1c"] = np.nan
    scores, flags = detector.is_outlier(row)
    assert flags.tolist() == [True]
    (text,) = detector.describe(row, scores)
    assert "most unusual: hba1c missing" in text


def test_reason_tells_distance_from_threshold():
    from hivcomorb.pyfunc import _distinct_texts

    assert _distinct_texts(11.54, 11.46) == ("11.54", "11.46")
    assert _distinct_texts(12.2, 11.5) == ("12.2", "11.5")
