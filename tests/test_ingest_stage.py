"""The ingest stage: outputs, MLflow tracking, caching, atomic failure, report section and command line."""

from __future__ import annotations

import argparse
import json
import logging
import re

import mlflow
import pandas as pd
import pytest

from hivcomorb import cli
from hivcomorb.cli import configure_logging
from hivcomorb.config import load_config
from hivcomorb.context import RunContext
from hivcomorb.errors import ConfigError, ExtractError
from hivcomorb.ingest import register_cli, report_section
from hivcomorb.ingest.stage import OUTPUT_FILES, quarantine_limit
from hivcomorb.pipeline import run_pipeline, run_single_stage
from hivcomorb.score import EXIT_TOO_MANY_QUARANTINED

EXTRACT = (
    "MRN;Age;Sex;Hb;VL;HTN\r\n"
    "p1;45;M;13,5 g/dL;<20;Y\r\n"
    "p2;52;F;14.1;TND;N\r\n"
    "p3;17;F;12.0;40;\r\n"
    "p4;61;X;11.0;50;yes\r\n"
    "p4;63;M;15.0;60;no\r\n"
)
MAPPING = (
    "name: test_site\nid_column: MRN\n"
    "columns: {Age: age, Sex: gender, Hb: {to: haemoglobin, unit: g/dL}, VL: viral_load, HTN: hypertension}\n"
    "recodes: {gender: {M: male, F: female}}\n"
)


@pytest.fixture(scope="module")
def module_store(tmp_path_factory):
    """One MLflow SQLite store for the module: creating a store takes seconds, so tests share it."""
    folder = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{(folder / 'mlflow.db').as_posix()}"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", uri)
        patch.setenv("MLFLOW_ARTIFACTS_DESTINATION", (folder / "artifacts").as_uri())
        patch.chdir(folder)
        mlflow.set_tracking_uri(uri)
        yield uri
    while mlflow.active_run() is not None:
        mlflow.end_run()


