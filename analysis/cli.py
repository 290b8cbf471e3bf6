"""Command-line pieces shared by ``analysis.report`` and ``analysis.regress``."""
from __future__ import annotations

import argparse
import logging
import sys


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
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")
