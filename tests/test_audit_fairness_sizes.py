"""Tests of the n printed beside each group's fairness metrics.

The n counts a group's patients with a known label and a prediction.
``reader_recoveries`` gives the reader the cohort size, the shown group
sizes, the number of included patients and the printed n's. It then checks
with ``recoveries`` that subtraction gives away no suppressed n, no
suppressed group and no count below the minimum of patients left out of a
suppressed group or of the cohort. A shown group's count of patients left
out is not protected.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from hivcomorb.audit.fairness import SettingPredictions, fairness_audit
from hivcomorb.audit.groups import SUPPRESSED, WITHHELD, plan_groups

from test_disclosure import recoveries

MINIMUM = 10
CONFIG = {"audit": {"bootstrap": 20, "confidence": 0.95, "calibration_bins": 5, "flags": {}}}


def fairness_groups(group: list[str], y: np.ndarray, seed: int = 0) -> tuple[dict, dict]:
    """Run the fairness audit of one attribute and return its plan and one setting's entry per shown group."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({"attribute": pd.Series(group, dtype="string")})
    plans = plan_groups(frame, MINIMUM)
    scores = rng.random(len(group))
    predictions = {
        "aware": SettingPredictions(
            setting="aware",
            model="model",
            scores={"label": scores},
            thresholds={"label": np.full(len(group), 0.5)},
            decisions={"label": (scores >= 0.5).astype(float)},
        )
    }
    audit = fairness_audit(plans, pd.DataFrame({"label": y}), predictions, MINIMUM, CONFIG, seed=1)
    return plans["attribute"], audit["attributes"]["attribute"]["labels"]["label"]["aware"]


def audit_sizes(group: list[str], y: np.ndarray, seed: int = 0) -> tuple[dict, dict]:
    """Run the fairness audit of one attribute and return its plan and the printed n per shown group."""
    plan, groups = fairness_groups(group, y, seed)
    return plan, {name: cell["n"] for name, cell in groups.items()}


def reader_recoveries(group: list[str], y: np.ndarray, plan, printed: dict) -> list[str]:
    values = pd.Series(group)
    known = pd.Series(np.isfinite(y))
    names = sorted(values.unique())
    truth = {"cohort": len(values), "included": int(known.sum()), "left out": int((~known).sum())}
    for name in names:
        members = values == name
        truth["size", name] = int(members.sum())
        truth["n", name] = int((members & known).sum())
        truth["left out", name] = int((members & ~known).sum())
    sums = [
        ("cohort", tuple(("size", name) for name in names)),
        ("included", tuple(("n", name) for name in names)),
        ("left out", tuple(("left out", name) for name in names)),
        ("cohort", ("included", "left out")),
        *((("size", name), (("n", name), ("left out", name))) for name in names),
    ]
    published = {"cohort": truth["cohort"], "included": truth["included"]}
    published.update({("size", name): count for name, count in plan.counts.items()})
    published.update({("n", name): n for name, n in printed.items() if n != SUPPRESSED})
    protected = {("n", name) for name, n in printed.items() if n == SUPPRESSED}
    protected |= {("size", name) for name in names if name not in plan.counts}
    unprotected = {("left out", name) for name in plan.counts}
    return recoveries(published, truth, sums, protected, MINIMUM, unprotected)


def labels_with_unknown(group: list[str], unknown: dict[str, int], seed: int = 0) -> np.ndarray:
    """Return 0/1 labels with the first ``unknown[name]`` patients of each named group unknown (NaN)."""
    rng = np.random.default_rng(seed)
    y = (rng.random(len(group)) < 0.3).astype(float)
    values = np.asarray(group, dtype=object)
    for name, count in unknown.items():
        y[np.flatnonzero(values == name)[:count]] = np.nan
    return y


GROUPS = ["large"] * 200 + ["middle"] * 60 + ["small"] * 13 + ["rare"] * 4 + ["scarce"] * 6


def test_fairness_n_all_known_printed():
    y = labels_with_unknown(GROUPS, {})
    _, printed = audit_sizes(GROUPS, y)
    assert printed == {"large": 200, "middle": 60, "small": 13}


def test_fairness_n_one_unknown_printed():
    # 13 patients, 12 with a known label: 13 - 12 gives away the 1 without
    # one, which is a shown group's count of patients left out and may be read.
    y = labels_with_unknown(GROUPS, {"large": 20, "middle": 15, "small": 1})
    _, printed = audit_sizes(GROUPS, y)
    assert printed == {"large": 180, "middle": 45, "small": 12}


def test_fairness_n_shown_left_out_not_protected():
    # The reader works out 1 left out of "small" and 0 of the suppressed
    # groups, and nothing protected.
    y = labels_with_unknown(GROUPS, {"large": 20, "middle": 15, "small": 1})
    plan, printed = audit_sizes(GROUPS, y)
    assert reader_recoveries(GROUPS, y, plan, printed) == []


def test_fairness_n_small_n_gets_partner():
    # 8 of 13 in "small" have a known label. The patients left out of the
    # suppressed groups would be 40 - 20 - 15 - 5 = 0 with every other n
    # printed, and the 5 of "small" plus them add up to fewer than 10.
    y = labels_with_unknown(GROUPS, {"large": 20, "middle": 15, "small": 5})
    plan, printed = audit_sizes(GROUPS, y)
    assert printed == {"large": 180, "middle": SUPPRESSED, "small": SUPPRESSED}
    assert reader_recoveries(GROUPS, y, plan, printed) == []


