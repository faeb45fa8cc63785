"""Site mapping files: loading, checking, applying, and the errors that name the file to edit."""

from __future__ import annotations

import logging
import re

import polars as pl
import pytest

from hivcomorb.contract import load_contract
from hivcomorb.errors import MappingError
from hivcomorb.ingest import ingest_frame, load_mapping
from hivcomorb.ingest.mapping import plan_mapping
from hivcomorb.paths import project_root

CONTRACT = load_contract()


def mapping_file(tmp_path, text):
    path = tmp_path / "site.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_mapping_none_is_identity():
    mapping = load_mapping(None, CONTRACT)
    assert (mapping["name"], mapping["id_column"], mapping["keep_canonical_names"]) == ("identity", "patient_id", True)


def test_mapping_example_site_loads():
    mapping = load_mapping("conf/mappings/example_site.yaml", CONTRACT)
    assert mapping["columns"]["Hb"] == {
        "to": "haemoglobin",
        "unit": "g/dL",
        "unit_column": None,
        "detection_limit": None,
        "censor_column": None,
        "optional": False,
    }


def test_mapping_example_site_resolves_from_project_root(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    mapping = load_mapping("conf/mappings/example_site.yaml", CONTRACT)
    assert mapping["path"] == str(project_root() / "conf/mappings/example_site.yaml")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("id_column: id\ncolumns: {A: not_a_column}\n", "maps to 'not_a_column', which is not a contract column"),
        ("id_column: id\ncolumns: {A: {to: haemoglobin, unit: kg}}\n", "unit 'kg' is not known for column 'haemoglobin'"),
        ("id_column: id\ncolumns: {A: {to: gender, unit: g/L}}\n", "is not numeric"),
        ("id_column: id\ncolumns: {A: age, B: age}\n", "both map to 'age'"),
        ("id_column: id\ncolumns: {A: {to: age, colour: red}}\n", "unknown keys \\['colour'\\]"),
        ("columns: {A: age}\n", "has no id_column"),
        ("id_column: id\nrecodes: {gender: {M: man}}\n", "map 'M' to 'man'"),
        ("id_column: id\nrecodes: {age: {x: 1}}\n", "apply only to category and label columns"),
        ("id_column: id\nrecodes: {gender: {M: male, m: female}}\n", "different values"),
        ("id_column: id\nwhatever: 1\n", "unknown keys \\['whatever'\\]"),
        ("- a\n- b\n", "must contain a mapping"),
        ("id_column: [\n", "not valid YAML"),
    ],
)
def test_mapping_invalid_files_rejected(tmp_path, text, message):
    path = mapping_file(tmp_path, text)
    with pytest.raises(MappingError, match=message) as info:
        load_mapping(path, CONTRACT)
    assert str(path) in str(info.value)


def test_mapping_missing_file():
    with pytest.raises(MappingError, match="mapping file not found"):
        load_mapping("conf/mappings/no_such_site.yaml", CONTRACT)


def test_mapping_site_extra_column_accepted(tmp_path):
    path = mapping_file(
        tmp_path,
        "id_column: id\ncolumns: {Alc: alcohol_use}\n"
        "site:\n  extra_columns:\n    - {name: alcohol_use, role: social, dtype: category, categories: [none, harmful, unknown]}\n",
    )
    assert load_mapping(path, CONTRACT)["columns"]["Alc"]["to"] == "alcohol_use"


def test_mapping_missing_source_column_names_file(tmp_path):
    path = mapping_file(tmp_path, "id_column: id\ncolumns: {Hb: haemoglobin, Creat: creatinine}\n")
    frame = pl.DataFrame({"id": ["a"], "Hb": ["140"]})
    with pytest.raises(MappingError, match=f"no column 'Creat', which {path} maps to 'creatinine'"):
        ingest_frame(frame, CONTRACT, load_mapping(path, CONTRACT), source_name="x.csv", validate=False)


