"""Tests of the plain sentences that summarise the audit."""

from __future__ import annotations

import pytest

from hivcomorb.audit.fairness import RED
from hivcomorb.audit.summary import fairness_sentences, suppression_sentence


def audit_with(suppressed: dict, partners: dict) -> dict:
    """Return the parts of an audit record that the suppression sentence reads."""
    return {
        "suppressed": suppressed,
        "fairness": {"attributes": {name: {"n_partners": partners.get(name, 0)} for name in suppressed}},
    }


@pytest.mark.parametrize(
    ("suppressed", "partners", "expected"),
    [
        ({"gender": 1, "ethnicity": 0}, {}, "1 group(s) with fewer than 10 patients were suppressed."),
        (
            {"gender": 2, "gender x ethnicity": 17},
            {"gender": 1, "gender x ethnicity": 8},
            "19 group(s) were suppressed: 10 with fewer than 10 patients, and 9 larger one(s) hidden so that the "
            "smaller ones cannot be worked out by subtraction.",
        ),
    ],
)
def test_suppression_sentence_counts_partners(suppressed, partners, expected):
    assert suppression_sentence(audit_with(suppressed, partners), 10) == expected


def flagged_row(difference: float | None) -> dict:
    return {
        "attribute": "ethnicity",
        "label": "hypertension",
        "group": "asian",
        "reference": "white",
        "metric": "tpr",
        "setting": "aware",
        "flag": RED,
        "difference": difference,
        "difference_low": -0.41,
        "difference_high": -0.12,
    }


def test_fairness_sentences_withheld_difference():
    fairness = {"flag_counts": {}, "models": {}, "attributes": {}, "flagged": [flagged_row(None)]}
    sentence = fairness_sentences(fairness)[-1]
    assert "differs by an amount withheld because it would give a suppressed n away (95% CI -0.41 to -0.12)" in sentence


def test_fairness_sentences_printed_difference():
    fairness = {"flag_counts": {}, "models": {}, "attributes": {}, "flagged": [flagged_row(-0.25)]}
    assert "differs by -0.25 (95% CI -0.41 to -0.12)" in fairness_sentences(fairness)[-1]
