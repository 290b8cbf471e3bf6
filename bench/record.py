"""What a measurement looks like in the store: run names, params, tags, metrics, artifacts.

One home for the record's vocabulary (tag names, statuses, roles), used by the controller that
writes records, ``bench.sync`` that uploads spooled ones, and ``analysis`` that reads them. It
needs no torch and no MLflow: ``record_from`` turns a measurement (plain JSON from the measuring
side) into a ``PointRecord``; ``bench.tracking`` puts it into MLflow.

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

from bench.measure.protocol import EXECUTOR_FAILURE, FAILED, OK, SKIPPED, STATUSES, point_key, point_name

__all__ = ["OK", "SKIPPED", "FAILED", "STATUSES", "EXECUTOR_FAILURE"]

# Tag names.
ROLE, STATUS, REASON, FAILURE, KIND = "bench.role", "bench.status", "bench.reason", "bench.failure", "bench.kind"
SWEEP_ID, POINT_ID, POINT_KEY, GRID_KEY = "bench.sweep_id", "bench.point_id", "bench.point_key", "bench.grid_key"
COMMIT, UNSTABLE, STATE, LABEL = "bench.commit", "bench.unstable", "bench.sweep_state", "bench.label"
CONDITIONS = "bench.conditions"  # why a timed window was not clean: throttled, a shared GPU, a clock that fell
DESCRIPTION, RUN_NAME, PARENT_RUN = "mlflow.note.content", "mlflow.runName", "mlflow.parentRunId"
PARENT, CHILD = "parent", "point"  # values of bench.role
DISCARDED = "discarded"  # bench.role of a run cut off half-way that its account may not delete: in no table
# A sweep's parent is "complete" when every point has a result of its own (ok, skipped or failed in the point),
# "incomplete" when it was interrupted or points were lost on the way to the device: the same grid resumes it.
COMPLETE, INCOMPLETE = "complete", "incomplete"
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
    root = Path(__file__).resolve().parent.parent
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


def _weights(plan: dict) -> str:
    weights = plan["model"]["weights"]
    return weights if weights in ("random", "pretrained") else "state_dict"


def params(plan: dict, details: dict) -> dict[str, str]:
    """The settings that define a resolved point: no nulls, no CUDA-only settings on a CPU point, no paths."""
    on_cuda = plan["device"].startswith("cuda")
    backend = {k: v for k, v in plan["backend"].items() if k != "name" and v is not None}
    if not on_cuda:
        backend.pop("cuda_graphs", None)
    size = plan["input"]
    found = {
        "model": plan["model"]["name"],
        "model.weights": _weights(plan),
        "backend": plan["backend"]["name"],
        "backend.requested": plan["resolution"]["backend_requested"],
        "backend.variant": plan["resolution"]["variant"],
        **{f"backend.{k}": v for k, v in backend.items()},
        "precision": plan["precision"],
        "scenario": plan["scenario"],
        "input.shape": f"{size['batch_size']}x3x{size['height']}x{size['width']}",
        "input.batch_size": size["batch_size"],
        "device": plan["device"],
        "raw_baseline": plan["raw_baseline"],
        **{f"timing.{k}": plan["timing"][k] for k in ("warmup_iters", "warmup_s", "min_iters", "min_s", "repeats")},
        "accuracy.source": plan["accuracy"]["source"],
    }
    if plan["accuracy"]["source"] == "random":
        found.update({"accuracy.batches": plan["accuracy"]["batches"], "accuracy.seed": plan["accuracy"]["seed"]})
    else:
        found["accuracy.max_images"] = plan["accuracy"]["max_images"]
    if on_cuda:
        found.update({"cudnn_benchmark": plan["cudnn_benchmark"], "timing.include_copies":
                      plan["timing"]["include_copies"]})
    if plan["threads"] is not None:
        found["threads"] = plan["threads"]
    if plan["precision"] == "int8":
        calibration = plan["calibration"]
        found.update({"calibration.source": calibration["source"], "calibration.num_batches":
                      calibration["num_batches"]})
        found["calibration.seed" if calibration["source"] == "random" else "calibration.share_images"] = \
            calibration["seed"] if calibration["source"] == "random" else calibration["share_images"]
    if "timing.method" in details:
        found["timing.method"] = details["timing.method"]
    return {key: str(value) for key, value in found.items()}


def _fingerprint(tags: dict[str, str]) -> dict[str, str]:
    """The device's tags with one name for it: ``device.label``; name and CPU model only where they differ."""
    found = dict(tags)
    label = found.get("device.label")
    for key in ("device.name", "cpu.model"):
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


