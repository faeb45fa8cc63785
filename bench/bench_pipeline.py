"""Benchmark (a): the whole default pipeline, stage by stage.

Runs every stage of ``pipelines/full.yaml`` (or ``--quick``) on the built-in
synthetic cohort in this process, with outputs and the MLflow store in a
temporary folder, and prints wall time and peak resident memory per stage.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
from pathlib import Path

from benchlib import measure, publish


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="run pipelines/quick.yaml (XGBoost only)")
    parser.add_argument("--config", default="demo", help="dataset configuration (default: demo)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    from hivcomorb import tracking
    from hivcomorb.cli import configure_logging
    from hivcomorb.config import deep_merge, load_config
    from hivcomorb.context import RunContext
    from hivcomorb.device import resolve_device
    from hivcomorb.pipeline import load_pipeline, run_stage

    configure_logging("WARNING")
    name = "quick" if args.quick else "full"
    spec = load_pipeline(name)
    with tempfile.TemporaryDirectory(prefix="hivcomorb-bench-") as tmp:
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{Path(tmp) / 'mlflow.db'}"
        overrides = deep_merge(spec.get("overrides") or {}, {"paths": {"artifacts": f"{tmp}/artifacts", "reports": f"{tmp}/reports"}})
        config = load_config(args.config, overrides)
        ctx = RunContext.from_config(config)
        ctx.device = resolve_device(str(config.get("device", "auto")))
        rows = []
        with measure() as total:
            with tracking.pipeline_run("bench", f"bench-{name}") as parent:
                ctx.run_ids = {"pipeline": parent.info.run_id}
                for stage in spec["stages"]:
                    with measure() as m:
                        run_stage(ctx, stage)
                    rows.append([stage, m.seconds, m.peak_mib])
        rows.append(["total", total.seconds, total.peak_mib])
    publish(
        f"pipeline-{name}",
        f"Pipeline '{name}' on dataset '{args.config}', stage by stage",
        ["stage", "wall s", "peak RSS MiB"],
        rows,
        notes=[f"device: {ctx.device}", "peak RSS is the whole process (it includes earlier stages' imports)"],
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
