"""Fairness audit: suppression, undefined metrics, references, flags and reproducibility."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from hivcomorb.audit.fairness import AMBER, GREEN, NOT_ASSESSED, RED, SettingPredictions, fairness_audit, flag_for
from hivcomorb.audit.groups import SUPPRESSED, UNDEFINED, age_bands, plan_groups, sensitive_frame

MINIMUM = 10
CONFIG = {
    "audit": {
        "bootstrap": 60,
        "confidence": 0.95,
        "calibration_bins": 10,
        "flag_basis": "point",
        "flags": {"tpr": {"amber": 0.1, "red": 0.2}, "auroc": {"amber": 0.05, "red": 0.1}},
    }
}


def _setup(seed: int = 0):
    """Return plans, labels and predictions with two small groups, an all-negative group and a trailing group.

    The two small groups add up to the disclosure minimum, so no larger group
    is suppressed with them.
    """
    rng = np.random.default_rng(seed)
    n = 400
    group = np.array(
        ["large"] * 244 + ["trailing"] * 80 + ["all_negative"] * 40 + ["few_positives"] * 26 + ["rare"] * 4 + ["scarce"] * 6,
        dtype=object,
    )
    scores = rng.random(n)
    y = (rng.random(n) < scores).astype(float)
    y[group == "all_negative"] = 0.0
    few = np.flatnonzero(group == "few_positives")
    y[few] = 0.0
    y[few[:3]] = 1.0
    trailing = group == "trailing"
    scores[trailing] = scores[trailing] * 0.6  # the trailing group's positives score lower
    # 12 unknown labels, all in the large group, so no n is suppressed and every estimate is printed.
    y[np.flatnonzero(group == "large")[:12]] = np.nan
    frame = pd.DataFrame({"attribute": pd.Series(group, dtype="string")})
    plans = plan_groups(frame, MINIMUM)
    labels = pd.DataFrame({"label": y})
    thresholds = np.full(n, 0.5)
    predictions = {
        setting: SettingPredictions(
            setting=setting,
            model="model",
            scores={"label": scores + shift},
            thresholds={"label": thresholds},
            decisions={"label": ((scores + shift) >= thresholds).astype(float)},
        )
        for setting, shift in (("aware", 0.0), ("unaware", 0.02))
    }
    return plans, labels, predictions


@pytest.fixture(scope="module")
def audit():
    plans, labels, predictions = _setup()
    return fairness_audit(plans, labels, predictions, MINIMUM, CONFIG, seed=7)


def _cell(audit, group, metric, setting="aware"):
    return audit["attributes"]["attribute"]["labels"]["label"][setting][group]["metrics"][metric]


def test_fairness_rare_group_absent(audit):
    groups = audit["attributes"]["attribute"]["labels"]["label"]["aware"]
    assert "rare" not in groups


def test_fairness_small_groups_counted(audit):
    assert audit["attributes"]["attribute"]["n_suppressed"] == 2


def test_fairness_no_partner_counted(audit):
    assert audit["attributes"]["attribute"]["n_partners"] == 0


def test_fairness_rare_group_not_in_group_sizes(audit):
    assert "rare" not in audit["attributes"]["attribute"]["groups"]


@pytest.mark.parametrize("metric", ["auroc", "tpr"])
def test_fairness_single_class_group_undefined(audit, metric):
    assert _cell(audit, "all_negative", metric)["status"] == UNDEFINED


def test_fairness_single_class_group_has_no_value(audit):
    assert "value" not in _cell(audit, "all_negative", "auroc")


def test_fairness_single_class_group_fpr_defined(audit):
    assert _cell(audit, "all_negative", "fpr")["status"] == "ok"


@pytest.mark.parametrize("metric", ["tpr", "auroc"])
def test_fairness_few_positives_suppressed(audit, metric):
    assert _cell(audit, "few_positives", metric)["status"] == SUPPRESSED


def test_fairness_reference_is_largest(audit):
    assert audit["attributes"]["attribute"]["reference"] == "large"


def test_fairness_trailing_group_flagged(audit):
    assert _cell(audit, "trailing", "tpr")["flag"] in (AMBER, RED)


def test_fairness_trailing_difference_negative(audit):
    assert _cell(audit, "trailing", "tpr")["difference"] < 0


def test_fairness_interval_contains_estimate(audit):
    cell = _cell(audit, "trailing", "tpr")
    assert cell["low"] <= cell["value"] <= cell["high"]


def test_fairness_both_settings_reported(audit):
    assert set(audit["attributes"]["attribute"]["labels"]["label"]) == {"aware", "unaware"}


def test_fairness_same_seed_same_numbers(audit):
    plans, labels, predictions = _setup()
    again = fairness_audit(plans, labels, predictions, MINIMUM, CONFIG, seed=7)
    assert again == audit


def test_fairness_configured_reference_used():
    plans, _, _ = _setup()
    frame = pd.DataFrame({"attribute": plans["attribute"].values})
    assert plan_groups(frame, MINIMUM, {"attribute": "trailing"})["attribute"].reference == "trailing"


def test_fairness_suppressed_reference_falls_back():
    plans, _, _ = _setup()
    frame = pd.DataFrame({"attribute": plans["attribute"].values})
    assert plan_groups(frame, MINIMUM, {"attribute": "rare"})["attribute"].reference == "large"


@pytest.mark.parametrize(
    ("difference", "low", "high", "basis", "expected"),
    [
        (0.05, 0.0, 0.1, "point", GREEN),
        (-0.15, -0.3, -0.01, "point", AMBER),
        (0.25, 0.1, 0.4, "point", RED),
        (-0.25, -0.5, 0.05, "ci", GREEN),
        (-0.25, -0.5, -0.12, "ci", AMBER),
        (None, None, None, "point", NOT_ASSESSED),
    ],
)
def test_flag_for_thresholds(difference, low, high, basis, expected):
    config = {"audit": {"flag_basis": basis, "flags": {"tpr": {"amber": 0.1, "red": 0.2}}}}
    assert flag_for("tpr", difference, low, high, config) == expected


def test_flag_for_unconfigured_metric_not_assessed():
    assert flag_for("ppv", 0.5, 0.4, 0.6, {"audit": {"flags": {}}}) == NOT_ASSESSED


@pytest.mark.parametrize(
    ("age", "expected"),
    [(18.0, "18-34"), (34.9, "18-34"), (35.0, "35-49"), (64.0, "50-64"), (90.0, "65+"), (None, "unknown"), (17.0, "unknown")],
)
def test_age_bands_edges(age, expected):
    assert age_bands(pd.Series([age], dtype="Float64"), [18, 35, 50, 65]).iloc[0] == expected


def test_sensitive_frame_builds_intersection():
    cohort = pd.DataFrame({"gender": ["male", "female"], "ethnicity": ["white", None], "age": [40.0, 70.0]})
    config = {"audit": {"attributes": ["gender", "ethnicity", "age_band"], "intersections": [["gender", "ethnicity"]], "age_bands": [18, 50]}}
    frame = sensitive_frame(cohort, config)
    assert list(frame["gender x ethnicity"]) == ["male & white", "female & unknown"]


def test_sensitive_frame_skips_absent_column():
    cohort = pd.DataFrame({"gender": ["male"]})
    frame = sensitive_frame(cohort, {"audit": {"attributes": ["gender", "continent_of_birth"]}})
    assert list(frame.columns) == ["gender"]
