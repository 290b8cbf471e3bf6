"""The nightly job in one command: lock the device, sweep, check for regressions, report.

    python nightly.py                                   # conf/experiment/nightly.yaml on this machine
    python nightly.py tracking=server                   # Hydra overrides go to run.py as given
    python nightly.py --wait 3600 --threshold 10 model=resnet18,resnet50
    python nightly.py --budget 8                        # the night is 8 hours here (default 6)

1. Takes the device lock (``bench.controller.lock``), so two nightlies never time one device at once.
2. Estimates how long the grid takes on this device (``bench.controller.estimate``: each point's earlier nightlies
   in the store, else a probe of one eager fp32 call per model and input) and fits it into ``--budget``: whole
   models dropped, the most expensive first, said in one line; a grid whose models the overrides chose
   (``model=...``) and that does not fit, or a grid of which nothing fits, is refused (exit 2) before measuring.
3. Sweeps what ``python run.py -m experiment=nightly tracking.kind=nightly label=nightly-<date>`` would,
   in this process and through the same route (``bench.controller.sweep.run_grid``): run again the same night,
   it resumes the sweep (the same grid and label finish what an interruption left). The sweep's report is
   attached to its parent run, as for every sweep.
4. Compares the nightly with the device's previous ones (``analysis.regress``) and attaches the summary
   and the history plots of flagged series to the parent run as ``regressions/``.

It sits above ``bench/`` and ``analysis/`` (it uses both) and imports no torch.

Exit status (bench/contract/exits.py): 0 all well (or no baseline yet), 1 failed points, an incomplete sweep or
one that recorded nothing (and no regression), 2 bad input (a grid that cannot fit the budget included),
3 regression(s), 4 the device is locked by another nightly, 128 + N stopped by signal N.
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
import signal
import sys
import tempfile
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from analysis.build import build_report
from analysis.plots import write_regression_plots
from analysis.regress import add_rule_arguments, check_regressions, rules_from
from analysis.select import Selection
from bench.contract.logs import configure_logging
from bench.store.reader import connect
from bench.contract import exits
from bench.contract.errors import ConfigError, OneLineParser
from bench.contract.names import HOST_NAME, NIGHTLY_REGRESSIONS, NIGHTLY_STATUS
from bench.contract.protocol import FAILED
from bench.controller.config import hydra_argv, register_configs
from bench.controller.estimate import Cost, estimate, hours_above, read_history
from bench.controller.progress import duration
from bench.controller.executors import Device
from bench.controller.lock import DEFAULT_LOCK_DIR, LockBusy, device_lock
from bench.controller.plan import make_grid
from bench.controller.signals import Interrupted, signals_interrupt
from bench.controller.sweep import Outcome as SweepOutcome, run_grid
from bench.store.address import tracking_uri

log = logging.getLogger("nightly")

ROOT = Path(__file__).resolve().parent
KIND = "nightly"
# Set by the nightly command itself; an override of them would split or mislabel the nightly.
RESERVED = {"tracking.kind": "nothing (nightly runs are kind nightly)", "label": "--date", "experiment": "--grid",
            "resume": "nothing (the same night continues its sweep, a new night starts afresh)"}


@dataclass
class Night:
    """What tonight's run will do, settled before anything starts."""

    grid: str  # conf/experiment/<grid>.yaml
    device: str  # the config's device: cpu, cuda:N or auto (the measuring side then says which)
    executor: dict  # how the measuring side is reached (its host names the lock of a remote device)
    date: str  # YYYY-MM-DD
    uri: str
    experiment: str
    overrides: list[str]
    configs: list  # one composed config per point, as run.py -m composes them
    points: list[list[str]]  # each point's overrides
    models_chosen: bool = False  # the overrides choose the models (model=...): the budget never drops one

    @property
    def label(self) -> str:
        return f"{KIND}-{self.date}"

    def arguments(self) -> list[str]:
        """Tonight's sweep as ``python run.py -m`` takes it."""
        return [*tonight(self.grid, self.date), *self.overrides]


