"""Site mapping files: how a hospital's extract columns become canonical columns.

A mapping file (``conf/mappings/<site>.yaml``) names the source column of the
pseudonymised patient id and the source column of each canonical column with
its unit. It also lists recodes of category and label values.
``conf/mappings/example_site.yaml`` explains every key. Without a mapping file the identity mapping applies: columns
that already carry canonical names are taken as they are, in canonical units.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

import yaml

from hivcomorb.contract import Contract
from hivcomorb.errors import ContractError, MappingError
from hivcomorb.paths import project_root

logger = logging.getLogger(__name__)

IDENTITY = "identity"
CENSOR_SUFFIX = "_censored"

_TOP_KEYS = {"name", "id_column", "columns", "recodes", "site", "keep_canonical_names", "description"}
_COLUMN_KEYS = {"to", "unit", "unit_column", "detection_limit", "censor_column", "optional"}


def identity_mapping(contract: Contract) -> dict[str, Any]:
    """Return the mapping used when no mapping file is given.

    Columns named as in the contract are kept in canonical units; a
    ``<lab>_censored`` column, when present, supplies the lab's censoring flag.
    """
    return {
        "name": IDENTITY,
        "path": None,
        "id_column": contract.id_column,
        "columns": {},
        "recodes": {},
        "keep_canonical_names": True,
        "site": {},
    }


def resolve_mapping_path(path: str | Path) -> Path:
    """Return ``path`` as given when it exists, else relative to the project root."""
    candidate = Path(path)
    if candidate.is_file() or candidate.is_absolute():
        return candidate
    return project_root() / candidate


def load_mapping(path: str | Path | None, contract: Contract) -> dict[str, Any]:
    """Read and check a site mapping file.

    Parameters
    ----------
    path : str, Path or None
        Mapping YAML file, as given or relative to the project root. ``None``
        returns the identity mapping.
    contract : Contract
        The contract the mapping must fit. Canonical columns that the file's
        own ``site.extra_columns`` declares are accepted too.

    Returns
    -------
    dict
        ``name``, ``path``, ``id_column``, ``columns`` (source column ->
        ``{"to", "unit", "unit_column", "detection_limit", "censor_column",
        "optional"}``), ``recodes`` (canonical column -> {source value:
        canonical value}), ``keep_canonical_names`` and ``site``.

    Raises
    ------
    MappingError
        If the file is missing, is not valid YAML, or names an unknown
        column, unit, category or key. The message names the file.
    """
    if path is None:
        return identity_mapping(contract)
    resolved = resolve_mapping_path(path)
    try:
        raw = yaml.safe_load(resolved.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise MappingError(f"mapping file not found: {resolved}; check ingest.mapping or --mapping") from exc
    except yaml.YAMLError as exc:
        raise MappingError(f"mapping file {resolved} is not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise MappingError(f"mapping file {resolved} must contain a mapping at the top level")
    return _check_mapping(raw, contract, resolved)


def _check_mapping(raw: Mapping[str, Any], contract: Contract, path: Path) -> dict[str, Any]:
    where = f"mapping file {path}"
    unknown = sorted(set(raw) - _TOP_KEYS)
    if unknown:
        raise MappingError(f"{where} has unknown keys {unknown}; allowed keys are {sorted(_TOP_KEYS)}")
    site = dict(raw.get("site") or {})
    extra = {str(c.get("name")): c for c in site.get("extra_columns") or () if isinstance(c, Mapping)}
    known_targets = set(contract.all_names) | set(extra)

    id_column = raw.get("id_column")
    if not isinstance(id_column, str) or not id_column.strip():
        raise MappingError(f"{where} has no id_column; name the source column with the pseudonymised patient id")

    raw_columns = raw.get("columns") or {}
    columns: dict[str, dict[str, Any]] = {}
    targets: dict[str, str] = {}
    for source, spec in raw_columns.items():
        source = str(source)
        _reject_censor_flag_target(source, spec, raw_columns, contract, known_targets, where)
        entry = _check_column_entry(source, spec, contract, known_targets, where)
        target = entry["to"]
        if target == contract.id_column:
            raise MappingError(f"{where}: column {source!r} maps to {target!r}; name the id column with id_column instead")
        if target in targets:
            raise MappingError(
                f"{where}: columns {targets[target]!r} and {source!r} both map to {target!r}; keep one of them"
            )
        if source == id_column:
            raise MappingError(f"{where}: column {source!r} is the id_column and cannot also map to {target!r}")
        targets[target] = source
        columns[source] = entry

    recodes = _check_recodes(raw.get("recodes") or {}, contract, extra, where)
    return {
        "name": str(raw.get("name") or path.stem),
        "path": str(path),
        "id_column": id_column.strip(),
        "columns": columns,
        "recodes": recodes,
        "keep_canonical_names": bool(raw.get("keep_canonical_names", False)),
        "site": site,
    }


def _entry_target(spec: Any) -> str | None:
    """Return the canonical name a ``columns`` entry maps to, or None when the entry has no ``to``."""
    if isinstance(spec, str):
        return spec
    if isinstance(spec, Mapping) and "to" in spec:
        return str(spec["to"])
    return None


def _reject_censor_flag_target(
    source: str, spec: Any, raw_columns: Mapping[Any, Any], contract: Contract, known_targets: set[str], where: str
) -> None:
    """Raise MappingError when ``source`` maps to a lab's censoring flag ``<lab>_censored``.

    Ingestion writes ``<lab>_censored`` itself, from a "<" or ">" in the value
    or from the source column that ``censor_column`` names in the lab's own
    entry, so the flag cannot be a mapping target. The message shows that
    entry with ``censor_column`` added.
    """
    target = _entry_target(spec)
    if target is None or target in known_targets or not target.endswith(CENSOR_SUFFIX):
        return
    lab = target[: -len(CENSOR_SUFFIX)]
    if lab not in contract.names("lab"):
        return

    lab_entry = next(((str(s), other) for s, other in raw_columns.items() if _entry_target(other) == lab), None)
    fixed = dict(lab_entry[1]) if lab_entry is not None and isinstance(lab_entry[1], Mapping) else {"to": lab}
    fixed["censor_column"] = source
    if lab_entry is None:
        step = f", map the source column of {lab!r} and name {source!r} as its censor_column"
        example = f"<source column of {lab}>: {_flow_yaml(fixed)}"
    else:
        step = f" and add censor_column: {source} to the entry of {lab_entry[0]!r}, which maps to {lab!r}"
        example = _flow_yaml({lab_entry[0]: fixed})[1:-1]
    raise MappingError(
        f"{where}: column {source!r} maps to {target!r}, but ingestion derives each lab's censoring flag itself, "
        f"so no column maps to it. To read the flags from {source!r}, remove this entry{step}, e.g. under "
        f"columns: {example}. censor_column names a source column that holds '<', '>' or nothing in each row"
    )


def _flow_yaml(data: Mapping[str, Any]) -> str:
    """Return ``data`` as one line of YAML in flow style, keys in their given order."""
    return yaml.safe_dump(dict(data), default_flow_style=True, sort_keys=False, width=float("inf")).strip()


def _check_column_entry(
    source: str, spec: Any, contract: Contract, known_targets: set[str], where: str
) -> dict[str, Any]:
    if isinstance(spec, str):
        spec = {"to": spec}
    if not isinstance(spec, Mapping) or "to" not in spec:
        raise MappingError(f"{where}: column {source!r} must map to a canonical name or to {{to: name, ...}}, got {spec!r}")
    unknown = sorted(set(spec) - _COLUMN_KEYS)
    if unknown:
        raise MappingError(f"{where}: column {source!r} has unknown keys {unknown}; allowed keys are {sorted(_COLUMN_KEYS)}")
    target = str(spec["to"])
    if target not in known_targets:
        raise MappingError(
            f"{where}: column {source!r} maps to {target!r}, which is not a contract column; "
            f"use a name from data_schema/contract.yaml or declare it under site.extra_columns"
        )
    entry = {
        "to": target,
        "unit": spec.get("unit"),
        "unit_column": spec.get("unit_column"),
        "detection_limit": spec.get("detection_limit"),
        "censor_column": spec.get("censor_column"),
        "optional": bool(spec.get("optional", False)),
    }
    numeric_keys = [k for k in ("unit", "unit_column", "detection_limit", "censor_column") if entry[k] is not None]
    if not numeric_keys:
        return entry
    try:
        column = contract.column(target)
    except ContractError:
        column = None
    if column is None or column.dtype != "number":
        raise MappingError(f"{where}: column {source!r} maps to {target!r}, which is not numeric, so {numeric_keys} do not apply")
    if entry["unit"] is not None:
        try:
            column.conversion(str(entry["unit"]))
        except ContractError as exc:
            raise MappingError(f"{where}: column {source!r}: {exc}") from exc
        entry["unit"] = _contract_unit_name(column, str(entry["unit"]))
    if entry["detection_limit"] is not None:
        try:
            entry["detection_limit"] = float(entry["detection_limit"])
        except (TypeError, ValueError) as exc:
            raise MappingError(f"{where}: column {source!r}: detection_limit must be a number, got {spec['detection_limit']!r}") from exc
    return entry


def _contract_unit_name(column, unit: str) -> str:
    """Return the contract's spelling of ``unit`` (the contract compares units ignoring case)."""
    for name in [column.unit, *column.alt_units]:
        if name is not None and name.lower() == unit.lower():
            return name
    return unit


