"""Adapters that turn public data sets into site extracts.

An adapter plays the part of a hospital's export query: it reads a data set
in its published form and writes one row per person with the data set's own
column names, plus columns derived from several source items. The site
mapping in ``conf/mappings/`` then takes the extract to the canonical form
through ingestion, as for any hospital extract.

``hivcomorb adapt <name>`` runs one adapter. Each module listed in
:data:`ADAPTER_MODULES` provides ``add_adapter_parser(adapt_subparsers)``.
"""

from __future__ import annotations

import importlib
from typing import Any

# Adapter name -> module. Add a new adapter here so that `hivcomorb adapt`
# lists it; the `adapt` command itself is registered once, below.
ADAPTER_MODULES = {
    "nhanes": "hivcomorb.adapters.nhanes",
}


def register_cli(subparsers: Any) -> None:
    """Add ``hivcomorb adapt`` with one sub-command per adapter in :data:`ADAPTER_MODULES`."""
    parser = subparsers.add_parser(
        "adapt",
        help="build a site extract from a public data set",
        description="Read a public data set in its published form and write a site extract "
        "that ingestion maps to the canonical form.",
    )
    adapters = parser.add_subparsers(dest="adapter", metavar="ADAPTER", required=True)
    for module_name in ADAPTER_MODULES.values():
        module = importlib.import_module(module_name)
        module.add_adapter_parser(adapters)