def figure_text(metrics: dict, key: str, stem: str, unit: str = "") -> str:
    """``0.37 ms (0.36-0.38)``: a figure rounded to its interval, the interval beside it where recorded."""
    low, high = metrics.get(f"{stem}_lo"), metrics.get(f"{stem}_hi")
    text = rounded(metrics[key], low, high) + unit
    if low is not None and high is not None:
        text += f" ({rounded(low, low, high)}-{rounded(high, low, high)})"
    return text


def describe(measurement: dict) -> str:
    """One line for the run's description: the figures with their intervals, how they compare with Raw, the
    accuracy."""
    if measurement["status"] != OK:
        return f"{measurement['status']}: {measurement['reason']}"
    m = measurement["metrics"]
    processes = int(m.get("repeats", 1))
    if measurement["plan"]["scenario"] == "throughput":
        text = (f"{figure_text(m, 'throughput_ips', 'throughput_ips', ' img/s')}, "
                f"{figure_text(m, 'throughput_speedup', 'throughput_speedup', 'x') if 'throughput_speedup' in m else '1x'}"
                f" over eager fp32 {m.get('raw_throughput_ips', m['throughput_ips']):,.0f} img/s")
    else:
        text = (f"end-to-end {figure_text(m, 'latency_ms_median', 'latency_ms', ' ms')}, "
                f"{figure_text(m, 'speedup', 'speedup', 'x')} over eager fp32 {m['raw_latency_ms_median']:.3g} ms")
        if "gpu_ms_median" in m:
            text += f"; GPU compute {figure_text(m, 'gpu_ms_median', 'gpu_ms', ' ms')}"
            if "gpu_speedup" in m:
                text += f", {figure_text(m, 'gpu_speedup', 'gpu_speedup', 'x')}"
    text += f"; {processes} process{'es' if processes > 1 else ''}"
    for metric, what in (("acc_top1", "top-1"), ("acc_top1_agreement", "top-1 agreement"),
                         ("acc_pixel_agreement", "pixel agreement")):
        if metric in m:
            text += f", {what} {100 * m[metric]:.3g} %"
            break
    if "energy_mj_per_image" in m:
        text += f", {m['energy_mj_per_image']:.3g} mJ/image"
    return text


def tags(measurement: dict) -> dict[str, str]:
    plan = measurement["plan"]
    sweep = plan.get("sweep") or {}
    details = measurement["details"]
    found = {
        **_fingerprint(measurement["tags"]),
        **{k: v for k, v in details.items() if k not in ("timing.method", "timing.unstable", "timing.conditions")},
        "model.task": plan["resolution"]["task"],
        ROLE: CHILD, STATUS: measurement["status"], REASON: measurement["reason"], POINT_ID: measurement["point_id"],
        POINT_KEY: point_key(plan, measurement["tags"].get("host.name", "")), KIND: sweep.get("kind", "sweep"),
        COMMIT: sweep.get("commit") or suite_commit(), RUN_NAME: point_name(plan), DESCRIPTION: describe(measurement),
        "device.label": plan["resolution"]["device_label"], "energy": plan["energy"],
        "timing.unstable_spread": plan["timing"]["unstable_spread"],
    }
    if sweep:
        found[SWEEP_ID] = sweep["id"]
    if measurement["failure"]:
        found[FAILURE] = measurement["failure"]
    if "timing.unstable" in details:
        found[UNSTABLE] = details["timing.unstable"]
    if "timing.conditions" in details:
        found[CONDITIONS] = details["timing.conditions"]
    if measurement["events"]:
        found["bench.events"] = " | ".join(measurement["events"])
    weights = plan["model"]["weights"]
    if weights not in ("random", "pretrained"):
        found["model.weights_path"] = weights
    if plan["calibration"]["source"] == "folder" and plan["precision"] == "int8":
        found["calibration.folder"] = plan["calibration"]["folder"]
    if plan["resolution"]["auto_tried"]:
        found["backend.auto_tried"] = "; ".join(plan["resolution"]["auto_tried"])
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