def _check_recodes(
    recodes: Mapping[str, Any], contract: Contract, extra: Mapping[str, Any], where: str
) -> dict[str, dict[str, Any]]:
    checked: dict[str, dict[str, Any]] = {}
    for target, table in recodes.items():
        target = str(target)
        if target in extra:
            dtype = extra[target].get("dtype")
            categories = [str(c) for c in extra[target].get("categories") or ()]
        else:
            try:
                column = contract.column(target)
            except ContractError as exc:
                raise MappingError(f"{where}: recodes name {target!r}, which is not a contract column") from exc
            dtype, categories = column.dtype, list(column.categories)
        if dtype not in ("category", "label"):
            raise MappingError(f"{where}: recodes for {target!r} apply only to category and label columns, not {dtype}")
        if not isinstance(table, Mapping):
            raise MappingError(f"{where}: recodes for {target!r} must be a mapping of source value to canonical value")
        allowed = categories if dtype == "category" else ["0", "1"]
        entries: dict[str, Any] = {}
        folded: dict[str, str] = {}
        for source_value, value in table.items():
            source_text = "" if source_value is None else str(source_value)
            if value is None:
                value_text = None
            elif isinstance(value, bool):
                value_text = str(int(value))
            else:
                value_text = str(value)
            if value_text is not None and value_text not in allowed:
                raise MappingError(
                    f"{where}: recodes for {target!r} map {source_text!r} to {value_text!r}; allowed values are {allowed} or null"
                )
            key = fold_text(source_text)
            if key in folded and entries[folded[key]] != value_text:
                raise MappingError(
                    f"{where}: recodes for {target!r} map {folded[key]!r} and {source_text!r} to different values, "
                    "but matching ignores case and spaces; keep one of them"
                )
            folded[key] = source_text
            entries[source_text] = value_text
        checked[target] = entries
    return checked


