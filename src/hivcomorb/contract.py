"""The canonical data contract, read from ``data_schema/contract.yaml``.

The contract names every column of a canonical extract with its role, type,
canonical unit, allowed categories, physiologically possible range and usual
clinical range. A site may narrow or extend it from its configuration: its own
category set for a column, extra social columns, and its own label list.

Examples
--------
>>> from hivcomorb.contract import load_contract
>>> contract = load_contract()
>>> len(contract.labs)
30
>>> contract.column("haemoglobin").unit
'g/L'
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

import yaml

from hivcomorb.errors import ContractError
from hivcomorb.paths import contract_path

ROLES = ("id", "lab", "demographic", "social", "label")
DTYPES = ("string", "number", "integer", "category", "label")
UNKNOWN = "unknown"


@dataclass(frozen=True)
class UnitConversion:
    """Conversion of one alternative unit to the canonical unit.

    The canonical value is ``(value + add) * multiply / divide``, or
    ``10 ** value`` when ``transform`` is ``"pow10"``.
    """

    unit: str
    add: float = 0.0
    multiply: float = 1.0
    divide: float = 1.0
    transform: str | None = None

    def apply(self, values):
        """Convert ``values`` (a number or a numpy array) to the canonical unit."""
        if self.transform == "pow10":
            return 10.0 ** values
        return (values + self.add) * self.multiply / self.divide


@dataclass(frozen=True)
class Column:
    """One column of the canonical extract."""

    name: str
    role: str
    dtype: str
    unit: str | None = None
    categories: tuple[str, ...] = ()
    possible: tuple[float, float] | None = None
    usual: tuple[float, float] | None = None
    alt_units: Mapping[str, UnitConversion] = field(default_factory=dict)
    detection_limit: float | None = None
    note: str | None = None

    def conversion(self, unit: str) -> UnitConversion | None:
        """Return the conversion from ``unit`` to the canonical unit.

        Returns ``None`` when ``unit`` is the canonical unit itself. Raises
        :class:`ContractError` when the contract has no such unit for the column.
        """
        if unit == self.unit:
            return None
        for known, conv in self.alt_units.items():
            if known.lower() == unit.lower():
                return conv
        if self.unit is not None and unit.lower() == self.unit.lower():
            return None
        known_units = [self.unit, *self.alt_units]
        raise ContractError(
            f"unit {unit!r} is not known for column {self.name!r}; "
            f"use one of {known_units} or add a conversion to data_schema/contract.yaml"
        )


@dataclass(frozen=True)
class Contract:
    """The canonical columns, in contract order, and the contract version."""

    version: str
    id_column: str
    columns: tuple[Column, ...]

    def column(self, name: str) -> Column:
        """Return the column called ``name``; raise ContractError if there is none."""
        for col in self.columns:
            if col.name == name:
                return col
        raise ContractError(f"column {name!r} is not in the data contract (version {self.version})")

    def names(self, role: str) -> list[str]:
        """Return the names of the columns with ``role``, in contract order."""
        if role not in ROLES:
            raise ContractError(f"role {role!r} is invalid; expected one of {ROLES}")
        if role == "id":
            return [self.id_column]
        return [c.name for c in self.columns if c.role == role]

    @property
    def labs(self) -> list[str]:
        """Lab marker column names."""
        return self.names("lab")

    @property
    def demographics(self) -> list[str]:
        """Demographic column names (removed in the demographic-unaware setting)."""
        return self.names("demographic")

    @property
    def social(self) -> list[str]:
        """Social column names (kept in both settings)."""
        return self.names("social")

    @property
    def labels(self) -> list[str]:
        """Comorbidity label column names."""
        return self.names("label")

    @property
    def all_names(self) -> list[str]:
        """Every column name, the id column first."""
        return [self.id_column, *(c.name for c in self.columns)]


def _parse_range(raw: Any, name: str, key: str) -> tuple[float, float] | None:
    if raw is None:
        return None
    if not isinstance(raw, (list, tuple)) or len(raw) != 2:
        raise ContractError(f"column {name!r}: {key} must be a [low, high] pair, got {raw!r}")
    low, high = float(raw[0]), float(raw[1])
    if math.isnan(low) or math.isnan(high) or low > high:
        raise ContractError(f"column {name!r}: {key} range {raw!r} is invalid (low must not exceed high)")
    return (low, high)


def _parse_column(raw: Mapping[str, Any]) -> Column:
    name = raw.get("name")
    if not name:
        raise ContractError(f"a contract column has no name: {dict(raw)!r}")
    role = raw.get("role")
    if role not in ROLES:
        raise ContractError(f"column {name!r}: role {role!r} is invalid; expected one of {ROLES}")
    dtype = raw.get("dtype")
    if dtype not in DTYPES:
        raise ContractError(f"column {name!r}: dtype {dtype!r} is invalid; expected one of {DTYPES}")
    categories = tuple(str(c) for c in raw.get("categories", ()) or ())
    if dtype == "category" and not categories:
        raise ContractError(f"column {name!r}: a category column needs a categories list")
    alt_units = {}
    for unit, spec in (raw.get("alt_units") or {}).items():
        spec = dict(spec or {})
        unknown_keys = set(spec) - {"add", "multiply", "divide", "transform"}
        if unknown_keys:
            raise ContractError(f"column {name!r}, unit {unit!r}: unknown conversion keys {sorted(unknown_keys)}")
        if spec.get("transform") not in (None, "pow10"):
            raise ContractError(f"column {name!r}, unit {unit!r}: transform must be 'pow10'")
        alt_units[str(unit)] = UnitConversion(
            unit=str(unit),
            add=float(spec.get("add", 0.0)),
            multiply=float(spec.get("multiply", 1.0)),
            divide=float(spec.get("divide", 1.0)),
            transform=spec.get("transform"),
        )
    return Column(
        name=str(name),
        role=role,
        dtype=dtype,
        unit=raw.get("unit"),
        categories=categories,
        possible=_parse_range(raw.get("possible"), name, "possible"),
        usual=_parse_range(raw.get("usual"), name, "usual"),
        alt_units=alt_units,
        detection_limit=None if raw.get("detection_limit") is None else float(raw["detection_limit"]),
        note=raw.get("note"),
    )


def _apply_site(raw: dict[str, Any], site: Mapping[str, Any]) -> dict[str, Any]:
    """Return the raw contract narrowed or extended by a site's declarations.

    ``site`` may hold ``categories`` (column -> category list), ``extra_columns``
    (social columns or labels in contract form) and ``labels`` (the label names
    this site uses, in order; others are removed).
    """
    raw = copy.deepcopy(raw)
    by_name = {c["name"]: c for c in raw["columns"]}
    for name, cats in (site.get("categories") or {}).items():
        if name not in by_name:
            raise ContractError(f"site categories name column {name!r}, which is not in the contract")
        cats = [str(c) for c in cats]
        if UNKNOWN not in cats:
            cats.append(UNKNOWN)
        by_name[name]["categories"] = cats
    for extra in site.get("extra_columns") or ():
        if extra.get("role") not in ("social", "label"):
            raise ContractError(
                f"site extra column {extra.get('name')!r} must have role 'social' or 'label', got {extra.get('role')!r}"
            )
        if extra.get("name") in by_name:
            raise ContractError(f"site extra column {extra['name']!r} is already in the contract")
        raw["columns"].append(dict(extra))
        by_name[extra["name"]] = raw["columns"][-1]
    site_labels = site.get("labels")
    if site_labels is not None:
        known = [c["name"] for c in raw["columns"] if c.get("role") == "label"]
        missing = [name for name in site_labels if name not in known]
        if missing:
            raise ContractError(f"site labels {missing} are not contract labels; declare them in extra_columns")
        raw["columns"] = [c for c in raw["columns"] if c.get("role") != "label" or c["name"] in site_labels]
    return raw


def load_contract(path: str | Path | None = None, site: Mapping[str, Any] | None = None) -> Contract:
    """Read the data contract, optionally adapted to one site.

    Parameters
    ----------
    path : str or Path, optional
        Contract YAML file; defaults to ``data_schema/contract.yaml``.
    site : mapping, optional
        The ``site`` block of a dataset configuration (see :func:`_apply_site`).

    Returns
    -------
    Contract

    Raises
    ------
    ContractError
        If the file is missing or any column is invalid.
    """
    path = Path(path) if path is not None else contract_path()
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ContractError(f"data contract not found at {path}; run from a hivcomorb checkout or set HIVCOMORB_HOME") from exc
    except yaml.YAMLError as exc:
        raise ContractError(f"data contract {path} is not valid YAML: {exc}") from exc
    if site:
        raw = _apply_site(raw, site)
    columns = tuple(_parse_column(c) for c in raw.get("columns", ()))
    names = [c.name for c in columns]
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise ContractError(f"data contract {path} lists columns more than once: {duplicated}")
    return Contract(version=str(raw["version"]), id_column=str(raw.get("id_column", "patient_id")), columns=columns)


def present(contract: Contract, available: Iterable[str], role: str) -> list[str]:
    """Return the contract columns of ``role`` found in ``available``, in contract order."""
    available = set(available)
    return [n for n in contract.names(role) if n in available]