def histogram_png(measurement: dict) -> bytes:
    out = io.BytesIO()
    histogram_figure(measurement).savefig(out, format="png", dpi=90, bbox_inches="tight")
    return out.getvalue()


def histogram_figure(measurement: dict):
    """Per-call latencies as a small histogram on one set of bins, Raw beside them where the run timed it."""
    import numpy as np
    from matplotlib.figure import Figure

    figure = Figure(figsize=(5, 2.6))
    axes = figure.subplots()
    series = [(measurement["latencies_ms"], point_name(measurement["plan"]))]
    if measurement["raw_latencies_ms"] and measurement["raw_latencies_ms"] != measurement["latencies_ms"]:
        series.append((measurement["raw_latencies_ms"], "Raw (eager fp32, same processes)"))
    # One set of bins, evenly spaced on a log scale over the bulk of both series (the tail past the 99th percentile
    # is clipped into the last bin): a variant 7x faster than Raw gets as many bins across its calls as Raw does.
    pooled = np.concatenate([np.asarray(values, dtype=float) for values, _ in series])
    low, high = max(float(pooled.min()), 1e-6), float(np.percentile(pooled, 99))
    bins = np.geomspace(low, high if high > low * 1.001 else low * 1.01, 61)
    for values, label in series:
        axes.hist(np.clip(values, bins[0], bins[-1]), bins=bins, alpha=0.6, label=label)
    axes.set_xscale("log")
    per = "per window" if measurement["plan"]["scenario"] == "throughput" else "per call, end-to-end"
    axes.set_xlabel(f"latency {per} (ms; values past the 99th percentile in the last bin)")
    axes.set_ylabel("count")
    axes.legend(fontsize=7)
    return figure


def artifacts(measurement: dict) -> dict[str, str | bytes]:
    plan = {k: v for k, v in measurement["plan"].items() if k != "sweep"}
    found: dict[str, str | bytes] = {"config.yaml": yaml.safe_dump(plan, sort_keys=False)}
    per_process = measurement.get("calls_per_process") or {}
    if measurement["latencies_ms"]:
        found["latency_histogram.png"] = histogram_png(measurement)
    for key in ("latencies_ms", "raw_latencies_ms", "gpu_ms", "raw_gpu_ms"):
        if measurement.get(key):
            found[f"{key}.csv"] = latency_csv(measurement[key], per_process.get(key, []))
    if measurement.get("repeats"):
        found["repeats.csv"] = repeats_csv(measurement["repeats"])
    if measurement["error"]:
        found["error.txt"] = measurement["error"]
    found.update(measurement.get("artifacts", {}))
    return found


def record_from(measurement: dict) -> PointRecord:
    """The store's view of one measurement."""
    plan = measurement["plan"]
    return PointRecord(
        point_id=measurement["point_id"], name=point_name(plan),
        run_status=FAILED_RUN if measurement["status"] == FAILED else FINISHED_RUN,
        start_ms=measurement["started_ms"], end_ms=measurement["ended_ms"] or measurement["started_ms"],
        params=params(plan, measurement["details"]), tags=tags(measurement),
        metrics={k: float(v) for k, v in measurement["metrics"].items()}, artifacts=artifacts(measurement),
        sweep=plan.get("sweep"))
