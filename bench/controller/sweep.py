"""The controller: a grid of plans -> the measuring side -> one record per point in the store.

    check the store (before any work) -> start the device once and learn what it has -> resolve every
    plan there (every mistake in the grid found before the first point) -> open or resume the sweep's
    parent run -> measure each point the sweep has not recorded -> record it (or spool it) -> close
    the parent: FINISHED, FAILED (points failed) or KILLED (interrupted).

It imports no torch and knows nothing of Hydra: ``bench.controller.plan`` made the plans, and the caller
(run.py's launcher) turns the outcome into an exit status and the sweep's report.
"""
from __future__ import annotations

import json
import logging
import signal
import sys
import uuid
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

from bench.contract import exits, names
from bench.contract.errors import ConfigError
from bench.contract.names import DEVICE_LABEL, HOST_NAME, TIMING_UNSTABLE
from bench.contract.protocol import EXECUTOR_FAILURE, FAILED, OK, OUT_OF_MEMORY, SKIPPED, clock_offset, now_ms
from bench.contract.records import Measurement, Plan, failed_measurement, skipped_measurement
from bench.contract.results import write_file_atomic
from bench.controller.baselines import Baselines
from bench.controller.executors import Device, WorkerLost
from bench.controller.journal import Journal
from bench.controller.plan import Grid, make_grid
from bench.controller.progress import Progress
from bench.controller.signals import Interrupted, signals_interrupt
from bench.store import record
from bench.store.address import SERVER_ERRORS, check_uri, error_line, redact, tracking_uri
from bench.store.locks import file_lock
from bench.store.spool import DEFAULT_SPOOL_DIR, Spool
from bench.store.tracking import Store
from bench.store.views import how_to_open, link

log = logging.getLogger(__name__)

@dataclass
class Outcome:
    """What a sweep came to; ``exit_code`` gives each outcome one status."""

    counts: dict[str, int] = field(default_factory=lambda: {OK: 0, SKIPPED: 0, FAILED: 0})
    already: int = 0  # points a resumed sweep had recorded before
    parent_id: str | None = None
    name: str = ""  # what the log, the MLflow UI and the report call it: "sweep e7b4f844", or its label
    link: str | None = None
    uri: str = ""
    sweep_id: str | None = None
    interrupted: Interrupted | None = None
    spooled: int = 0
    complete: bool = False  # every point of the sweep has a result of its own in the store

    @property
    def exit_code(self) -> int:
        """bench/contract/exits.py: stopped by a signal, points failed, or all well."""
        if self.interrupted is not None:
            return exits.SIGNAL + self.interrupted.signum
        return exits.FAILED_POINTS if self.counts[FAILED] else exits.OK

    def summary(self) -> str:
        total = sum(self.counts.values())
        text = (f"{total} point(s) measured: {self.counts[OK]} ok, {self.counts[SKIPPED]} skipped, "
                f"{self.counts[FAILED]} failed")
        if self.already:
            text += f"; {self.already} already recorded in this sweep before"
        if self.spooled:
            text += f"; {self.spooled} waiting in the spool (python -m bench.store.sync uploads them)"
        return text


@dataclass
class SweepContext:
    """Where one sweep's records go: the store (or the spool), its parent run, the journal."""

    store: Store | None
    spool: Spool
    journal: Journal
    sweep: dict | None
    parent_id: str | None = None
    recorded: dict[str, str] = field(default_factory=dict)  # point key -> where the sweep already holds it
    clock_offset_ms: int = 0  # added to the device's times to record them in the store's clock


def write_plans(grid: Grid, sweep: dict, out: str) -> Path:
    """executor=plan: the grid's plans as JSON lines, for ``python3 -m bench.device`` on the device."""
    path = Path(out).expanduser()
    if not path.parent.is_dir():
        raise ConfigError(f"executor.out={out}: folder {path.parent} does not exist")
    write_file_atomic(str(path), "".join(json.dumps(plan._replace(sweep=sweep).to_json(), sort_keys=True) + "\n"
                                         for plan in grid.plans).encode())
    return path


