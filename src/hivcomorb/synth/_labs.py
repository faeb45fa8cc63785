"""Latent health states and the 30 lab values drawn from them.

Every lab reads demographics only through the lab views of
:class:`~hivcomorb.synth._population.Population` (``age_view``,
``female_view`` and the ethnicity views), so switching a signature off
removes it from every lab. Values are in the contract's canonical units,
rounded as laboratories report them, before missingness and censoring.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from hivcomorb.synth._population import Population

MG_PER_DL_CREATININE = 88.42  # umol/L in 1 mg/dL of creatinine


def softplus(x: np.ndarray) -> np.ndarray:
    """Return log(1 + exp(x)), a smooth hinge that is about x above 0 and about 0 below."""
    return np.logaddexp(0.0, x)


def ckd_epi_2021(creatinine: np.ndarray, age: np.ndarray, female: np.ndarray) -> np.ndarray:
    """Return eGFR in mL/min/1.73m2 by the race-free CKD-EPI 2021 creatinine equation.

    ``creatinine`` is in umol/L and ``age`` in years; ``female`` may lie between
    0 and 1, which blends the two sexes' coefficients.
    """
    kappa = 0.9 - 0.2 * female
    alpha = -0.302 + 0.061 * female
    ratio = creatinine / MG_PER_DL_CREATININE / kappa
    return 142.0 * np.minimum(ratio, 1.0) ** alpha * np.maximum(ratio, 1.0) ** -1.2 * 0.9938**age * 1.012**female


def creatinine_for_egfr(egfr: np.ndarray, age: np.ndarray, female: np.ndarray) -> np.ndarray:
    """Return the creatinine (umol/L) at which :func:`ckd_epi_2021` gives ``egfr``."""
    kappa = 0.9 - 0.2 * female
    alpha = -0.302 + 0.061 * female
    scaled = egfr / (142.0 * 0.9938**age * 1.012**female)
    ratio = np.where(scaled >= 1.0, scaled ** (1.0 / alpha), scaled ** (-1.0 / 1.2))
    return ratio * kappa * MG_PER_DL_CREATININE


def _lognormal(rng: np.random.Generator, median: np.ndarray | float, sigma: float, n: int) -> np.ndarray:
    return np.asarray(median) * np.exp(sigma * rng.standard_normal(n))


def _age_decline(age: np.ndarray) -> np.ndarray:
    """Return the fall of GFR since age 20 in mL/min/1.73m2.

    The yearly loss rises from 0.82 at ages 20-30 to about 1.15 after 50
    (Natural decline in renal function with age, J Nephrol, 2014).
    """
    years = np.maximum(age - 20.0, 0.0)
    return 0.82 * years + 0.0055 * np.maximum(age - 30.0, 0.0) ** 2


def draw_labs(rng: np.random.Generator, pop: Population, options: Mapping[str, Any], detection_limit: float) -> dict[str, np.ndarray]:
    """Draw every lab of the contract for the patients of ``pop``.

    Returns a mapping from lab name to values in canonical units, plus
    ``_viral_suppressed`` (bool), which the censoring step uses.
    """
    n = pop.age.size
    age = pop.age_view
    age_centred = age - 49.0
    female = pop.female_view
    male = 1.0 - female
    black, african, asian = pop.black_view, pop.african_view, pop.asian_view
    current = pop.current_smoker.astype(float)
    deprived = pop.deprivation_score

    # Latent states, each about standard normal before its shifts (estimates).
    metabolic = rng.standard_normal(n) + 0.012 * age_centred + 0.25 * black + 0.35 * asian + 0.15 * deprived
    glycaemia = 0.55 * metabolic + 0.8 * rng.standard_normal(n) + 0.012 * age_centred + 0.2 * african
    lipid = rng.standard_normal(n)
    kidney_damage = rng.standard_normal(n)
    alcohol = rng.standard_normal(n) + 0.3 * current
    heavy_drinking = softplus(2.0 * (alcohol - 1.5)) / 2.0

    # Viral hepatitis. HBsAg is 6.9% in UK CHIC (PLoS One, 2012) and HBV 6.2%
    # in African ancestry (AIDS, 2021). The split by ancestry is an estimate,
    # and so are the active HCV shares (HCV antibody 8.9% in UK CHIC, mostly cleared).
    hbv = rng.random(n) < 0.045 + 0.03 * african
    hcv = rng.random(n) < 0.02 + 0.35 * pop.pwid
    fibrosis = softplus(0.9 * hbv + 1.1 * hcv + 0.6 * heavy_drinking + 0.25 * metabolic + 0.5 * rng.standard_normal(n) - 2.0)

    # Viral load: 98% of treated people are suppressed (HIV Action Plan
    # monitoring report, UKHSA, 2024). The shares of blips (detection limit to
    # 200 copies/mL) and of viraemic patients are estimates.
    u = rng.random(n)
    viraemic = u < 0.03
    blip = (u >= 0.03) & (u < 0.08)
    suppressed = ~viraemic & ~blip
    viral_load = np.full(n, detection_limit / 2.0)
    viral_load[blip] = 10.0 ** rng.uniform(np.log10(detection_limit), np.log10(200.0), int(blip.sum()))
    viral_load[viraemic] = 10.0 ** rng.uniform(2.4, 5.5, int(viraemic.sum()))
    inflammation = 0.8 * rng.standard_normal(n) + 0.3 * current + 0.2 * metabolic + 0.6 * viraemic

    labs: dict[str, np.ndarray] = {"viral_load": np.round(viral_load)}

    # CD4 median 556 (IQR 409-721) cells/uL on ART (CROI abstract, n.d.); CD8
    # median 727 (530-991) and CD4/CD8 median 0.8 (Clin Infect Dis, 2016). The
    # ratio falls with age at ART start (AIDS, 2024); the slope used here is
    # an attenuated estimate.
    shared = rng.standard_normal(n)
    log_cd4 = np.log(556.0) + 0.42 * (0.7 * shared + 0.714 * rng.standard_normal(n)) - 0.003 * age_centred - 0.6 * viraemic
    log_cd8 = np.log(727.0) + 0.46 * (0.7 * shared + 0.714 * rng.standard_normal(n)) + 0.005 * age_centred + 0.3 * viraemic
    cd4, cd8 = np.exp(log_cd4), np.exp(log_cd8)
    labs["cd4_count"] = np.round(cd4)
    labs["cd8_count"] = np.round(cd8)
    labs["cd4_cd8_ratio"] = np.round(np.maximum(labs["cd4_count"], 1.0) / np.maximum(labs["cd8_count"], 1.0), 2)

    # Kidney. True GFR falls with age, with tenofovir DF (eGFR decline after
    # TDF, J Infect Dis, 2014) and with West African ancestry, which doubles
    # CKD risk (EClinicalMedicine, 2021). The sizes of the last two are
    # estimates. Women lose GFR faster after 50 (-1.03 against -0.72 per year,
    # PMC7350990, 2020), applied here as an estimated extra 0.3 per year.
    damage = 12.0 * softplus(1.3 * kidney_damage - 1.6) + 4.0 * african + 4.0 * pop.tenofovir_df
    true_gfr = 124.0 - _age_decline(age) - 0.3 * female * np.maximum(age - 50.0, 0.0) - damage + 7.0 * rng.standard_normal(n)
    true_gfr = np.clip(true_gfr, 6.0, 160.0)
    # Creatinine from the CKD-EPI 2021 equation, higher for the same GFR in
    # Black people (muscle mass, estimate) and 8 umol/L higher with
    # dolutegravir, bictegravir or cobicistat (estimate).
    creatinine = creatinine_for_egfr(true_gfr, age, female) * (1.0 + 0.08 * black)
    creatinine = creatinine + 8.0 * pop.creatinine_raising
    creatinine = np.round(creatinine * np.exp(0.04 * rng.standard_normal(n)))
    labs["creatinine"] = creatinine
    egfr = np.round(ckd_epi_2021(creatinine, age, female))
    labs["egfr"] = egfr
    renal_loss = softplus((60.0 - egfr) / 10.0)
    labs["urea"] = np.round(_lognormal(rng, 4.6 * np.exp(0.006 * age_centred + 0.12 * male + 0.18 * renal_loss), 0.22, n), 1)
    labs["potassium"] = np.round(4.3 + 0.12 * renal_loss + 0.33 * rng.standard_normal(n), 1)
    labs["sodium"] = np.round(139.5 + 2.2 * rng.standard_normal(n))

    # Full blood count. Haemoglobin reference intervals are women 117-153 and
    # men 134-170 g/L (NORIP, Scand J Clin Lab Invest, 2004). Healthy Black
    # adults have about 20 g/L less haemoglobin and neutrophils of 3.16 against
    # 3.96 x10^9/L (Arch Intern Med, 1991). The effects of smoking, low CD4,
    # kidney loss and the fall in older men are estimates.
    haemoglobin = (
        154.0
        - 17.0 * female
        - 16.0 * black
        + 4.0 * current
        - 6.0 * np.log(556.0 / cd4).clip(0.0)
        - 5.0 * renal_loss
        - 0.25 * male * np.maximum(age - 60.0, 0.0)
        - 4.0 * fibrosis
        + 9.0 * rng.standard_normal(n)
    )
    labs["haemoglobin"] = np.round(haemoglobin)
    neutrophils = _lognormal(rng, 3.5 * np.exp(-0.22 * black + 0.15 * current + 0.15 * inflammation), 0.3, n)
    lymphocytes = (cd4 + cd8) / 1000.0 * np.exp(np.log(1.35) + 0.08 * rng.standard_normal(n))
    other_white_cells = _lognormal(rng, 0.75, 0.25, n)
    labs["neutrophils"] = np.round(neutrophils, 2)
    labs["lymphocytes"] = np.round(lymphocytes, 2)
    labs["white_cell_count"] = np.round(neutrophils + lymphocytes + other_white_cells, 1)
    # Platelets about 25 x10^9/L higher in women (estimate); fibrosis lowers them.
    labs["platelets"] = np.round(_lognormal(rng, (245.0 + 25.0 * female) * np.exp(-0.35 * fibrosis), 0.22, n))
    labs["mcv"] = np.round(90.0 + 1.5 * heavy_drinking + 1.0 * current - 2.0 * (black + asian) + 4.5 * rng.standard_normal(n))

    # Liver. ALT men 9-50, women 8-38 U/L; AST 15-36 and 13-33; GGT 11-58 and
    # 8-42 (Scand J Clin Lab Invest, 1995). The sizes of the hepatitis,
    # alcohol and fatty-liver effects are estimates.
    labs["alt"] = np.round(_lognormal(
        rng, (17.4 + 3.8 * male) * np.exp(0.3 * metabolic + 0.9 * hbv + 1.0 * hcv + 0.25 * heavy_drinking + 0.3 * fibrosis), 0.38, n))
    labs["ast"] = np.round(_lognormal(
        rng, (20.7 + 2.5 * male) * np.exp(0.08 * metabolic + 0.6 * hbv + 0.8 * hcv + 0.35 * heavy_drinking + 0.45 * fibrosis), 0.22, n))
    labs["ggt"] = np.round(_lognormal(
        rng, (18.3 + 7.0 * male) * np.exp(0.3 * metabolic + 0.4 * hbv + 0.5 * hcv + 0.7 * heavy_drinking + 0.4 * fibrosis), 0.42, n))
    # ALP upper limits vary by ethnicity (BMJ Open Gastroenterology, 2020).
    # The Black shift, the rise in women after 50 and the tenofovir DF effect
    # are estimates.
    after_menopause = female * np.clip((age - 45.0) / 10.0, 0.0, 1.0)
    labs["alp"] = np.round(_lognormal(
        rng, 72.0 * np.exp(0.1 * black + 0.15 * after_menopause + 0.1 * pop.tenofovir_df + 0.25 * fibrosis), 0.25, n))
    # Atazanavir raises unconjugated bilirubin several-fold (estimate of the size).
    labs["bilirubin"] = np.round(_lognormal(rng, (7.5 + 2.5 * male) * np.exp(1.1 * pop.atazanavir + 0.3 * fibrosis), 0.45, n))
    albumin = 43.0 - 0.06 * age_centred - 1.3 * inflammation - 2.5 * fibrosis + 2.5 * rng.standard_normal(n)
    labs["albumin"] = np.round(albumin)
    globulin = 31.0 + 3.0 * black + 2.0 * (hbv | hcv) + 2.0 * viraemic + 3.5 * rng.standard_normal(n)
    labs["total_protein"] = np.round(labs["albumin"] + globulin)
    labs["calcium"] = np.round(2.36 + 0.015 * (albumin - 43.0) + 0.08 * rng.standard_normal(n), 2)

    # Lipids. Low-dose ritonavir raises LDL by 16% and triglycerides by 27%
    # and lowers HDL by 5% (scite report, n.d.). The HDL sex difference, lower
    # triglycerides in Black people and the age slopes are estimates. Total
    # cholesterol follows the Friedewald relation TC = LDL + HDL + TG / 2.2.
    hdl = _lognormal(rng, (1.15 + 0.3 * female) * np.exp(-0.12 * metabolic - 0.05 * pop.boosted_pi + 0.06 * alcohol), 0.22, n)
    triglycerides = _lognormal(rng, 1.3 * np.exp(0.3 * metabolic + 0.24 * pop.boosted_pi - 0.2 * black + 0.006 * age_centred), 0.42, n)
    ldl = (2.9 + 0.75 * lipid + 0.012 * age_centred + 0.12 * metabolic) * (1.0 + 0.16 * pop.boosted_pi)
    ldl = np.maximum(ldl, 0.4)
    labs["hdl_cholesterol"] = np.round(hdl, 2)
    labs["triglycerides"] = np.round(triglycerides, 2)
    labs["ldl_cholesterol"] = np.round(ldl, 1)
    labs["total_cholesterol"] = np.round(ldl + hdl + triglycerides / 2.2, 1)

    # Glycaemia. HbA1c reads about 2 mmol/mol higher in Black people at the
    # same glucose (estimate). Random glucose follows HbA1c through the
    # estimated average glucose formula eAG (mmol/L) = 1.59 x HbA1c (%) - 2.59,
    # which is 0.145 mmol/L per mmol/mol.
    hba1c = 35.0 + 0.08 * age_centred + 2.0 * black + 3.2 * glycaemia + 10.0 * softplus(1.6 * (glycaemia - 1.7))
    labs["hba1c"] = np.round(hba1c + 1.2 * rng.standard_normal(n))
    labs["glucose"] = np.round((4.9 + 0.145 * (hba1c - 35.0)) * np.exp(0.14 * rng.standard_normal(n)), 1)

    # CRP: low in most people, with occasional acute rises (estimates).
    acute = rng.random(n) < 0.05
    crp = _lognormal(rng, 1.6 * np.exp(0.8 * inflammation + 0.25 * metabolic), 0.7, n)
    crp[acute] *= np.exp(rng.uniform(1.0, 4.0, int(acute.sum())))
    labs["crp"] = np.round(crp, 1)

    labs["_viral_suppressed"] = suppressed
    return labs