def test_mapping_missing_id_column(tmp_path):
    path = mapping_file(tmp_path, "id_column: MRN\ncolumns: {Hb: haemoglobin}\n")
    frame = pl.DataFrame({"id": ["a"], "Hb": ["140"]})
    with pytest.raises(MappingError, match="has no id column 'MRN'"):
        ingest_frame(frame, CONTRACT, load_mapping(path, CONTRACT), source_name="x.csv", validate=False)


def test_mapping_identity_without_id_column():
    frame = pl.DataFrame({"MRN": ["a"], "haemoglobin": ["140"]})
    with pytest.raises(MappingError, match="example_site.yaml"):
        ingest_frame(frame, CONTRACT, None, source_name="x.csv", validate=False)


def test_mapping_optional_column_may_be_absent(tmp_path):
    path = mapping_file(tmp_path, "id_column: id\ncolumns: {Hb: haemoglobin, Trig: {to: triglycerides, optional: true}}\n")
    frame = pl.DataFrame({"id": ["a"], "Hb": ["140"]})
    result = ingest_frame(frame, CONTRACT, load_mapping(path, CONTRACT), source_name="x.csv", validate=False)
    assert "triglycerides" in result.summary["labs_absent"]


def test_mapping_required_columns_setting():
    frame = pl.DataFrame({"patient_id": ["a"], "haemoglobin": ["140"]})
    with pytest.raises(MappingError, match="lacks required columns \\['age'\\]"):
        ingest_frame(frame, CONTRACT, None, source_name="x.csv", validate=False, options={"required_columns": ["age"]})


def test_mapping_unmapped_columns_listed_and_logged(tmp_path, caplog):
    path = mapping_file(tmp_path, "id_column: id\ncolumns: {Hb: haemoglobin}\n")
    frame = pl.DataFrame({"id": ["a"], "Hb": ["140"], "Ward": ["7"], "haemoglobin": ["1"]})
    with caplog.at_level(logging.INFO, logger="hivcomorb.ingest.canonical"):
        result = ingest_frame(frame, CONTRACT, load_mapping(path, CONTRACT), source_name="x.csv", validate=False)
    assert result.summary["unmapped_columns"] == ["Ward", "haemoglobin"]
    assert "2 unmapped columns ignored: Ward, haemoglobin" in caplog.text


def test_mapping_renames_and_recodes(tmp_path):
    path = mapping_file(
        tmp_path,
        "name: s\nid_column: MRN\ncolumns: {Sex: gender, Ethnic: ethnicity, HTN: hypertension}\n"
        "recodes:\n  gender: {M: male, '2': female}\n  ethnicity: {African: black_african}\n  hypertension: {Present: 1, Absent: 0}\n",
    )
    frame = pl.DataFrame(
        {"MRN": ["a", "b", "c"], "Sex": ["m", "2", "Female"], "Ethnic": ["African", "White", "black african"], "HTN": ["Present", "absent", ""]}
    )
    result = ingest_frame(frame, CONTRACT, load_mapping(path, CONTRACT), source_name="x.csv", validate=False)
    assert result.cohort["gender"].tolist() == ["male", "female", "female"]
    assert result.cohort["ethnicity"].tolist() == ["black_african", "white", "black_african"]
    assert result.cohort["hypertension"].astype("object").where(result.cohort["hypertension"].notna(), None).tolist() == [1, 0, None]


def test_mapping_keep_canonical_names(tmp_path):
    path = mapping_file(tmp_path, "id_column: MRN\nkeep_canonical_names: true\ncolumns: {Hb: {to: haemoglobin, unit: g/dL}}\n")
    frame = pl.DataFrame({"MRN": ["a"], "Hb": ["14"], "creatinine": ["80"]})
    result = ingest_frame(frame, CONTRACT, load_mapping(path, CONTRACT), source_name="x.csv", validate=False)
    assert result.cohort[["haemoglobin", "creatinine"]].values.tolist() == [[140.0, 80.0]]


