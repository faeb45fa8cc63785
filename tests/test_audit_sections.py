"""Tests of how the audit sections word suppressed groups."""

from __future__ import annotations

from pathlib import Path

import pytest

from hivcomorb.audit.metrics import METRICS
from hivcomorb.audit.sections import audit_sections, fairness_section


def audit_with(attributes: dict, suppressed: dict) -> dict:
    """Return the smallest audit record that the sections can render."""
    return {
        "min_group_size": 10,
        "cohort_table": {},
        "explanations": {},
        "fairness": {"attributes": attributes, "flag_counts": {}, "flagged": [], "bootstrap": 20, "flag_thresholds": {}},
        "mitigation": {"enabled": False},
        "suppressed": suppressed,
    }


def gender(n_suppressed: int, n_partners: int) -> dict:
    groups = {"male": 60, "female": 36}
    cell = {"n": 60, "metrics": {metric: {"status": "undefined"} for metric in METRICS}}
    return {
        "reference": "male",
        "groups": groups,
        "n_suppressed": n_suppressed,
        "n_partners": n_partners,
        "labels": {"hypertension": {"aware": {"male": cell, "female": {**cell, "n": "suppressed"}}}},
    }


@pytest.mark.parametrize(
    ("n_suppressed", "n_partners", "expected"),
    [
        (1, 0, "1 group(s) suppressed: 1 with fewer than 10 patients"),
        (
            2,
            1,
            "2 group(s) suppressed: 1 with fewer than 10 patients, and 1 larger one(s) hidden so that smaller "
            "groups cannot be worked out by subtraction",
        ),
        (3, 3, "3 group(s) suppressed: 3 larger one(s) hidden so that smaller groups cannot be worked out by subtraction"),
    ],
)
def test_fairness_section_names_partners(n_suppressed, n_partners, expected):
    html = fairness_section(audit_with({"gender": gender(n_suppressed, n_partners)}, {}), Path("."), None)
    assert f"reference male; {expected}</caption>" in html


def test_fairness_section_no_suppression_no_note():
    html = fairness_section(audit_with({"gender": gender(0, 0)}, {}), Path("."), None)
    assert "<caption>gender: reference male</caption>" in html


def test_fairness_section_explains_suppressed_n():
    html = fairness_section(audit_with({"gender": gender(0, 0)}, {}), Path("."), None)
    assert "The n of a group" in html


def test_audit_sections_count_partners():
    html = audit_sections(audit_with({"gender": gender(2, 1)}, {"gender": 2, "ethnicity": 0}), Path("."), None)
    assert "Groups suppressed, by attribute: gender: 2 (1 of them hidden to protect smaller groups)." in html


def test_audit_sections_explain_partners():
    html = audit_sections(audit_with({"gender": gender(2, 1)}, {"gender": 2}), Path("."), None)
    assert "A larger group is hidden too when the suppressed groups would otherwise add up to fewer than 10" in html


def test_fairness_section_withheld_interval_shown():
    attribute = gender(0, 0)
    withheld = {"status": "withheld", "low": 0.41, "high": 0.58, "flag": "green"}
    attribute["labels"]["hypertension"]["aware"]["female"]["metrics"]["tpr"] = withheld
    html = fairness_section(audit_with({"gender": attribute}, {}), Path("."), None)
    assert "withheld [0.41, 0.58]" in html


def test_fairness_section_withheld_difference_flagged():
    audit = audit_with({"gender": gender(0, 0)}, {})
    audit["fairness"]["flagged"] = [
        {
            "attribute": "gender",
            "label": "hypertension",
            "group": "female",
            "reference": "male",
            "metric": "tpr",
            "setting": "aware",
            "flag": "red",
            "difference": None,
            "difference_low": -0.41,
            "difference_high": -0.12,
        }
    ]
    html = fairness_section(audit, Path("."), None)
    assert "withheld [-0.41, -0.12]" in html