@dataclass
class Outcome:
    """What the night produced, and the exit status it adds up to."""

    sweep: SweepOutcome
    regressions: int = 0
    summary_text: str = ""

    @property
    def exit_code(self) -> int:
        if self.sweep.interrupted is not None:
            return self.sweep.exit_code
        if self.sweep.parent_id is None:
            return exits.FAILED_POINTS
        if self.regressions:
            return exits.REGRESSION
        broken = self.sweep.counts[FAILED] or not self.sweep.complete
        return exits.FAILED_POINTS if broken else exits.OK

    def summary(self) -> str:
        if self.sweep.parent_id is None:
            return f"The nightly sweep recorded no point ({self.sweep.summary()}); its output is above."
        meaning = {exits.OK: "all well", exits.REGRESSION: "regression", exits.FAILED_POINTS:
                   "failed points or an incomplete sweep"}.get(self.exit_code, "stopped")
        state = "complete" if self.sweep.complete else "incomplete"
        return (f"Nightly {self.sweep.name}: {self.sweep.summary()} ({state}). "
                f"Exit status {self.exit_code} ({meaning}).")


def plan(grid: str, overrides: Sequence[str], on: str | None = None) -> Night:
    """Check the overrides and settle date, store and device; every mistake is one ConfigError."""
    try:
        parsed = OverridesParser.create().parse_overrides(list(overrides))
    except HydraException as exc:
        raise ConfigError(f"override: {str(exc).splitlines()[0]}") from None
    chosen = False
    for override in parsed:
        key = override.key_or_group
        chosen = chosen or key in ("model", "model.name")
        if key in RESERVED:
            raise ConfigError(f"override {override.input_line!r}: the nightly command sets {key}; use "
                              f"{RESERVED[key]} instead")
        if key in ("device", "executor", "executor.host") and override.is_sweep_override():
            raise ConfigError(f"override {override.input_line!r}: one nightly times one device; run one nightly "
                              "per device (each takes its own lock)")
    try:
        day = date.fromisoformat(on).isoformat() if on else datetime.now().date().isoformat()
    except ValueError:
        raise ConfigError(f"--date {on!r} is not a date like 2024-05-01") from None
    configs, points = grid_points(grid, tonight(grid, day), list(overrides))
    first = configs[0]
    executor = OmegaConf.to_container(first.executor, resolve=True)
    if executor["kind"] == "plan":
        raise ConfigError("the nightly measures: executor=plan writes plans only")
    return Night(grid, first.device, executor, day, tracking_uri(first.tracking.uri), first.tracking.experiment,
                 list(overrides), configs, points, chosen)


def tonight(grid: str, day: str) -> list[str]:
    """The overrides the nightly command sets: resume=last continues the same night's sweep, finished or not
    (recorded points are not measured again)."""
    return [f"experiment={grid}", f"tracking.kind={KIND}", f"label={KIND}-{day}", "resume=last"]


def grid_points(grid: str, own: list[str], overrides: list[str]) -> tuple[list, list[list[str]]]:
    """The points of ``python run.py -m OWN OVERRIDES`` as Hydra's sweeper makes them: the grid's sweeper params,
    then the nightly's own overrides and the user's, expanded into one composed config per point."""
    register_configs()
    arguments = hydra_argv(["nightly.py", "-m", *own, *overrides])[2:]
    parser = OverridesParser.create()
    try:
        with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
            base = compose("config", overrides=[o.input_line for o in parser.parse_overrides(arguments)
                                                if not o.is_sweep_override()], return_hydra_config=True)
            params = [f"{key}={value}" for key, value in (base.hydra.sweeper.params or {}).items()]
            points = BasicSweeper.split_arguments(parser.parse_overrides([*params, *arguments]), None)[0]
            return [compose("config", overrides=point) for point in points], points
    except (HydraException, OmegaConfBaseException) as exc:
        raise ConfigError(f"{str(exc).splitlines()[0]} (grid {grid!r}, overrides: {' '.join(overrides) or 'none'})") \
            from None


def device_name(executor: dict, device: str, facts: dict) -> str:
    """The device the nightly times, for its lock: ``device=auto`` is what the measuring side says it has."""
    where = "" if executor["kind"] == "local" else f"{executor['host']}-"
    if device != "auto":
        return where + device
    return where + ("cuda:0" if any(d["device"].startswith("cuda") for d in facts["devices"]) else "cpu")


def fit_budget(night: Night, budget_s: float, take_lock: Callable[[dict], None]) -> Night:
    """Tonight's grid estimated on the device (``bench.controller.estimate``) and fitted into the budget: whole
    models dropped, the most expensive first, unless the overrides chose them; ConfigError when it cannot fit.
    The device's worker is started (the lock taken as soon as it says which device it is), resolves the grid and
    probes what the store has no history for; then it is stopped, and the sweep starts its own."""
    grid, device = make_grid(night.configs, night.points), Device(night.executor)
    with signals_interrupt():
        try:
            facts = device.start()
            take_lock(facts)
            resolved = device.resolve(grid.plans)
            if any("error" in point for point in resolved):
                return night  # the sweep names the wrong point, in one line, before it measures anything
            plans = [point["plan"] for point in resolved]
            host = facts["host"][HOST_NAME]
            keys = [plan.key(host) for plan in plans]
            measured = {key for key, plan in zip(keys, plans) if not plan.resolution.skip_reason}
            history = read_history(night.uri, night.experiment, KIND, host, night.label, measured)
            costs = estimate(device, plans, host, history.walls)
        except (Interrupted, KeyboardInterrupt):
            device.kill()
            raise
        finally:
            device.stop()
    return fit(night, costs, keys, history.recorded, budget_s)