def _new_sweep(grid: Grid, sweep_id: str, uri: str) -> dict:
    return record.new_sweep(sweep_id, grid.key, grid.tracking["kind"], grid.label, grid.params, len(grid.plans),
                            now_ms(), grid.tracking["experiment"], uri)


def _sweep_id(grid: Grid, store: Store, journal: Journal, pinned: str | None) -> str:
    """Which sweep this run records into: ``resume=auto`` finishes an interrupted sweep of the same grid,
    ``last`` continues the newest one whatever its state (a nightly run again the same night), ``new`` starts
    one, a parent run id names one."""
    if pinned:
        return pinned
    if grid.resume == "new":
        return uuid.uuid4().hex
    if grid.resume not in ("auto", "last"):
        if not store.online:
            raise ConfigError(f"resume={grid.resume}: the store {redact(store.uri)} cannot be reached to say what "
                              "that sweep holds")
        found = store.sweep_of_parent(grid.resume)
        if found["grid_key"] != grid.key:
            raise ConfigError(f"resume={grid.resume}: that sweep ran another grid (or on another executor); run its "
                              "own command again, or resume=new")
        return found["id"]
    latest = store.latest_sweep(grid.key) if store.online else \
        journal.latest_sweep(grid.key, store.uri, store.experiment)
    if latest and (grid.resume == "last" or latest[1] == names.INCOMPLETE):
        log.info("resuming sweep %s (%s) of the same grid (resume=new starts afresh)", latest[0][:8], latest[1])
        return latest[0]
    return uuid.uuid4().hex


def _recorded(context: SweepContext, sweep_id: str) -> dict[str, str]:
    """Point key -> where this sweep already holds the point: the one answer, asked once per sweep, from the spool,
    then the store, or this machine's journal when the store cannot be asked."""
    found = {key: f"spool entry {entry}" for key, entry in context.spool.recorded(sweep_id).items()}
    if context.store.online:
        try:
            return {**{key: held.where for key, held in context.store.recorded(sweep_id).items()}, **found}
        except SERVER_ERRORS as exc:
            log.warning("cannot ask %s which points are recorded already (%s); going by this machine's journal",
                        redact(context.store.uri), error_line(exc))
    offline = {key: f"this machine's journal ({status}, store unreachable)"
               for key, status in context.journal.recorded(sweep_id).items()}
    return {**offline, **found}


def _save(context: SweepContext, measurement: Measurement) -> str:
    """Record the measurement; when the store cannot take it, spool it (nothing measured is ever lost)."""
    store = context.store
    try:
        point = record.record_from(measurement, context.clock_offset_ms)
        if store is None or not store.online:
            raise ConnectionError("the store was unreachable when the sweep started")
        if context.sweep is not None and context.parent_id is None:
            context.parent_id = store.parent_for(context.sweep)
        run_id = store.upload(point, context.parent_id)
        if context.parent_id:
            store.heartbeat(context.parent_id)
        where = f"MLflow run {run_id}"
    except Exception as exc:  # noqa: BLE001 - whatever stops the record, the measurement must not be lost
        entry = context.spool.write(measurement)
        log.warning("%s: %s cannot take the result (%s); saved to %s: upload it with `python -m bench.store.sync%s`",
                    measurement.plan.name, redact(store.uri if store else "the store"), error_line(exc),
                    entry,
                    "" if context.spool.folder == Path(DEFAULT_SPOOL_DIR).expanduser()
                    else f" --spool {context.spool.folder}")
        where = f"the spool ({entry})"
    if context.sweep is not None:
        host = measurement.tags.get(HOST_NAME, "")
        context.journal.point(context.sweep["id"], measurement.plan.key(host),
                              measurement.status)
    return where


