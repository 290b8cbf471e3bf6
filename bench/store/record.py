"""What a measurement looks like in the store: run names, params, tags, metrics, artifacts.

The names it writes (tags, metrics, params) are bench/contract/names.py's, which ``analysis`` reads
back. It needs no torch and no MLflow: ``record_from`` turns a measurement (plain JSON from the measuring
side) into a ``PointRecord``; ``bench.store.tracking`` puts it into MLflow.

Params are what defines a point (the settings a user would compare on); per-run facts (paths,
versions, the device's fingerprint) are tags; numbers are metrics.
"""
from __future__ import annotations

import io
import math
import os
import socket
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from bench.contract.names import (
    ACC_PIXEL_AGREEMENT, ACC_TOP1, ACC_TOP1_AGREEMENT, AUTO_TRIED, BACKEND_REQUESTED, BACKEND_VARIANT, CHILD,
    CLOCK_OFFSET_S, COMMIT, CONDITIONS, CPU_MODEL, DESCRIPTION, DEVICE_LABEL, DEVICE_NAME, ENERGY_MJ_PER_IMAGE,
    EVENTS, FAILURE, GPU_MS, GPU_SPEEDUP, HOST_NAME, INPUT_SHAPE, KIND, LATENCY_MS, MODEL_TASK, POINT_ID, POINT_KEY,
    RAW_LATENCY_MS, RAW_THROUGHPUT, REASON, REPEATS, ROLE, RUN_NAME, SPEEDUP, STATUS, SWEEP_ID, THROUGHPUT,
    THROUGHPUT_SPEEDUP, TIMING_CONDITIONS, TIMING_METHOD, TIMING_UNSTABLE, UNSTABLE, high_of, low_of)
from bench.contract.fields import declared_params
from bench.contract.protocol import FAILED, OK
from bench.contract.records import Measurement, Plan

# MLflow run statuses.
FINISHED_RUN, FAILED_RUN, KILLED_RUN, RUNNING_RUN = "FINISHED", "FAILED", "KILLED", "RUNNING"
TERMINATED = (FINISHED_RUN, FAILED_RUN, KILLED_RUN)


@dataclass
class PointRecord:
    """One point's run, ready for MLflow: a measurement in the store's terms."""

    point_id: str  # tag bench.point_id: checked before uploading, so a point reaches a store once
    name: str
    run_status: str  # FINISHED or FAILED
    start_ms: int
    end_ms: int
    params: dict[str, str]
    tags: dict[str, str]
    metrics: dict[str, float]
    artifacts: dict[str, str | bytes] = field(default_factory=dict)  # file name -> content
    sweep: dict | None = None  # the plan's sweep block: which parent run the point belongs under


