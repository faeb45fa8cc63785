"""The Great Expectations suite of the canonical cohort, derived from the data contract.

The suite is built from ``data_schema/contract.yaml`` whenever it is needed, so
the contract and the expectations cannot drift apart. ``hivcomorb schema
export`` writes it to ``data_schema/expectations.json`` for readers and for
other tools; a test checks that the committed file equals what this module
builds.

The suite checks the cohort that ingestion writes. The id column must be
present, non-null and unique, and each contract column must have its
canonical type. Numbers and integers must lie in the physiologically possible
range. Categories, labels and censoring flags may take only their allowed
values.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any, Iterable

from hivcomorb.contract import Contract, load_contract
from hivcomorb.files import write_text_atomic
from hivcomorb.paths import project_root

logger = logging.getLogger(__name__)

SUITE_NAME = "hivcomorb_canonical_cohort"
SOURCE_ROW = "source_row"
CENSOR_SUFFIX = "_censored"
CENSOR_FLAGS = ("<", ">")

# Type names as Great Expectations 1.24 resolves them for pandas: numpy dtype
# names, or the names of pandas extension dtype classes (pandas.StringDtype).
STRING_TYPES = ["StringDtype"]
FLOAT_TYPES = ["float64", "Float64Dtype"]
INTEGER_TYPES = ["Int64Dtype"]
LABEL_TYPES = ["Int8Dtype"]
ROW_NUMBER_TYPES = ["int64"]


def expectations_path() -> Path:
    """Return the path of the exported suite, ``data_schema/expectations.json``."""
    return project_root() / "data_schema" / "expectations.json"


def _expectation(kind: str, role: str, **kwargs: Any) -> dict[str, Any]:
    return {"type": kind, "kwargs": kwargs, "meta": {"role": role}}


def build_suite(contract: Contract, columns: Iterable[str] | None = None) -> dict[str, Any]:
    """Return the expectation suite for the canonical cohort as plain data.

    Parameters
    ----------
    contract : Contract
    columns : iterable of str, optional
        Restrict the column expectations to these columns (those an extract
        provides); the id column and ``source_row`` are always checked. All
        contract columns by default.

    Returns
    -------
    dict
        ``name``, ``meta`` (contract version) and ``expectations``, each with
        the Great Expectations ``type``, its ``kwargs`` and ``meta.role``.
    """
    include = None if columns is None else set(columns)
    id_column = contract.id_column
    expectations = [
        _expectation("expect_table_row_count_to_be_between", "table", min_value=1),
        _expectation("expect_column_to_exist", "id", column=id_column),
        _expectation("expect_column_values_to_not_be_null", "id", column=id_column),
        _expectation("expect_column_values_to_be_unique", "id", column=id_column),
        _expectation("expect_column_values_to_be_in_type_list", "id", column=id_column, type_list=STRING_TYPES),
        _expectation("expect_column_to_exist", "row", column=SOURCE_ROW),
        _expectation("expect_column_values_to_not_be_null", "row", column=SOURCE_ROW),
        _expectation("expect_column_values_to_be_unique", "row", column=SOURCE_ROW),
        _expectation("expect_column_values_to_be_in_type_list", "row", column=SOURCE_ROW, type_list=ROW_NUMBER_TYPES),
    ]
    for column in contract.columns:
        if include is not None and column.name not in include:
            continue
        expectations.extend(_column_expectations(column))
    return {
        "name": SUITE_NAME,
        "meta": {"contract_version": contract.version, "generated_by": "hivcomorb.schema.build_suite"},
        "expectations": expectations,
    }


def _column_expectations(column) -> list[dict[str, Any]]:
    name, role = column.name, column.role
    found = [_expectation("expect_column_to_exist", role, column=name)]
    if column.dtype == "number":
        found.append(_expectation("expect_column_values_to_be_in_type_list", role, column=name, type_list=FLOAT_TYPES))
    elif column.dtype == "integer":
        found.append(_expectation("expect_column_values_to_be_in_type_list", role, column=name, type_list=INTEGER_TYPES))
    elif column.dtype == "label":
        found.append(_expectation("expect_column_values_to_be_in_type_list", role, column=name, type_list=LABEL_TYPES))
        found.append(_expectation("expect_column_values_to_be_in_set", role, column=name, value_set=[0, 1]))
    else:
        found.append(_expectation("expect_column_values_to_be_in_type_list", role, column=name, type_list=STRING_TYPES))
    if column.dtype == "category":
        found.append(_expectation("expect_column_values_to_be_in_set", role, column=name, value_set=list(column.categories)))
    if column.dtype in ("number", "integer") and column.possible is not None:
        low, high = column.possible
        found.append(_expectation("expect_column_values_to_be_between", role, column=name, min_value=low, max_value=high))
    if role == "lab":
        flag = f"{name}{CENSOR_SUFFIX}"
        found.append(_expectation("expect_column_to_exist", "censor_flag", column=flag))
        found.append(_expectation("expect_column_values_to_be_in_set", "censor_flag", column=flag, value_set=list(CENSOR_FLAGS)))
    return found


def suite_json(contract: Contract) -> str:
    """Return the full suite as the text written to ``data_schema/expectations.json``."""
    return json.dumps(build_suite(contract), indent=2) + "\n"


def export_expectations(path: str | Path | None = None, contract: Contract | None = None) -> Path:
    """Write the suite for the whole contract to ``path`` (default ``data_schema/expectations.json``)."""
    path = Path(path) if path is not None else expectations_path()
    contract = contract or load_contract()
    write_text_atomic(path, suite_json(contract))
    logger.info("Wrote the expectation suite for contract %s to %s", contract.version, path)
    return path


def _export_command(args: argparse.Namespace) -> int:
    contract = load_contract()
    path = Path(args.out) if args.out else expectations_path()
    if args.check:
        current = path.read_text(encoding="utf-8") if path.is_file() else None
        if current != suite_json(contract):
            logger.error("%s is out of date with data_schema/contract.yaml; run `hivcomorb schema export`", path)
            return 1
        logger.info("%s matches contract %s", path, contract.version)
        return 0
    export_expectations(path, contract)
    return 0


def register_cli(subparsers: Any) -> None:
    """Add ``hivcomorb schema export``."""
    parser = subparsers.add_parser(
        "schema",
        help="export the Great Expectations suite derived from the data contract",
        description="Commands on the Great Expectations suite that hivcomorb derives from data_schema/contract.yaml.",
    )
    commands = parser.add_subparsers(dest="schema_command", metavar="SUBCOMMAND", required=True)
    export = commands.add_parser(
        "export",
        help="write data_schema/expectations.json",
        description="Write the expectation suite of the canonical cohort, built from data_schema/contract.yaml, as JSON.",
    )
    export.add_argument("--out", default=None, help="output file (default: data_schema/expectations.json)")
    export.add_argument(
        "--check",
        action="store_true",
        help="write nothing; exit with status 1 when the file differs from what the contract gives",
    )
    export.set_defaults(func=_export_command)