def _summary(measurement: Measurement) -> str:
    if measurement.status != OK:
        return f"{measurement.status}: {measurement.reason}"
    return record.describe(measurement)


def run_sweep(grid: Grid, multirun: bool, pinned_sweep: str | None = None, lock_dir: Path | None = None,
              on_device: Callable[[dict], None] | None = None) -> Outcome:
    """Measure and record a grid; ``multirun``: the points form a sweep under one parent run.

    ``pinned_sweep``/``lock_dir``: a sweep id and a lock folder shared by jobs of another launcher (SLURM),
    each of which runs one point of the same sweep. ``on_device`` is told the device's facts before anything is
    resolved or measured (the nightly job takes the device's lock there).
    """
    uri = tracking_uri(grid.tracking["uri"])
    if grid.executor["kind"] == "plan":
        if not grid.executor["out"]:
            raise ConfigError("executor=plan needs executor.out=plans.jsonl")
        sweep = _new_sweep(grid, uuid.uuid4().hex, uri)
        path = write_plans(grid, sweep, grid.executor["out"])
        log.info("wrote %d plan(s) of sweep %s to %s; on the device: python3 -m bench.device %s --out results/ ; "
                 "then here: python -m bench.store.sync --spool results/", len(grid.plans), sweep["id"], path, path.name)
        return Outcome(uri=uri, sweep_id=sweep["id"])
    if grid.executor["kind"] not in ("local", "ssh"):
        raise ConfigError(f"executor.kind={grid.executor['kind']!r} is not one of: local, ssh, plan")

    if not multirun and grid.resume not in ("auto", "new"):
        raise ConfigError(f"resume={grid.resume}: only a sweep (-m) is resumed; a single run records a run of its own")
    check_uri(uri, grid.tracking["server"])
    context = SweepContext(None, Spool(Path(grid.tracking["spool_dir"] or DEFAULT_SPOOL_DIR).expanduser()),
                           Journal(), None)
    outcome = Outcome(uri=uri)
    device = Device(grid.executor)
    with signals_interrupt():
        try:
            facts = device.start()
            log.info("device: %s, Python %s, torch %s, %s", device.where, facts["python"],
                     facts["packages"].get("torch"), ", ".join(d["label"] for d in facts["devices"]))
            if on_device is not None:
                on_device(facts)
            plans = _resolve(device, grid)
            context.store = _open_store(grid)
            context.clock_offset_ms = clock_offset(now_ms() - facts["clock_ms"]) + context.store.clock_offset_ms
            if multirun:
                _open_sweep(grid, context, outcome, pinned_sweep, lock_dir)
            _measure_all(plans, facts, device, context, outcome)
        except (Interrupted, KeyboardInterrupt) as exc:
            outcome.interrupted = exc if isinstance(exc, Interrupted) else Interrupted(signal.SIGINT)
            device.kill()
        finally:
            device.stop()
        _close(context, outcome)
    return outcome


def _open_store(grid: Grid) -> Store:
    """The store, checked now that the grid is known to be right, before anything is measured."""
    store = Store(grid.tracking)
    log.info("store: %s, experiment %r%s", redact(store.uri), store.experiment,
             "" if store.online else " (unreachable: measurements go to the spool)")
    store.check_writable()
    if store.online:
        store.settle_abandoned()
    return store


def _resolve(device: Device, grid: Grid) -> list[Plan]:
    """Every plan resolved on the device; the first bad point (of all of them) is one ConfigError."""
    resolved = device.resolve(grid.plans)
    bad = [(index, point["error"]) for index, point in enumerate(resolved, 1) if "error" in point]
    if bad:
        index, message = bad[0]
        shown = " ".join(o for o in grid.overrides[index - 1] if not o.startswith("hydra"))
        where = f"point {index} of {len(resolved)} ({shown or 'defaults'}): " if len(resolved) > 1 else ""
        more = f" ({len(bad) - 1} more point(s) with errors)" if len(bad) > 1 else ""
        raise ConfigError(f"{where}{message}{more}")
    plans = [point["plan"] for point in resolved]
    skipped = sum(1 for plan in plans if plan.resolution.skip_reason)
    log.info("%d point(s) resolved on %s: %d to measure, %d skipped here", len(plans), device.where,
             len(plans) - skipped, skipped)
    return plans


