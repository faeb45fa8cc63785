"""Tests of ``hivcomorb score``: ingestion, safety checks, outputs, reconciliation and tracking.

Extracts are synthetic cohorts written by the tests themselves. Most runs
score a bundle file with tracking off. One module fixture scores a registered
model through the command line, with tracking on.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import mlflow
import numpy as np
import pandas as pd
import polars as pl
import pytest

from hivcomorb.bundle import ModelBundle
from hivcomorb.context import RunContext
from hivcomorb.contract import load_contract
from hivcomorb.disclosure import SUPPRESSED
from hivcomorb.errors import ConfigError, ExtractError, ModelError
from hivcomorb.ingest import read_extract
from hivcomorb.pyfunc import probability_column
from hivcomorb.score import output_paths, score_extract
from hivcomorb.score.model import resolve_reference
from hivcomorb.score.reader import open_extract
from hivcomorb.score.reasons import ValueTexts, column_groups, top_reasons
from hivcomorb.score.summary import age_bands, reportable_count
from hivcomorb.score.writer import read_parquet_metadata
from test_registry import LABELS, fit_bundle, make_cohort, make_test_context, register_once, sqlite_store

REASON_PATTERN = re.compile(r"^[a-z0-9_]+=.+ (raises|lowers) risk$")

# Rows (0-based) of the scored extract that carry planted defects.
IMPOSSIBLE_ROW = 7  # haemoglobin -5 g/L: quarantined
DUPLICATE_ROWS = (3, 250)  # same patient id, in different chunks of 150 rows: both quarantined
OUT_OF_RANGE_ROW = 11  # CRP above the training maximum: scored and flagged out of distribution


@dataclass
class Scored:
    """One scoring run shared by several tests."""

    ctx: RunContext
    fast_ctx: RunContext
    cohort: pd.DataFrame
    extract: pd.DataFrame
    bundles: dict[str, ModelBundle]
    bundle_paths: dict[str, Path]
    result: dict[str, Any]
    paths: dict[str, Path]
    scores: pd.DataFrame
    quarantine: pd.DataFrame


def unlabelled(cohort: pd.DataFrame) -> pd.DataFrame:
    """Return the cohort without label columns, as a monthly extract would come."""
    return cohort.drop(columns=[c for c in load_contract().labels if c in cohort.columns])


@pytest.fixture(scope="module")
def scored(tmp_path_factory: pytest.TempPathFactory) -> Scored:
    root = tmp_path_factory.mktemp("score")
    ctx = make_test_context(root)
    cohort = make_cohort(400)
    bundles = {setting: fit_bundle(cohort, ctx.contract, setting) for setting in ("aware", "unaware")}
    bundle_paths = {setting: bundle.save(root / f"{setting}.joblib") for setting, bundle in bundles.items()}

    extract = unlabelled(cohort)
    extract.loc[IMPOSSIBLE_ROW, "haemoglobin"] = -5.0
    extract.loc[DUPLICATE_ROWS[1], "patient_id"] = extract.loc[DUPLICATE_ROWS[0], "patient_id"]
    extract.loc[OUT_OF_RANGE_ROW, "crp"] = bundles["aware"].training_ranges["crp"][1] * 1.5
    extract_path = root / "extract.csv"
    extract.to_csv(extract_path, index=False)

    out = root / "out" / "scores.parquet"
    result = score_extract(ctx, extract_path, out, model=str(bundle_paths["aware"]), chunk_rows=150, track=False)
    paths = output_paths(out)
    return Scored(
        ctx=ctx,
        # Small runs below skip the Great Expectations suite, which the run above covers.
        fast_ctx=make_test_context(root, {"validate": "off"}),
        cohort=cohort,
        extract=extract,
        bundles=bundles,
        bundle_paths=bundle_paths,
        result=result,
        paths=paths,
        scores=pd.read_parquet(out),
        quarantine=pd.read_csv(paths["quarantine"]),
    )


# Scores


def test_score_equals_bundle_prediction(scored):
    expected = scored.bundles["aware"].predict_proba(scored.extract, scored.ctx.contract)
    rows = scored.scores["source_row"].to_numpy() - 1
    for label in LABELS:
        np.testing.assert_allclose(scored.scores[probability_column(label)].to_numpy(), expected[label].to_numpy()[rows], rtol=1e-12)


def test_score_flags_at_threshold(scored):
    for label in LABELS:
        threshold = scored.bundles["aware"].thresholds[label]
        expected = scored.scores[probability_column(label)] >= threshold
        assert scored.scores[f"flag_{label}"].equals(expected)


def test_score_reasons_only_for_flagged(scored):
    for label in LABELS:
        flagged = scored.scores[f"flag_{label}"]
        assert scored.scores.loc[~flagged, f"reason1_{label}"].isna().all()
        assert scored.scores.loc[flagged, f"reason1_{label}"].notna().all()


def test_score_reasons_read_column_value_direction(scored):
    reasons = pd.concat([scored.scores[f"reason{k}_{label}"] for label in LABELS for k in (1, 2, 3)]).dropna()
    assert len(reasons) > 0
    assert reasons.map(lambda text: bool(REASON_PATTERN.match(text))).all()


def test_score_keeps_source_order(scored):
    assert scored.scores["source_row"].is_monotonic_increasing


# Quarantine and reconciliation


def test_quarantined_row_not_scored(scored):
    row = IMPOSSIBLE_ROW + 1
    entry = scored.quarantine.loc[scored.quarantine["source_row"] == row]
    assert entry[["column", "rule"]].values.tolist() == [["haemoglobin", "outside_possible_range"]]
    assert row not in set(scored.scores["source_row"])


def test_duplicate_ids_across_chunks_quarantined(scored):
    rows = {r + 1 for r in DUPLICATE_ROWS}
    duplicates = scored.quarantine.loc[scored.quarantine["rule"] == "duplicate_id"]
    assert set(duplicates["source_row"]) == rows
    assert rows.isdisjoint(set(scored.scores["source_row"]))


@pytest.mark.parametrize("chunk_rows", [20, 30, 60])
def test_repeated_id_small_chunks_validated(scored, tmp_path, chunk_rows):
    # Both rows of the repeated id hold their chunk's lowest haemoglobin, so both decide the validation.
    extract = scored.extract.head(60).copy()
    extract.loc[30, "patient_id"] = extract.loc[5, "patient_id"]
    extract.loc[[5, 30], "haemoglobin"] = load_contract().column("haemoglobin").possible[0] + 1
    path = tmp_path / "extract.csv"
    extract.to_csv(path, index=False)
    out = tmp_path / "scores.parquet"
    model = str(scored.bundle_paths["aware"])
    result = score_extract(scored.ctx, path, out, model=model, chunk_rows=chunk_rows, reasons=False, track=False)
    # The run raises if the validation fails. Row 8 (haemoglobin -5 g/L) and the two repeated ids are quarantined.
    counts = result["counts"]
    assert counts["rows_read"] == 60
    assert counts["rows_quarantined"] == 3
    assert counts["rows_scored"] == 57
    assert counts["quarantine_rules"]["duplicate_id"] == 2


def test_empty_lab_column_reported(scored, tmp_path, caplog):
    extract = scored.extract.head(60).copy()
    extract["alt"] = np.nan
    path = tmp_path / "extract.csv"
    extract.to_csv(path, index=False)
    model = str(scored.bundle_paths["aware"])
    with caplog.at_level(logging.WARNING, logger="hivcomorb.score"):
        result = score_extract(scored.fast_ctx, path, tmp_path / "scores.parquet", model=model, chunk_rows=25, reasons=False, track=False)
    assert result["empty_labs"] == ["alt"]
    assert "no scored row has a value of alt" in caplog.text
    assert any("No scored row has a value of alt" in sentence for sentence in result["summary"])


def test_no_empty_labs_normally(scored):
    assert scored.result["empty_labs"] == []


def test_quarantine_has_no_patient_id(scored):
    ids = set(scored.extract["patient_id"])
    assert ids.isdisjoint(set(scored.quarantine["raw_value"].dropna()))


def test_reconciliation_read_equals_scored_plus_quarantined(scored):
    counts = scored.result["counts"]
    assert counts["rows_read"] == len(scored.extract)
    assert counts["rows_scored"] == len(scored.scores)
    assert counts["rows_quarantined"] == scored.quarantine["source_row"].nunique()
    assert counts["rows_read"] == counts["rows_scored"] + counts["rows_quarantined"]


# Out of distribution


def test_out_of_range_value_flagged(scored):
    row = scored.scores.loc[scored.scores["source_row"] == OUT_OF_RANGE_ROW + 1].iloc[0]
    assert bool(row["ood_flag"])
    assert "crp above training maximum" in row["ood_reasons"]


def test_training_rows_mostly_in_distribution(scored):
    assert scored.scores["ood_flag"].mean() < 0.05


# Stamps and summary


def test_stamps_on_every_row(scored):
    stamps = scored.result["stamps"]
    for name in ("model_name", "model_version", "setting", "contract_version", "extract_sha256", "scored_at"):
        assert (scored.scores[name] == stamps[name]).all(), name
    assert stamps["setting"] == "aware"


def test_stamps_in_parquet_metadata(scored):
    metadata = read_parquet_metadata(scored.paths["scores"])
    assert metadata["extract_sha256"] == scored.result["stamps"]["extract_sha256"]
    assert metadata["model_version"] == "unregistered"


def test_chunk_counts_not_logged_as_extract_counts(scored, tmp_path, caplog):
    out = tmp_path / "scores.parquet"
    with caplog.at_level(logging.INFO, logger="hivcomorb"):
        extract = scored.paths["scores"].parent.parent / "extract.csv"
        model = str(scored.bundle_paths["aware"])
        result = score_extract(scored.fast_ctx, extract, out, model=model, chunk_rows=150, reasons=False, track=False)
    info = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert not [m for m in info if "= kept" in m]
    counts = result["counts"]
    assert counts["rows_read"] == len(scored.extract)
    assert [m for m in info if f"read {counts['rows_read']} = scored {counts['rows_scored']}" in m]
    chunk_lines = [r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG and "= kept" in r.getMessage()]
    assert chunk_lines == [] or all(", rows " in m for m in chunk_lines)


def test_summary_files_written(scored):
    html = scored.paths["summary_html"].read_text(encoding="utf-8")
    document = json.loads(scored.paths["summary_json"].read_text(encoding="utf-8"))
    assert "Read 400 rows = scored" in html
    assert document["counts"]["reconciled"] is True


def test_summary_suppresses_small_groups(scored):
    minimum = scored.result["counts"]["min_group_size"]
    for column, groups in scored.result["counts"]["by_group"].items():
        for group, cells in groups.items():
            if cells == SUPPRESSED:
                continue
            size = cells["patients"]
            # A large group hidden only to protect the small groups keeps its entry, with its size suppressed.
            assert size == SUPPRESSED or size >= minimum, (column, group)
            for label in LABELS:
                value = cells[label]
                if value == SUPPRESSED or value == 0 or value == size:
                    continue
                assert value >= minimum, (column, group, label)
                assert size == SUPPRESSED or value <= size - minimum, (column, group, label)


def test_no_partial_files_left(scored):
    assert not list(scored.paths["scores"].parent.glob("*.partial"))


@pytest.mark.parametrize(
    ("count", "total", "expected"),
    [(0, 100, 0), (5, 100, SUPPRESSED), (10, 100, 10), (95, 100, SUPPRESSED), (100, 100, 100), (50, 100, 50)],
)
def test_reportable_count_suppresses_small_cells(count, total, expected):
    assert reportable_count(count, total, 10) == expected


def test_age_bands_label_edges():
    bands = age_bands(pd.Series([18.0, 29.9, 30.0, 75.0, np.nan, 17.0]), [18, 30, 70])
    assert bands.tolist() == ["18-29", "18-29", "30-69", "70+", "unknown", "under 18"]


# Safety checks


def test_aware_model_rejects_extract_without_demographics(scored, tmp_path):
    extract = unlabelled(scored.cohort.head(30)).drop(columns=["age", "gender", "ethnicity", "continent_of_birth"])
    path = tmp_path / "no_demographics.csv"
    extract.to_csv(path, index=False)
    message = r"lacks the demographic columns \['age', 'gender', 'ethnicity', 'continent_of_birth'\].*champion-unaware"
    with pytest.raises(ModelError, match=message):
        score_extract(scored.fast_ctx, path, tmp_path / "s.parquet", model=str(scored.bundle_paths["aware"]), track=False)
    assert not (tmp_path / "s.parquet").exists()


def test_unaware_model_ignores_demographics(scored, tmp_path):
    with_demographics = unlabelled(scored.cohort.head(40))
    without = with_demographics.drop(columns=["age", "gender", "ethnicity", "continent_of_birth"])
    outputs = []
    for name, frame in (("with", with_demographics), ("without", without)):
        path = tmp_path / f"{name}.parquet"
        frame.to_parquet(path, index=False)
        out = tmp_path / f"{name}.scores.parquet"
        score_extract(scored.fast_ctx, path, out, model=str(scored.bundle_paths["unaware"]), reasons=False, track=False)
        outputs.append(pd.read_parquet(out))
    columns = [probability_column(label) for label in LABELS]
    pd.testing.assert_frame_equal(outputs[0][columns], outputs[1][columns])


def test_malformed_label_cells_do_not_block_scoring(scored, tmp_path):
    extract = scored.cohort.head(30).copy()
    extract["hypertension"] = extract["hypertension"].astype("object")
    extract.loc[1, "hypertension"] = "maybe"
    extract.loc[3, "cancer"] = 2
    path = tmp_path / "labelled.csv"
    extract.to_csv(path, index=False)
    out = tmp_path / "labelled.scores.parquet"
    result = score_extract(scored.fast_ctx, path, out, model=str(scored.bundle_paths["aware"]), reasons=False, track=False)
    scores = pd.read_parquet(out)
    assert len(scores) == 30
    assert result["counts"]["rows_quarantined"] == 0


def test_missing_lab_error_lists_columns(scored, tmp_path):
    path = tmp_path / "no_hba1c.csv"
    unlabelled(scored.cohort.head(20)).drop(columns=["hba1c", "hba1c_censored", "crp"]).to_csv(path, index=False)
    with pytest.raises(ModelError, match=r"lacks the columns \['hba1c', 'crp'\].*allow_missing_labs"):
        score_extract(scored.fast_ctx, path, tmp_path / "s.csv", model=str(scored.bundle_paths["aware"]), track=False)


def test_missing_lab_scored_as_missing_when_allowed(scored, tmp_path):
    path = tmp_path / "no_hba1c.csv"
    extract = unlabelled(scored.cohort.head(20)).drop(columns=["hba1c", "hba1c_censored"])
    extract.to_csv(path, index=False)
    scored.fast_ctx.config["score"]["allow_missing_labs"] = True
    try:
        result = score_extract(scored.fast_ctx, path, tmp_path / "s.csv", model=str(scored.bundle_paths["aware"]), reasons=False, track=False)
    finally:
        scored.fast_ctx.config["score"]["allow_missing_labs"] = False
    expected = scored.bundles["aware"].predict_proba(scored.cohort.head(20).assign(hba1c=np.nan), scored.ctx.contract)
    scores = pd.read_csv(tmp_path / "s.csv")
    assert result["absent_labs"] == ["hba1c"]
    np.testing.assert_allclose(scores[probability_column("diabetes")], expected["diabetes"], rtol=1e-6)


@pytest.mark.parametrize("suffix", [".json", ".xlsx", ""])
def test_output_suffix_must_be_parquet_or_csv(scored, suffix):
    with pytest.raises(ExtractError, match="must end in .parquet or .csv"):
        output_paths(Path("scores" + suffix))


def test_unknown_model_reference_fails(scored, tmp_path):
    with pytest.raises(ModelError, match="model bundle not found"):
        score_extract(scored.fast_ctx, tmp_path / "x.csv", tmp_path / "s.csv", model=str(tmp_path / "nothing.joblib"), track=False)


def test_resolve_reference_expands_bare_alias():
    assert resolve_reference("champion-unaware", "demo") == "models:/hivcomorb-demo-unaware@champion-unaware"


def test_resolve_reference_keeps_uri():
    assert resolve_reference("models:/x/3", "demo") == "models:/x/3"


# Atomic writes


def _interrupt_second_chunk(monkeypatch: pytest.MonkeyPatch) -> None:
    import hivcomorb.score as score_module

    original = score_module.score_chunk
    calls = {"n": 0}

    def interrupted(*args: Any, **kwargs: Any):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    monkeypatch.setattr(score_module, "score_chunk", interrupted)


def test_interrupted_write_leaves_no_final_file(scored, tmp_path, monkeypatch):
    path = tmp_path / "extract.csv"
    unlabelled(scored.cohort.head(60)).to_csv(path, index=False)
    out = tmp_path / "out" / "scores.parquet"
    _interrupt_second_chunk(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        score_extract(scored.fast_ctx, path, out, model=str(scored.bundle_paths["aware"]), chunk_rows=30, reasons=False, track=False)
    assert sorted(p.name for p in out.parent.iterdir()) == []


def test_interrupted_write_keeps_previous_output(scored, tmp_path, monkeypatch):
    path = tmp_path / "extract.csv"
    unlabelled(scored.cohort.head(60)).to_csv(path, index=False)
    out = tmp_path / "scores.csv"
    out.write_text("previous complete output\n", encoding="utf-8")
    _interrupt_second_chunk(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        score_extract(scored.fast_ctx, path, out, model=str(scored.bundle_paths["aware"]), chunk_rows=30, reasons=False, track=False)
    assert out.read_text(encoding="utf-8") == "previous complete output\n"


# Formats and chunked reading


@pytest.mark.parametrize(("source_suffix", "out_suffix"), [(".xlsx", ".csv"), (".parquet", ".csv"), (".csv", ".parquet")])
def test_formats_give_same_scores(scored, tmp_path, source_suffix, out_suffix):
    extract = unlabelled(scored.cohort.head(25))
    path = tmp_path / f"extract{source_suffix}"
    if source_suffix == ".xlsx":
        extract.to_excel(path, index=False)
    elif source_suffix == ".parquet":
        extract.to_parquet(path, index=False)
    else:
        extract.to_csv(path, index=False)
    out = tmp_path / f"scores{out_suffix}"
    score_extract(scored.fast_ctx, path, out, model=str(scored.bundle_paths["aware"]), reasons=False, track=False)
    scores = pd.read_csv(out) if out_suffix == ".csv" else pd.read_parquet(out)
    expected = scored.bundles["aware"].predict_proba(scored.cohort.head(25), scored.ctx.contract)
    np.testing.assert_allclose(scores[probability_column("hypertension")], expected["hypertension"], rtol=1e-6)


@pytest.mark.parametrize(("encoding", "delimiter"), [("utf-8", ","), ("cp1252", ";"), ("utf-8-sig", "\t")])
def test_chunks_match_read_extract(tmp_path, encoding, delimiter):
    path = tmp_path / "extract.csv"
    frame = pd.DataFrame({"patient_id": ["A1", "A2", "A3", "A4", "A5"], "note": ["café", "x;y", "line\nbreak", "", "ü"], "hb": ["13,5", "<20", "NA", "140", " 12 "]})
    frame.to_csv(path, index=False, sep=delimiter, encoding=encoding)
    with open_extract(path, chunk_rows=2) as source:
        chunks = list(source.chunks())
        count, duplicates = source.id_census("patient_id")
    assert [offset for _, offset in chunks] == [0, 2, 4]
    assert pl.concat([c for c, _ in chunks]).equals(read_extract(path))
    assert (count, duplicates) == (5, set())


def test_parquet_chunks_match_read_extract(tmp_path):
    path = tmp_path / "extract.parquet"
    frame = pd.DataFrame({"patient_id": [f"A{i}" for i in range(7)], "hb": [140.0, None, 12.5, 130.0, 99.0, 101.5, 150.0]})
    frame.to_parquet(path, index=False, row_group_size=3)
    with open_extract(path, chunk_rows=2) as source:
        chunks = list(source.chunks())
    assert [offset for _, offset in chunks] == [0, 2, 4, 6]
    assert [chunk.height for chunk, _ in chunks] == [2, 2, 2, 1]
    assert pl.concat([c for c, _ in chunks]).equals(read_extract(path))


def test_id_census_finds_duplicates(tmp_path):
    path = tmp_path / "extract.csv"
    pd.DataFrame({"patient_id": ["A", " B", "C", "B ", "A", "D"], "x": range(6)}).to_csv(path, index=False)
    with open_extract(path, chunk_rows=2) as source:
        assert source.id_census("patient_id") == (6, {"A", "B"})


# Numeric and text extracts

CENSORED_ROW = 5  # viral load below the detection limit: "<" 20 copies/mL
DECIMAL_COMMA_ROW = 2  # creatinine written with a decimal comma in the text extract
STAMPS_OF_THE_FILE = ["extract_sha256", "scored_at"]


@dataclass
class Formats:
    """The same extract scored from numeric Parquet, from CSV text and from CSV with censored cells."""

    scores: dict[str, pd.DataFrame]
    quarantine: dict[str, pd.DataFrame]


@pytest.fixture(scope="module")
def formats(scored, tmp_path_factory: pytest.TempPathFactory) -> Formats:
    root = tmp_path_factory.mktemp("formats")
    extract = unlabelled(scored.cohort.head(90))
    extract.loc[IMPOSSIBLE_ROW, "haemoglobin"] = -5.0
    extract.loc[CENSORED_ROW, ["viral_load", "viral_load_censored"]] = [20.0, "<"]
    paths = {"numeric parquet": root / "numeric.parquet", "csv": root / "text.csv", "csv with censored cells": root / "cells.csv"}
    extract.to_parquet(paths["numeric parquet"], index=False)
    extract.to_csv(paths["csv"], index=False)
    # Censored results and decimal commas written in the cells, as some laboratory systems export them.
    cells = extract.astype(object).where(extract.notna(), None)
    cells["viral_load"] = [None if v is None else repr(float(v)) for v in cells["viral_load"]]
    cells.loc[CENSORED_ROW, ["viral_load", "viral_load_censored"]] = ["<20", None]
    cells.loc[DECIMAL_COMMA_ROW, "creatinine"] = repr(float(extract.loc[DECIMAL_COMMA_ROW, "creatinine"])).replace(".", ",")
    cells.to_csv(paths["csv with censored cells"], index=False, sep=";")

    scores, quarantine = {}, {}
    for name, path in paths.items():
        out = root / f"{path.stem}.scores.parquet"
        score_extract(scored.ctx, path, out, model=str(scored.bundle_paths["aware"]), chunk_rows=40, reasons=False, track=False)
        scores[name] = pd.read_parquet(out).drop(columns=STAMPS_OF_THE_FILE)
        quarantine[name] = pd.read_csv(output_paths(out)["quarantine"])
    return Formats(scores, quarantine)


@pytest.mark.parametrize("name", ["csv", "csv with censored cells"])
def test_formats_numeric_and_text_same_scores(formats, name):
    pd.testing.assert_frame_equal(formats.scores[name], formats.scores["numeric parquet"], check_exact=True)


@pytest.mark.parametrize("name", ["csv", "csv with censored cells"])
def test_formats_numeric_and_text_same_quarantine(formats, name):
    columns = ["source_row", "column", "rule", "detail"]
    pd.testing.assert_frame_equal(formats.quarantine[name][columns], formats.quarantine["numeric parquet"][columns])


def test_formats_impossible_value_quarantined_in_each(formats):
    for name, quarantine in formats.quarantine.items():
        entries = quarantine.loc[quarantine["source_row"] == IMPOSSIBLE_ROW + 1, ["column", "rule"]].values.tolist()
        assert entries == [["haemoglobin", "outside_possible_range"]], name


def test_formats_censored_row_scored_in_each(formats):
    for name, scores in formats.scores.items():
        assert CENSORED_ROW + 1 in set(scores["source_row"]), name


def test_score_chunk_same_with_thread_pool(scored):
    from concurrent.futures import ThreadPoolExecutor

    from hivcomorb.pyfunc import OutOfDistributionDetector
    from hivcomorb.score import STAMP_COLUMNS, score_chunk
    from hivcomorb.score.model import ScoringModel

    bundle, contract = scored.bundles["aware"], scored.ctx.contract
    detector = OutOfDistributionDetector.fit(bundle.features(scored.cohort, contract), n_estimators=50)
    model = ScoringModel(bundle, contract, detector, uri="test", name="test", version="1", run_id="")
    cohort = scored.cohort.assign(source_row=np.arange(1, len(scored.cohort) + 1))
    stamps = {name: "stamp" for name in STAMP_COLUMNS}
    alone = score_chunk(cohort, model, stamps, reasons=False, n_reasons=3)
    with ThreadPoolExecutor(max_workers=2) as pool:
        threaded = score_chunk(cohort, model, stamps, reasons=False, n_reasons=3, pool=pool)
    pd.testing.assert_frame_equal(threaded.frame, alone.frame, check_exact=True)
    expected = bundle.predict_proba(cohort, contract)
    for label in LABELS:
        np.testing.assert_array_equal(threaded.frame[probability_column(label)].to_numpy(), expected[label].to_numpy())


# Validation


def test_validate_default_is_compact(scored):
    from hivcomorb.score import ScoreOptions

    assert ScoreOptions.from_config(scored.ctx.config).validate == "compact"


def test_compact_validation_failure_writes_nothing(scored, tmp_path, monkeypatch):
    from hivcomorb.ingest import rules

    # Without its range rule, ingestion keeps the impossible value, and only the suite catches it.
    monkeypatch.setattr(rules, "outside_range", lambda values, bounds: pl.Series([False] * values.len(), dtype=pl.Boolean))
    path = tmp_path / "extract.csv"
    extract = unlabelled(scored.cohort.head(60))
    extract.loc[IMPOSSIBLE_ROW, "haemoglobin"] = -5.0
    extract.to_csv(path, index=False)
    out = tmp_path / "scores.parquet"
    with pytest.raises(ExtractError, match="expect_column_values_to_be_between on haemoglobin"):
        score_extract(scored.ctx, path, out, model=str(scored.bundle_paths["aware"]), chunk_rows=25, reasons=False, track=False)
    assert [p.name for p in output_paths(out).values() if p.exists()] == []


# Reasons


def test_top_reasons_sum_category_indicators():
    contract = load_contract()
    frame = pd.DataFrame({"hba1c": [58.04, np.nan], "gender": ["female", None]})
    groups = column_groups(["hba1c", "gender=male", "gender=female", "gender=other", "gender=unknown"], ["hba1c", "gender"], contract)
    contributions = np.array([[0.5, -0.1, -0.6, 0.0, 0.0], [-0.2, 0.0, 0.0, 0.0, 0.1]])
    first, second = top_reasons(contributions, ValueTexts(frame, contract), np.arange(2), groups, n_reasons=2)
    assert first.to_list() == ["gender=female lowers risk", "hba1c=missing lowers risk"]
    assert second.to_list() == ["hba1c=58.04 mmol/mol raises risk", "gender=unknown raises risk"]


def test_top_reasons_skip_zero_contributions():
    contract = load_contract()
    frame = pd.DataFrame({"hba1c": [40.0], "glucose": [5.0]})
    groups = column_groups(["hba1c", "glucose"], ["hba1c", "glucose"], contract)
    _, second = top_reasons(np.array([[0.3, 0.0]]), ValueTexts(frame, contract), np.arange(1), groups, n_reasons=2)
    assert second.to_list() == [None]


# Registered model, command line and tracking


@dataclass
class CommandRun:
    registered: Any
    exit_code: int
    out: Path
    extract_sha256: str


@pytest.fixture(scope="module")
def command_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CommandRun]:
    from hivcomorb.cli import main
    from hivcomorb.files import file_sha256

    registered = register_once(tmp_path_factory)
    root = tmp_path_factory.mktemp("command")
    with sqlite_store(registered.root):
        extract = root / "monthly.csv"
        unlabelled(registered.cohort.head(120)).to_csv(extract, index=False)
        out = root / "scores.parquet"
        config = root / "config.yaml"
        config.write_text(
            "dataset: demo\nseed: 1\n"
            f"paths: {{artifacts: {root / 'artifacts'}, reports: {root / 'reports'}}}\n"
            "score: {progress: false}\n",
            encoding="utf-8",
        )
        code = main(["score", str(extract), "--model", "champion-aware", "--out", str(out), "--config", str(config), "--chunk-rows", "50"])
        yield CommandRun(registered, code, out, file_sha256(extract))


def test_command_exits_zero(command_run):
    assert command_run.exit_code == 0


def test_command_stamps_registered_version(command_run):
    metadata = read_parquet_metadata(command_run.out)
    assert metadata["model_name"] == "hivcomorb-demo-aware"
    assert metadata["model_version"] == "1"
    assert metadata["model_run_id"] == next(m["run_id"] for m in command_run.registered.registry["models"] if m["setting"] == "aware")


def test_command_score_equals_registered_prediction(command_run):
    registered = command_run.registered
    scores = pd.read_parquet(command_run.out)
    expected = registered.bundles["aware"].predict_proba(registered.cohort.head(120), registered.ctx.contract)
    np.testing.assert_allclose(scores[probability_column("diabetes")], expected["diabetes"], rtol=1e-12)


def test_command_tracks_run_without_patient_data(command_run):
    experiment = mlflow.get_experiment_by_name("hivcomorb-scoring")
    runs = mlflow.search_runs(experiment_ids=[experiment.experiment_id], output_format="list")
    assert len(runs) == 1
    data = runs[0].data
    assert data.metrics["rows_read"] == 120
    assert data.params["model_version"] == "1"
    assert data.tags["hivcomorb.extract_sha256"] == command_run.extract_sha256
    ids = set(command_run.registered.cohort["patient_id"])
    logged = " ".join([*data.params.values(), *data.tags.values()])
    assert not any(patient in logged for patient in ids)


def mostly_broken_run(tmp_path_factory: pytest.TempPathFactory, *extra: str, glucose_factor: float = 1.0) -> tuple[int, Path]:
    """Score 40 rows of which 30 have an impossible haemoglobin, with the command line."""
    from hivcomorb.cli import main

    registered = register_once(tmp_path_factory)
    root = tmp_path_factory.mktemp("broken")
    with sqlite_store(registered.root):
        extract = unlabelled(registered.cohort.head(40))
        extract.loc[:29, "haemoglobin"] = -5.0
        extract["glucose"] = extract["glucose"] * glucose_factor
        path = root / "monthly.csv"
        extract.to_csv(path, index=False)
        out = root / "scores.parquet"
        config = root / "config.yaml"
        config.write_text(
            f"dataset: demo\nseed: 1\npaths: {{artifacts: {root / 'artifacts'}, reports: {root / 'reports'}}}\nscore: {{progress: false}}\n",
            encoding="utf-8",
        )
        code = main(["score", str(path), "--model", "champion-aware", "--out", str(out), "--config", str(config), *extra])
    return code, out


def test_mostly_quarantined_extract_exits_three(tmp_path_factory, caplog):
    from hivcomorb.score import EXIT_TOO_MANY_QUARANTINED

    with caplog.at_level(logging.ERROR, logger="hivcomorb.score"):
        code, out = mostly_broken_run(tmp_path_factory)
    assert code == EXIT_TOO_MANY_QUARANTINED == 3
    assert "30 of 40 rows (75.0%) were quarantined" in caplog.text
    # Every output is still written, for the analyst to inspect.
    assert len(pd.read_parquet(out)) == 10
    summary = json.loads(out.with_name(out.name + ".summary.json").read_text(encoding="utf-8"))
    assert summary["too_many_quarantined"] is True
    assert any("75.0% of rows were quarantined" in sentence for sentence in summary["summary"])


def test_quarantine_limit_can_be_raised(tmp_path_factory):
    code, _ = mostly_broken_run(tmp_path_factory, "--max-quarantined-share", "0.8")
    assert code == 0


def test_suspected_unit_reaches_summary(tmp_path_factory):
    # Glucose in mg/dL declared as mmol/L: 18 times the canonical values.
    _, out = mostly_broken_run(tmp_path_factory, "--max-quarantined-share", "1", glucose_factor=18.016)
    summary = json.loads(out.with_name(out.name + ".summary.json").read_text(encoding="utf-8"))
    assert [finding["column"] for finding in summary["suspected_units"]] == ["glucose"]
    assert summary["suspected_units"][0]["suspected_unit"] == "mg/dL"
    assert any(sentence.startswith("The values of glucose look like mg/dL") for sentence in summary["summary"])
    html = out.with_name(out.name + ".summary.html").read_text(encoding="utf-8")
    assert "The values of glucose look like mg/dL" in html


@pytest.mark.parametrize("value", [1.5, -0.1, "half"])
def test_invalid_quarantine_limit_rejected(value):
    from hivcomorb.score import ScoreOptions

    with pytest.raises(ConfigError, match="max_quarantined_share"):
        ScoreOptions.from_config({"score": {"max_quarantined_share": value}})


def test_top_reasons_use_explained_rows_values():
    contract = load_contract()
    frame = pd.DataFrame({"hba1c": [40.0, 61.0, 75.0]})
    groups = column_groups(["hba1c"], ["hba1c"], contract)
    (first,) = top_reasons(np.array([[0.4], [0.2]]), ValueTexts(frame, contract), np.array([2, 1]), groups, n_reasons=1)
    assert first.to_list() == ["hba1c=75 mmol/mol raises risk", "hba1c=61 mmol/mol raises risk"]


def test_shap_values_unwrap_estimator_wrapper(scored):
    from hivcomorb.score.reasons import shap_values

    class Wrapper:
        """An estimator plus an identity calibrator, the shape training saves."""

        def __init__(self, estimator):
            self.estimator = estimator
            self.calibrator = None

        def predict_proba(self, features):
            return self.estimator.predict_proba(features)

    estimator = scored.bundles["aware"].estimators["diabetes"]
    matrix = scored.bundles["aware"].features(scored.cohort.head(10), scored.ctx.contract)
    np.testing.assert_array_equal(shap_values(Wrapper(estimator), matrix), shap_values(estimator, matrix))


@pytest.mark.parametrize(
    ("ood_rows", "expected"),
    [
        (0, "No scored row is out of distribution"),
        (30, "Scored rows out of distribution: 30 (30.0%); with a value outside the training range: 30;"),
        ("suppressed", "Scored rows out of distribution: suppressed; with a value outside the training range: suppressed;"),
    ],
)
def test_summary_sentences_out_of_distribution(ood_rows, expected):
    from hivcomorb.score.summary import summary_sentences

    result = {
        "counts": {
            "rows_read": 100,
            "rows_scored": 100,
            "rows_quarantined": 0,
            "min_group_size": 10,
            "out_of_distribution": {"rows": ood_rows, "outside_training_range": ood_rows, "unlike_training_cohort": 0},
        },
        "stamps": {"model_name": "m", "model_version": "1", "setting": "aware", "contract_version": "1.0.0"},
    }
    sentences = summary_sentences(result)
    assert any(s.startswith(expected) for s in sentences)


def test_summary_json_suppresses_small_flag_counts():
    from hivcomorb.score.summary import ScoreCounts

    counts = ScoreCounts(labels=["diabetes", "cancer"], groups=[], age_edges=[18, 40])
    counts.rows_read = counts_scored = 100
    frame = pd.DataFrame({"age": np.full(counts_scored, 50.0)})
    flags = {"diabetes": np.arange(100) < 40, "cancer": np.arange(100) < 3}
    ood = np.arange(100) < 2
    counts.add_chunk(frame, flags, ood, ood, np.zeros(100, dtype=bool))
    data = counts.as_dict(10)
    assert data["flagged"] == {"diabetes": 40, "cancer": SUPPRESSED}
    assert data["out_of_distribution"] == {"rows": SUPPRESSED, "outside_training_range": SUPPRESSED, "unlike_training_cohort": 0}
    assert data["rows_scored"] == 100
