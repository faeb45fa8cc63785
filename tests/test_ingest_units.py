"""Unit harmonisation during ingestion: declared, per-row and in-cell units, and wrong-unit checks."""

from __future__ import annotations

import numpy as np
import pandas as pd
import polars as pl
import pytest

from hivcomorb.contract import load_contract
from hivcomorb.errors import ExtractError
from hivcomorb.ingest import ingest_frame, load_mapping
from hivcomorb.ingest.units import suspect_unit

CONTRACT = load_contract()
ALT_UNITS = [(lab, unit) for lab in CONTRACT.labs for unit in CONTRACT.column(lab).alt_units]


def write_mapping(tmp_path, text):
    path = tmp_path / "site.yaml"
    path.write_text(text, encoding="utf-8")
    return load_mapping(path, CONTRACT)


def source_value_for(lab, unit):
    """Return a source value in ``unit`` whose canonical value is the middle of the usual range."""
    column = CONTRACT.column(lab)
    low, high = column.usual
    target = (low + high) / 2 if low > 0 else high / 2
    conversion = column.conversion(unit)
    if conversion.transform == "pow10":
        return float(np.log10(target))
    return target * conversion.divide / conversion.multiply - conversion.add


@pytest.mark.parametrize(("lab", "unit"), ALT_UNITS)
def test_units_declared_alt_unit_converted(tmp_path, lab, unit):
    mapping = write_mapping(tmp_path, f"name: t\nid_column: id\ncolumns:\n  X: {{to: {lab}, unit: '{unit}'}}\n")
    value = source_value_for(lab, unit)
    frame = pl.DataFrame({"id": ["a"], "X": [repr(value)]})
    result = ingest_frame(frame, CONTRACT, mapping, source_name="u.csv", validate=False)
    expected = float(CONTRACT.column(lab).conversion(unit).apply(np.float64(value)))
    assert result.cohort[lab].iloc[0] == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize(("lab", "unit"), ALT_UNITS)
def test_units_alt_unit_in_cell_converted(lab, unit):
    value = source_value_for(lab, unit)
    frame = pl.DataFrame({"patient_id": ["a"], lab: [f"{value!r} {unit}"]})
    result = ingest_frame(frame, CONTRACT, None, source_name="u.csv", validate=False)
    expected = float(CONTRACT.column(lab).conversion(unit).apply(np.float64(value)))
    assert result.cohort[lab].iloc[0] == pytest.approx(expected, rel=1e-12)


def test_units_cell_unit_wins_over_declared(tmp_path):
    mapping = write_mapping(tmp_path, "name: t\nid_column: id\ncolumns:\n  Hb: {to: haemoglobin, unit: g/dL}\n")
    frame = pl.DataFrame({"id": ["a", "b"], "Hb": ["13.5", "140 g/L"]})
    result = ingest_frame(frame, CONTRACT, mapping, source_name="u.csv", validate=False)
    assert result.cohort["haemoglobin"].tolist() == pytest.approx([135.0, 140.0])


def test_units_conversions_counted_by_origin(tmp_path):
    mapping = write_mapping(tmp_path, "name: t\nid_column: id\ncolumns:\n  Hb: {to: haemoglobin, unit: g/dL}\n")
    frame = pl.DataFrame({"id": ["a", "b", "c"], "Hb": ["13.5", "14.0", "8.5 mmol/L"]})
    result = ingest_frame(frame, CONTRACT, mapping, source_name="u.csv", validate=False)
    assert result.summary["unit_conversions"]["haemoglobin"] == [
        {"from": "g/dL", "to": "g/L", "origin": "declared", "count": 2},
        {"from": "mmol/L", "to": "g/L", "origin": "cell", "count": 1},
    ]


