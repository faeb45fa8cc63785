"""The champion rules: best metric, and the one-standard-error rule with paired bootstrap differences."""

from __future__ import annotations

import numpy as np
import pytest

from hivcomorb.models import ModelSpec
from hivcomorb.train._results import Scored, choose_champion, choose_parsimonious_champion

SETTING = "aware"


def scored(point: float, boot: list[float], metric: str = "macro_f1") -> Scored:
    return Scored(point={metric: np.array([point])}, boot={metric: np.array(boot, dtype=float)})


def blocks_of(results: dict[str, Scored], metric: str = "macro_f1") -> dict:
    return {name: {SETTING: {metric: {"estimate": value.estimate(metric)}}} for name, value in results.items()}


def test_best_rule_picks_highest():
    results = {"lasso": scored(0.50, [0.5, 0.5]), "xgboost": scored(0.52, [0.5, 0.5])}
    assert choose_champion(blocks_of(results), SETTING, "macro_f1") == "xgboost"


def test_one_se_prefers_simpler_within_error():
    # Paired differences xgboost - lasso over resamples: 0.00, 0.04, 0.02, 0.02.
    # Their standard error (sample sd) is about 0.0163, and the gap is 0.01.
    results = {
        "xgboost": scored(0.52, [0.50, 0.54, 0.52, 0.52]),
        "lasso": scored(0.51, [0.50, 0.50, 0.50, 0.50]),
    }
    complexity = {"xgboost": 3, "lasso": 1}
    chosen = choose_parsimonious_champion(blocks_of(results), {(n, SETTING): v for n, v in results.items()}, SETTING, "macro_f1", complexity)
    assert chosen == "lasso"


def test_one_se_keeps_best_beyond_error():
    # Paired differences are all 0.05, so their standard error is 0 and the
    # gap of 0.05 exceeds it.
    results = {
        "xgboost": scored(0.55, [0.55, 0.56, 0.54, 0.55]),
        "lasso": scored(0.50, [0.50, 0.51, 0.49, 0.50]),
    }
    complexity = {"xgboost": 3, "lasso": 1}
    chosen = choose_parsimonious_champion(blocks_of(results), {(n, SETTING): v for n, v in results.items()}, SETTING, "macro_f1", complexity)
    assert chosen == "xgboost"


def test_one_se_equal_complexity_takes_better():
    results = {
        "random_forest": scored(0.515, [0.50, 0.52, 0.51, 0.51]),
        "xgboost": scored(0.52, [0.50, 0.54, 0.52, 0.52]),
    }
    complexity = {"random_forest": 3, "xgboost": 3}
    chosen = choose_parsimonious_champion(blocks_of(results), {(n, SETTING): v for n, v in results.items()}, SETTING, "macro_f1", complexity)
    assert chosen == "xgboost"


def test_one_se_lower_is_better_metric():
    # For the Brier score the simpler model is within one standard error above the best.
    metric = "macro_brier"
    results = {
        "xgboost": scored(0.100, [0.10, 0.08, 0.12, 0.10], metric),
        "lasso": scored(0.105, [0.10, 0.10, 0.10, 0.10], metric),
    }
    complexity = {"xgboost": 3, "lasso": 1}
    chosen = choose_parsimonious_champion(blocks_of(results, metric), {(n, SETTING): v for n, v in results.items()}, SETTING, metric, complexity)
    assert chosen == "lasso"


def test_one_se_skips_undefined_metric():
    results = {
        "xgboost": scored(0.52, [0.50, 0.54, 0.52, 0.52]),
        "lasso": scored(float("nan"), [np.nan, np.nan, np.nan, np.nan]),
    }
    complexity = {"xgboost": 3, "lasso": 1}
    chosen = choose_parsimonious_champion(blocks_of(results), {(n, SETTING): v for n, v in results.items()}, SETTING, "macro_f1", complexity)
    assert chosen == "xgboost"


@pytest.mark.parametrize(
    ("spec", "rank"),
    [
        (ModelSpec(name="lasso", kind="logistic"), 1),
        (ModelSpec(name="xgboost", kind="xgboost"), 3),
        (ModelSpec(name="xgboost_stacked", kind="xgboost", label_dependence=True, first_stage="xgboost"), 4),
    ],
)
def test_spec_complexity(spec, rank):
    assert spec.complexity == rank


def test_one_se_lower_is_better_keeps_best():
    # The simpler model's Brier score is 0.1 worse on every resample.
    metric = "macro_brier"
    results = {
        "xgboost": scored(0.100, [0.10, 0.08, 0.12, 0.10], metric),
        "lasso": scored(0.200, [0.20, 0.18, 0.22, 0.20], metric),
    }
    complexity = {"xgboost": 3, "lasso": 1}
    chosen = choose_parsimonious_champion(blocks_of(results, metric), {(n, SETTING): v for n, v in results.items()}, SETTING, metric, complexity)
    assert chosen == "xgboost"