def subset(night: Night, models: list[str], costs: list[Cost]) -> Night:
    """The night with only these models' points (each point's overrides as the full grid had them)."""
    keep = [index for index, cost in enumerate(costs) if cost.model in models]
    overrides = night.overrides if len(models) == len(set(c.model for c in costs)) else \
        [*night.overrides, f"model={','.join(models)}"]
    return dataclasses.replace(night, configs=[night.configs[i] for i in keep], points=[night.points[i] for i in keep],
                               overrides=overrides)


def fit(night: Night, costs: list[Cost], keys: list[str], recorded: dict, budget_s: float) -> Night:
    """The largest grid that fits: the whole grid, else (models not chosen) without its most expensive models.
    A grid that tonight's sweep has begun costs only its points not recorded yet (it resumes)."""
    models = list(dict.fromkeys(cost.model for cost in costs))
    per_model = {model: sum(c.seconds for c in costs if c.model == model) for model in models}
    total, budget = sum(per_model.values()), duration(budget_s)
    expensive = sorted(models, key=per_model.get, reverse=True)
    tries = 1 if night.models_chosen else len(models)
    for dropped in (expensive[:count] for count in range(tries)):
        kept = subset(night, [m for m in models if m not in dropped], costs)
        held = recorded.get(make_grid(kept.configs, kept.points).key, set()) if recorded else set()
        left = [i for i, cost in enumerate(costs) if cost.model not in dropped and keys[i] not in held]
        seconds = sum(costs[i].seconds for i in left)
        if seconds > budget_s:
            continue
        skipped = sum(costs[i].source == "skipped" for i in left)
        skipped = f"; {skipped} skipped here" if skipped else ""
        resumed = f" ({len(kept.points) - len(left)} recorded tonight already)" if held else ""
        if dropped:
            log.warning("the grid would take about %s here (budget %s): dropped %s (%s); measuring the other %d "
                        "model(s), about %s; keep them with --budget %s or choose the models yourself (model=...)",
                        duration(total), budget, ", ".join(dropped), duration(sum(per_model[m] for m in dropped)),
                        len(models) - len(dropped), duration(seconds), hours_above(total))
        else:
            log.info("nightly grid: %d point(s)%s, about %s on this device (budget %s%s)",
                     len(kept.points), resumed, duration(seconds), budget, skipped)
        return kept
    cheapest = "" if night.models_chosen or len(models) < 2 else \
        f", even its cheapest model ({expensive[-1]}) alone about {duration(per_model[expensive[-1]])}"
    least = per_model[expensive[-1]] if cheapest else total
    raise ConfigError(f"the nightly grid would take about {duration(total)} on this device (budget {budget}"
                      f"{cheapest}): give --budget {hours_above(least)} or more, or fewer points (model=..., "
                      "precision=...)")


