"""Command-line pieces shared by ``analysis.report``, ``analysis.regress`` and ``analysis.recommend``."""
from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence

from bench.contract import exits
from bench.contract.errors import ConfigError
from bench.contract.logs import configure_logging


def run_cli(parser: argparse.ArgumentParser, command: Callable[[argparse.Namespace], int],
            argv: Sequence[str] | None) -> int:
    """Parse, log as asked, run; a mistake is one line ``error: ...`` and exit status 2."""
    args = parser.parse_args(argv)
    setup_logging(args.verbose)
    try:
        return command(args)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exits.BAD_INPUT


def split_list(text: str) -> list[str]:
    """``a,b`` -> ``["a", "b"]`` (list options may also be repeated)."""
    return [part.strip() for part in text.split(",") if part.strip()]


def add_store_and_filters(group: argparse._ArgumentGroup, backend_help: str) -> None:
    """--tracking-uri, --experiment and the point filters, worded alike in every command."""
    group.add_argument("--tracking-uri", metavar="URI",
                       help="MLflow store (default as run.py: $MLFLOW_TRACKING_URI, else sqlite:///./mlflow.db)")
    group.add_argument("--experiment", default="trt-bench", metavar="NAME",
                       help="MLflow experiment (default: %(default)s)")
    for name, what in (("device", "part of the device name (e.g. xavier) or a host name"), ("model", "model name"),
                       ("backend", backend_help), ("precision", "fp32, fp16, bf16, int8"),
                       ("input", "input size: 256, 256x320 or 1x3x256x256")):
        group.add_argument(f"--{name}", type=split_list, action="extend", default=[], metavar="X", help=what)


def filters(args: argparse.Namespace) -> dict[str, tuple[str, ...]]:
    """The point filters of ``add_store_and_filters`` as ``Selection`` keyword arguments."""
    return {"devices": tuple(args.device), "models": tuple(args.model), "backends": tuple(args.backend),
            "precisions": tuple(args.precision), "inputs": tuple(args.input)}


def add_verbose(group: argparse._ArgumentGroup) -> None:
    group.add_argument("-v", "--verbose", action="store_true", help="log progress to stderr")


def setup_logging(verbose: bool) -> None:
    configure_logging(logging.INFO if verbose else logging.WARNING)
