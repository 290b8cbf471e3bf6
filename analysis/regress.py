"""Noise-aware regression check: the newest nightly of each device against that device's own history.

    python -m analysis.regress                                  # newest nightly per device vs the ones before
    python -m analysis.regress --sweep <parent-run-id> --format markdown --plots regress/
    python -m analysis.regress --test mannwhitney --threshold 10 --model resnet50

The rules are analysis.judge's (and are stated in every summary); this module reads the history from
the store and is the command line. Exit status: 0 nothing regressed (or no baseline yet), 1
regression(s), 2 bad input.
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from analysis.cli import add_store_and_filters, add_verbose, filters, run_cli
from analysis.findings import FORMATS, TESTS, Nightly, RegressionCheck, Rules
from analysis.judge import judge_device, nightly_points
from analysis.plots import write_regression_plots
from analysis.select import Selection, load_latencies, load_runs
from bench.store.reader import connect, experiment_id, find_sweep
from bench.contract.errors import ConfigError, OneLineParser
from bench.contract.names import CHILD, KIND, ROLE

log = logging.getLogger(__name__)


def _no_history(client, exp_id: str | None, kind: str) -> bool:
    if exp_id is None:
        return True
    return not client.search_runs([exp_id], f"tags.`{ROLE}` = '{CHILD}' and tags.`{KIND}` = '{kind}'",
                                  max_results=1)


def check_regressions(selection: Selection = Selection(kind="nightly"), uri: str | None = None,
                      rules: Rules = Rules(), newest: str | None = None) -> RegressionCheck:
    """Judge the newest nightly (``newest``: a sweep's parent run id; default the newest per device)."""
    rules.validate()
    kind = selection.kind or "nightly"
    client, uri = connect(uri)
    result = RegressionCheck(rules, uri, selection.experiment)
    found = client.get_experiment_by_name(selection.experiment)
    if _no_history(client, found.experiment_id if found else None, kind):
        result.notes.append(f"No {kind} runs yet in experiment {selection.experiment!r}: no baseline, nothing to "
                            "compare.")
        return result
    if newest:
        newest = find_sweep(client, experiment_id(client, selection.experiment, uri), newest,
                            selection.experiment).info.run_id
    log.info("loading the %s history", kind)
    runs = load_runs(dataclasses.replace(selection, sweep=None, kind=kind), uri)
    points = nightly_points(runs)
    if newest and newest not in set(points["sweep"]):
        raise ConfigError(f"sweep {newest} has no {kind} runs in the selection (tag bench.kind={kind})")
    devices = points[["host", "device"]].drop_duplicates() if not newest else \
        points.loc[points["sweep"] == newest, ["host", "device"]].drop_duplicates()
    for host, device in devices.itertuples(index=False):
        mine = points[(points["host"] == host) & (points["device"] == device)]
        order = mine.groupby("sweep")["sweep_time"].min().sort_values(kind="stable")
        sweeps = list(order.index)
        at = sweeps.index(newest) if newest else len(sweeps) - 1
        baseline = [(s, order[s]) for s in sweeps[max(0, at - rules.window):at]]
        nightly = Nightly(host, device, sweeps[at], order.iloc[at], baseline)
        result.nightlies.append(nightly)
        log.info("%s on %s: nightly %s against %d earlier nightly(s)", device, host, nightly.sweep, len(baseline))
        judge_device(result, points, nightly, sweeps[at - 1] if at > 0 else None,
                     lambda runs: _samples(runs, client))
    return result


def _samples(runs: list[tuple[str, bool]], client) -> np.ndarray:
    """Per-call latencies of (run id, raw baseline?) pairs, pooled, from the runs' artifacts."""
    return np.concatenate([load_latencies(run_id, raw=bool(raw), client=client).to_numpy() for run_id, raw in runs])


def _percent(text: str) -> float:
    try:
        return float(text.strip().removesuffix("%")) / 100
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a percentage like 5 or 5%") from None


def add_rule_arguments(parser: argparse.ArgumentParser) -> None:
    """The judging options, shared by this CLI and ``python nightly.py``."""
    r = parser.add_argument_group("regression rules (stated in every summary)")
    d = Rules()
    r.add_argument("--window", type=int, default=d.window, metavar="N",
                   help="baseline: the device's previous N nightlies (default: %(default)s)")
    r.add_argument("--min-baseline", type=int, default=d.min_baseline, metavar="N",
                   help="fewer ok baseline values: 'no baseline yet' for that series (default: %(default)s)")
    r.add_argument("--threshold", type=_percent, default=d.threshold, metavar="PCT",
                   help="relative latency change that matters, in percent (default: 5)")
    r.add_argument("--z", type=float, default=d.z, help="robust z-score beyond which a change is not noise "
                                                       "(default: %(default)s)")
    r.add_argument("--test", choices=TESTS, default=d.test,
                   help="mad: robust z on nightly medians (night-to-night noise); mannwhitney: U test on the "
                        "per-call latencies (asv's test, within-run noise) (default: %(default)s)")
    r.add_argument("--alpha", type=float, default=d.alpha, help="Mann-Whitney significance (default: %(default)s)")
    r.add_argument("--agreement-drop", type=float, default=100 * d.agreement_drop, metavar="POINTS",
                   help="agreement drop that is a regression, in percentage points (default: 1)")
    r.add_argument("--rel-err-factor", type=float, default=d.rel_err_factor, metavar="X",
                   help="relative L2 error above X times the baseline is a regression (default: %(default)s)")


def rules_from(args: argparse.Namespace) -> Rules:
    return Rules(window=args.window, min_baseline=args.min_baseline, threshold=args.threshold, z=args.z,
                 test=args.test, alpha=args.alpha, agreement_drop=args.agreement_drop / 100,
                 rel_err_factor=args.rel_err_factor)


def parser() -> argparse.ArgumentParser:
    p = OneLineParser(
        prog="python -m analysis.regress",
        description="Compare the newest nightly of each device with its previous nightlies: slower or faster\n"
                    "series (beyond a threshold AND the series' own noise), accuracy drops, new failures.\n"
                    "Exit status: 0 nothing regressed (or no baseline yet), 1 regression(s), 2 bad input.",
        epilog="examples:\n"
               "  python -m analysis.regress\n"
               "  python -m analysis.regress --sweep <parent-run-id> --format markdown --plots regress/\n"
               "  python -m analysis.regress --device xavier --threshold 10 --z 4\n",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    s = p.add_argument_group("selection (list options take a,b,c or repeat)")
    add_store_and_filters(s, backend_help="backend variant as in run names, e.g. onnxruntime, inductor+cudagraphs")
    s.add_argument("--kind", default="nightly", help="bench.kind of the sweeps compared (default: %(default)s)")
    s.add_argument("--sweep", metavar="RUN_ID", help="the nightly to judge (its parent run id); default: the newest "
                                                     "nightly of each device")
    s.add_argument("--since", metavar="WHEN", help="only history since WHEN: 2024-05-01, 30d, 8w")
    add_rule_arguments(p)
    o = p.add_argument_group("output")
    o.add_argument("--format", choices=FORMATS, default="text", help="summary format (default: %(default)s)")
    o.add_argument("--plots", type=Path, metavar="DIR", help="write a history plot per flagged series into DIR")
    add_verbose(o)
    return p


def check(args: argparse.Namespace) -> int:
    selection = Selection(experiment=args.experiment, since=args.since, kind=args.kind, **filters(args))
    result = check_regressions(selection, args.tracking_uri, rules_from(args), args.sweep)
    plots = write_regression_plots(result, args.plots) if args.plots else []
    sys.stdout.write(result.render(args.format))
    for path in plots:
        print(f"plot: {path}")
    return result.exit_code


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(parser(), check, argv)


if __name__ == "__main__":
    sys.exit(main())
