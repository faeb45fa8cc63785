"""Demographic, social and treatment draws of the synthetic cohort.

Each patient has true values (sex, ethnicity, deprivation, smoking status)
and recorded values, which may be "unknown" or empty. Labs and labels are
drawn from the true values.

The gender, age and ethnicity signatures are switched off through the "lab
views" of :class:`Population`: the labs read ``female_view``, ``age_view`` and
the ethnicity views, which become constants when the signature is off. So
that no lab can reveal a switched-off column through another variable, the
draws below keep such a column independent of everything the labs read:

- sex depends on ethnicity only when both signatures are on or both are off;
- deprivation depends on ethnicity only when the ethnicity signature is on;
- smoking depends on deprivation alone, age on vertical exposure alone;
- injecting drug use, vertical exposure and treatments have one share for
  everybody, so they are independent of sex, ethnicity and age.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
from scipy.special import expit, ndtr, ndtri

from hivcomorb.contract import UNKNOWN, Contract

BLACK = ("black_african", "black_caribbean", "black_other")
SMOKING = ("never", "former", "current")


@dataclass
class Population:
    """True and recorded demographic, social and treatment values, one row per patient."""

    age: np.ndarray
    female: np.ndarray
    ethnicity: np.ndarray
    deprivation: np.ndarray
    smoking: np.ndarray
    pwid: np.ndarray
    boosted_pi: np.ndarray
    atazanavir: np.ndarray
    tenofovir_df: np.ndarray
    creatinine_raising: np.ndarray
    recorded: dict[str, np.ndarray]
    age_view: np.ndarray
    female_view: np.ndarray
    black_view: np.ndarray
    african_view: np.ndarray
    asian_view: np.ndarray

    @property
    def black(self) -> np.ndarray:
        """True when the true ethnicity is Black African, Black Caribbean or Black other."""
        return np.isin(self.ethnicity, BLACK)

    @property
    def current_smoker(self) -> np.ndarray:
        """True for current smokers (true status, whatever was recorded)."""
        return self.smoking == "current"

    @property
    def former_smoker(self) -> np.ndarray:
        """True for former smokers (true status)."""
        return self.smoking == "former"

    @property
    def deprivation_score(self) -> np.ndarray:
        """Deprivation from +1 (quintile 1, most deprived) to -1 (quintile 5)."""
        return (3.0 - self.deprivation) / 2.0


def draw_categories(rng: np.random.Generator, probabilities: np.ndarray) -> np.ndarray:
    """Return one column index per row of ``probabilities`` (rows need not sum to 1)."""
    probabilities = np.atleast_2d(probabilities)
    cumulative = np.cumsum(probabilities, axis=1)
    cumulative /= cumulative[:, -1:]
    u = rng.random(cumulative.shape[0])
    index = (u[:, None] > cumulative).sum(axis=1)
    return np.minimum(index, probabilities.shape[1] - 1)


def _draw_from_table(rng: np.random.Generator, table: Mapping[str, float], n: int) -> np.ndarray:
    names = list(table)
    weights = np.array([float(table[name]) for name in names])
    index = draw_categories(rng, np.broadcast_to(weights, (n, len(names))))
    return np.asarray(names, dtype=object)[index]


def _by_group(groups: np.ndarray, table: Mapping[str, float]) -> np.ndarray:
    """Look up ``table[group]`` per patient, ``table['default']`` for other groups."""
    values = np.full(groups.shape, float(table["default"]))
    for group, value in table.items():
        if group != "default":
            values[groups == group] = float(value)
    return values


def _truncated_normal(rng: np.random.Generator, n: int, mean: float, sd: float, low: float, high: float) -> np.ndarray:
    lower, upper = ndtr((low - mean) / sd), ndtr((high - mean) / sd)
    return mean + sd * ndtri(lower + (upper - lower) * rng.random(n))


def expected_share(table: Mapping[str, float], weights: Mapping[str, float]) -> float:
    """Return the mean of ``table`` (with a 'default') weighted by ``weights``."""
    total = sum(weights.values())
    return sum(w * float(table.get(k, table["default"])) for k, w in weights.items()) / total


def draw_population(
    rng: np.random.Generator,
    n: int,
    options: Mapping[str, Any],
    contract: Contract,
) -> Population:
    """Draw the demographic, social and treatment values of ``n`` patients."""
    population = options["population"]
    signatures = {name: bool(options["signatures"].get(name, True)) for name in ("gender", "age", "ethnicity")}

    ethnicity_table = {k: float(v) for k, v in population["ethnicity"].items() if k != UNKNOWN}
    ethnicity = _draw_from_table(rng, ethnicity_table, n)
    recorded_ethnicity = np.where(rng.random(n) < float(population["ethnicity"].get(UNKNOWN, 0.0)), UNKNOWN, ethnicity)

    marginal_female = expected_share(population["female_share"], ethnicity_table)
    if signatures["gender"] == signatures["ethnicity"]:
        female_probability = _by_group(ethnicity, population["female_share"])
    else:
        female_probability = np.full(n, marginal_female)
    female = rng.random(n) < female_probability
    gender = np.where(female, "female", "male").astype(object)
    u = rng.random(n)
    gender[u < float(population["gender_other"])] = "other"
    gender[(u >= float(population["gender_other"])) & (u < float(population["gender_other"]) + float(population["gender_unknown"]))] = UNKNOWN

    exposure = _draw_exposure(rng, n, population["exposure"], female, ethnicity)
    age_spec = population["age"]
    age = _truncated_normal(rng, n, float(age_spec["mean"]), float(age_spec["sd"]), float(age_spec["min"]), float(age_spec["max"]))
    vertical = exposure == "vertical"
    young = population["vertical_age"]
    age[vertical] = rng.uniform(float(young["min"]), float(young["max"]), int(vertical.sum()))
    age = np.round(age, 1)

    continent = _draw_continent(rng, population["continent_of_birth"], ethnicity, contract)
    deprivation = _draw_deprivation(rng, population, ethnicity if signatures["ethnicity"] else None, n)
    smoking = _draw_smoking(rng, population["smoking"], deprivation, population["deprivation"])

    treatment = population["treatment"]
    boosted_pi = rng.random(n) < float(treatment["boosted_pi"])
    atazanavir_given_pi = float(treatment["atazanavir"]) / max(float(treatment["boosted_pi"]), 1e-9)
    atazanavir = boosted_pi & (rng.random(n) < min(atazanavir_given_pi, 1.0))
    tenofovir_df = rng.random(n) < float(treatment["tenofovir_df"])
    creatinine_raising = rng.random(n) < float(treatment["creatinine_raising"])

    unrecorded = population["unrecorded"]
    recorded_smoking = np.where(rng.random(n) < float(unrecorded.get("smoking_status", 0.0)), UNKNOWN, smoking)
    recorded_deprivation = np.where(rng.random(n) < float(unrecorded.get("deprivation_quintile", 0.0)), 0, deprivation)

    shares = {name: sum(ethnicity_table.get(k, 0.0) for k in keys) / sum(ethnicity_table.values())
              for name, keys in (("black", BLACK), ("african", ("black_african",)), ("asian", ("asian",)))}
    reference_age = float(age_spec["mean"])
    return Population(
        age=age,
        female=female,
        ethnicity=ethnicity,
        deprivation=deprivation,
        smoking=smoking,
        pwid=exposure == "pwid",
        boosted_pi=boosted_pi,
        atazanavir=atazanavir,
        tenofovir_df=tenofovir_df,
        creatinine_raising=creatinine_raising,
        recorded={
            "age": age,
            "gender": gender,
            "ethnicity": recorded_ethnicity,
            "continent_of_birth": continent,
            "hiv_exposure": exposure,
            "deprivation_quintile": recorded_deprivation,
            "smoking_status": recorded_smoking,
        },
        age_view=age if signatures["age"] else np.full(n, reference_age),
        female_view=female.astype(float) if signatures["gender"] else np.full(n, marginal_female),
        black_view=np.isin(ethnicity, BLACK).astype(float) if signatures["ethnicity"] else np.full(n, shares["black"]),
        african_view=(ethnicity == "black_african").astype(float) if signatures["ethnicity"] else np.full(n, shares["african"]),
        asian_view=(ethnicity == "asian").astype(float) if signatures["ethnicity"] else np.full(n, shares["asian"]),
    )


def _draw_exposure(rng: np.random.Generator, n: int, spec: Mapping[str, Any], female: np.ndarray, ethnicity: np.ndarray) -> np.ndarray:
    """Draw HIV exposure: fixed shares for everybody, then sex between men or heterosexual."""
    fixed = ("pwid", "vertical", "other", UNKNOWN)
    bounds = np.cumsum([float(spec[k]) for k in fixed])
    u = rng.random(n)
    exposure = np.full(n, "heterosexual", dtype=object)
    msm = (~female) & (rng.random(n) < _by_group(ethnicity, spec["msm_among_men"]))
    exposure[msm] = "msm"
    index = np.searchsorted(bounds, u, side="right")
    for position, name in enumerate(fixed):
        exposure[index == position] = name
    return exposure


def _draw_continent(rng: np.random.Generator, tables: Mapping[str, Mapping[str, float]], ethnicity: np.ndarray, contract: Contract) -> np.ndarray:
    continents = list(contract.column("continent_of_birth").categories)
    weights = np.zeros((ethnicity.size, len(continents)))
    for group, table in tables.items():
        row = np.array([float(table.get(c, 0.0)) for c in continents])
        rows = ~np.isin(ethnicity, [g for g in tables if g != "default"]) if group == "default" else ethnicity == group
        weights[rows] = row
    return np.asarray(continents, dtype=object)[draw_categories(rng, weights)]


def _draw_deprivation(rng: np.random.Generator, population: Mapping[str, Any], ethnicity: np.ndarray | None, n: int) -> np.ndarray:
    base = np.asarray(population["deprivation"], dtype=float)
    weights = np.broadcast_to(base, (n, 5)).copy()
    if ethnicity is not None:
        # Tilt Black patients towards the more deprived quintiles (estimate)
        # and the others the opposite way, so that the cohort's shares stay
        # close to the configured ones.
        black = np.isin(ethnicity, BLACK)
        black_share = max(float(black.mean()), 1e-9)
        shift = float(population["deprivation_black_shift"])
        steps = (3.0 - np.arange(1, 6)) / 2.0
        weights[black] *= np.exp(shift * steps)
        weights[~black] *= np.exp(-shift * black_share / max(1.0 - black_share, 1e-9) * steps)
    return draw_categories(rng, weights) + 1


def _draw_smoking(rng: np.random.Generator, spec: Mapping[str, Any], deprivation: np.ndarray, deprivation_shares: Any) -> np.ndarray:
    current_share, former_share = float(spec["current"]), float(spec["former"])
    slope = np.log(float(spec["current_most_to_least_deprived_odds_ratio"])) / 4.0
    # Solve the intercept on the configured quintile shares so that the
    # cohort's share of current smokers matches the configured one.
    quintile_shares = np.asarray(deprivation_shares, dtype=float) / np.sum(deprivation_shares)
    steps = slope * (3.0 - np.arange(1, 6))
    low, high = -20.0, 20.0
    for _ in range(60):
        middle = (low + high) / 2.0
        if np.sum(quintile_shares * expit(middle + steps)) < current_share:
            low = middle
        else:
            high = middle
    logit = (low + high) / 2.0 + slope * (3.0 - deprivation)
    current = rng.random(deprivation.size) < expit(logit)
    former = ~current & (rng.random(deprivation.size) < former_share / (1.0 - current_share))
    return np.where(current, "current", np.where(former, "former", "never")).astype(object)