def test_fairness_n_large_unknown_counts_printed():
    # Every group and the suppressed groups together have at least 10 without a label.
    y = labels_with_unknown(GROUPS, {"large": 20, "middle": 15, "small": 0, "rare": 4, "scarce": 6})
    _, printed = audit_sizes(GROUPS, y)
    assert printed == {"large": 180, "middle": 45, "small": 13}


def test_fairness_n_suppressed_groups_included_protected():
    # The 10 patients of suppressed groups include 2 without a label, so
    # included minus the printed n's would give away the 8 with one.
    y = labels_with_unknown(GROUPS, {"large": 20, "middle": 10, "rare": 2})
    plan, printed = audit_sizes(GROUPS, y)
    assert SUPPRESSED in printed.values()
    assert reader_recoveries(GROUPS, y, plan, printed) == []


def test_fairness_n_zero_printed():
    y = labels_with_unknown(GROUPS, {"middle": 60})
    _, printed = audit_sizes(GROUPS, y)
    assert printed["middle"] == 0


def test_fairness_n_few_unknown_in_cohort_warns(caplog):
    # The cohort size minus the included patients gives away the 3 without a
    # label, whatever the n's show.
    y = labels_with_unknown(GROUPS, {"large": 3})
    with caplog.at_level("WARNING", logger="hivcomorb.audit.fairness"):
        audit_sizes(GROUPS, y)
    assert "no further suppression" in caplog.text


@pytest.mark.parametrize("seed", range(10))
def test_fairness_n_random_cohort_protected(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(150, 500))
    group = list(rng.choice(["a", "b", "c", "d", "e", "f"], size=n, p=[0.45, 0.25, 0.12, 0.1, 0.05, 0.03]))
    y = np.where(rng.random(n) < rng.uniform(0.04, 0.12), np.nan, (rng.random(n) < 0.3).astype(float))
    if 0 < np.isnan(y).sum() < MINIMUM:
        pytest.skip("the cohort's patients without a label are fewer than the minimum, which no n can hide")
    plan, printed = audit_sizes(group, y, seed)
    assert reader_recoveries(group, y, plan, printed) == []


def candidate_ns(metrics: dict, reference: dict, size: int) -> list[int]:
    """Return every n from 1 to ``size`` that fits the rates a reader can read exactly from one group's metrics.

    A rate is read from the group's value, or from the reference's value
    plus the difference or times the ratio. The selection rate is a count
    over n, the sensitivity over the positives and the false-positive rate
    over the negatives, which add up to n. The true and false positives
    then add up to the patients predicted positive.
    """
    rates = {}
    for metric in ("selection_rate", "tpr", "fpr"):
        cell, base = metrics[metric], reference[metric].get("value")
        if cell.get("value") is not None:
            rates[metric] = cell["value"]
        elif cell.get("difference") is not None and base is not None:
            rates[metric] = base + cell["difference"]
        elif cell.get("ratio") is not None and base is not None:
            rates[metric] = base * cell["ratio"]

    def whole(rate: float | None, denominator: int) -> bool:
        return rate is None or abs(rate * denominator - round(rate * denominator)) < 1e-6

    def fits(n: int, positives: int) -> bool:
        if not (whole(rates.get("tpr"), positives) and whole(rates.get("fpr"), n - positives)):
            return False
        if len(rates) < 3:
            return True
        predicted = rates["tpr"] * positives + rates["fpr"] * (n - positives)
        return abs(predicted - rates["selection_rate"] * n) < 1e-6

    return [
        n
        for n in range(1, size + 1)
        if whole(rates.get("selection_rate"), n) and any(fits(n, positives) for positives in range(n + 1))
    ]


def test_fairness_json_suppressed_n_not_recoverable():
    # 13 patients in "small", 8 with a known label: its n and a partner's are suppressed.
    y = labels_with_unknown(GROUPS, {"large": 20, "middle": 15, "small": 5})
    plan, groups = fairness_groups(GROUPS, y)
    hidden = [name for name, entry in groups.items() if entry["n"] == SUPPRESSED]
    assert hidden
    reference = groups[plan.reference]["metrics"]
    for name in hidden:
        size = plan.counts[name]
        assert len(candidate_ns(groups[name]["metrics"], reference, size)) == size, name


def test_fairness_json_full_precision_gives_n_away():
    # From rates at full precision, as audit.json printed them before, the
    # reader above pins the partner's suppressed n of 45.
    y = labels_with_unknown(GROUPS, {"large": 20, "middle": 15, "small": 5})
    included = np.isfinite(y) & (pd.Series(GROUPS) == "middle").to_numpy()
    decisions = (np.random.default_rng(0).random(len(GROUPS)) >= 0.5)[included]
    positives = y[included] == 1
    metrics = {
        "selection_rate": {"value": decisions.mean()},
        "tpr": {"value": decisions[positives].mean()},
        "fpr": {"value": decisions[~positives].mean()},
    }
    assert candidate_ns(metrics, {metric: {} for metric in metrics}, 60) == [45]


def test_fairness_json_withheld_intervals_rounded():
    y = labels_with_unknown(GROUPS, {"large": 20, "middle": 15, "small": 5})
    _, groups = fairness_groups(GROUPS, y)
    # The partner "middle" has 45 patients, so its estimates are withheld, not suppressed.
    cell = groups["middle"]["metrics"]["selection_rate"]
    assert cell["status"] == WITHHELD
    assert "value" not in cell
    assert cell["low"] == round(cell["low"], 2)
