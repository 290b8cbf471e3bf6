"""The nightly job in one command: lock the device, sweep, check for regressions, report.

    python nightly.py                                   # conf/experiment/nightly.yaml on this machine
    python nightly.py tracking=server                   # Hydra overrides go to run.py as given
    python nightly.py --wait 3600 --threshold 10 model=resnet18,resnet50

1. Takes the device lock (``bench.controller.lock``), so two nightlies never time one device at once.
2. Runs ``python run.py -m experiment=nightly tracking.kind=nightly label=nightly-<date>``: run again the
   same night, it resumes the sweep (the same grid and label finish what an interruption left).
   The sweep's report is attached to its parent run by run.py, as for every sweep.
3. Compares the nightly with the device's previous ones (``analysis.regress``) and attaches the summary
   and the history plots of flagged series to the parent run as ``regressions/``.

It sits above ``bench/`` and ``analysis/`` (it uses both) and imports no torch.

Exit status: 0 all well (or no baseline yet), 1 regression(s), 2 bad input or a sweep that recorded
nothing, 3 failed points or an incomplete sweep (and no regression), 4 the device is locked by another
nightly.
"""
from __future__ import annotations

import argparse
import logging
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from analysis.build import build_report
from analysis.plots import write_regression_plots
from analysis.regress import add_rule_arguments, check_regressions, rules_from
from analysis.select import Selection, connect
from bench.controller.config import register_configs
from bench.controller.executors import Device
from bench.controller.lock import DEFAULT_LOCK_DIR, LockBusy, device_lock
from bench.contract.errors import ConfigError, OneLineParser
from bench.store.address import tracking_uri
from bench.contract import names
from bench.contract.protocol import FAILED, STATUSES

log = logging.getLogger("nightly")

ROOT = Path(__file__).resolve().parent
KIND = "nightly"
OK_EXIT, REGRESSION_EXIT, BAD_INPUT_EXIT, FAILED_POINTS_EXIT, LOCKED_EXIT = 0, 1, 2, 3, 4
# Set by the nightly command itself; an override of them would split or mislabel the nightly.
RESERVED = {"tracking.kind": "nothing (nightly runs are kind nightly)", "label": "--date", "experiment": "--grid",
            "resume": "nothing (the same night continues its sweep, a new night starts afresh)"}


@dataclass
class Night:
    """What tonight's run will do, settled before the lock is taken."""

    grid: str  # conf/experiment/<grid>.yaml
    device: str  # the device the points run on, e.g. cpu or cuda:0 (the lock's name)
    date: str  # YYYY-MM-DD
    uri: str
    experiment: str
    overrides: list[str]

    @property
    def label(self) -> str:
        return f"{KIND}-{self.date}"

    def command(self) -> list[str]:
        # resume=last: the same night continues its sweep, finished or not (recorded points are not measured again)
        return [sys.executable, str(ROOT / "run.py"), "-m", f"experiment={self.grid}", f"tracking.kind={KIND}",
                f"label={self.label}", "resume=last", *self.overrides]


@dataclass
class Outcome:
    """What the night produced, and the exit status it adds up to."""

    sweep_exit: int  # run.py's exit status
    parent_id: str | None = None
    points: dict[str, int] | None = None  # ok / skipped / failed
    state: str = ""  # the sweep's bench.sweep_state: complete or incomplete
    regressions: int = 0
    summary_text: str = ""

    @property
    def exit_code(self) -> int:
        if self.parent_id is None:
            return BAD_INPUT_EXIT if self.sweep_exit == BAD_INPUT_EXIT else FAILED_POINTS_EXIT
        if self.regressions:
            return REGRESSION_EXIT
        broken = self.points[FAILED] or self.state != names.COMPLETE or self.sweep_exit not in (0, 1)
        return FAILED_POINTS_EXIT if broken else OK_EXIT

    def summary(self) -> str:
        if self.parent_id is None:
            return f"The nightly sweep recorded no point (run.py exit status {self.sweep_exit}); its output is above."
        counts = ", ".join(f"{n} {status}" for status, n in self.points.items())
        meaning = {OK_EXIT: "all well", REGRESSION_EXIT: "regression", FAILED_POINTS_EXIT:
                   "failed points or an incomplete sweep"}[self.exit_code]
        return (f"Nightly sweep {self.parent_id}: {counts} ({self.state}); run.py exit status {self.sweep_exit}. "
                f"Exit status {self.exit_code} ({meaning}).")


def _compose(grid: str, overrides: list[str]):
    """The config run.py will see (less the grid's sweeps), to learn the device and the store before the lock."""
    register_configs()
    single = [o for o in overrides if not o.startswith(("hydra.", "hydra/"))]
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        return compose("config", overrides=[f"experiment={grid}", *single])


def plan(grid: str, overrides: Sequence[str], on: str | None = None) -> Night:
    """Check the overrides and settle date, store and the device's name; every mistake is one ConfigError."""
    try:
        parsed = OverridesParser.create().parse_overrides(list(overrides))
    except HydraException as exc:
        raise ConfigError(f"override: {str(exc).splitlines()[0]}") from None
    for override in parsed:
        key = override.key_or_group
        if key in RESERVED:
            raise ConfigError(f"override {override.input_line!r}: the nightly command sets {key}; use "
                              f"{RESERVED[key]} instead")
        if key in ("device", "executor", "executor.host") and override.is_sweep_override():
            raise ConfigError(f"override {override.input_line!r}: one nightly times one device; run one nightly "
                              "per device (each takes its own lock)")
    single = [o.input_line for o in parsed if not o.is_sweep_override()]
    try:
        cfg = _compose(grid, single)
    except (HydraException, OmegaConfBaseException) as exc:
        raise ConfigError(f"{str(exc).splitlines()[0]} (grid {grid!r}, overrides: {' '.join(overrides) or 'none'})") \
            from None
    try:
        day = date.fromisoformat(on).isoformat() if on else datetime.now().date().isoformat()
    except ValueError:
        raise ConfigError(f"--date {on!r} is not a date like 2024-05-01") from None
    executor = OmegaConf.to_container(cfg.executor, resolve=True)
    return Night(grid, device_name(executor, cfg.device), day, tracking_uri(cfg.tracking.uri), cfg.tracking.experiment,
                 list(overrides))


