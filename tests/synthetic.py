"""Measurements of devices that are not here (the blog's Jetsons, an H100), for the analysis tests.

A stand-in for hardware only: each is a measurement in the measuring core's own format
(``bench.contract.records.Measurement``), recorded through the real ``bench.store.record`` and
``bench.store.tracking`` code into a real MLflow store, exactly as a sweep on such a device records it.
"""
from __future__ import annotations

import uuid

from bench.store import record
from bench.contract.protocol import FAILED, OK, PROTOCOL
from bench.contract.records import Measurement, Plan
from bench.store.tracking import Store

SEGMENTATION = ("fcn_resnet50", "fcn_resnet101", "deeplabv3_resnet50", "deeplabv3_resnet101")


def tracking(uri: str) -> dict:
    return {"uri": uri, "experiment": "trt-bench", "timeout_s": 10, "retries": 2, "spool_dir": None,
            "server": False}


def plan(model: str, backend: str, precision: str, size: int, device_tags: dict, batch: int = 1,
         scenario: str = "latency", requested: str | None = None) -> dict:
    """A resolved plan as the core returns it for this point."""
    task = "segmentation" if model in SEGMENTATION else "classification"
    return {
        "protocol": PROTOCOL, "sweep": None,
        "model": {"name": model, "weights": "random", "bn_recalibration_batches": 8},
        "backend": {"name": backend}, "precision": precision, "scenario": scenario,
        "input": {"height": size, "width": size, "batch_size": batch},
        "timing": {"warmup_iters": 10, "warmup_s": 1.0, "min_iters": 50, "min_s": 3.0, "include_copies": False,
                   "repeats": 1, "interval": 0.95, "unstable_spread": 0.05, "lock_clocks": False, "pin_cpu": True},
        "calibration": {"source": "random", "folder": None, "num_batches": 8, "seed": 1234, "share_images": False},
        "accuracy": {"source": "random", "folder": None, "masks": None, "max_images": 500, "batches": 4, "seed": 0},
        "energy": "auto", "device": "cuda:0", "threads": None, "cudnn_benchmark": True, "raw_baseline": True,
        "cache_dir": "~/.cache/trt-bench", "seed": 0,
        "resolution": {"backend_requested": requested or backend, "variant": backend, "task": task,
                       "device_label": device_tags["device.label"], "skip_reason": None, "auto_tried": None},
    }


def measurement(device_tags: dict, model: str, backend: str, precision: str, size: int, median: float | None = None,
                raw: float | None = None, status: str = OK, reason: str = "", start_ms: int | None = None,
                agreement: float = 0.99, rel_err: float | None = None, samples: list[float] | None = None,
                raw_samples: list[float] | None = None, requested: str | None = None) -> Measurement:
    """One point's measurement on a device that is not here."""
    made = Measurement(Plan.from_json(plan(model, backend, precision, size, device_tags, requested=requested)),
                       dict(device_tags))
    made.update(status=status, reason=reason)
    if start_ms is not None:
        made.started_ms = start_ms
    made.ended_ms = made.started_ms + 1000
    if status == FAILED:
        made.update(failure="point", error=f"Traceback ...\n{reason}\n")
    if status == OK:
        raw = raw if raw is not None else median
        task = made.plan.resolution.task
        agreement_metric = "acc_top1_agreement" if task == "classification" else "acc_pixel_agreement"
        made.metrics = {
            "latency_ms_median": median, "latency_ms_mean": median * 1.01, "latency_ms_p90": median * 1.05,
            "latency_cv": 0.02, "raw_latency_ms_median": raw, "raw_latency_ms_mean": raw * 1.01,
            "speedup": raw / median, "convert_s": 10.0 + median, "convert_cache_hit": 0.0, "iterations": 3.0,
            "acc_rel_l2_err": rel_err if rel_err is not None else 1e-3 if precision == "int8" else 1e-6,
            agreement_metric: agreement, "acc_nonfinite": 0.0, "throughput_ips": 1000.0 / median,
        }
        made.details = {"timing.method": "perf_counter_ns_cuda_sync",
                           "timing.latency": "end-to-end per call: host clock around the call + CUDA synchronize, "
                                             "input resident on the GPU"}
        made.latencies_ms = samples or [median * 0.97, median, median * 1.05]
        made.raw_latencies_ms = raw_samples or [raw, raw * 1.02]
    return made


def record_sweep(uri: str, name: str, measurements: list[dict], kind: str = "sweep",
                 started_ms: int | None = None) -> str:
    """The measurements as one sweep (a parent run and its children) in the store; the parent's id."""
    store = Store(tracking(uri))
    started = started_ms or min(m.started_ms for m in measurements)
    sweep = record.new_sweep(uuid.uuid4().hex, f"grid-{name}", kind, name, {}, len(measurements), started,
                             "trt-bench", uri)
    parent = store.parent_for(sweep)
    for made in measurements:
        made.plan = made.plan._replace(sweep=sweep)
        store.upload(record.record_from(made), parent)
    store.close_parent(parent)
    return parent
