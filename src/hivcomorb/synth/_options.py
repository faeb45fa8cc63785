"""Options of the synthetic cohort: the ``synth`` block of the configuration.

Defaults live in ``conf/stages/synth.yaml``; options passed to
:func:`hivcomorb.synth.generate` are merged over them and checked here, so the
generator itself can index them without further checks.
"""

from __future__ import annotations

import json
from typing import Any, Mapping

from hivcomorb.config import deep_merge, stage_defaults
from hivcomorb.contract import Contract
from hivcomorb.errors import ConfigError

SIGNATURES = ("gender", "age", "ethnicity")


def resolve_options(options: Mapping[str, Any] | None, contract: Contract) -> dict[str, Any]:
    """Merge ``options`` over the stage defaults and validate the result.

    Raises
    ------
    ConfigError
        If a share is outside [0, 1], a category is not in the contract or a
        label has no prevalence target.
    """
    defaults = stage_defaults().get("synth")
    if not isinstance(defaults, Mapping):
        raise ConfigError("conf/stages/synth.yaml has no 'synth' block; restore it from the repository")
    merged = deep_merge(defaults, options or {})
    _check_signatures(merged)
    _check_population(merged["population"], contract)
    _check_missing(merged, contract)
    _check_labels(merged, contract)
    return merged


def options_key(options: Mapping[str, Any]) -> str:
    """Return a stable text key of ``options`` for caching."""
    return json.dumps(options, sort_keys=True, default=str)


def _share(value: Any, where: str) -> float:
    try:
        share = float(value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"synth option {where} must be a number between 0 and 1, got {value!r}") from exc
    if not 0.0 <= share <= 1.0:
        raise ConfigError(f"synth option {where} must be between 0 and 1, got {share}")
    return share


def _check_signatures(options: Mapping[str, Any]) -> None:
    signatures = options.get("signatures") or {}
    unknown = sorted(set(signatures) - set(SIGNATURES))
    if unknown:
        raise ConfigError(f"synth.signatures names {unknown}; expected keys among {list(SIGNATURES)}")
    for name in SIGNATURES:
        if not isinstance(signatures.get(name, True), bool):
            raise ConfigError(f"synth.signatures.{name} must be true or false, got {signatures[name]!r}")


def _check_categories(names: Any, contract: Contract, column: str, where: str) -> None:
    allowed = contract.column(column).categories
    unknown = sorted(str(name) for name in names if name != "default" and name not in allowed)
    if unknown:
        raise ConfigError(f"synth option {where} names {unknown}, which are not categories of {column!r} in the contract {list(allowed)}")


def _check_distribution(table: Mapping[str, Any], where: str) -> None:
    total = sum(_share(v, f"{where}.{k}") for k, v in table.items())
    if total <= 0:
        raise ConfigError(f"synth option {where} has no positive share")


def _check_population(population: Mapping[str, Any], contract: Contract) -> None:
    ethnicity = population["ethnicity"]
    _check_categories(ethnicity, contract, "ethnicity", "population.ethnicity")
    _check_distribution(ethnicity, "population.ethnicity")
    _check_categories(population["female_share"], contract, "ethnicity", "population.female_share")
    for group, share in population["female_share"].items():
        _share(share, f"population.female_share.{group}")
    _check_categories(["female", "male", "other", "unknown"], contract, "gender", "population (gender)")
    for key in ("gender_other", "gender_unknown"):
        _share(population[key], f"population.{key}")

    age = population["age"]
    if not float(age["min"]) < float(age["max"]):
        raise ConfigError(f"synth option population.age needs min < max, got {age['min']} and {age['max']}")

    exposure = population["exposure"]
    _check_categories(["msm", "heterosexual", "pwid", "vertical", "other", "unknown"], contract, "hiv_exposure", "population.exposure")
    fixed = sum(_share(exposure[k], f"population.exposure.{k}") for k in ("pwid", "vertical", "other", "unknown"))
    if fixed >= 1.0:
        raise ConfigError(f"synth option population.exposure: pwid, vertical, other and unknown add up to {fixed:.3f}; they must leave room below 1")
    _check_categories(exposure["msm_among_men"], contract, "ethnicity", "population.exposure.msm_among_men")

    for group, table in population["continent_of_birth"].items():
        _check_categories([group], contract, "ethnicity", "population.continent_of_birth")
        _check_categories(table, contract, "continent_of_birth", f"population.continent_of_birth.{group}")
        _check_distribution(table, f"population.continent_of_birth.{group}")
    if "default" not in population["continent_of_birth"]:
        raise ConfigError("synth option population.continent_of_birth needs a 'default' table")

    deprivation = population["deprivation"]
    if len(deprivation) != 5:
        raise ConfigError(f"synth option population.deprivation must list 5 shares (quintile 1 to 5), got {len(deprivation)}")
    _check_distribution(dict(enumerate(deprivation, start=1)), "population.deprivation")
    _check_categories(["never", "former", "current"], contract, "smoking_status", "population.smoking")
    for key in ("current", "former"):
        _share(population["smoking"][key], f"population.smoking.{key}")
    for key, share in population["treatment"].items():
        _share(share, f"population.treatment.{key}")
    for key, share in population["unrecorded"].items():
        _share(share, f"population.unrecorded.{key}")


def _check_missing(options: Mapping[str, Any], contract: Contract) -> None:
    missing = options["missing"]
    for panel, share in missing["panels"].items():
        _share(share, f"missing.panels.{panel}")
    for lab, share in missing["labs"].items():
        if lab not in contract.labs:
            raise ConfigError(f"synth option missing.labs names {lab!r}, which is not a lab of the contract")
        _share(share, f"missing.labs.{lab}")
    for lab, rule in missing["not_at_random"].items():
        if lab not in contract.labs:
            raise ConfigError(f"synth option missing.not_at_random names {lab!r}, which is not a lab of the contract")
        _share(rule["measured"], f"missing.not_at_random.{lab}.measured")
        if float(rule["scale"]) <= 0:
            raise ConfigError(f"synth option missing.not_at_random.{lab}.scale must be positive, got {rule['scale']}")
    for lab, rule in (options.get("censoring") or {}).items():
        if lab not in contract.labs:
            raise ConfigError(f"synth option censoring names {lab!r}, which is not a lab of the contract")
        if set(rule) - {"below", "above"} or not rule:
            raise ConfigError(f"synth option censoring.{lab} must set 'below' or 'above', got {dict(rule)!r}")
    _share(options["unknown_label_rate"], "unknown_label_rate")


def _check_labels(options: Mapping[str, Any], contract: Contract) -> None:
    labels = options["labels"]
    lacking = [label for label in contract.labels if label not in labels]
    if lacking:
        raise ConfigError(f"synth.labels has no prevalence target for contract labels {lacking}; add target and band for each")
    for label in contract.labels:
        spec = labels[label]
        target = _share(spec["target"], f"labels.{label}.target")
        low, high = (_share(v, f"labels.{label}.band") for v in spec["band"])
        if not low <= target <= high:
            raise ConfigError(f"synth option labels.{label}: target {target} is outside its band [{low}, {high}]")
