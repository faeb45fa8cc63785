"""Reading extract files: delimiters, encodings, line ends, quoting, Parquet and Excel."""

from __future__ import annotations

import logging

import openpyxl
import polars as pl
import pytest

from hivcomorb.contract import load_contract
from hivcomorb.errors import ExtractError
from hivcomorb.ingest import ingest_file, read_extract
from hivcomorb.ingest.readers import detect_delimiter, detect_encoding

CONTRACT = load_contract()


def write_bytes(tmp_path, name, data):
    path = tmp_path / name
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("delimiter", [",", ";", "\t", "|"])
def test_read_detects_delimiter(tmp_path, delimiter):
    text = delimiter.join(["patient_id", "haemoglobin", "gender"]) + "\n" + delimiter.join(["a", "140", "male"]) + "\n"
    frame = read_extract(write_bytes(tmp_path, "x.csv", text.encode()))
    assert frame.columns == ["patient_id", "haemoglobin", "gender"]


def test_read_semicolon_with_decimal_commas(tmp_path):
    path = write_bytes(tmp_path, "x.csv", b"patient_id;haemoglobin\na;13,5 g/dL\nb;141,5\n")
    result = ingest_file(path, CONTRACT, validate=False)
    assert result.cohort["haemoglobin"].tolist() == pytest.approx([135.0, 141.5])


@pytest.mark.parametrize(
    ("encoding", "expected"),
    [("utf-8", "utf-8"), ("utf-8-sig", "utf-8-sig"), ("cp1252", "cp1252"), ("latin-1", "latin-1")],
)
def test_read_detects_encoding(tmp_path, encoding, expected):
    # "\u2019" exists in Windows-1252 only; "\x81" is undefined there, so only Latin-1 explains it.
    extra = {"cp1252": "\u2019", "latin-1": "\x81"}.get(encoding, "\u00e9")
    text = f"patient_id,ethnicity\na,white\nb,caf\u00e9{extra}\n"
    path = write_bytes(tmp_path, "x.csv", text.encode(encoding))
    assert detect_encoding(path) == expected


def test_read_utf16_with_bom(tmp_path):
    text = "patient_id,ethnicity,haemoglobin\na,white,135\nb,caf\u00e9,141\n"
    path = write_bytes(tmp_path, "x.csv", text.encode("utf-16"))
    assert detect_encoding(path) == "utf-16"
    frame = read_extract(path)
    assert frame["ethnicity"].to_list() == ["white", "caf\u00e9"]


def test_utf16_without_bom_names_encoding(tmp_path):
    path = write_bytes(tmp_path, "x.csv", "patient_id,age\na,40\n".encode("utf-16-le"))
    with pytest.raises(ExtractError, match="NUL bytes.*--encoding utf-16-le"):
        detect_encoding(path)


@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "cp1252", "latin-1"])
def test_read_decodes_text(tmp_path, encoding):
    text = "patient_id,note\r\na,Cr\u00e8me\r\n"
    frame = read_extract(write_bytes(tmp_path, "x.csv", text.encode(encoding)))
    assert frame.columns == ["patient_id", "note"]
    assert frame["note"].to_list() == ["Cr\u00e8me"]


def test_read_encoding_override(tmp_path):
    path = write_bytes(tmp_path, "x.csv", "patient_id,note\na,\u00e9\n".encode("latin-1"))
    frame = read_extract(path, encoding="latin-1")
    assert frame["note"].to_list() == ["\u00e9"]


def test_read_delimiter_override(tmp_path):
    path = write_bytes(tmp_path, "x.csv", b"patient_id;note\na;b\n")
    frame = read_extract(path, delimiter=",")
    assert frame.columns == ["patient_id;note"]


def test_read_tab_override_word(tmp_path):
    path = write_bytes(tmp_path, "x.tsv", b"patient_id\tnote\na\tb\n")
    assert read_extract(path, delimiter="tab").columns == ["patient_id", "note"]


def test_read_crlf_and_embedded_newlines(tmp_path):
    data = b'patient_id,comment,haemoglobin\r\na,"line one\r\nline two, with comma",140\r\nb,plain,150\r\n'
    frame = read_extract(write_bytes(tmp_path, "x.csv", data))
    assert frame["comment"].to_list() == ["line one\r\nline two, with comma", "plain"]
    assert frame["haemoglobin"].to_list() == ["140", "150"]


def test_read_detection_logged(tmp_path, caplog):
    path = write_bytes(tmp_path, "x.csv", "patient_id;a\nb;c\n".encode("utf-8-sig"))
    with caplog.at_level(logging.INFO, logger="hivcomorb.ingest.readers"):
        read_extract(path)
    assert "encoding utf-8-sig (detected), delimiter ';' (detected)" in caplog.text


def test_read_info_in_summary(tmp_path):
    path = write_bytes(tmp_path, "x.csv", b"patient_id;haemoglobin\na;140\n")
    result = ingest_file(path, CONTRACT, validate=False)
    assert (result.summary["read"]["encoding"], result.summary["read"]["delimiter"]) == ("utf-8", ";")


