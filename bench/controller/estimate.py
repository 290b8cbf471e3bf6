"""How long a grid will take on this device, before anything of it is measured: the nightly's budget.

Each point the device will measure is estimated (a point it skips, e.g. fp16 on a CPU, costs nothing):

- **history**: the median wall time (its run's end - start) of the point's newest earlier runs of the same kind
  (``bench.kind=nightly``) in the store, on this host: the same ``bench.point_key`` (the resolved plan, device
  and host), so the same model, backend, precision, input, timing plan and device. After the first night every
  point has some, so this is the usual path;
- **probe**: otherwise, one tiny point per distinct model and input (``PROBE``: eager fp32, one process, one
  warm-up and one timed call, one accuracy batch) measured on the device through the same worker as the sweep,
  recorded nowhere. Its wall time less its ``PROBE_CALLS`` calls is what a process costs before it times
  anything (start, model build with its BatchNorm re-estimation, inputs); its per-call latency ``t`` prices the
  calls. A point of that model and input is then about::

      repeats x (start + series x (max(warmup_iters x t, warmup_s) + blocks x (max(min_iters x t, min_s) + rewarm)))
        + (2 x accuracy batches + int8 calibration batches) x t

  with ``series`` 2 where eager fp32 is timed beside the variant (``raw_baseline``), ``rewarm`` the 4 rounds x 2
  re-warm calls of alternating series, ``blocks`` 2 on CUDA (end-to-end, then GPU compute).

Left out, so for a converting backend the estimate is a lower bound: conversion and compilation (ONNX export,
TensorRT engine builds, torch.compile / inductor, which on a CPU can take minutes per point; the first process
converts, later ones hit the cache), the variant being slower than eager fp32 per call, int8 calibration beyond
running its batches, and the sweep's own overhead (starting the worker once, recording each point).
"""
from __future__ import annotations

import logging
import math
import statistics
import time
from dataclasses import dataclass

from mlflow.exceptions import MlflowException

from bench.contract.errors import ConfigError
from bench.contract.names import (CHILD, GRID_KEY, HOST_NAME, KIND, LABEL, LATENCY_MS, PARENT, PARENT_RUN, POINT_KEY,
                                  ROLE)
from bench.contract.protocol import OK
from bench.contract.records import Plan
from bench.controller.executors import Device, WorkerLost
from bench.store.address import error_line, sqlite_path, tracking_uri
from bench.store.reader import connect, runs_newest_first
from bench.store.tracking import holds_its_point
from bench.controller.progress import duration

log = logging.getLogger(__name__)

PROBE = {"warmup_iters": 1, "warmup_s": 0.0, "min_iters": 1, "min_s": 0.0, "repeats": 1}  # timing of a probe
PROBE_CALLS = 4  # eager reference and "converted" model on one accuracy batch, one warm-up, one timed call
HISTORY = 5  # a point's history: the median of its newest runs' wall times (the device changes over months)
ROUNDS, REWARM_CALLS = 4, 2  # bench/device/timing.py: alternating series, re-warm calls per block


@dataclass(frozen=True)
class Probe:
    call_s: float  # one eager fp32 call
    start_s: float  # what a point's process costs before its calls: start, build, inputs


@dataclass(frozen=True)
class Cost:
    model: str
    seconds: float
    source: str  # "history", "probe", "skipped" (the device skips it)


@dataclass
class History:
    """What the store says about this grid: the point keys' earlier wall times, and what tonight's sweeps hold."""

    walls: dict  # point key -> median wall time (s) of its earlier runs
    recorded: dict  # grid key -> the point keys a sweep of that grid, labelled tonight, already recorded


def point_seconds(plan: Plan, probe: Probe) -> float:
    """A resolved plan's wall time from its probe (the module's docstring gives the formula)."""
    t, timing = probe.call_s, plan.timing
    raw_point = plan.backend["name"] == "pytorch" and plan.precision == "fp32"
    series = 2 if plan.raw_baseline and not raw_point else 1
    blocks = 2 if plan.device.startswith("cuda") else 1
    rewarm = ROUNDS * REWARM_CALLS * t if series > 1 else 0.0
    per_series = max(timing.warmup_iters * t, timing.warmup_s) + blocks * (max(timing.min_iters * t, timing.min_s)
                                                                           + rewarm)
    accuracy = plan.accuracy.batches if plan.accuracy.source == "random" else \
        math.ceil(plan.accuracy.max_images / plan.input.batch_size)
    calibration = plan.calibration.num_batches if plan.precision == "int8" else 0
    return timing.repeats * (probe.start_s + series * per_series) + (2 * accuracy + calibration) * t


def probe_plan(plan: Plan) -> Plan:
    """The probe of a resolved plan's model and input: eager fp32, one process, one call of each kind."""
    return plan._replace(sweep=None, resolution=None, backend={"name": "pytorch"}, precision="fp32",
                         raw_baseline=False, timing=plan.timing._replace(**PROBE),
                         accuracy=plan.accuracy._replace(source="random", batches=1, folder=None, masks=None))


