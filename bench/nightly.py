"""The nightly job in one command: lock the device, sweep, check for regressions, report.

    python -m bench.nightly                                   # conf/experiment/nightly.yaml on this device
    python -m bench.nightly tracking=server                   # Hydra overrides go to run.py as given
    python -m bench.nightly --wait 3600 --threshold 10 model=resnet18,resnet50

1. Takes the device lock (``bench.lock``), so two nightlies never time one device at once.
2. Runs ``python run.py -m experiment=nightly tracking.kind=nightly hydra.sweep.dir=<dir>``, where
   ``<dir>`` is ``multirun/nightly/<device>/<date>``: run again the same night, it resumes the sweep
   (points already recorded in it are skipped). Runs are tagged ``bench.kind=nightly``, ``bench.date``
   and, as every run, ``bench.commit``.
3. Compares the nightly with the device's previous ones (``analysis.regress``).
4. Writes the report (``analysis.build_report``) with the regression summary and history plots into
   ``<dir>/report`` and attaches it to the sweep's parent run as artifacts ``report/``.

Exit status: 0 all well (or no baseline yet), 1 regression(s), 2 bad input or a sweep that recorded
nothing, 3 failed points or an incomplete sweep (and no regression), 4 the device is locked by another
nightly.
"""
from __future__ import annotations

import argparse
import logging
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.errors import HydraException
from hydra.core.override_parser.overrides_parser import OverridesParser
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID
from omegaconf.errors import OmegaConfBaseException

from analysis import Selection, build_report
from analysis.regress import RegressionCheck, add_rule_arguments, check_regressions, rules_from, write_plots
from analysis.select import connect
from bench.backends.base import digest
from bench.errors import ConfigError
from bench.lock import DEFAULT_LOCK_DIR, LockBusy, device_lock, lock_name
from bench.point import FAILED, OK, SKIPPED, resolve_target
from bench.tracking import CHILD, PARENT, tracking_uri

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parent.parent
KIND = "nightly"
OK_EXIT, REGRESSION_EXIT, BAD_INPUT_EXIT, FAILED_POINTS_EXIT, LOCKED_EXIT = 0, 1, 2, 3, 4
# Set by the nightly command itself; an override of them would split or mislabel the nightly.
RESERVED = {"hydra.sweep.dir": "--sweep-dir", "tracking.kind": "nothing (nightly runs are kind nightly)",
            "experiment": "--grid"}


@dataclass
class Plan:
    """What tonight's run will do, settled before the lock is taken."""

    grid: str  # conf/experiment/<grid>.yaml
    device: str  # the resolved device, e.g. cpu or cuda:0 (the lock's name)
    date: str  # YYYY-MM-DD
    sweep_dir: Path
    uri: str
    experiment: str
    overrides: list[str]

    def command(self) -> list[str]:
        return [sys.executable, str(ROOT / "run.py"), "-m", f"experiment={self.grid}", f"tracking.kind={KIND}",
                f"hydra.sweep.dir='{self.sweep_dir}'", *self.overrides]


@dataclass
class Outcome:
    """What the night produced, and the exit status it adds up to."""

    sweep_dir: Path
    sweep_exit: int  # run.py's exit status
    parent_id: str | None = None
    points: dict[str, int] | None = None  # ok / skipped / failed / unfinished
    check: RegressionCheck | None = None
    report_dir: Path | None = None

    @property
    def exit_code(self) -> int:
        if self.parent_id is None:
            return BAD_INPUT_EXIT if self.sweep_exit == BAD_INPUT_EXIT else FAILED_POINTS_EXIT
        if self.check is not None and self.check.regressions:
            return REGRESSION_EXIT
        broken = self.points["failed"] + self.points["unfinished"]
        # run.py exits with the number of failed points; anything else (a signal, a config error half-way)
        # means the sweep did not get through its grid.
        return FAILED_POINTS_EXIT if broken or self.sweep_exit != min(self.points["failed"], 125) else OK_EXIT

    def summary(self) -> str:
        if self.parent_id is None:
            return (f"The sweep in {self.sweep_dir} recorded no point (run.py exit status {self.sweep_exit}); its "
                    f"output is above. Exit status {self.exit_code}.")
        counts = ", ".join(f"{n} {status}" for status, n in self.points.items())
        where = f"; report in {self.report_dir}, attached to run {self.parent_id} as report/" if self.report_dir else ""
        meaning = {OK_EXIT: "all well", REGRESSION_EXIT: "regression", FAILED_POINTS_EXIT:
                   "failed points or an incomplete sweep"}[self.exit_code]
        return (f"Nightly sweep {self.parent_id} ({self.sweep_dir}): {counts}; run.py exit status {self.sweep_exit}"
                f"{where}. Exit status {self.exit_code} ({meaning}).")


