"""The comparison the blog made by hand, generated from MLflow: tables, plots, one folder.

    python -m analysis.report --latest                      # newest sweep, text tables
    python -m analysis.report --format markdown --precision fp16,int8
    python -m analysis.report --latest --out report/ --attach
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from analysis.build import build_report
from analysis.cli import add_store_and_filters, add_verbose, filters, run_cli, split_list
from analysis.render import FORMATS
from analysis.select import REPEATS, Selection
from bench.contract import exits
from bench.contract.errors import OneLineParser


def parser() -> argparse.ArgumentParser:
    p = OneLineParser(
        prog="python -m analysis.report",
        description="Tables (the blog's per-device latency table, speed-ups, accuracy, conversion time,\n"
                    "devices side by side) and plots from the benchmark runs in MLflow. Only ok runs give\n"
                    "numbers; skipped and failed points are marked cells with the reason as a footnote.",
        epilog="examples:\n"
               "  python -m analysis.report --latest\n"
               "  python -m analysis.report --since 7d --model resnet18,resnet50 --format markdown\n"
               "  python -m analysis.report --sweep <parent-run-id> --out report/ --attach\n",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    s = p.add_argument_group("selection (list options take a,b,c or repeat)")
    add_store_and_filters(s, backend_help="backend variant as in run names, e.g. onnxruntime, inductor+cudagraphs")
    one = s.add_mutually_exclusive_group()
    one.add_argument("--sweep", metavar="RUN_ID", help="only the points of this sweep (its parent run id)")
    one.add_argument("--latest", action="store_true", help="only the points of the newest sweep")
    s.add_argument("--since", metavar="WHEN",
                   help="runs started at or after WHEN: 2024-05-01, 2024-05-01T08:00, 12h, 7d")
    s.add_argument("--until", metavar="WHEN", help="runs started at or before WHEN (same forms)")
    s.add_argument("--kind", help="only runs of this bench.kind, e.g. sweep or nightly")
    s.add_argument("--repeats", choices=REPEATS, default="newest",
                   help="a point measured more than once: its newest run, or the median of its ok runs "
                        "(default: %(default)s)")
    t = p.add_argument_group("cross-device tables (made when two or more devices are selected)")
    t.add_argument("--cross-precision", type=split_list, action="extend", default=[], metavar="P",
                   help="only these: raw, fp32, fp16, bf16, int8 (default: all present)")
    t.add_argument("--cross-backend", metavar="NAME", help="only this backend (default: each device's backends)")
    o = p.add_argument_group("output")
    o.add_argument("--format", choices=(*FORMATS, "none"), default="text",
                   help="what goes to stdout (default: %(default)s; none: nothing, e.g. with --attach)")
    o.add_argument("--out", type=Path, metavar="DIR",
                   help="also write report.{txt,md,html}, tables/*.csv and plots/*.png into DIR")
    o.add_argument("--no-plots", action="store_true", help="write no PNGs")
    o.add_argument("--attach", action="store_true",
                   help="log the report (tables and plots) as artifacts report/ of the sweep's parent run")
    add_verbose(o)
    return p


def make(args: argparse.Namespace) -> int:
    selection = Selection(experiment=args.experiment, sweep="latest" if args.latest else args.sweep,
                          since=args.since, until=args.until, kind=args.kind, **filters(args))
    report = build_report(selection, args.tracking_uri, args.repeats, args.cross_precision, args.cross_backend,
                          args.out, plots=not args.no_plots, attach_to_sweep=args.attach)
    if args.format != "none":
        sys.stdout.write(report.render(args.format))
    return exits.OK


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(parser(), make, argv)


if __name__ == "__main__":
    sys.exit(main())
