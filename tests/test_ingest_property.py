"""Property-based checks: every row is accounted for, and kept values equal their source up to unit conversion."""

from __future__ import annotations

import math

import polars as pl
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hivcomorb.contract import load_contract
from hivcomorb.ingest import ingest_frame

CONTRACT = load_contract()
HB = CONTRACT.column("haemoglobin")
JUNK = ["abc", "13..5", "++1", "1,2,3", "g/dL", "?!", "14 kg"]
MISSING = ["", "NA", "n/a", "-", None]


@st.composite
def haemoglobin_cell(draw):
    """Return (cell text, expected canonical value or None for missing, or "quarantine")."""
    kind = draw(st.sampled_from(["plain", "comma", "g/dL", "mmol/L", "spaced", "missing", "junk"]))
    value = draw(st.floats(min_value=0.0, max_value=400.0, allow_nan=False).map(lambda v: round(v, 2)))
    if kind == "missing":
        return draw(st.sampled_from(MISSING)), None
    if kind == "junk":
        return draw(st.sampled_from(JUNK)), "quarantine"
    if kind == "plain":
        text, canonical = f"{value}", value
    elif kind == "comma":
        text, canonical = f"{value:.2f}".replace(".", ","), value
    elif kind == "spaced":
        text, canonical = f"  {value} g/L ", value
    else:
        source = round(value / 10.0, 3) if kind == "g/dL" else round(value / 16.11, 3)
        text, canonical = f"{source} {kind}", float(HB.conversion(kind).apply(source))
    low, high = HB.possible
    if not low <= canonical <= high:
        return text, "quarantine"
    return text, canonical


@st.composite
def extracts(draw):
    rows = draw(st.lists(haemoglobin_cell(), min_size=1, max_size=30))
    ids = [f"id{i}" for i in range(len(rows))]
    duplicated = draw(st.lists(st.integers(min_value=0, max_value=len(rows) - 1), max_size=3))
    for position in duplicated:
        ids[position] = "id0"
    ages = draw(st.lists(st.sampled_from(["45", "17", "", "120", "60,5", "x"]), min_size=len(rows), max_size=len(rows)))
    return ids, ages, rows


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(extracts())
def test_property_rows_reconcile_and_values_survive(extract):
    ids, ages, rows = extract
    frame = pl.DataFrame({"patient_id": ids, "age": ages, "haemoglobin": [cell for cell, _ in rows]})
    result = ingest_frame(frame, CONTRACT, None, source_name="generated.csv", validate=False, allow_empty=True)
    summary = result.summary

    assert summary["rows_read"] == len(rows)
    assert summary["rows_read"] == summary["rows_kept"] + summary["rows_quarantined"]
    assert len(result.cohort) == summary["rows_kept"]
    assert set(result.cohort["source_row"]).isdisjoint(set(result.quarantine["source_row"]))
    assert set(result.cohort["source_row"]) | set(result.quarantine["source_row"]) == set(range(1, len(rows) + 1))

    for source_row, value in zip(result.cohort["source_row"], result.cohort["haemoglobin"]):
        expected = rows[source_row - 1][1]
        assert expected != "quarantine"
        if expected is None:
            assert math.isnan(value)
        else:
            assert math.isclose(value, expected, rel_tol=1e-12, abs_tol=1e-12)

    junk_rows = {i + 1 for i, (_, expected) in enumerate(rows) if expected == "quarantine"}
    assert junk_rows <= set(result.quarantine["source_row"])
