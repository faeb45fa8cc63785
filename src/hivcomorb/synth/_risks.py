"""True label risks: one logistic model per comorbidity.

Each label's log-odds is an intercept plus a sum of smooth terms in the
drawn lab values (before missingness and censoring) and the true age,
ethnicity, deprivation, smoking and exposure. Most terms are linear in a lab
or its logarithm; a few are monotone hinges (HbA1c, eGFR). The coefficients
are estimates chosen to give plausible directions and strengths. The
intercepts are solved so that each label's mean risk matches its prevalence
target (see :func:`solve_intercept`).
"""

from __future__ import annotations

from typing import Callable, Mapping

import numpy as np
from scipy.special import expit

from hivcomorb.synth._labs import softplus
from hivcomorb.synth._population import Population

Labs = Mapping[str, np.ndarray]


def _common(pop: Population) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    return (
        pop.age - 50.0,
        pop.black.astype(float),
        pop.deprivation_score,
        pop.current_smoker.astype(float),
        pop.former_smoker.astype(float),
    )


def _log_ratio(values: np.ndarray, reference: float) -> np.ndarray:
    return np.log(np.maximum(values, 1e-3) / reference)


def hypertension(labs: Labs, pop: Population) -> np.ndarray:
    """Age, Black ethnicity (61% in Black people aged 40+, HIV Medicine, 2024), deprivation, kidney and metabolic labs."""
    age, black, deprived, current, _ = _common(pop)
    return (
        0.07 * age
        + 1.1 * black
        + 0.3 * deprived
        + 0.5 * softplus((80.0 - labs["egfr"]) / 10.0)
        + 0.35 * _log_ratio(labs["triglycerides"], 1.3) / 0.42
    )


def diabetes(labs: Labs, pop: Population) -> np.ndarray:
    """HbA1c (with a rise above 48 mmol/mol, the diagnostic threshold), glucose, age, ethnicity, deprivation."""
    age, black, deprived, _, _ = _common(pop)
    asian = (pop.ethnicity == "asian").astype(float)
    return (
        0.18 * (labs["hba1c"] - 38.0)
        + 0.9 * softplus((labs["hba1c"] - 48.0) / 3.0)
        + 0.35 * (labs["glucose"] - 5.5)
        + 0.03 * age
        + 0.5 * black
        + 0.6 * asian
        + 0.2 * deprived
    )


def dyslipidaemia(labs: Labs, pop: Population) -> np.ndarray:
    """Total and HDL cholesterol, triglycerides and age."""
    age, _, _, _, _ = _common(pop)
    return (
        1.1 * (labs["total_cholesterol"] - 5.0)
        - 0.9 * (labs["hdl_cholesterol"] - 1.25) / 0.3
        + 0.6 * _log_ratio(labs["triglycerides"], 1.3) / 0.42
        + 0.025 * age
    )


def cardiovascular_disease(labs: Labs, pop: Population) -> np.ndarray:
    """Age, smoking, cholesterol ratio, glucose, kidney loss and deprivation."""
    age, _, deprived, current, former = _common(pop)
    ratio = labs["total_cholesterol"] / np.maximum(labs["hdl_cholesterol"], 0.1)
    return (
        0.09 * age
        + 1.1 * current
        + 0.35 * former
        + 0.35 * (ratio - 3.8) / 1.2
        + 0.3 * (labs["glucose"] - 5.5) / 1.2
        + 0.4 * softplus((70.0 - labs["egfr"]) / 10.0)
        + 0.2 * deprived
    )


def chronic_kidney_disease(labs: Labs, pop: Population) -> np.ndarray:
    """Mainly eGFR below 60 mL/min/1.73m2, with urea, Black ethnicity and age."""
    age, black, _, _, _ = _common(pop)
    return (
        -0.2 * (labs["egfr"] - 60.0)
        + 0.5 * _log_ratio(labs["urea"], 5.0) / 0.25
        + 0.4 * black
        + 0.015 * age
    )


def liver_disease(labs: Labs, pop: Population) -> np.ndarray:
    """ALT, AST, GGT, low platelets and albumin, injecting drug use and African ethnicity."""
    african = (pop.ethnicity == "black_african").astype(float)
    return (
        1.2 * _log_ratio(labs["alt"], 20.0) / 0.4
        + 0.3 * _log_ratio(labs["ast"], 22.0) / 0.25
        + 0.25 * _log_ratio(labs["ggt"], 22.0) / 0.45
        - 0.45 * _log_ratio(labs["platelets"], 250.0) / 0.22
        - 0.2 * (labs["albumin"] - 42.0) / 3.0
        + 1.5 * pop.pwid
        + 0.3 * african
    )


def cancer(labs: Labs, pop: Population) -> np.ndarray:
    """Mostly age and smoking, plus low CD4, low albumin and anaemia."""
    age, _, _, current, former = _common(pop)
    return (
        0.09 * age
        + 1.1 * current
        + 0.4 * former
        - 0.7 * _log_ratio(labs["cd4_count"], 556.0) / 0.42
        - 0.25 * (labs["albumin"] - 42.0) / 3.0
        - 0.2 * (labs["haemoglobin"] - 140.0) / 12.0
    )


def mental_health(labs: Labs, pop: Population) -> np.ndarray:
    """Deprivation and smoking, plus sex between men and GGT as an alcohol marker.

    Depression reaches 50% in people short of money for basics (Positive
    Voices 2022, HIV Glasgow, 2024).
    """
    age, _, deprived, current, former = _common(pop)
    return (
        1.1 * deprived
        + 1.2 * current
        + 0.25 * former
        - 0.015 * age
        + 0.3 * (pop.recorded["hiv_exposure"] == "msm")
        + 0.2 * _log_ratio(labs["ggt"], 22.0) / 0.45
    )


def respiratory_disease(labs: Labs, pop: Population) -> np.ndarray:
    """Smoking, age, deprivation and neutrophils."""
    age, _, deprived, current, former = _common(pop)
    return (
        1.9 * current
        + 0.8 * former
        + 0.045 * age
        + 0.2 * deprived
        + 0.5 * _log_ratio(labs["neutrophils"], 3.3) / 0.3
    )


RISK_MODELS: dict[str, Callable[[Labs, Population], np.ndarray]] = {
    "hypertension": hypertension,
    "diabetes": diabetes,
    "dyslipidaemia": dyslipidaemia,
    "cardiovascular_disease": cardiovascular_disease,
    "chronic_kidney_disease": chronic_kidney_disease,
    "liver_disease": liver_disease,
    "cancer": cancer,
    "mental_health": mental_health,
    "respiratory_disease": respiratory_disease,
}


def solve_intercept(logits: np.ndarray, target: float, iterations: int = 60) -> float:
    """Return the intercept b at which the mean of expit(logits + b) equals ``target``.

    Uses bisection on a bracket of +-40 log-odds. That bracket is wide enough
    for any target strictly between 0 and 1 when the logits are of moderate size.
    """
    low, high = -40.0, 40.0
    for _ in range(iterations):
        middle = (low + high) / 2.0
        if expit(logits + middle).mean() < target:
            low = middle
        else:
            high = middle
    return (low + high) / 2.0
