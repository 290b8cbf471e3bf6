"""Command-line pieces shared by ``analysis.report`` and ``analysis.regress``."""
from __future__ import annotations

import argparse


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