def test_units_unit_column_per_row(tmp_path):
    mapping = write_mapping(
        tmp_path, "name: t\nid_column: id\ncolumns:\n  Creat: {to: creatinine, unit_column: Creat_units}\n"
    )
    frame = pl.DataFrame({"id": ["a", "b", "c"], "Creat": ["1.0", "80", "90"], "Creat_units": ["mg/dL", "umol/L", "\u00b5mol/l"]})
    result = ingest_frame(frame, CONTRACT, mapping, source_name="u.csv", validate=False)
    assert result.cohort["creatinine"].tolist() == pytest.approx([88.42, 80.0, 90.0])


def test_units_unit_column_unknown_unit_quarantined(tmp_path):
    mapping = write_mapping(
        tmp_path, "name: t\nid_column: id\ncolumns:\n  Creat: {to: creatinine, unit_column: Creat_units}\n"
    )
    frame = pl.DataFrame({"id": ["a", "b"], "Creat": ["1.0", "80"], "Creat_units": ["mg/L", "umol/L"]})
    result = ingest_frame(frame, CONTRACT, mapping, source_name="u.csv", validate=False)
    assert result.quarantine[["source_row", "column", "raw_value", "rule"]].values.tolist() == [
        [1, "creatinine", "mg/L", "unknown_unit"]
    ]


def test_units_empty_unit_cell_counted_as_assumed(tmp_path):
    mapping = write_mapping(
        tmp_path, "name: t\nid_column: id\ncolumns:\n  Creat: {to: creatinine, unit_column: Creat_units}\n"
    )
    frame = pl.DataFrame({"id": ["a", "b"], "Creat": ["80", "90"], "Creat_units": [None, "umol/L"]})
    result = ingest_frame(frame, CONTRACT, mapping, source_name="u.csv", validate=False)
    assert result.summary["units_assumed"] == {"creatinine": 1}


@pytest.mark.parametrize(
    ("cell", "expected"),
    [("7.2 x10^9/L", 7.2), ("7200 cells/uL", 7.2), ("7200 /\u00b5L", 7.2), ("7.2 G/L", 7.2)],
)
def test_units_aliases_recognised(cell, expected):
    frame = pl.DataFrame({"patient_id": ["a"], "white_cell_count": [cell]})
    result = ingest_frame(frame, CONTRACT, None, source_name="u.csv", validate=False)
    assert result.cohort["white_cell_count"].iloc[0] == pytest.approx(expected)


def test_units_detection_limit_in_declared_unit(tmp_path):
    mapping = write_mapping(
        tmp_path, "name: t\nid_column: id\ncolumns:\n  VL: {to: viral_load, unit: log10 copies/mL, detection_limit: 2}\n"
    )
    frame = pl.DataFrame({"id": ["a"], "VL": ["TND"]})
    result = ingest_frame(frame, CONTRACT, mapping, source_name="u.csv", validate=False)
    assert result.cohort["viral_load"].iloc[0] == pytest.approx(100.0)


def creatinine_in_mg_dl(n=40, seed=3):
    rng = np.random.default_rng(seed)
    return [f"{v:.2f}" for v in rng.uniform(0.6, 1.2, size=n)]


def test_units_suspected_unit_flagged_not_converted():
    values = creatinine_in_mg_dl()
    frame = pl.DataFrame({"patient_id": [f"p{i}" for i in range(len(values))], "creatinine": values})
    result = ingest_frame(frame, CONTRACT, None, source_name="u.csv", validate=False, allow_empty=True)
    finding = result.summary["suspected_units"][0]
    assert (finding["column"], finding["declared_unit"], finding["suspected_unit"]) == ("creatinine", "umol/L", "mg/dL")
    assert result.summary["unit_conversions"] == {}


def test_units_suspected_unit_error_action():
    values = creatinine_in_mg_dl()
    frame = pl.DataFrame({"patient_id": [f"p{i}" for i in range(len(values))], "creatinine": values})
    with pytest.raises(ExtractError, match="creatinine.*mg/dL"):
        ingest_frame(frame, CONTRACT, None, source_name="u.csv", validate=False, options={"suspected_unit": {"action": "error"}})


