"""``hivcomorb run``: the stages of a pipeline file, under one MLflow parent run.

A pipeline file in ``pipelines/`` lists the stages in order and may override
configuration (the quick pipeline trains XGBoost only). Each stage is a module
with ``run(ctx) -> dict``. The summary it returns contains counts and figures
only; it is logged at INFO and tracked in the stage's child run.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import time
from pathlib import Path
from typing import Any, Sequence

from hivcomorb.config import read_yaml
from hivcomorb.context import RunContext
from hivcomorb.errors import ConfigError
from hivcomorb.files import write_json_atomic
from hivcomorb.paths import project_root

logger = logging.getLogger(__name__)

STAGE_MODULES = {
    "source": "hivcomorb.source",
    "ingest": "hivcomorb.ingest",
    "train": "hivcomorb.train",
    "register": "hivcomorb.registry",
    "probe": "hivcomorb.probe",
    "audit": "hivcomorb.audit",
    "report": "hivcomorb.report",
}


def load_pipeline(name: str) -> dict[str, Any]:
    """Read ``pipelines/<name>.yaml`` and check its stage names."""
    path = project_root() / "pipelines" / f"{name}.yaml"
    spec = read_yaml(path)
    stages = spec.get("stages")
    if not stages:
        raise ConfigError(f"pipeline file {path} lists no stages")
    unknown = [s for s in stages if s not in STAGE_MODULES]
    if unknown:
        raise ConfigError(f"pipeline file {path} names unknown stages {unknown}; known: {sorted(STAGE_MODULES)}")
    return spec


def run_stage(ctx: RunContext, stage: str) -> dict[str, Any]:
    """Run one stage in its own MLflow child run and return its summary."""
    from hivcomorb import tracking

    module = importlib.import_module(STAGE_MODULES[stage])
    started = time.perf_counter()
    logger.info("Stage %s: started", stage)
    with tracking.stage_run(stage, tags={"hivcomorb.dataset": ctx.dataset}) as run:
        ctx.run_ids[stage] = run.info.run_id
        _save_run_ids(ctx)
        summary = module.run(ctx) or {}
        elapsed = time.perf_counter() - started
        tracking.log_metrics({"stage_seconds": elapsed})
    logger.info("Stage %s: finished in %.1f s", stage, elapsed)
    return summary


def _save_run_ids(ctx: RunContext) -> None:
    write_json_atomic(ctx.artifacts / "runs.json", ctx.run_ids)


def load_run_ids(ctx: RunContext) -> dict[str, str]:
    """Return the MLflow run id of each stage of the latest pipeline run."""
    path = ctx.artifacts / "runs.json"
    if not path.is_file():
        return {}
    return json.loads(path.read_text(encoding="utf-8"))


def run_pipeline(ctx: RunContext, stages: Sequence[str]) -> dict[str, Any]:
    """Run ``stages`` in order under one parent run; return each stage's summary."""
    from hivcomorb import tracking

    ctx.artifacts.mkdir(parents=True, exist_ok=True)
    experiment = str(ctx.config.get("tracking", {}).get("experiment", "hivcomorb"))
    summaries: dict[str, Any] = {}
    with tracking.pipeline_run(experiment, run_name=f"{ctx.dataset}-pipeline", tags={"hivcomorb.dataset": ctx.dataset}) as parent:
        ctx.run_ids = {"pipeline": parent.info.run_id}
        tracking.log_params({"config": ctx.config, "contract_version": ctx.contract.version, "device": ctx.device})
        for stage in stages:
            summaries[stage] = run_stage(ctx, stage)
    return summaries


def _command(args: argparse.Namespace) -> int:
    from hivcomorb.cli import context_from_args

    spec = load_pipeline("quick" if args.quick else args.pipeline)
    ctx = context_from_args(args, overrides=spec.get("overrides"))
    ctx.config["pipeline"] = "quick" if args.quick else args.pipeline
    run_pipeline(ctx, spec["stages"])
    if "report" in spec["stages"]:
        logger.info("Report: %s", ctx.reports / "report.html")
    return 0


def register_cli(subparsers: Any) -> None:
    """Add ``hivcomorb run``."""
    from hivcomorb.cli import add_common_arguments

    parser = subparsers.add_parser(
        "run",
        help="run the whole pipeline on one dataset",
        description="Run every stage of a pipeline (source, ingest, train, register, probe, audit, report) "
        "under one MLflow parent run and write reports/<dataset>/report.html and metrics.json.",
    )
    add_common_arguments(parser)
    parser.add_argument("--pipeline", default="full", help="pipeline file in pipelines/ (default: full)")
    parser.add_argument("--quick", action="store_true", help="XGBoost only, fewer resamples (pipelines/quick.yaml)")
    parser.set_defaults(func=_command)


def run_single_stage(ctx: RunContext, stage: str) -> int:
    """Run one stage on its own (``hivcomorb train`` and the like) as a top-level MLflow run."""
    from hivcomorb import tracking

    tracking.configure()
    experiment = str(ctx.config.get("tracking", {}).get("experiment", "hivcomorb"))
    import mlflow

    mlflow.set_experiment(experiment_id=tracking.ensure_experiment(experiment))
    ctx.run_ids = load_run_ids(ctx)
    run_stage(ctx, stage)
    return 0


def add_stage_command(subparsers: Any, stage: str, help: str, description: str, device: bool = True) -> argparse.ArgumentParser:
    """Add ``hivcomorb <stage>``, which runs that one stage with the common options.

    Returns the parser so a stage can add options of its own.
    """
    from hivcomorb.cli import add_common_arguments, context_from_args

    def command(args: argparse.Namespace) -> int:
        return run_single_stage(context_from_args(args), stage)

    parser = subparsers.add_parser(stage, help=help, description=description)
    add_common_arguments(parser, device=device)
    parser.set_defaults(func=command)
    return parser
