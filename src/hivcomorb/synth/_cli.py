"""``hivcomorb synth``: write a synthetic extract and its true risks."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

logger = logging.getLogger("hivcomorb.synth")


def _command(args: argparse.Namespace) -> int:
    from hivcomorb.config import load_config, nested_get
    from hivcomorb.context import RunContext
    from hivcomorb.synth import generate, write_cohort

    signatures = {}
    if args.no_gender_signature:
        signatures["gender"] = False
    if args.no_age_signature:
        signatures["age"] = False
    if args.no_ethnicity_signature:
        signatures["ethnicity"] = False
    overrides = {"synth": {"signatures": signatures}} if signatures else {}
    config = load_config(args.config, overrides)
    ctx = RunContext.from_config(config)

    n_patients = args.n_patients
    if n_patients is None:
        n_patients = int(nested_get(config, "source.n_patients", nested_get(config, "synth.n_patients", 2200)))
    seed = ctx.seed if args.seed is None else args.seed
    out = Path(args.out) if args.out else ctx.artifacts / "source" / "extract.parquet"

    cohort = generate(n_patients, seed, options=config.get("synth"), contract=ctx.contract)
    extract_path, truth_path = write_cohort(cohort, out)
    logger.info("Synthetic cohort of %d patients (seed %d) written", n_patients, seed)
    print(f"extract: {extract_path}\ntruth: {truth_path}")
    return 0


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected a positive whole number, got {text!r}") from exc
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive whole number, got {value}")
    return value


def register_cli(subparsers: Any) -> None:
    """Add ``hivcomorb synth``."""
    parser = subparsers.add_parser(
        "synth",
        help="generate a synthetic London HIV clinic cohort with known true risks",
        description="Generate a synthetic cohort of adults in HIV care in the canonical extract form, "
        "and write it with the true probability behind each comorbidity label "
        "(<out without suffix>.truth.parquet). Defaults come from conf/stages/synth.yaml and the dataset config.",
    )
    parser.add_argument(
        "--config",
        default="demo",
        help="dataset name (reads conf/<name>.yaml) or path to a YAML file; sets the default size, seed and output folder (default: demo)",
    )
    parser.add_argument(
        "--n-patients",
        type=_positive_int,
        default=None,
        metavar="N",
        help="number of patients (default: source.n_patients of the dataset config, else synth.n_patients)",
    )
    parser.add_argument("--seed", type=int, default=None, metavar="S", help="random seed (default: the dataset config's seed)")
    parser.add_argument(
        "--out",
        default=None,
        metavar="PATH",
        help="extract file, .csv or .parquet (default: artifacts/<dataset>/source/extract.parquet)",
    )
    parser.add_argument("--no-gender-signature", action="store_true", help="make every lab independent of gender")
    parser.add_argument("--no-age-signature", action="store_true", help="make every lab independent of age")
    parser.add_argument("--no-ethnicity-signature", action="store_true", help="make every lab independent of ethnicity")
    parser.set_defaults(func=_command)
