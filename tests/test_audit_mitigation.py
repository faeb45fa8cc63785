"""Mitigation candidates: level-up never lowers a sensitivity; ThresholdOptimizer and the Pareto front."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from hivcomorb.audit.fairness import SettingPredictions
from hivcomorb.audit.groups import plan_groups
from hivcomorb.audit.mitigation import (
    BASELINE,
    LEVEL_UP,
    THRESHOLD_OPTIMIZER,
    level_up_offsets,
    mitigation_audit,
    pareto_front,
    split_rows,
)

MINIMUM = 10
BUDGET = 0.05
CONFIG = {
    "audit": {
        "mitigation": {
            "enabled": True,
            "fit_fraction": 0.5,
            "attributes": ["group"],
            "threshold_optimizer": {"enabled": True, "constraints": "equalized_odds", "objective": "balanced_accuracy_score", "grid_size": 200},
            "level_up": {"enabled": True, "max_fpr_increase": BUDGET, "tolerance": 0.0},
        }
    }
}


def _case(seed: int = 0, n: int = 1200):
    """Three groups: a reference, one whose positives score lower, one that already does better."""
    rng = np.random.default_rng(seed)
    group = rng.choice(["reference", "trailing", "ahead"], size=n, p=[0.5, 0.3, 0.2]).astype(object)
    y = (rng.random(n) < 0.35).astype(float)
    scores = np.clip(0.35 + 0.3 * (y - 0.5) + rng.normal(0, 0.15, size=n), 0, 1)
    scores[(group == "trailing") & (y == 1)] -= 0.15
    scores[(group == "ahead") & (y == 1)] += 0.05
    scores = np.clip(scores, 0, 1)
    thresholds = np.where(rng.random(n) < 0.5, 0.45, 0.5)  # two folds with different thresholds
    plans = plan_groups(pd.DataFrame({"group": pd.Series(group, dtype="string")}), MINIMUM, {"group": "reference"})
    predictions = {
        "aware": SettingPredictions(
            setting="aware",
            model="m",
            scores={"label": scores},
            thresholds={"label": thresholds},
            decisions={"label": (scores >= thresholds).astype(float)},
        )
    }
    return plans, pd.DataFrame({"label": y}), predictions


@pytest.fixture(scope="module", params=[0, 1, 2])
def result(request):
    plans, labels, predictions = _case(seed=request.param)
    return mitigation_audit(plans, labels, predictions, CONFIG, MINIMUM, seed=request.param)


def _candidate(result, name):
    return result["results"]["aware"]["label"]["group"][name]


def test_level_up_lowers_no_sensitivity_on_held_out(result):
    assert _candidate(result, LEVEL_UP)["groups_with_lower_tpr"] == 0


@pytest.mark.parametrize("group", ["reference", "trailing", "ahead"])
def test_level_up_group_sensitivity_not_below_baseline(result, group):
    before = _candidate(result, BASELINE)["groups"][group]["tpr"]
    after = _candidate(result, LEVEL_UP)["groups"][group]["tpr"]
    assert after >= before


def test_level_up_raises_trailing_group(result):
    before = _candidate(result, BASELINE)["groups"]["trailing"]["tpr"]
    after = _candidate(result, LEVEL_UP)["groups"]["trailing"]["tpr"]
    assert after > before


@pytest.mark.parametrize("group", ["reference", "ahead"])
def test_level_up_leaves_other_groups_unchanged(result, group):
    assert _candidate(result, LEVEL_UP)["offsets"][group]["offset"] == 0.0


def test_level_up_narrows_sensitivity_gap(result):
    assert _candidate(result, LEVEL_UP)["tpr_gap"] < _candidate(result, BASELINE)["tpr_gap"]


def test_level_up_reduces_shortfall(result):
    assert _candidate(result, LEVEL_UP)["tpr_shortfall"] < _candidate(result, BASELINE)["tpr_shortfall"]


def test_threshold_optimizer_candidate_evaluated(result):
    assert _candidate(result, THRESHOLD_OPTIMIZER)["status"] == "ok"


def test_mitigation_same_seed_same_result(result):
    plans, labels, predictions = _case(seed=0)
    first = mitigation_audit(plans, labels, predictions, CONFIG, MINIMUM, seed=0)
    second = mitigation_audit(plans, labels, predictions, CONFIG, MINIMUM, seed=0)
    assert first == second


def test_level_up_offset_respects_fpr_budget():
    rng = np.random.default_rng(5)
    n = 600
    groups = np.where(np.arange(n) < 300, "reference", "trailing").astype(object)
    y = (rng.random(n) < 0.4).astype(int)
    margins = rng.normal(0, 0.2, size=n) + 0.2 * (y - 0.5)
    margins[(groups == "trailing") & (y == 1)] -= 0.3
    plan = level_up_offsets(margins, y, groups, "reference", ["reference", "trailing"], BUDGET, 0.0, MINIMUM)
    offset = plan["trailing"]["offset"]
    negatives = margins[(groups == "trailing") & (y == 0)]
    increase = (negatives >= -offset).mean() - (negatives >= 0).mean()
    assert increase <= BUDGET + 1e-12


def test_level_up_offset_reaches_reference_without_budget_limit():
    rng = np.random.default_rng(6)
    n = 600
    groups = np.where(np.arange(n) < 300, "reference", "trailing").astype(object)
    y = (rng.random(n) < 0.4).astype(int)
    margins = rng.normal(0, 0.2, size=n) + 0.2 * (y - 0.5)
    margins[(groups == "trailing") & (y == 1)] -= 0.1
    plan = level_up_offsets(margins, y, groups, "reference", ["reference", "trailing"], 1.0, 0.0, MINIMUM)
    assert plan["trailing"]["reached_reference"] is True


def test_level_up_skips_group_with_few_positives():
    y = np.array([1] * 30 + [0] * 30 + [1] * 3 + [0] * 40)
    groups = np.array(["reference"] * 60 + ["small"] * 43, dtype=object)
    margins = np.where(y == 1, 0.1, -0.1)
    margins[60:63] = -0.5
    plan = level_up_offsets(margins, y, groups, "reference", ["reference", "small"], 1.0, 0.0, MINIMUM)
    assert plan["small"]["offset"] == 0.0


@pytest.mark.parametrize(
    ("points", "expected"),
    [
        ([(0.1, 0.8), (0.2, 0.9), (0.3, 0.7)], [True, True, False]),
        ([(0.1, 0.8), (0.1, 0.8)], [True, True]),
        ([(0.2, 0.7), (0.1, 0.8)], [False, True]),
    ],
)
def test_pareto_front_marks(points, expected):
    assert pareto_front(points) == expected


@pytest.mark.parametrize("fraction", [0.0, 1.0, 1.5])
def test_split_rows_rejects_fraction(fraction):
    with pytest.raises(ValueError, match="fit_fraction"):
        split_rows(10, fraction, seed=0)


def test_mitigation_disabled_returns_flag():
    plans, labels, predictions = _case()
    assert mitigation_audit(plans, labels, predictions, {"audit": {"mitigation": {"enabled": False}}}, MINIMUM, 0) == {"enabled": False}