def test_mapping_censor_column(tmp_path):
    path = mapping_file(tmp_path, "id_column: id\ncolumns: {VL: {to: viral_load, censor_column: VL_flag}}\n")
    frame = pl.DataFrame({"id": ["a", "b", "c"], "VL": ["50", "1000", "20"], "VL_flag": ["<", None, "?"]})
    result = ingest_frame(frame, CONTRACT, load_mapping(path, CONTRACT), source_name="x.csv", validate=False)
    assert result.cohort["viral_load_censored"].tolist()[0] == "<"
    assert result.quarantine[["source_row", "raw_value", "rule"]].values.tolist() == [[3, "?", "invalid_censor_flag"]]


def test_mapping_identity_reads_censored_columns():
    frame = pl.DataFrame({"patient_id": ["a"], "viral_load": [20.0], "viral_load_censored": ["<"]})
    result = ingest_frame(frame, CONTRACT, None, source_name="x.parquet", validate=False)
    assert result.cohort["viral_load_censored"].tolist() == ["<"]


@pytest.mark.parametrize(
    ("columns", "fix"),
    [
        ("{VL: viral_load, VL_flag: viral_load_censored}", "VL: {to: viral_load, censor_column: VL_flag}"),
        (
            "{VL: {to: viral_load, detection_limit: 50}, VL_flag: {to: viral_load_censored}}",
            "VL: {to: viral_load, detection_limit: 50, censor_column: VL_flag}",
        ),
        ("{VL_flag: viral_load_censored}", "<source column of viral_load>: {to: viral_load, censor_column: VL_flag}"),
    ],
)
def test_mapping_censored_target_names_censor_column(tmp_path, columns, fix):
    path = mapping_file(tmp_path, f"id_column: id\ncolumns: {columns}\n")
    with pytest.raises(MappingError) as info:
        load_mapping(path, CONTRACT)
    message = str(info.value)
    assert message.startswith(f"mapping file {path}: ")
    assert "column 'VL_flag' maps to 'viral_load_censored'" in message
    assert "remove this entry" in message
    assert f"e.g. under columns: {fix}." in message
    assert "censor_column names a source column that holds '<', '>' or nothing in each row" in message


def test_mapping_censored_target_fix_loads(tmp_path):
    path = mapping_file(tmp_path, "id_column: id\ncolumns: {VL: viral_load, VL_flag: viral_load_censored}\n")
    with pytest.raises(MappingError) as info:
        load_mapping(path, CONTRACT)
    fix = re.search(r"e\.g\. under columns: (.+?)\. censor_column names", str(info.value)).group(1)
    fixed = mapping_file(tmp_path, f"id_column: id\ncolumns:\n  {fix}\n")
    frame = pl.DataFrame({"id": ["a", "b"], "VL": ["20", "1000"], "VL_flag": ["<", None]})
    result = ingest_frame(frame, CONTRACT, load_mapping(fixed, CONTRACT), source_name="x.csv", validate=False)
    assert result.cohort["viral_load_censored"].tolist()[0] == "<"
    assert result.cohort["viral_load"].tolist() == [20.0, 1000.0]


def test_mapping_non_lab_censored_target_rejected(tmp_path):
    path = mapping_file(tmp_path, "id_column: id\ncolumns: {A: age_censored}\n")
    with pytest.raises(MappingError, match="maps to 'age_censored', which is not a contract column"):
        load_mapping(path, CONTRACT)


def test_plan_header_in_one_column_names_delimiter():
    contract = load_contract()
    mapping = load_mapping(None, contract)
    with pytest.raises(MappingError, match="wrong delimiter; pass the right one with --delimiter"):
        plan_mapping(mapping, contract, ["patient_id,age,gender"], "extract.csv")


def test_plan_missing_id_column_names_mapping():
    contract = load_contract()
    mapping = load_mapping(None, contract)
    with pytest.raises(MappingError, match="has no id column 'patient_id'"):
        plan_mapping(mapping, contract, ["person", "age"], "extract.csv")