def fold_text(text: str) -> str:
    """Return ``text`` folded for matching: lower case, no surrounding or repeated whitespace."""
    return " ".join(str(text).lower().split())


@dataclass(frozen=True)
class ColumnPlan:
    """Source of one canonical column in a given extract: column, unit and helper columns."""

    target: str
    source: str
    unit: str | None = None
    unit_column: str | None = None
    detection_limit: float | None = None
    censor_column: str | None = None


@dataclass(frozen=True)
class MappingPlan:
    """A mapping applied to the columns of one extract."""

    id_source: str
    columns: dict[str, ColumnPlan]
    unmapped: list[str]
    absent_optional: list[str]


def plan_mapping(
    mapping: Mapping[str, Any],
    contract: Contract,
    source_columns: Iterable[str],
    source_name: str,
    required: Iterable[str] = (),
) -> MappingPlan:
    """Match a mapping to the columns of an extract.

    Raises
    ------
    MappingError
        If the id column, a column the mapping lists (unless ``optional``), a
        unit or censor column, or a canonical column in ``required`` is absent.
        The message names the column and the mapping file to edit.
    """
    available = list(source_columns)
    present = set(available)
    mapping_file = mapping.get("path") or "a mapping file (see conf/mappings/example_site.yaml)"
    edit_hint = f"edit {mapping_file}" if mapping.get("path") else f"write {mapping_file} and pass it with --mapping"

    id_source = str(mapping["id_column"])
    if id_source not in present and len(available) == 1 and any(mark in available[0] for mark in (",", ";", "\t", "|")):
        # The whole header landed in one column, so the delimiter, not the mapping, is wrong.
        raise MappingError(
            f"extract {source_name} has one column whose name contains delimiters, so the file was split with the wrong "
            "delimiter; pass the right one with --delimiter (e.g. ',' ';' or 'tab'), or leave it out to detect it"
        )
    if id_source not in present:
        raise MappingError(
            f"extract {source_name} has no id column {id_source!r}; {edit_hint} so that id_column names the "
            f"column with the pseudonymised patient id"
        )

    columns: dict[str, ColumnPlan] = {}
    absent_optional: list[str] = []
    for source, entry in (mapping.get("columns") or {}).items():
        if source not in present:
            if entry.get("optional"):
                absent_optional.append(source)
                continue
            raise MappingError(
                f"extract {source_name} has no column {source!r}, which {mapping_file} maps to {entry['to']!r}; "
                f"{edit_hint} (fix the name or mark the entry optional: true) or add the column to the extract"
            )
        for key in ("unit_column", "censor_column"):
            helper = entry.get(key)
            if helper is not None and helper not in present:
                raise MappingError(
                    f"extract {source_name} has no column {helper!r}, which {mapping_file} names as the {key} "
                    f"of {source!r}; {edit_hint} or add the column to the extract"
                )
        columns[entry["to"]] = ColumnPlan(
            target=entry["to"],
            source=source,
            unit=entry.get("unit"),
            unit_column=entry.get("unit_column"),
            detection_limit=entry.get("detection_limit"),
            censor_column=entry.get("censor_column"),
        )

    if mapping.get("keep_canonical_names"):
        explicit_sources = set(mapping.get("columns") or {})
        for name in contract.all_names:
            if name == contract.id_column or name in columns or name not in present or name in explicit_sources:
                continue
            censor = f"{name}{CENSOR_SUFFIX}"
            is_lab = contract.column(name).role == "lab"
            columns[name] = ColumnPlan(
                target=name,
                source=name,
                censor_column=censor if is_lab and censor in present else None,
            )

    missing_required = [name for name in required if name != contract.id_column and name not in columns]
    if missing_required:
        raise MappingError(
            f"extract {source_name} lacks required columns {missing_required} (ingest.required_columns); "
            f"{edit_hint} to map them, or add them to the extract"
        )

    used = {id_source}
    for plan in columns.values():
        used.update(c for c in (plan.source, plan.unit_column, plan.censor_column) if c is not None)
    unmapped = [c for c in available if c not in used]
    return MappingPlan(id_source=id_source, columns=columns, unmapped=unmapped, absent_optional=absent_optional)
