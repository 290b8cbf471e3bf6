"""The measuring core on its own, for devices the controller cannot reach.

    python3 -m bench.device plans.jsonl --out results/   # measure a plans file (run.py executor=plan)
    python3 -m bench.device facts                        # what this device is and has, as JSON
    python3 -m bench.device serve                        # a worker on stdin/stdout (executors start it)

A plans file is validated and resolved whole before anything is measured; each measurement is an
entry in the results folder, written whole. Run the same command again after an interruption and
it measures only what the folder does not hold yet. Upload with ``python -m bench.store.sync --spool
results/`` on a machine that reaches the tracking store.

Exit status: 0 every point measured (ok or skipped), 1 some points failed, 2 bad input, 130 interrupted.
"""
import argparse
import json
import logging
import sys

from bench.contract import results
from bench.contract.errors import OneLineParser
from bench.contract.protocol import FAILED, OK, SKIPPED, PlanError, read_plans
from bench.contract.records import Plan
from bench.device.worker import collect_facts, configure_logging, measure_plan, resolve_plans, run_in_child, \
    serve_stdio
from bench.contract.names import HOST_NAME, LATENCY_MS

log = logging.getLogger("bench.device")


class BadInput(Exception):
    """A mistake in the command's input: one line, exit status 2."""


def check_facts(facts: dict) -> None:
    if "missing" in facts:
        raise BadInput("{} (Python {} at {}) cannot measure: {} is not installed".format(
            facts["host"][HOST_NAME], facts["python"], facts["executable"], facts["missing"]))


def measure_file(path: str, out: str) -> int:
    try:
        with open(path) as handle:
            text = handle.read()
    except OSError as exc:
        raise BadInput("plans file {}: {}".format(path, exc.strerror or exc))
    try:
        plans = read_plans(text, path)
    except PlanError as exc:
        raise BadInput(str(exc))
    reply, death = run_in_child(lambda: {"op": "facts", "facts": collect_facts()}, None)
    if reply is None:
        raise RuntimeError("collecting this device's facts died with " + death)
    facts = reply["facts"]
    check_facts(facts)
    reply, death = run_in_child(lambda: resolve_plans(plans), None)
    if reply is None:
        raise RuntimeError("resolving the plans died with " + death)
    bad = [(number, point["error"]) for number, point in enumerate(reply["points"], 1) if "error" in point]
    if bad:
        raise BadInput("{} plan {} of {}: {}{}".format(path, bad[0][0], len(plans), bad[0][1],
                                                       " ({} more bad plan(s))".format(len(bad) - 1) if len(bad) > 1
                                                       else ""))
    host = facts["host"][HOST_NAME]
    done = results.recorded(out)
    resolved = [Plan.from_json(point["plan"]) for point in reply["points"]]
    todo = [plan for plan in resolved if ((plan.sweep or {}).get("id"), plan.key(host)) not in done]
    if len(todo) < len(resolved):
        log.info("%d of %d point(s) are already in %s; measuring the other %d", len(resolved) - len(todo),
                 len(resolved), out, len(todo))
    counts = {OK: 0, SKIPPED: 0, FAILED: 0}
    for index, plan in enumerate(todo, 1):
        name = plan.name
        log.info("[%d/%d] %s: measuring", index, len(todo), name)
        measurement = measure_plan(plan, None)
        entry = results.write_entry(out, measurement.to_json())
        counts[measurement.status] += 1
        summary = measurement.reason if measurement.status != OK else "median {:.3g} ms".format(
            measurement.metrics[LATENCY_MS])
        log.info("[%d/%d] %s: %s (%s); written to %s", index, len(todo), name, measurement.status, summary, entry)
    print(f"{len(todo)} measured ({counts[OK]} ok, {counts[SKIPPED]} skipped, {counts[FAILED]} failed), "
          f"{len(resolved) - len(todo)} already in {out}; upload: python -m bench.store.sync --spool {out}")
    return 1 if counts[FAILED] else 0


def main(argv=None) -> int:
    parser = OneLineParser(prog="python3 -m bench.device", description=__doc__.split("\n\n")[0],
                                     epilog=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("what", metavar="PLANS.jsonl|facts|serve",
                        help="a plans file to measure, 'facts' to print what this device has, or 'serve'")
    parser.add_argument("--out", metavar="DIR", help="results folder for a plans file (required with one)")
    args = parser.parse_args(argv)
    if args.what == "serve":
        return serve_stdio()
    configure_logging()
    try:
        if args.what == "facts":
            reply, death = run_in_child(lambda: {"op": "facts", "facts": collect_facts()}, None)
            if reply is None:
                raise RuntimeError("collecting this device's facts died with " + death)
            print(json.dumps(reply["facts"], indent=1, sort_keys=True))
            return 0
        if not args.out:
            raise BadInput("--out DIR is required to measure a plans file (where the measurements go)")
        return measure_file(args.what, args.out)
    except BadInput as exc:
        print("error: {}".format(exc), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: what was measured is in {}; run the same command again to finish".format(args.out),
              file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