def test_units_suspect_unit_quiet_for_canonical_values():
    values = np.random.default_rng(1).uniform(50, 100, size=40)
    assert suspect_unit(CONTRACT.column("creatinine"), "umol/L", values, min_values=20, max_share_declared=0.5, min_share_suspected=0.5) is None


def test_units_suspect_unit_needs_min_values():
    values = np.full(5, 0.9)
    assert suspect_unit(CONTRACT.column("creatinine"), "umol/L", values, min_values=20, max_share_declared=0.5, min_share_suspected=0.5) is None


def test_units_hba1c_percent_suspected():
    values = np.random.default_rng(2).uniform(5.0, 6.0, size=30)
    finding = suspect_unit(CONTRACT.column("hba1c"), "mmol/mol", values, min_values=20, max_share_declared=0.5, min_share_suspected=0.5)
    assert finding.suspected_unit == "%"


def declared_unit_extract(n=60, seed=4):
    """Return text and typed columns whose values are all in their declared units, with defects."""
    rng = np.random.default_rng(seed)
    hb = [f"{v:.1f}" for v in rng.uniform(10, 16, size=n)]
    hb[3] = "-1"
    hb[7] = "abc"
    # Most creatinine values look like mg/dL, which makes the column suspect.
    creatinine = np.where(np.arange(n) < 35, rng.uniform(0.6, 1.2, size=n), rng.uniform(50, 110, size=n))
    creatinine[45] = np.inf
    alt = [f"{v:.0f}".replace(".", ",") for v in rng.uniform(10, 60, size=n)]
    alt[9] = "35,5"
    return pl.DataFrame(
        {
            "id": [f"p{i}" for i in range(n)],
            "Hb": hb,
            "creatinine": creatinine,
            "ALT": alt,
            "egfr": rng.uniform(30, 120, size=n),
            "viral_load": rng.choice([20.0, 400.0, None], size=n).tolist(),
            "viral_load_censored": rng.choice(["<", None, "?"], size=n).tolist(),
            "deprivation_quintile": rng.choice([1.0, 2.0, 2.5, None], size=n).tolist(),
        }
    )


DECLARED_MAPPING = (
    "name: t\nid_column: id\ncolumns:\n  Hb: {to: haemoglobin, unit: g/dL}\n  creatinine: creatinine\n  ALT: alt\n"
    "  egfr: egfr\n  viral_load: {to: viral_load, censor_column: viral_load_censored}\n  deprivation_quintile: deprivation_quintile\n"
)


def test_units_declared_unit_shortcut_matches_unit_resolution(tmp_path, monkeypatch):
    from hivcomorb.ingest import canonical

    mapping = write_mapping(tmp_path, DECLARED_MAPPING)
    frame = declared_unit_extract()
    shortcut = ingest_frame(frame, CONTRACT, mapping, source_name="u.parquet", validate=False, allow_empty=True)
    monkeypatch.setattr(canonical, "_all_in_declared_unit", lambda cells, plan: False)
    resolved = ingest_frame(frame, CONTRACT, mapping, source_name="u.parquet", validate=False, allow_empty=True)
    pd.testing.assert_frame_equal(shortcut.cohort, resolved.cohort, check_exact=True)
    pd.testing.assert_frame_equal(shortcut.quarantine, resolved.quarantine, check_exact=True)
    assert shortcut.summary == resolved.summary


def test_units_declared_unit_shortcut_covers_defects(tmp_path):
    mapping = write_mapping(tmp_path, DECLARED_MAPPING)
    result = ingest_frame(declared_unit_extract(), CONTRACT, mapping, source_name="u.parquet", validate=False, allow_empty=True)
    rules = set(result.quarantine["rule"])
    assert {"outside_possible_range", "unparseable_value", "not_an_integer", "invalid_censor_flag"} <= rules
    assert result.summary["suspected_units"][0]["column"] == "creatinine"
    assert result.summary["unit_conversions"]["haemoglobin"][0]["origin"] == "declared"
