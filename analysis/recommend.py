"""The fastest variant within an accuracy budget, per device and model, and the faster ones it turned down.

    python -m analysis.recommend                                   # every sweep, the budget the data allows
    python -m analysis.recommend --latest --max-top1-drop 1.0      # labelled images: at most 1 point of top-1 lost
    python -m analysis.recommend --device xavier --min-agreement 0.99   # no labels: 99 % agreement with eager fp32

How candidates are chosen and turned down: analysis/choose.py. A top-1 budget is judged only on labelled
images (``accuracy=folder`` with class folders), against eager fp32 on the same images; noise-only
accuracy is never used for it.

Without a budget: at most 1 point of top-1 lost where the selected runs were measured on labelled images,
else at least 99 % agreement with eager fp32; the table says which budget it applied.

Exit status: 0 printed, 2 bad input (a budget that no selected run can be judged by).
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import pandas as pd

from analysis.choose import Budget, default_budget, recommend, recommendation_table
from analysis.cli import add_store_and_filters, add_verbose, filters, run_cli
from analysis.render import table_markdown, table_text
from analysis.select import REPEATS, Selection, aggregate, load_runs
from bench.contract import exits
from bench.contract.errors import OneLineParser

FORMATS = ("text", "markdown")


def add_budget_arguments(parser: argparse.ArgumentParser) -> None:
    b = parser.add_argument_group("accuracy budget")
    b.add_argument("--max-top1-drop", type=float, metavar="POINTS",
                   help="at most this many percentage points of top-1 below eager fp32 (labelled images)")
    b.add_argument("--min-agreement", type=float, metavar="FRACTION",
                   help="at least this share of top-1 classes (or pixels) agreeing with eager fp32, e.g. 0.99")
    b.add_argument("--allow-unstable", action="store_true", help="also take unstable or throttled measurements")


def budget_from(args: argparse.Namespace, points: pd.DataFrame) -> Budget:
    """The budget asked for, or the one the selected runs allow (top-1 where labelled, agreement otherwise)."""
    if args.max_top1_drop is None and args.min_agreement is None:
        return default_budget(points, args.allow_unstable)
    return Budget(args.max_top1_drop, args.min_agreement, args.allow_unstable)


def parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="python -m analysis.recommend", description=__doc__.split("\n\n")[0],
                                epilog=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawTextHelpFormatter)
    s = p.add_argument_group("selection (list options take a,b,c or repeat)")
    add_store_and_filters(s, backend_help="backend variant as in run names, e.g. onnxruntime, inductor+cudagraphs")
    one = s.add_mutually_exclusive_group()
    one.add_argument("--sweep", metavar="RUN_ID", help="only the points of this sweep (its parent run id)")
    one.add_argument("--latest", action="store_true", help="only the points of the newest sweep")
    s.add_argument("--since", metavar="WHEN", help="runs started at or after WHEN: 2024-05-01, 12h, 7d")
    s.add_argument("--repeats", choices=REPEATS, default="newest", help="a point measured more than once")
    add_budget_arguments(p)
    o = p.add_argument_group("output")
    o.add_argument("--format", choices=FORMATS, default="text")
    add_verbose(o)
    return p


def answer(args: argparse.Namespace) -> int:
    selection = Selection(experiment=args.experiment, sweep="latest" if args.latest else args.sweep,
                          since=args.since, **filters(args))
    points = aggregate(load_runs(selection, args.tracking_uri), args.repeats)
    budget = budget_from(args, points)
    budget.validate()
    table = recommendation_table(recommend(points, budget), budget)
    sys.stdout.write(table_markdown(table) if args.format == "markdown" else table_text(table))
    return exits.OK


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(parser(), answer, argv)


if __name__ == "__main__":
    sys.exit(main())