def device_name(executor: dict, device: str) -> str:
    """The device the nightly will time, for its lock: ``device=auto`` asks the measuring side what it has."""
    where = "" if executor["kind"] == "local" else f"{executor['host']}-"
    if device != "auto":
        return where + device
    if executor["kind"] == "plan":
        raise ConfigError("the nightly measures: executor=plan writes plans only")
    probe = Device(executor)
    try:
        facts = probe.start()
    finally:
        probe.stop()
    return where + ("cuda:0" if any(d["device"].startswith("cuda") for d in facts["devices"]) else "cpu")


def find_sweep(night: Night) -> tuple[str, dict[str, int], str] | None:
    """Tonight's parent run (by its label), its points by status, and its state; None when nothing was recorded."""
    try:
        client, _ = connect(night.uri)
    except ConfigError:
        return None
    experiment = client.get_experiment_by_name(night.experiment)
    if experiment is None:
        return None
    found = client.search_runs([experiment.experiment_id], f"tags.`{names.LABEL}` = '{night.label}' and "
                                                            f"tags.`{names.ROLE}` = '{names.PARENT}'",
                               max_results=1, order_by=["attributes.start_time DESC"])
    if not found:
        return None
    parent = found[0]
    points = {status: int(parent.data.metrics.get(f"points_{status}", 0)) for status in STATUSES}
    return parent.info.run_id, points, parent.data.tags.get(names.STATE, "")


def run_nightly(night: Night, args: argparse.Namespace, lock_fd: int) -> Outcome:
    """Sweep, check, report; each step says what it does, the sweep streams run.py's own progress."""
    log.info("step 1/2: sweep %s on %s (grid conf/experiment/%s.yaml, label %s)", night.date, night.device,
             night.grid, night.label)
    log.info("running: %s", " ".join(night.command()))
    # The lock's descriptor goes to run.py too: if this process dies, the sweep still holds the lock.
    outcome = Outcome(subprocess.run(night.command(), pass_fds=(lock_fd,), check=False).returncode)
    found = find_sweep(night)
    if found is None:
        return outcome
    outcome.parent_id, outcome.points, outcome.state = found
    log.info("step 2/2: regression check of sweep %s against the previous nightlies", outcome.parent_id)
    check = check_regressions(Selection(experiment=night.experiment, kind=KIND), night.uri, rules_from(args),
                              newest=outcome.parent_id)
    outcome.regressions, outcome.summary_text = len(check.regressions), check.render("text")
    client, _ = connect(night.uri)
    client.set_tag(outcome.parent_id, "nightly.regressions", str(outcome.regressions))
    client.set_tag(outcome.parent_id, "nightly.status", check.status)
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.out / "regressions" if args.out else Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        for fmt, name in (("text", "regressions.txt"), ("markdown", "regressions.md")):
            (folder / name).write_text(check.render(fmt), encoding="utf-8")
        if not args.no_plots:
            write_regression_plots(check, folder / "plots")
        client.log_artifacts(outcome.parent_id, str(folder), artifact_path="regressions")
    log.info("regression summary attached to run %s as regressions/", outcome.parent_id)
    if args.out:
        build_report(Selection(experiment=night.experiment, sweep=outcome.parent_id), night.uri,
                     folder=args.out / "report", plots=not args.no_plots)
        log.info("report and regression summary also written to %s", args.out)
    return outcome


def parser() -> argparse.ArgumentParser:
    p = OneLineParser(
        prog="python nightly.py",
        description="The nightly job: take the device lock, sweep the nightly grid (resuming tonight's sweep if it\n"
                    "was interrupted), compare it with the previous nightlies, attach the summary.\n"
                    "Exit status: 0 all well or no baseline yet, 1 regression(s), 2 bad input, 3 failed points or\n"
                    "an incomplete sweep, 4 the device is locked by another nightly.",
        epilog="examples:\n"
               "  python nightly.py\n"
               "  python nightly.py tracking=server device=cuda:1\n"
               "  python nightly.py --wait 7200 --test mannwhitney model=resnet18,resnet50\n",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("overrides", nargs="*", metavar="OVERRIDE",
                   help="Hydra overrides for run.py, e.g. tracking=server device=cuda:1 model=resnet18,resnet50")
    n = p.add_argument_group("the nightly")
    n.add_argument("--grid", default=KIND, metavar="NAME",
                   help="grid: conf/experiment/NAME.yaml (default: %(default)s)")
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
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        rules_from(args).validate()
        night = plan(args.grid, args.overrides, args.date)
        with device_lock(night.device, args.lock_dir, args.wait) as lock:
            outcome = run_nightly(night, args, lock.fileno())
    except LockBusy as exc:
        print(f"error: {exc}", file=sys.stderr)
        return LOCKED_EXIT
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return BAD_INPUT_EXIT
    sys.stdout.write(outcome.summary_text)
    print(outcome.summary())
    return outcome.exit_code


if __name__ == "__main__":
    sys.exit(main())