def main(argv):
    """Run ``hivcomorb ingest ...`` as the command line does, without importing every stage's command."""
    parser = argparse.ArgumentParser(prog="hivcomorb")
    register_cli(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    configure_logging("INFO")
    return args.func(args)


def write_site_files(folder):
    extract = folder / "extract.csv"
    extract.write_bytes(EXTRACT.encode("cp1252"))
    mapping = folder / "site.yaml"
    mapping.write_text(MAPPING, encoding="utf-8")
    return extract, mapping


def context_for(folder, extract, mapping=None, **ingest):
    overrides = {
        "paths": {"artifacts": str(folder / "artifacts"), "reports": str(folder / "reports")},
        "device": "cpu",
        "source": {"kind": "file", "path": str(extract)},
        "ingest": {"mapping": str(mapping) if mapping else None, **ingest},
    }
    return RunContext.from_config(load_config("demo", overrides))


@pytest.fixture(scope="module")
def stage_context(module_store, tmp_path_factory):
    """A context whose ingest stage has run once on the test extract."""
    folder = tmp_path_factory.mktemp("stage")
    extract, mapping = write_site_files(folder)
    ctx = context_for(folder, extract, mapping)
    run_single_stage(ctx, "ingest")
    return ctx


def test_stage_writes_four_outputs(stage_context):
    assert sorted(p.name for p in stage_context.stage_dir("ingest").iterdir()) == sorted(OUTPUT_FILES)


def test_stage_cohort_and_quarantine_contents(stage_context):
    out = stage_context.stage_dir("ingest")
    cohort = pd.read_parquet(out / "cohort.parquet")
    quarantine = pd.read_csv(out / "quarantine.csv")
    assert cohort["haemoglobin"].tolist() == pytest.approx([135.0, 141.0])
    assert quarantine[["source_row", "column", "rule"]].values.tolist() == [
        [3, "age", "outside_possible_range"],
        [4, "gender", "unknown_category"],
        [4, "patient_id", "duplicate_id"],
        [5, "patient_id", "duplicate_id"],
    ]


def test_stage_summary_json(stage_context):
    summary = json.loads((stage_context.stage_dir("ingest") / "ingest.json").read_text())
    assert summary["reconciliation"] == "read 5 = kept 2 + quarantined 3"
    assert (summary["read"]["encoding"], summary["read"]["delimiter"]) == ("utf-8", ";")
    assert summary["summary"][0] == "Ingestion read 5 rows from extract.csv: 2 were kept and 3 (60.0%) were quarantined."


def test_stage_tracks_hash_and_counts(stage_context):
    summary = json.loads((stage_context.stage_dir("ingest") / "ingest.json").read_text())
    run = mlflow.get_run(stage_context.run_ids["ingest"])
    assert run.data.params["data.content_hash"] == summary["content_hash"]
    assert run.data.tags["data.content_hash"] == summary["content_hash"]
    assert run.data.params["ingest.reconciliation"] == "read 5 = kept 2 + quarantined 3"
    assert run.data.metrics["ingest.rows_quarantined"] == 3.0


def test_stage_mlflow_holds_no_patient_id(stage_context):
    run = mlflow.get_run(stage_context.run_ids["ingest"])
    text = json.dumps([run.data.params, run.data.tags, run.data.metrics])
    assert "p1" not in text


def test_stage_reuses_unchanged_inputs(stage_context, caplog):
    with caplog.at_level("INFO", logger="hivcomorb.ingest.stage"):
        run_single_stage(stage_context, "ingest")
    assert "reusing the outputs" in caplog.text


def test_stage_reruns_after_extract_changes(module_store, tmp_path, caplog):
    extract, mapping = write_site_files(tmp_path)
    ctx = context_for(tmp_path, extract, mapping)
    run_single_stage(ctx, "ingest")
    extract.write_bytes(EXTRACT.replace("p2;52", "p2;53").encode("cp1252"))
    with caplog.at_level("INFO", logger="hivcomorb.ingest.stage"):
        run_single_stage(ctx, "ingest")
    assert "reusing the outputs" not in caplog.text


def test_stage_failure_writes_no_outputs(module_store, tmp_path):
    extract = tmp_path / "bad.csv"
    extract.write_text("patient_id,age\na,3\nb,4\n", encoding="utf-8")
    ctx = context_for(tmp_path, extract)
    with pytest.raises(ExtractError, match="no usable rows.*listed in .*rejected_rows.csv"):
        run_single_stage(ctx, "ingest")
    assert [p.name for p in ctx.stage_dir("ingest").iterdir()] == ["rejected_rows.csv"]


def test_stage_failure_lists_rejected_rows(module_store, tmp_path):
    extract = tmp_path / "bad.csv"
    extract.write_text("patient_id,age\nPID-SECRET-1,3\nPID-SECRET-2,4\n", encoding="utf-8")
    ctx = context_for(tmp_path, extract)
    with pytest.raises(ExtractError):
        run_single_stage(ctx, "ingest")
    rejected = pd.read_csv(ctx.stage_dir("ingest") / "rejected_rows.csv")
    assert rejected["source_row"].tolist() == [1, 2]
    assert rejected["column"].tolist() == ["age", "age"]
    assert rejected["rule"].tolist() == ["outside_possible_range", "outside_possible_range"]
    assert "PID-SECRET" not in (ctx.stage_dir("ingest") / "rejected_rows.csv").read_text(encoding="utf-8")


def test_stage_validation_page_has_no_patient_values(stage_context):
    page = (stage_context.stage_dir("ingest") / "validation.html").read_text()
    assert "expect_column_values_to_be_between" in page
    assert "p1" not in page


def test_stage_report_section(stage_context):
    html = report_section(stage_context)
    assert "read 5 = kept 2 + quarantined 3" in html
    assert "duplicate_id" in html


def test_stage_report_section_before_run(make_context):
    assert "Ingestion has not run" in report_section(make_context())


def test_cli_standalone_ingest(module_store, tmp_path, capsys):
    extract, mapping = write_site_files(tmp_path)
    out = tmp_path / "standalone"
    options = ["--delimiter", ";", "--encoding", "cp1252", "--max-quarantined-share", "0.8"]
    status = main(["ingest", str(extract), "--mapping", str(mapping), "--out", str(out), *options])
    assert status == 0
    assert sorted(p.name for p in out.iterdir()) == sorted(OUTPUT_FILES)
    assert "read 5 = kept 2 + quarantined 3" in capsys.readouterr().out


def test_cli_help_documents_mapping_and_outputs(capsys):
    with pytest.raises(SystemExit):
        main(["ingest", "--help"])
    text = capsys.readouterr().out
    phrases = (
        "--mapping FILE", "--sheet NAME", "--encoding ENC", "--delimiter CHAR", "--out DIR", "--max-quarantined-share SHARE",
        "id_column", "quarantine.csv", "validation.html", "exit status:",
    )
    for phrase in phrases:
        assert phrase in text


# The test extract quarantines rows 3, 4 and 5 of 5, more than the default limit of 25%.
TOO_MANY_QUARANTINED = "3 of 5 rows (60.0%) were quarantined, more than ingest.max_quarantined_share (25%)"
PATIENT_ID_PATTERN = re.compile(r"\bp[1-4]\b")


def ingest_command(folder, *options):
    """Run ``hivcomorb ingest`` on the test extract into ``folder/standalone`` and return the exit status and that folder."""
    extract, mapping = write_site_files(folder)
    out = folder / "standalone"
    return main(["ingest", str(extract), "--mapping", str(mapping), "--out", str(out), *options]), out


def messages(caplog, level, logger="hivcomorb"):
    """Return the messages logged at ``level`` by ``logger``, one of its children included."""
    return [
        record.getMessage()
        for record in caplog.records
        if record.levelno == level and (record.name == logger or record.name.startswith(logger + "."))
    ]


def test_cli_mostly_quarantined_exits_three(module_store, tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        status, out = ingest_command(tmp_path)
    assert status == EXIT_TOO_MANY_QUARANTINED == 3
    # Every output is still written, for the analyst to inspect.
    assert sorted(p.name for p in out.iterdir()) == sorted(OUTPUT_FILES)
    assert len(pd.read_parquet(out / "cohort.parquet")) == 2
    (error,) = messages(caplog, logging.ERROR)
    assert TOO_MANY_QUARANTINED in error
    assert str(out / "quarantine.csv") in error
    assert error.endswith("Exit status 3")
    assert not PATIENT_ID_PATTERN.search(caplog.text)


def test_cli_under_limit_exits_zero(module_store, tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        status, out = ingest_command(tmp_path, "--max-quarantined-share", "0.8")
    assert status == 0
    assert sorted(p.name for p in out.iterdir()) == sorted(OUTPUT_FILES)
    assert "were quarantined, more than" not in caplog.text


def test_cli_share_equal_to_limit_exits_zero(module_store, tmp_path):
    status, _ = ingest_command(tmp_path, "--max-quarantined-share", "0.6")
    assert status == 0


@pytest.mark.parametrize("text", ["none", "null", "None"])
def test_cli_none_limit_exits_zero(module_store, tmp_path, caplog, text):
    with caplog.at_level(logging.WARNING):
        status, _ = ingest_command(tmp_path, "--max-quarantined-share", text)
    assert status == 0
    assert "were quarantined, more than" not in caplog.text


def test_cli_null_limit_exits_zero(module_store, tmp_path, caplog):
    config = tmp_path / "no_limit.yaml"
    config.write_text(
        f"dataset: demo\nseed: 1\npaths: {{artifacts: {tmp_path / 'artifacts'}, reports: {tmp_path / 'reports'}}}\n"
        "ingest: {max_quarantined_share: null}\n",
        encoding="utf-8",
    )
    with caplog.at_level(logging.WARNING):
        status, _ = ingest_command(tmp_path, "--config", str(config))
    assert status == 0
    assert "were quarantined, more than" not in caplog.text


def test_cli_cache_hit_same_exit_status(module_store, tmp_path, caplog):
    first, _ = ingest_command(tmp_path)
    with caplog.at_level(logging.INFO, logger="hivcomorb.ingest.stage"):
        second, _ = ingest_command(tmp_path)
    assert "reusing the outputs" in caplog.text
    assert first == second == EXIT_TOO_MANY_QUARANTINED
    assert TOO_MANY_QUARANTINED in messages(caplog, logging.ERROR)[0]


def test_cli_limit_change_reuses_outputs(module_store, tmp_path, caplog):
    first, _ = ingest_command(tmp_path)
    with caplog.at_level(logging.INFO, logger="hivcomorb.ingest.stage"):
        second, _ = ingest_command(tmp_path, "--max-quarantined-share", "0.8")
    assert "reusing the outputs" in caplog.text
    assert (first, second) == (EXIT_TOO_MANY_QUARANTINED, 0)


def test_cli_invalid_limit_exits_two(module_store, tmp_path, capsys):
    extract, mapping = write_site_files(tmp_path)
    out = tmp_path / "standalone"
    with pytest.raises(SystemExit) as stop:
        cli.main(["ingest", str(extract), "--mapping", str(mapping), "--out", str(out), "--max-quarantined-share", "1.5"])
    assert stop.value.code == 2
    assert "expected a number from 0 to 1, or none for no limit; got '1.5'" in capsys.readouterr().err
    assert not out.exists()


def test_pipeline_mostly_quarantined_warns_and_goes_on(module_store, tmp_path, caplog):
    extract, mapping = write_site_files(tmp_path)
    ctx = context_for(tmp_path, extract, mapping)
    with caplog.at_level(logging.WARNING, logger="hivcomorb.ingest.stage"):
        summaries = run_pipeline(ctx, ["ingest"])
    assert summaries["ingest"]["too_many_quarantined"] is True
    assert summaries["ingest"]["max_quarantined_share"] == 0.25
    (warning,) = messages(caplog, logging.WARNING, logger="hivcomorb.ingest.stage")
    assert TOO_MANY_QUARANTINED in warning
    assert not PATIENT_ID_PATTERN.search(warning)
    # The outcome depends on a setting outside the cache key, so ingest.json does not record it.
    written = json.loads((ctx.stage_dir("ingest") / "ingest.json").read_text(encoding="utf-8"))
    assert "too_many_quarantined" not in written


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({}, 0.25),
        ({"max_quarantined_share": None}, None),
        ({"max_quarantined_share": 0}, 0.0),
        ({"max_quarantined_share": 1}, 1.0),
        ({"max_quarantined_share": "0.5"}, 0.5),
    ],
)
def test_quarantine_limit_valid_values(options, expected):
    assert quarantine_limit(options) == expected


@pytest.mark.parametrize(
    ("value", "shown"),
    [(1.5, "1.5"), (-0.1, "-0.1"), ("half", "'half'"), (float("nan"), "nan"), ([0.5], "[0.5]")],
)
def test_stage_invalid_quarantine_limit(module_store, tmp_path, value, shown):
    extract, mapping = write_site_files(tmp_path)
    ctx = context_for(tmp_path, extract, mapping, max_quarantined_share=value)
    message = (
        r"ingest\.max_quarantined_share \(or --max-quarantined-share\) must be a number between 0 and 1, "
        rf"or null for no limit; got {re.escape(shown)}$"
    )
    with pytest.raises(ConfigError, match=message):
        run_single_stage(ctx, "ingest")
    assert not any(ctx.stage_dir("ingest").iterdir())


SYNTH_PATIENTS = 300


@pytest.fixture(scope="module")
def synth_extract(tmp_path_factory):
    """A synthetic extract in canonical form, written as a CSV file."""
    from hivcomorb.synth import generate

    path = tmp_path_factory.mktemp("synth") / "synth.csv"
    generate(SYNTH_PATIENTS, 11).extract.to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def runs_by_limit(module_store, synth_extract, tmp_path_factory) -> dict:
    """ingest.json and validation.html of the synthetic extract with auto mode and a low and a high row limit."""
    outputs = {}
    for limit in (100, 10_000):
        folder = tmp_path_factory.mktemp(f"limit{limit}")
        ctx = context_for(folder, synth_extract, validate="auto", validate_all_rows_up_to=limit)
        run_single_stage(ctx, "ingest")
        out = ctx.stage_dir("ingest")
        outputs[limit] = {
            "summary": json.loads((out / "ingest.json").read_text(encoding="utf-8")),
            "page": (out / "validation.html").read_text(encoding="utf-8"),
            "context": ctx,
        }
    return outputs


def test_stage_auto_compact_above_limit(runs_by_limit):
    validation = runs_by_limit[100]["summary"]["validation"]
    assert validation["mode"] == "compact"
    assert validation["rows_represented"] == runs_by_limit[100]["summary"]["rows_kept"] > 100
    assert 0 < validation["rows_validated"] < validation["rows_represented"]


def test_stage_auto_all_rows_up_to_limit(runs_by_limit):
    validation = runs_by_limit[10_000]["summary"]["validation"]
    kept = runs_by_limit[10_000]["summary"]["rows_kept"]
    assert (validation["mode"], validation["rows_validated"], validation["rows_represented"]) == ("all_rows", kept, kept)


def test_stage_compact_same_outcome_as_all_rows(runs_by_limit):
    compact, every_row = runs_by_limit[100]["summary"], runs_by_limit[10_000]["summary"]
    assert compact["validation"]["success"] is every_row["validation"]["success"] is True
    assert compact["validation"]["statistics"] == every_row["validation"]["statistics"]
    assert compact["content_hash"] == every_row["content_hash"]


def test_stage_compact_json_states_rows_checked(runs_by_limit):
    summary = runs_by_limit[100]["summary"]
    checked, kept = summary["validation"]["rows_validated"], summary["validation"]["rows_represented"]
    coverage = summary["validation"]["coverage"]
    assert f"Great Expectations checked {checked:,} deciding rows, which represent all {kept:,} kept rows" in coverage
    assert "exactly as it would on all kept rows" in coverage
    assert f"(element_count, missing_count, unexpected_count) refer to the {checked:,} deciding rows" in coverage
    assert summary["summary"][-1] == (
        f"Great Expectations checked the {checked:,} rows that decide these expectations, which represent all {kept:,} "
        "kept rows, so each outcome is the one that all kept rows would give."
    )


def test_stage_compact_page_states_rows_checked(runs_by_limit):
    summary, page = runs_by_limit[100]["summary"], runs_by_limit[100]["page"]
    checked, kept = summary["validation"]["rows_validated"], summary["validation"]["rows_represented"]
    assert f"Great Expectations checked {checked:,} deciding rows, which represent all {kept:,} kept rows" in page
    assert "<tr><td>Validation mode</td><td>compact</td></tr>" in page
    assert f"<tr><td>Kept rows</td><td>{kept:,}</td></tr>" in page
    assert f"<tr><td>Rows checked by Great Expectations</td><td>{checked:,}</td></tr>" in page
    assert "unexpected (deciding rows, Great Expectations)" in page
    assert "missing (all kept rows, counted by hivcomorb)" in page


def test_stage_compact_page_counts_every_kept_row(runs_by_limit):
    kept = runs_by_limit[100]["summary"]["rows_kept"]
    page = runs_by_limit[100]["page"]
    # Cells 5 to 7 are the counts of Great Expectations on the deciding rows, cells 8 to 10 those of hivcomorb on all kept rows.
    row = next(line for line in page.splitlines() if line.startswith("<tr><td>age</td>") and "expect_column_values_to_be_between" in line)
    cells = row.split("</td><td>")
    assert cells[8] == f"{kept:,}"
    assert cells[5] != f"{kept:,}"


def test_stage_all_rows_page_states_rows_checked(runs_by_limit):
    kept = runs_by_limit[10_000]["summary"]["rows_kept"]
    page = runs_by_limit[10_000]["page"]
    assert f"Great Expectations checked all {kept:,} kept rows." in page
    assert "<tr><td>Validation mode</td><td>all_rows</td></tr>" in page
    assert "counted by hivcomorb" not in page
    assert "deciding rows" not in page


def test_stage_outputs_contain_no_patient_id(runs_by_limit, synth_extract):
    first_id = pd.read_csv(synth_extract)["patient_id"].iloc[0]
    for limit, run in runs_by_limit.items():
        assert first_id not in run["page"], limit
        assert first_id not in json.dumps(run["summary"]), limit


def test_stage_report_states_compact_rows(runs_by_limit):
    html = report_section(runs_by_limit[100]["context"])
    assert "deciding rows, which represent all" in html


def test_stage_reruns_after_validate_setting_changes(module_store, tmp_path, caplog):
    extract, mapping = write_site_files(tmp_path)
    ctx = context_for(tmp_path, extract, mapping, validate="all_rows")
    run_single_stage(ctx, "ingest")
    ctx.config["ingest"]["validate"] = "compact"
    with caplog.at_level("INFO", logger="hivcomorb.ingest.stage"):
        run_single_stage(ctx, "ingest")
    summary = json.loads((ctx.stage_dir("ingest") / "ingest.json").read_text(encoding="utf-8"))
    assert "reusing the outputs" not in caplog.text
    assert summary["validation"]["mode"] == "compact"


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ({"validate": "every_row"}, r"ingest\.validate must be one of 'auto', 'all_rows', 'compact', got 'every_row'"),
        ({"validate": "auto", "validate_all_rows_up_to": "many"}, r"ingest\.validate_all_rows_up_to must be a whole number"),
    ],
)
def test_stage_invalid_validate_setting(module_store, tmp_path, setting, message):
    extract, mapping = write_site_files(tmp_path)
    ctx = context_for(tmp_path, extract, mapping, **setting)
    with pytest.raises(ConfigError, match=message):
        run_single_stage(ctx, "ingest")
    assert not any(ctx.stage_dir("ingest").iterdir())