def _compose(grid: str, overrides: list[str]):
    """The job config run.py will see (less the grid's sweeps), to learn the device and the store before
    the lock is taken; a typo in an override is caught here, before anything runs."""
    from bench.runner import register

    register()
    single = [o for o in overrides if not o.startswith(("hydra.", "hydra/"))]
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        return compose("config", overrides=[f"experiment={grid}", *single])


def plan(grid: str, overrides: Sequence[str], on: str | None = None, sweep_dir: Path | None = None) -> Plan:
    """Check the overrides and settle device, date, sweep folder and store; every mistake is one ConfigError."""
    try:
        parsed = OverridesParser.create().parse_overrides(list(overrides))
    except HydraException as exc:
        raise ConfigError(f"override: {str(exc).splitlines()[0]}") from None
    for override in parsed:
        key = override.key_or_group
        if key in RESERVED:
            raise ConfigError(f"override {override.input_line!r}: the nightly command sets {key}; use "
                              f"{RESERVED[key]} instead")
        if key == "device" and override.is_sweep_override():
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
    device = str(resolve_target(cfg.device).device)
    folder = (sweep_dir or Path("multirun") / KIND / lock_name(device) / day).absolute()
    if "'" in str(folder):
        raise ConfigError(f"--sweep-dir {folder}: a quote in the path cannot be passed to Hydra")
    return Plan(grid, device, day, folder, tracking_uri(cfg.tracking), cfg.tracking.experiment, list(overrides))


def find_sweep(plan: Plan) -> tuple[str, dict[str, int]] | None:
    """The sweep's parent run (found by ``bench.sweep_id``, as run.py names it) and its points by status;
    the runs are tagged with the night's date. None when the sweep recorded nothing."""
    try:
        client, _ = connect(plan.uri)
    except ConfigError:
        return None
    experiment = client.get_experiment_by_name(plan.experiment)
    if experiment is None:
        return None
    sweep_id = digest(plan.sweep_dir.resolve())
    found = client.search_runs([experiment.experiment_id], f"tags.`bench.sweep_id` = '{sweep_id}' and "
                                                            f"tags.`bench.role` = '{PARENT}'", max_results=1)
    if not found:
        return None
    parent = found[0].info.run_id
    children = client.search_runs([experiment.experiment_id], f"tags.`{MLFLOW_PARENT_RUN_ID}` = '{parent}' and "
                                                               f"tags.`bench.role` = '{CHILD}'", max_results=50000)
    points = {OK: 0, SKIPPED: 0, FAILED: 0, "unfinished": 0}
    for run in [found[0], *children]:
        if run.data.tags.get("bench.date") != plan.date:
            client.set_tag(run.info.run_id, "bench.date", plan.date)
    for run in children:
        status = run.data.tags.get("bench.status")
        points[status if status in points and run.info.status in ("FINISHED", "FAILED") else "unfinished"] += 1
    return parent, points