def _open_sweep(grid: Grid, context: SweepContext, outcome: Outcome, pinned: str | None,
                lock_dir: Path | None) -> None:
    """The sweep's identity (new or resumed) and its parent run."""
    store = context.store
    sweep_id = _sweep_id(grid, store, context.journal, pinned)
    context.sweep = _new_sweep(grid, sweep_id, store.uri)
    context.recorded = _recorded(context, sweep_id)
    context.journal.start(context.sweep)
    outcome.sweep_id, outcome.name = sweep_id, context.sweep["name"]
    if store.online:
        with file_lock(lock_dir / ".mlflow_parent.lock") if lock_dir else nullcontext():
            context.parent_id = store.parent_for(context.sweep)
        outcome.parent_id = context.parent_id
        outcome.link = link(store.uri, store.experiment_id, context.parent_id)


def _measure_all(plans: list[dict], facts: dict, device: Device, context: SweepContext, outcome: Outcome) -> None:
    host = facts["host"][HOST_NAME]
    baselines = Baselines()
    too_big: dict[str, int] = {}  # series (a point without its batch size) -> the smallest batch that did not fit
    progress = Progress(sum(1 for plan in plans if not plan.resolution.skip_reason
                            and plan.key(host) not in context.recorded))
    for index, plan in enumerate(plans, 1):
        if context.sweep is not None:
            plan = plan._replace(sweep=context.sweep)
        name, key = plan.name, plan.key(host)
        where = context.recorded.get(key)
        if where:
            log.info("[%d/%d] %s: already recorded in this sweep (%s); skipped", index, len(plans), name, where)
            outcome.already += 1
            continue
        tags = {HOST_NAME: host, DEVICE_LABEL: plan.resolution.device_label}
        series, batch = plan.series, plan.input.batch_size
        if batch > too_big.get(series, batch):
            measurement = skipped_measurement(plan, f"{OUT_OF_MEMORY}: batch {too_big[series]} of this series did "
                                                    "not fit on the device, so larger ones were not tried", tags)
        else:
            log.info("[%d/%d] %s: measuring on %s (%s)%s", index, len(plans), name, device.where,
                     plan.resolution.device_label, progress.start())
            measurement = _measure_checked(device, plan, tags, baselines, f"[{index}/{len(plans)}] {name}")
            progress.done(measured=not plan.resolution.skip_reason)
        if measurement.status == SKIPPED and measurement.reason.startswith(OUT_OF_MEMORY):
            too_big[series] = min(batch, too_big.get(series, batch))
        recorded_as = _save(context, measurement)
        outcome.counts[measurement.status] += 1
        outcome.spooled += recorded_as.startswith("the spool")
        log.info("[%d/%d] %s: %s; recorded as %s", index, len(plans), name, _summary(measurement), recorded_as)


def _measure_checked(device: Device, plan: Plan, tags: dict, baselines: Baselines, shown: str) -> Measurement:
    """Measure a point; one whose eager fp32 disagrees grossly with the sweep's earlier measurements is measured
    once more, and flagged unstable (with both attempts' figures) if it still does."""
    try:
        measurement = device.measure(plan)
    except WorkerLost as exc:
        return failed_measurement(plan, f"lost the device while measuring: {exc}", EXECUTOR_FAILURE, tags)
    first = baselines.disagreement(measurement)
    if first is None:
        baselines.add(measurement)
        return measurement
    log.warning("%s: %s; measuring it again", shown, first)
    try:
        again = device.measure(plan)
    except WorkerLost as exc:
        log.warning("%s: lost the device measuring it again (%s); keeping the first attempt", shown, exc)
        again = None
    if again is not None and again.status == OK:
        second = baselines.disagreement(again)
        if second is None:
            baselines.add(again)
            return again
        log.warning("%s: %s", shown, second)
        measurement, first = again, f"{second} (first attempt: {first})"
    details = measurement.details
    details[TIMING_UNSTABLE] = "; ".join(filter(None, (details.get(TIMING_UNSTABLE), first)))
    return measurement