def run_nightly(night: Night, args: argparse.Namespace, lock: ExitStack) -> Outcome:
    """Estimate, sweep, check, report; each step says what it does. The device's lock is taken first, or, with
    device=auto, as soon as the measuring side has said which device it is, before anything is measured."""
    held = []

    def take_lock(facts: dict) -> None:
        if not held:
            device = device_name(night.executor, night.device, facts)
            lock.enter_context(device_lock(device, args.lock_dir, args.wait))
            held.append(device)

    if night.device != "auto":  # known now: locked before the measuring side starts
        take_lock({})
    log.info("step 1/3: estimate tonight's grid on %s against the budget (--budget %s h)",
             night.device if night.device != "auto" else "the device the measuring side finds", f"{args.budget:g}")
    try:
        night = fit_budget(night, args.budget * 3600, take_lock)
    except (Interrupted, KeyboardInterrupt) as exc:
        return Outcome(SweepOutcome(interrupted=exc if isinstance(exc, Interrupted) else Interrupted(signal.SIGINT)))
    log.info("step 2/3: sweep %s on %s (grid conf/experiment/%s.yaml, label %s)", night.date,
             night.device if night.device != "auto" else "the device the measuring side finds", night.grid, night.label)
    log.info("the same as: python run.py -m %s", " ".join(night.arguments()))
    outcome = Outcome(run_grid(night.configs, night.points, multirun=True, on_device=take_lock))
    if outcome.sweep.parent_id is None or outcome.sweep.interrupted is not None:
        return outcome
    log.info("step 3/3: regression check of sweep %s against the previous nightlies", outcome.sweep.parent_id)
    check = check_regressions(Selection(experiment=night.experiment, kind=KIND), night.uri, rules_from(args),
                              newest=outcome.sweep.parent_id)
    outcome.regressions, outcome.summary_text = len(check.regressions), check.render("text")
    client, _ = connect(night.uri)
    client.set_tag(outcome.sweep.parent_id, NIGHTLY_REGRESSIONS, str(outcome.regressions))
    client.set_tag(outcome.sweep.parent_id, NIGHTLY_STATUS, check.status)
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.out / "regressions" if args.out else Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        for fmt, name in (("text", "regressions.txt"), ("markdown", "regressions.md")):
            (folder / name).write_text(check.render(fmt), encoding="utf-8")
        if not args.no_plots:
            write_regression_plots(check, folder / "plots")
        client.log_artifacts(outcome.sweep.parent_id, str(folder), artifact_path="regressions")
    log.info("regression summary attached to run %s as regressions/", outcome.sweep.parent_id)
    if args.out:
        build_report(Selection(experiment=night.experiment, sweep=outcome.sweep.parent_id), night.uri,
                     folder=args.out / "report", plots=not args.no_plots)
        log.info("report and regression summary also written to %s", args.out)
    return outcome


def budget_hours(text: str) -> float:
    """``--budget``: hours, more than 0."""
    try:
        hours = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of hours") from None
    if not hours > 0:
        raise argparse.ArgumentTypeError(f"{text} must be more than 0 hours")
    return hours


def parser() -> argparse.ArgumentParser:
    p = OneLineParser(
        prog="python nightly.py",
        description="The nightly job: take the device lock, fit the nightly grid into the night (--budget), sweep\n"
                    "it (resuming tonight's sweep if it was interrupted), compare it with the previous nightlies,\n"
                    "attach the summary.\n"
                    "Exit status: 0 all well or no baseline yet, 1 failed points or an incomplete sweep, 2 bad\n"
                    "input, 3 regression(s), 4 the device is locked by another nightly, 128+N stopped by signal N.",
        epilog="examples:\n"
               "  python nightly.py\n"
               "  python nightly.py tracking=server device=cuda:1\n"
               "  python nightly.py --budget 3 model=resnet18,resnet34,resnet50\n"
               "  python nightly.py --wait 7200 --test mannwhitney model=resnet18,resnet50\n",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("overrides", nargs="*", metavar="OVERRIDE",
                   help="Hydra overrides for run.py, e.g. tracking=server device=cuda:1 model=resnet18,resnet50")
    n = p.add_argument_group("the nightly")
    n.add_argument("--grid", default=KIND, metavar="NAME",
                   help="grid: conf/experiment/NAME.yaml (default: %(default)s)")
    n.add_argument("--budget", type=budget_hours, default=6.0, metavar="HOURS",
                   help="the night's length on this device: a grid estimated to take longer drops its most expensive "
                        "models (or, with model=..., is refused) (default: %(default)g)")
    n.add_argument("--date", metavar="YYYY-MM-DD", help="the night (default: today); the same night resumes its sweep")
    n.add_argument("--lock-dir", type=Path, default=Path(DEFAULT_LOCK_DIR), metavar="DIR",
                   help="where device locks live (default: %(default)s)")
    n.add_argument("--wait", type=float, default=0.0, metavar="SECONDS",
                   help="wait this long for another nightly's lock on the device, then exit 4 (default: 0)")
    n.add_argument("--no-plots", action="store_true", help="attach no history plots")
    n.add_argument("--out", type=Path, metavar="DIR",
                   help="also write the report and the regression summary into DIR (e.g. for a CI artifact)")
    add_rule_arguments(p)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    configure_logging()
    try:
        rules_from(args).validate()
        night = plan(args.grid, args.overrides, args.date)
        with ExitStack() as lock:
            outcome = run_nightly(night, args, lock)
    except LockBusy as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exits.LOCKED
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exits.BAD_INPUT
    sys.stdout.write(outcome.summary_text)
    print(outcome.summary())
    return outcome.exit_code


if __name__ == "__main__":
    sys.exit(main())
