"""Missing labs, censoring and unknown labels: the view of the drawn values that the extract gives."""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
from scipy.special import expit

from hivcomorb.synth._population import Population

# Labs a clinic requests together. A lab missing from the extract either lost
# its whole panel or was not run by itself. HbA1c and CRP are requested on
# their own and are missing not at random (see not_at_random_logits).
PANELS: dict[str, tuple[str, ...]] = {
    "t_cells": ("cd4_count", "cd8_count", "cd4_cd8_ratio"),
    "viral_load": ("viral_load",),
    "full_blood_count": ("haemoglobin", "white_cell_count", "neutrophils", "lymphocytes", "platelets", "mcv"),
    "renal": ("sodium", "potassium", "urea", "creatinine", "egfr"),
    "liver": ("alt", "ast", "alp", "ggt", "bilirubin", "albumin", "total_protein"),
    "bone": ("calcium",),
    "lipids": ("total_cholesterol", "hdl_cholesterol", "ldl_cholesterol", "triglycerides"),
    "glucose": ("glucose",),
}

# The Friedewald LDL estimate is invalid above this triglyceride level (mmol/L),
# so laboratories report no LDL there.
FRIEDEWALD_MAX_TRIGLYCERIDES = 4.5


def not_at_random_logits(lab: str, values: np.ndarray, rule: Mapping[str, Any], pop: Population) -> np.ndarray:
    """Return the log-odds, less the intercept, that ``lab`` was requested.

    The log-odds rise with the lab's own value. HbA1c is also requested more
    often in older people and in Black and Asian people, read through the lab
    views so that a switched-off signature leaves no trace (estimates).
    """
    scaled = np.log(np.maximum(values, 1e-3)) - np.log(float(rule["centre"])) if rule.get("log") else values - float(rule["centre"])
    logits = float(rule["slope"]) * scaled / float(rule["scale"])
    if lab == "hba1c":
        logits = logits + 0.03 * (pop.age_view - 49.0) + 0.5 * (pop.black_view + pop.asian_view)
    return logits


def missing_mask(
    rng: np.random.Generator,
    labs: Mapping[str, np.ndarray],
    pop: Population,
    options: Mapping[str, Any],
    intercepts: Mapping[str, float],
) -> dict[str, np.ndarray]:
    """Return, per lab, True where the extract shows no value."""
    n = pop.age.size
    missing_spec = options["missing"]
    masks: dict[str, np.ndarray] = {}
    for panel, members in PANELS.items():
        panel_missing = rng.random(n) < float(missing_spec["panels"].get(panel, 0.0))
        for lab in members:
            masks[lab] = panel_missing.copy()
    for lab, share in missing_spec["labs"].items():
        masks[lab] = masks.get(lab, np.zeros(n, dtype=bool)) | (rng.random(n) < float(share))
    for lab, rule in missing_spec["not_at_random"].items():
        requested = rng.random(n) < expit(not_at_random_logits(lab, labs[lab], rule, pop) + intercepts[lab])
        masks[lab] = masks.get(lab, np.zeros(n, dtype=bool)) | ~requested
    masks["ldl_cholesterol"] = masks["ldl_cholesterol"] | (labs["triglycerides"] > FRIEDEWALD_MAX_TRIGLYCERIDES)
    return masks


def censor(
    labs: Mapping[str, np.ndarray],
    options: Mapping[str, Any],
    detection_limit: float,
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Return the reported values and their censoring flags ("<", ">" or None).

    A suppressed viral load is reported as "<" the detection limit, and a lab
    below (above) its configured limit as "<" (">") that limit.
    """
    reported = {lab: values.copy() for lab, values in labs.items() if not lab.startswith("_")}
    flags = {lab: np.full(values.size, None, dtype=object) for lab, values in reported.items()}
    suppressed = labs["_viral_suppressed"]
    reported["viral_load"][suppressed] = detection_limit
    flags["viral_load"][suppressed] = "<"
    for lab, rule in (options.get("censoring") or {}).items():
        if rule.get("below") is not None:
            below = reported[lab] < float(rule["below"])
            reported[lab][below] = float(rule["below"])
            flags[lab][below] = "<"
        if rule.get("above") is not None:
            above = reported[lab] > float(rule["above"])
            reported[lab][above] = float(rule["above"])
            flags[lab][above] = ">"
    return reported, flags


def unknown_label_mask(rng: np.random.Generator, n: int, labels: list[str], rate: float) -> dict[str, np.ndarray]:
    """Return, per label, True where the label is recorded as unknown (at random)."""
    return {label: rng.random(n) < rate for label in labels}