def probe(device: Device, plan: Plan) -> Probe:
    """Measure the probe of ``plan`` on the device (recorded nowhere); a probe that fails counts its wall time."""
    (resolved,) = device.resolve([probe_plan(plan)])
    if "error" in resolved:
        log.warning("probe of %s: %s; counting nothing for it", plan.name, resolved["error"])
        return Probe(0.0, 0.0)
    started = time.monotonic()
    try:
        measurement = device.measure(resolved["plan"])
        reason = measurement.reason if measurement.status != OK else None
    except WorkerLost as exc:
        reason = f"lost the device: {exc}"
    wall = time.monotonic() - started
    if reason:
        log.warning("probe of %s did not measure (%s); counting its %.1f s per process", plan.name, reason, wall)
        return Probe(0.0, wall)
    call_s = measurement.metrics[LATENCY_MS] / 1000
    return Probe(call_s, max(wall - PROBE_CALLS * call_s, 0.0))


def estimate(device: Device, plans: list[Plan], host: str, walls: dict) -> list[Cost]:
    """Each resolved plan's cost: skipped, from its history (``walls``: point key -> seconds), or probed (one log
    line per model and input probed)."""
    costs: list[Cost | None] = [None] * len(plans)
    unknown: dict[tuple, list[int]] = {}
    for index, plan in enumerate(plans):
        if plan.resolution.skip_reason:
            costs[index] = Cost(plan.model.name, 0.0, "skipped")
        elif plan.key(host) in walls:
            costs[index] = Cost(plan.model.name, walls[plan.key(host)], "history")
        else:
            unknown.setdefault((plan.model.name, tuple(plan.input)), []).append(index)
    if unknown:
        log.info("estimating the grid: %d point(s) by their earlier runs, %d probed on the device (%d model/input(s), "
                 "one eager fp32 call each)", sum(c is not None and c.source == "history" for c in costs),
                 sum(len(i) for i in unknown.values()), len(unknown))
    for number, ((model, size), indices) in enumerate(unknown.items(), 1):
        found = probe(device, plans[indices[0]])
        for index in indices:
            costs[index] = Cost(model, point_seconds(plans[index], found), "probe")
        call = f"{found.call_s * 1000:.3g} ms" if found.call_s < 1 else f"{found.call_s:.3g} s"
        log.info("[%d/%d] probed %s at %s: one eager fp32 call %s, a process's start and build %.1f s; %d "
                 "point(s) about %s", number, len(unknown), model, "x".join(map(str, size[:2])) +
                 (f"/b{size[2]}" if size[2] > 1 else ""), call, found.start_s, len(indices),
                 duration(sum(costs[i].seconds for i in indices)))
    return costs


def read_history(uri: str, experiment: str, kind: str, host: str, label: str, keys: set[str]) -> History:
    """The median wall time of each of these point keys' newest ``HISTORY`` runs of ``kind`` on ``host``, and
    what the sweeps labelled ``label`` (tonight's) recorded; nothing where the store is new or cannot be read."""
    path = sqlite_path(tracking_uri(uri))
    if path is not None and not path.is_file():
        return History({}, {})  # a store to be made by tonight's sweep: no history yet
    try:
        client, uri = connect(uri)
        found = client.get_experiment_by_name(experiment)
        if found is None:
            return History({}, {})
        exp = found.experiment_id
        walls: dict[str, list[float]] = {}
        quote = "\\'"
        points = f"tags.`{ROLE}` = '{CHILD}' and tags.`{KIND}` = '{kind}' and " \
                 f"tags.`{HOST_NAME}` = '{host.replace(chr(39), quote)}'"
        for run in runs_newest_first(client, exp, points, page=1000):
            key = run.data.tags.get(POINT_KEY)
            if key in keys and holds_its_point(run) and len(walls.get(key, ())) < HISTORY:
                walls.setdefault(key, []).append((run.info.end_time - run.info.start_time) / 1000)
                if len(walls) == len(keys) and all(len(runs) >= HISTORY for runs in walls.values()):
                    break
        recorded: dict[str, set[str]] = {}
        # what tonight's sweeps hold, as the resumed sweep will judge it (Store.recorded)
        for parent in runs_newest_first(client, exp, f"tags.`{ROLE}` = '{PARENT}' and tags.`{LABEL}` = '{label}'"):
            children = runs_newest_first(client, exp, f"tags.`{PARENT_RUN}` = '{parent.info.run_id}' and "
                                                      f"tags.`{ROLE}` = '{CHILD}'")
            recorded.setdefault(parent.data.tags.get(GRID_KEY, ""), set()).update(
                run.data.tags[POINT_KEY] for run in children if holds_its_point(run) and POINT_KEY in run.data.tags)
    except (ConfigError, MlflowException, OSError) as exc:
        log.warning("the store's earlier runs cannot be read (%s); every point is probed", error_line(exc))
        return History({}, {})
    return History({key: statistics.median(values) for key, values in walls.items()}, recorded)


def hours_above(seconds: float) -> str:
    """A ``--budget`` (hours) just above ``seconds``: whole hours from one hour up, else two significant digits."""
    hours = seconds / 3600
    if hours >= 1:
        return str(math.ceil(hours))
    step = 10 ** (math.floor(math.log10(max(hours, 1e-6))) - 1)
    return f"{math.ceil(hours / step) * step:.{max(0, -round(math.log10(step)))}f}".rstrip("0").rstrip(".")