def suite_commit() -> str:
    """The suite's git commit ("<sha>" or "<sha>-dirty") in a checkout; $BENCH_COMMIT or "unknown" elsewhere."""
    root = Path(__file__).resolve().parents[2]
    try:
        head = subprocess.run(["git", "rev-parse", "--verify", "HEAD"], cwd=root, capture_output=True, text=True,
                              timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        head = dirty = None
    if head is None or head.returncode != 0 or dirty.returncode != 0:
        return os.environ.get("BENCH_COMMIT") or "unknown"
    return head.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def new_sweep(sweep_id: str, grid_key: str, kind: str, label: str | None, params: dict[str, str], total: int,
              started_ms: int, experiment: str, uri: str) -> dict:
    """The sweep block every plan of a sweep carries: enough to find or create its parent run anywhere, later."""
    return {"id": sweep_id, "grid_key": grid_key, "kind": kind, "label": label, "params": params, "total": total,
            "started_ms": started_ms, "experiment": experiment, "uri": uri, "commit": suite_commit(),
            "controller": socket.gethostname(), "name": label or f"{kind} {sweep_id[:8]}"}


def _weights(plan: Plan) -> str:
    weights = plan.model.weights
    return weights if weights in ("random", "pretrained") else "state_dict"


def params(plan: Plan, details: dict) -> dict[str, str]:
    """The settings that define a resolved point (bench/contract/fields.py says which), and what the device
    resolved: no nulls, no CUDA-only settings on a CPU point, no paths."""
    backend = {k: v for k, v in plan.backend.items() if k != "name" and v is not None}
    if not plan.device.startswith("cuda"):
        backend.pop("cuda_graphs", None)
    size = plan.input
    found = {
        **declared_params(plan),
        "model.weights": _weights(plan),
        "backend": plan.backend["name"],
        BACKEND_REQUESTED: plan.resolution.backend_requested,
        BACKEND_VARIANT: plan.resolution.variant,
        **{f"backend.{k}": v for k, v in backend.items()},
        INPUT_SHAPE: f"{size.batch_size}x3x{size.height}x{size.width}",
    }
    if TIMING_METHOD in details:
        found[TIMING_METHOD] = details[TIMING_METHOD]
    return {key: str(value) for key, value in found.items()}


def _fingerprint(tags: dict[str, str]) -> dict[str, str]:
    """The device's tags with one name for it: ``device.label``; name and CPU model only where they differ."""
    found = dict(tags)
    label = found.get(DEVICE_LABEL)
    for key in (DEVICE_NAME, CPU_MODEL):
        if label is not None and found.get(key) == label:
            del found[key]
    return found


def rounded(value: float, low: float | None = None, high: float | None = None) -> str:
    """``value`` with as many digits as its interval supports (the half-width's first digit), at least two
    significant digits; three significant digits where there is no interval."""
    if not math.isfinite(value) or value == 0:
        return f"{value:g}"
    if low is None or high is None or not (math.isfinite(low) and math.isfinite(high)) or high <= low:
        return f"{value:.3g}"
    half = (high - low) / 2
    decimals = max(-math.floor(math.log10(half)), 1 - math.floor(math.log10(abs(value))), 0)
    return f"{value:.{decimals}f}"


def figure_text(metrics: dict, figure: str, unit: str = "") -> str:
    """``0.37 ms (0.36-0.38)``: a figure rounded to its interval, the interval beside it where recorded."""
    low, high = metrics.get(low_of(figure)), metrics.get(high_of(figure))
    text = rounded(metrics[figure], low, high) + unit
    if low is not None and high is not None:
        text += f" ({rounded(low, low, high)}-{rounded(high, low, high)})"
    return text


def describe(measurement: Measurement) -> str:
    """One line for the run's description: the figures with their intervals, how they compare with Raw, the
    accuracy."""
    if measurement.status != OK:
        return f"{measurement.status}: {measurement.reason}"
    m = {key: shown(value) for key, value in measurement.metrics.items()}  # the figures as the run's metrics read
    processes = int(m.get(REPEATS, 1))
    if measurement.plan.scenario == "throughput":
        speedup = figure_text(m, THROUGHPUT_SPEEDUP, "x") if THROUGHPUT_SPEEDUP in m else "1x"
        text = (f"{figure_text(m, THROUGHPUT, ' img/s')}, {speedup} over eager fp32 "
                f"{m.get(RAW_THROUGHPUT, m[THROUGHPUT]):,.0f} img/s")
    else:
        text = (f"end-to-end {figure_text(m, LATENCY_MS, ' ms')}, "
                f"{figure_text(m, SPEEDUP, 'x')} over eager fp32 {m[RAW_LATENCY_MS]:.3g} ms")
        if GPU_MS in m:
            text += f"; GPU compute {figure_text(m, GPU_MS, ' ms')}"
            if GPU_SPEEDUP in m:
                text += f", {figure_text(m, GPU_SPEEDUP, 'x')}"
    text += f"; {processes} process{'es' if processes > 1 else ''}"
    for metric, what in ((ACC_TOP1, "top-1"), (ACC_TOP1_AGREEMENT, "top-1 agreement"),
                         (ACC_PIXEL_AGREEMENT, "pixel agreement")):
        if metric in m:
            text += f", {what} {100 * m[metric]:.3g} %"
            break
    if ENERGY_MJ_PER_IMAGE in m:
        text += f", {m[ENERGY_MJ_PER_IMAGE]:.3g} mJ/image"
    return text


def tags(measurement: Measurement) -> dict[str, str]:
    plan = measurement.plan
    sweep = plan.sweep or {}
    details = measurement.details
    found = {
        **_fingerprint(measurement.tags),
        **{k: v for k, v in details.items() if k not in (TIMING_METHOD, TIMING_UNSTABLE, TIMING_CONDITIONS)},
        MODEL_TASK: plan.resolution.task,
        ROLE: CHILD, STATUS: measurement.status, REASON: measurement.reason, POINT_ID: measurement.point_id,
        POINT_KEY: plan.key(measurement.tags.get(HOST_NAME, "")), KIND: sweep.get("kind", "sweep"),
        COMMIT: sweep.get("commit") or suite_commit(), RUN_NAME: plan.name, DESCRIPTION: describe(measurement),
        DEVICE_LABEL: plan.resolution.device_label, "energy": plan.energy,
        "timing.unstable_spread": plan.timing.unstable_spread,
    }
    if sweep:
        found[SWEEP_ID] = sweep["id"]
    if measurement.failure:
        found[FAILURE] = measurement.failure
    if TIMING_UNSTABLE in details:
        found[UNSTABLE] = details[TIMING_UNSTABLE]
    if TIMING_CONDITIONS in details:
        found[CONDITIONS] = details[TIMING_CONDITIONS]
    if measurement.events:
        found[EVENTS] = " | ".join(measurement.events)
    weights = plan.model.weights
    if weights not in ("random", "pretrained"):
        found["model.weights_path"] = weights
    if plan.calibration.source == "folder" and plan.precision == "int8":
        found["calibration.folder"] = plan.calibration.folder
    if plan.resolution.auto_tried:
        found[AUTO_TRIED] = "; ".join(plan.resolution.auto_tried)
    return {key: str(value)[:5000] for key, value in found.items() if value is not None and value != ""}


def latency_csv(values: list[float], calls_per_process: list[int]) -> str:
    """Per-call latencies with the process (1, 2, ...) that timed each (1 for a measurement of one process)."""
    processes = [index for index, count in enumerate(calls_per_process, 1) for _ in range(count)]
    if len(processes) != len(values):
        processes = [1] * len(values)
    out = io.StringIO()
    out.write("process,call,latency_ms\n")
    out.writelines(f"{process},{index},{value:.6f}\n" for index, (process, value) in enumerate(zip(processes, values), 1))
    return out.getvalue()


def repeats_csv(rows: list[dict]) -> str:
    """One row of figures per process of the point."""
    columns = list(dict.fromkeys(key for row in rows for key in row))
    lines = [",".join(columns)]
    text = lambda value: str(int(value)) if float(value).is_integer() else f"{value:.10g}"  # noqa: E731
    lines += [",".join(text(row[key]) if key in row else "" for key in columns) for row in rows]
    return "\n".join(lines) + "\n"


def histogram_png(measurement: Measurement) -> bytes:
    out = io.BytesIO()
    histogram_figure(measurement).savefig(out, format="png", dpi=90, bbox_inches="tight")
    return out.getvalue()


def histogram_figure(measurement: Measurement):
    """Per-call latencies as a small histogram on one set of bins, Raw beside them where the run timed it."""
    import numpy as np
    from matplotlib.figure import Figure

    figure = Figure(figsize=(5, 2.6))
    axes = figure.subplots()
    plan = measurement.plan
    series = [(measurement.latencies_ms, plan.name)]
    if measurement.raw_latencies_ms and measurement.raw_latencies_ms != measurement.latencies_ms:
        series.append((measurement.raw_latencies_ms, "Raw (eager fp32, same processes)"))
    # One set of bins, evenly spaced on a log scale over the bulk of both series (the tail past the 99th percentile
    # is clipped into the last bin): a variant 7x faster than Raw gets as many bins across its calls as Raw does.
    pooled = np.concatenate([np.asarray(values, dtype=float) for values, _ in series])
    low, high = max(float(pooled.min()), 1e-6), float(np.percentile(pooled, 99))
    bins = np.geomspace(low, high if high > low * 1.001 else low * 1.01, 61)
    for values, label in series:
        axes.hist(np.clip(values, bins[0], bins[-1]), bins=bins, alpha=0.6, label=label)
    axes.set_xscale("log")
    per = "per window" if plan.scenario == "throughput" else "per call, end-to-end"
    axes.set_xlabel(f"latency {per} (ms; values past the 99th percentile in the last bin)")
    axes.set_ylabel("count")
    axes.legend(fontsize=7)
    return figure


def artifacts(measurement: Measurement) -> dict[str, str | bytes]:
    plan = {k: v for k, v in measurement.plan.to_json().items() if k != "sweep"}
    found: dict[str, str | bytes] = {"config.yaml": yaml.safe_dump(plan, sort_keys=False)}
    per_process = measurement.calls_per_process or {}
    if measurement.latencies_ms:
        found["latency_histogram.png"] = histogram_png(measurement)
    for key in ("latencies_ms", "raw_latencies_ms", "gpu_ms", "raw_gpu_ms"):
        if getattr(measurement, key):
            found[f"{key}.csv"] = latency_csv(getattr(measurement, key), per_process.get(key, []))
    if measurement.repeats:
        found["repeats.csv"] = repeats_csv(measurement.repeats)
    if measurement.error:
        found["error.txt"] = measurement.error
    found.update(measurement.artifacts)
    return found


def shown(value: float) -> float:
    """A metric as the MLflow UI lists it: 4 significant digits (3.735 ms, not 3.73548047), far below any point's
    noise; counts stay whole. The calls' own latencies keep full precision in latencies_ms.csv."""
    return value if not math.isfinite(value) or value == int(value) else float(f"{value:.4g}")


def record_from(measurement: Measurement, clock_offset_ms: int = 0) -> PointRecord:
    """The store's view of one measurement; ``clock_offset_ms`` moves its times from the measuring machine's clock
    into the store's (bench.contract.protocol.clock_offset)."""
    plan = measurement.plan
    found = tags(measurement)
    if clock_offset_ms:
        found[CLOCK_OFFSET_S] = f"{clock_offset_ms / 1000:.0f}"
    start = measurement.started_ms + clock_offset_ms
    return PointRecord(
        point_id=measurement.point_id, name=plan.name,
        run_status=FAILED_RUN if measurement.status == FAILED else FINISHED_RUN,
        start_ms=start, end_ms=(measurement.ended_ms or measurement.started_ms) + clock_offset_ms,
        params=params(plan, measurement.details), tags=found,
        metrics={k: shown(float(v)) for k, v in measurement.metrics.items()}, artifacts=artifacts(measurement),
        sweep=plan.sweep)