def run_nightly(plan: Plan, args: argparse.Namespace, lock_fd: int) -> Outcome:
    """Sweep, check, report; each step says what it does, the sweep streams run.py's own progress."""
    log.info("step 1/3: sweep %s on %s into %s (grid conf/experiment/%s.yaml)", plan.date, plan.device,
             plan.sweep_dir, plan.grid)
    log.info("running: %s", " ".join(plan.command()))
    # The lock's descriptor goes to run.py too: if this process dies, the sweep still holds the lock.
    sweep_exit = subprocess.run(plan.command(), pass_fds=(lock_fd,), check=False).returncode
    outcome = Outcome(plan.sweep_dir, sweep_exit)
    found = find_sweep(plan)
    if found is None:
        return outcome
    outcome.parent_id, outcome.points = found
    log.info("step 2/3: regression check of sweep %s against the previous nightlies", outcome.parent_id)
    outcome.check = check_regressions(Selection(experiment=plan.experiment, kind=KIND), plan.uri, rules_from(args),
                                      newest=outcome.parent_id)
    client, _ = connect(plan.uri)
    client.set_tag(outcome.parent_id, "nightly.regressions", str(len(outcome.check.regressions)))
    client.set_tag(outcome.parent_id, "nightly.status", outcome.check.status)
    if args.no_report:
        return outcome
    folder = plan.sweep_dir / "report"
    log.info("step 3/3: report into %s, attached to run %s", folder, outcome.parent_id)
    folder.mkdir(parents=True, exist_ok=True)
    for fmt, name in (("text", "regressions.txt"), ("markdown", "regressions.md")):
        (folder / name).write_text(outcome.check.render(fmt), encoding="utf-8")
    if not args.no_plots:
        write_plots(outcome.check, folder / "regressions")
    build_report(Selection(experiment=plan.experiment, sweep=outcome.parent_id), plan.uri, folder=folder,
                 plots=not args.no_plots, attach_to_sweep=True)
    outcome.report_dir = folder
    return outcome


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench.nightly",
        description="The nightly job: take the device lock, sweep the nightly grid (resuming tonight's sweep if it\n"
                    "was interrupted), compare it with the previous nightlies, write and attach the report.\n"
                    "Exit status: 0 all well or no baseline yet, 1 regression(s), 2 bad input, 3 failed points or\n"
                    "an incomplete sweep, 4 the device is locked by another nightly.",
        epilog="examples:\n"
               "  python -m bench.nightly\n"
               "  python -m bench.nightly tracking=server device=cuda:1\n"
               "  python -m bench.nightly --wait 7200 --test mannwhitney model=resnet18,resnet50\n",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("overrides", nargs="*", metavar="OVERRIDE",
                   help="Hydra overrides for run.py, e.g. tracking=server device=cuda:1 model=resnet18,resnet50")
    n = p.add_argument_group("the nightly")
    n.add_argument("--grid", default=KIND, metavar="NAME",
                   help="grid: conf/experiment/NAME.yaml (default: %(default)s)")
    n.add_argument("--date", metavar="YYYY-MM-DD", help="the night (default: today); the same night resumes its sweep")
    n.add_argument("--sweep-dir", type=Path, metavar="DIR",
                   help="sweep folder (default: multirun/nightly/<device>/<date>); the same folder resumes")
    n.add_argument("--lock-dir", type=Path, default=Path(DEFAULT_LOCK_DIR), metavar="DIR",
                   help="where device locks live (default: %(default)s)")
    n.add_argument("--wait", type=float, default=0.0, metavar="SECONDS",
                   help="wait this long for another nightly's lock on the device, then exit 4 (default: 0)")
    n.add_argument("--no-report", action="store_true", help="sweep and check only")
    n.add_argument("--no-plots", action="store_true", help="write no PNGs into the report")
    add_rule_arguments(p)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        rules_from(args).validate()
        night = plan(args.grid, args.overrides, args.date, args.sweep_dir)
        with device_lock(night.device, args.lock_dir, args.wait) as lock:
            outcome = run_nightly(night, args, lock.fileno())
    except LockBusy as exc:
        print(f"error: {exc}", file=sys.stderr)
        return LOCKED_EXIT
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return BAD_INPUT_EXIT
    if outcome.check is not None:
        sys.stdout.write(outcome.check.render("text"))
    print(outcome.summary())
    return outcome.exit_code


if __name__ == "__main__":
    sys.exit(main())
