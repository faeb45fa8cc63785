"""The ``hivcomorb`` command line.

Each stage module registers its own sub-command through a
``register_cli(subparsers)`` function; this module only sets up logging and
dispatches. ``hivcomorb run`` composes the stages listed in ``pipelines/``.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from typing import Any, Sequence

from hivcomorb import __version__
from hivcomorb.errors import HivcomorbError

logger = logging.getLogger("hivcomorb")

# Modules that contribute sub-commands, in the order `--help` lists them.
_COMMAND_MODULES = (
    "hivcomorb.synth",
    "hivcomorb.adapters.nhanes",
    "hivcomorb.ingest",
    "hivcomorb.train",
    "hivcomorb.probe",
    "hivcomorb.audit",
    "hivcomorb.report",
    "hivcomorb.registry",
    "hivcomorb.score",
    "hivcomorb.schema",
    "hivcomorb.pipeline",
)


def add_common_arguments(parser: argparse.ArgumentParser, device: bool = True) -> None:
    """Add the options every stage command shares: dataset config and, if it trains or predicts, device."""
    parser.add_argument(
        "--config",
        default="demo",
        help="dataset name (reads conf/<name>.yaml) or path to a YAML file (default: demo)",
    )
    if device:
        parser.add_argument(
            "--device",
            choices=("auto", "cpu", "cuda"),
            default=None,
            help="device for the boosting models; auto uses a CUDA GPU when one is usable (default: from config)",
        )


def share_argument(text: str) -> float:
    """Parse a share from 0 to 1 given on the command line; ``none`` or ``null`` means no limit.

    No limit is returned as 1.0, because no more than every row read can be quarantined.
    """
    if text.strip().lower() in ("none", "null"):
        return 1.0
    try:
        share = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number from 0 to 1, or none for no limit; got {text!r}") from None
    if not 0.0 <= share <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number from 0 to 1, or none for no limit; got {text!r}")
    return share


def context_from_args(args: argparse.Namespace, overrides: dict[str, Any] | None = None):
    """Build a :class:`~hivcomorb.context.RunContext` from common arguments.

    The boosting device is resolved (and logged) only for commands that take
    ``--device``; the others run on the CPU.
    """
    from hivcomorb.config import deep_merge, load_config
    from hivcomorb.context import RunContext
    from hivcomorb.device import resolve_device

    merged = dict(overrides or {})
    if getattr(args, "device", None):
        merged = deep_merge(merged, {"device": args.device})
    config = load_config(args.config, merged)
    ctx = RunContext.from_config(config)
    ctx.device = resolve_device(str(config.get("device", "auto"))) if hasattr(args, "device") else "cpu"
    return ctx


def build_parser() -> argparse.ArgumentParser:
    """Return the top-level parser with every available sub-command."""
    parser = argparse.ArgumentParser(
        prog="hivcomorb",
        description="Comorbidity prediction, demographic recoverability probe and fairness audit for people living with HIV.",
    )
    parser.add_argument("--version", action="version", version=f"hivcomorb {__version__}")
    parser.add_argument(
        "--log-level",
        default="INFO",
        choices=("DEBUG", "INFO", "WARNING", "ERROR"),
        help="logging level (default: INFO)",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name is None or not name.startswith(exc.name):
                raise
            continue
        register = getattr(module, "register_cli", None)
        if register is not None:
            register(subparsers)
    return parser


def configure_logging(level: str) -> None:
    """Send log records to standard error with time, level and logger name."""
    logging.basicConfig(
        level=getattr(logging, level),
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )
    for noisy in ("great_expectations", "alembic", "urllib3", "matplotlib", "numba", "shap", "distributed"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, getattr(logging, level)))


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the process exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_logging(args.log_level)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        result = args.func(args)
    except HivcomorbError as exc:
        logger.error("%s", exc)
        return 1
    except KeyboardInterrupt:
        logger.error("Interrupted; outputs already written are complete, partial ones were removed")
        return 130
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