def _close(context: SweepContext | None, outcome: Outcome) -> None:
    """End the sweep's parent run and journal entry, whatever happened (an interruption included)."""
    if context is None or context.sweep is None:
        return
    complete = outcome.interrupted is None
    if context.parent_id and context.store is not None:
        try:
            counts = context.store.close_parent(context.parent_id, interrupted=outcome.interrupted is not None)
            complete = complete and sum(counts.values()) >= context.sweep["total"]
        except SERVER_ERRORS as exc:
            log.warning("sweep %s: parent run %s not closed (%s); the next sweep into the store settles it",
                        context.sweep["id"], context.parent_id, error_line(exc))
    outcome.complete = complete and not outcome.spooled
    context.journal.finish(context.sweep["id"], outcome.complete)


def attach_report(uri: str, experiment: str, parent_id: str, name: str) -> None:
    """The sweep's report (tables, plots, the blog table as the parent's description) on its parent run.

    A report that cannot be made is a warning: it never costs a measurement, and ``python -m analysis.report``
    makes it again.
    """
    log.info("%s: attaching its report (tables, plots) to its MLflow run", name)
    try:
        from analysis.build import build_report  # pandas and matplotlib, needed only now
        from analysis.select import Selection

        build_report(Selection(experiment=experiment, sweep=parent_id), uri, attach_to_sweep=True)
    except Exception as exc:  # noqa: BLE001 - whatever went wrong, the sweep's records stand
        log.warning("the sweep's report could not be attached (%s); make it with: python -m analysis.report "
                    "--tracking-uri %s --experiment %s --sweep %s --attach", error_line(exc), redact(uri), experiment,
                    parent_id)


def report(outcome: Outcome, grid: Grid) -> None:
    """Say what the sweep came to: its report on the parent run, its summary, its link."""
    if outcome.parent_id and grid.tracking["attach_report"] and outcome.interrupted is None:
        attach_report(outcome.uri, grid.tracking["experiment"], outcome.parent_id, outcome.name)
    if outcome.sweep_id is None and grid.executor["kind"] == "plan":
        return
    log.info("%s%s", f"{outcome.name}: " if outcome.name else "", outcome.summary())
    if outcome.link:
        print("\n".join(how_to_open(outcome.name, outcome.uri, outcome.link, outcome.sweep_id)), flush=True)
    if outcome.interrupted is not None:
        print(f"interrupted ({outcome.interrupted}): {outcome.summary()}; run the same command again to finish "
              "the sweep", file=sys.stderr)


def run_grid(configs: list, overrides: list[list[str]], multirun: bool, pinned_sweep: str | None = None,
             lock_dir: Path | None = None, on_device: Callable[[dict], None] | None = None) -> Outcome:
    """The one route into a sweep, for a single run, ``-m``, another launcher's job and the nightly job: the
    composed configs' plans measured, recorded and reported. A mistake anywhere is one ConfigError."""
    grid = make_grid(configs, overrides)
    outcome = run_sweep(grid, multirun, pinned_sweep, lock_dir, on_device)
    report(outcome, grid)
    return outcome


def run_command_line(configs: list, overrides: list[list[str]], multirun: bool, pinned_sweep: str | None = None,
                     lock_dir: Path | None = None) -> int:
    """``run_grid`` for a command line: its exit status (bench/contract/exits.py), a mistake said in one line."""
    try:
        return run_grid(configs, overrides, multirun, pinned_sweep, lock_dir).exit_code
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exits.BAD_INPUT