def test_read_parquet_keeps_types(tmp_path):
    path = tmp_path / "x.parquet"
    pl.DataFrame({"patient_id": ["a"], "haemoglobin": [140.5]}).write_parquet(path)
    frame = read_extract(path)
    assert frame.schema["haemoglobin"] == pl.Float64


def make_workbook(path):
    workbook = openpyxl.Workbook()
    first = workbook.active
    first.title = "labs"
    first.append(["patient_id", "haemoglobin", "hypertension"])
    first.append(["a", 13.5, "Y"])
    first.append(["b", "<LDL", None])
    second = workbook.create_sheet("other")
    second.append(["patient_id", "haemoglobin"])
    second.append(["z", 150])
    workbook.save(path)
    return path


def test_read_excel_first_sheet(tmp_path):
    frame = read_extract(make_workbook(tmp_path / "x.xlsx"))
    assert frame["patient_id"].to_list() == ["a", "b"]


def test_read_excel_named_sheet(tmp_path):
    frame = read_extract(make_workbook(tmp_path / "x.xlsx"), sheet="other")
    assert frame["haemoglobin"].to_list() == ["150"]


def test_read_excel_missing_sheet(tmp_path):
    with pytest.raises(ExtractError, match="sheet 'nope'"):
        read_extract(make_workbook(tmp_path / "x.xlsx"), sheet="nope")


def test_read_excel_missing_sheet_lists_sheets(tmp_path):
    with pytest.raises(ExtractError, match=r"its sheets are \[.*'other'\]. Pass one of them with --sheet"):
        read_extract(make_workbook(tmp_path / "x.xlsx"), sheet="nope")


def test_read_excel_warns_about_other_sheets(tmp_path, caplog):
    with caplog.at_level("WARNING", logger="hivcomorb.ingest.readers"):
        read_extract(make_workbook(tmp_path / "x.xlsx"))
    assert "Choose another with --sheet" in caplog.text


@pytest.mark.parametrize(
    ("name", "data", "message"),
    [
        ("empty.csv", b"", "is empty"),
        ("blank.csv", b"\n\n", "is empty"),
        ("bom.csv", b"\xef\xbb\xbf", "is empty"),
        ("x.json", b"{}", "unknown format"),
    ],
)
def test_read_rejects_unusable_files(tmp_path, name, data, message):
    with pytest.raises(ExtractError, match=message):
        read_extract(write_bytes(tmp_path, name, data))


def test_read_missing_file(tmp_path):
    with pytest.raises(ExtractError, match="not found"):
        read_extract(tmp_path / "absent.csv")


def test_ingest_header_only_file(tmp_path):
    path = write_bytes(tmp_path, "x.csv", b"patient_id,haemoglobin\n")
    with pytest.raises(ExtractError, match="header but no data rows"):
        ingest_file(path, CONTRACT)


@pytest.mark.parametrize(
    ("sample", "expected"),
    [
        ("a,b;c\n1,2;3\n", ","),
        ("id;hb;age\n1;13,5;40\n2;14,5;50\n", ";"),
        ("id\thb\n1\t13,5\n", "\t"),
        ('a,"b;c"\n1,"2;3"\n', ","),
        ("single\nrow\n", ","),
    ],
)
def test_detect_delimiter_cases(sample, expected):
    assert detect_delimiter(sample) == expected


def broken_csv(tmp_path, row: int, change) -> tuple[str, list[str]]:
    """Write a 60-row CSV whose data row ``row`` is changed by ``change``; return the path and the ids."""
    ids = [f"SECRET{i:04d}" for i in range(1, 61)]
    lines = ["patient_id,age,hba1c"] + [f"{pid},{40 + i % 30},{5.0 + i / 100:.2f}" for i, pid in enumerate(ids)]
    lines[row] = change(lines[row])
    path = tmp_path / "broken.csv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(path), ids


@pytest.mark.parametrize(
    ("row", "change", "expected"),
    [
        (12, lambda line: '"' + line, "the quotes of data row 12 do not pair up"),
        (7, lambda line: line + ",extra", "data row 7 has 4 fields where the header has 3"),
    ],
    ids=["unclosed quote", "extra field"],
)
def test_malformed_csv_names_row_without_cells(tmp_path, row, change, expected):
    from hivcomorb.score.reader import open_extract

    path, ids = broken_csv(tmp_path, row, change)
    with pytest.raises(ExtractError) as read_error:
        read_extract(path)
    with pytest.raises(ExtractError) as score_error:
        with open_extract(path, chunk_rows=20) as source:
            source.id_census("patient_id")
            for _ in source.chunks():
                pass
    for error in (read_error, score_error):
        message = str(error.value)
        assert expected in message
        assert not any(pid in message for pid in ids)
        assert error.value.__cause__ is None
