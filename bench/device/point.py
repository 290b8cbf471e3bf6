"""One resolved plan, measured: build -> reference -> raw baseline -> convert -> check -> time.

The worker runs this in a process of its own per point, so a crash is a failed point, not a dead
sweep. It returns a measurement (bench.contract.records.Measurement) and never touches a store.
"""
import copy
import functools
import logging
import os
import resource
import time
import traceback
from typing import Optional

import torch

from bench.contract.protocol import FAILED, OK, OUT_OF_MEMORY, POINT_FAILURE, SKIPPED, digest, now_ms
from bench.contract.records import Measurement, Plan
from bench.device import accuracy, calibration, fingerprint, sensors, timing
from bench.device.backends import create
from bench.device.backends.base import ConversionRequest, Converted, Target
from bench.device.inputs import PointInputs, resolve_inputs
from bench.device.models import CLASSIFICATION, build_model
from bench.device.resolve import cache_dir, input_shape, resolve_target
from bench.contract.names import (
    CONVERT_CACHE_HIT, CONVERT_S, ENERGY_SOURCE, GPU_MS, GPU_SPEEDUP, LATENCY_MS, LATENCY_MS_MEAN,
    PEAK_CUDA_MEM_MB, PEAK_RSS_MB, RAW_GPU_MS, RAW_LATENCY_MS, RAW_THROUGHPUT, THROUGHPUT, THROUGHPUT_SPEEDUP,
    TIMING_CONDITIONS, TIMING_GPU, TIMING_LATENCY, TIMING_METHOD)

log = logging.getLogger(__name__)


def weights_digest(model: torch.nn.Module) -> str:
    """Identifies the exact weights, so caches never serve another model's engine."""
    parts = ["{}:{}:{:.10e}".format(name, tuple(t.shape), float(t.double().sum())) for name, t in
             model.state_dict().items()]
    return digest(*parts)


def _synchronizer(target: Target):
    if target.is_cuda:
        return lambda: torch.cuda.synchronize(target.device)
    return lambda: None


def _timed_call(converted: Converted, x: torch.Tensor, target: Target, include_copies: bool):
    """The zero-argument call the timer measures; with copies, the input starts on the host."""
    if include_copies and target.is_cuda:
        host = x.cpu().pin_memory()
        return lambda: converted.run(host.to(target.device, non_blocking=True)).cpu()
    return lambda: converted.run(x)


def _gpu_unavailable(converted: Converted, include_copies: bool) -> Optional[str]:
    """Why the converted call's GPU compute time cannot be held and timed, or None when it can."""
    if include_copies:
        return "the timed call copies its output to the host, which waits for the GPU"
    return converted.gpu_unavailable


def _prepare(x: torch.Tensor, converted: Converted) -> torch.Tensor:
    x = x.to(converted.input_dtype)
    return x.contiguous(memory_format=torch.channels_last) if converted.channels_last else x


def _tf32_settings() -> dict:
    settings = {"torch.cudnn_allow_tf32": str(torch.backends.cudnn.allow_tf32),
                "torch.matmul_allow_tf32": str(torch.backends.cuda.matmul.allow_tf32)}
    if hasattr(torch, "get_float32_matmul_precision"):
        settings["torch.float32_matmul_precision"] = torch.get_float32_matmul_precision()
    return settings


def threads_for(plan: Plan, target: Target) -> Optional[int]:
    """The CPU threads a point computes with: ``threads``, or on a CPU point every CPU this process may use but one
    (at least one), which is left to the system, the controller and interrupts; None: the libraries' default
    (CUDA points). On a 2-vCPU virtual machine two threads made every figure hostage to the other vCPU's load
    (medians of separate processes 1.17-1.29x apart), one thread reproduced within 1.03-1.13x
    (docs/methodology.md)."""
    if plan.threads or target.is_cuda:
        return plan.threads
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cpus - 1)


def _convert(plan: Plan, model: torch.nn.Module, example: torch.Tensor, target: Target, found: PointInputs,
             measurement: Measurement):
    """The point's backend converts a copy of the model (timed; cache hits and events recorded)."""
    shape, precision = input_shape(plan), plan.precision
    metrics, details = measurement.metrics, measurement.details
    backend = create(plan.backend)
    cache_key = digest(plan.model.name, weights_digest(model), shape, precision,
                       sorted(plan.calibration._asdict().items()) if precision == "int8" else "",
                       torch.cuda.get_device_name(target.device) if target.is_cuda else "cpu")
    request = ConversionRequest(
        model=copy.deepcopy(model), example=example, precision=precision, target=target,
        cache_dir=cache_dir(plan), cache_key=cache_key, threads=threads_for(plan, target),
        calibration=lambda: [b.to(target.device) for b in calibration.batches(plan, shape, found)])
    if precision == "int8":
        details["calibration.inputs"] = calibration.describe(plan, found)
        if found.calibration is not None:
            measurement.artifacts["calibration_images.txt"] = "\n".join(
                found.calibration.files[:plan.calibration.num_batches * shape[0]]) + "\n"
    if target.is_cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(target.device)
    log.info("converting with %s at %s", plan.resolution.variant, precision)
    start = time.perf_counter()
    converted = backend.convert(request)
    _synchronizer(target)()
    metrics[CONVERT_S] = time.perf_counter() - start
    if converted.cache_hit is not None:
        metrics[CONVERT_CACHE_HIT] = float(converted.cache_hit)
    details.update({"backend." + key: value for key, value in converted.details.items()})
    measurement.events.extend(converted.cache_events)
    log.info("converted in %.1f s%s", metrics[CONVERT_S], " (cache hit)" if converted.cache_hit else "")
    return converted


def _time(plan: Plan, model: torch.nn.Module, converted: Converted, raw_input: torch.Tensor, target: Target,
          measurement: Measurement) -> None:
    """Time the converted model, and eager fp32 (Raw) in alternating rounds beside it, in this process."""
    settings, scenario, batch = plan.timing, plan.scenario, plan.input.batch_size
    metrics, details = measurement.metrics, measurement.details
    include_copies = settings.include_copies
    details["cpu.pinning"] = _pin(target, settings.pin_cpu)  # after the conversion, whose compilers use every core
    is_raw_point = plan.backend["name"] == "pytorch" and plan.precision == "fp32"
    x = _prepare(raw_input, converted)
    series = [timing.Timed("variant", _timed_call(converted, x, target, include_copies), converted.stream or
                           (torch.cuda.current_stream(target.device) if target.is_cuda else None),
                           _gpu_unavailable(converted, include_copies))]
    if plan.raw_baseline and not is_raw_point:
        series.append(timing.Timed("raw", functools.partial(model, raw_input),
                                   torch.cuda.current_stream(target.device) if target.is_cuda else None))
    log.info("timing %s%s (%s scenario)", plan.resolution.variant,
             " and the raw baseline (eager fp32) in alternating rounds" if len(series) > 1 else "", scenario)
    meter, details[ENERGY_SOURCE] = (None, "off: energy=off") if plan.energy == "off" else \
        sensors.energy_meter(plan.device)
    before = sensors.device_state(plan.device)
    with torch.no_grad():
        timed = timing.measure(series, settings, batch, scenario, _synchronizer(target), on_cuda=target.is_cuda,
                               meter=meter)
    after = sensors.device_state(plan.device)
    details.update({"state." + key: value for key, value in before.items()})
    details.update({"state.after." + key: after[key] for key in after if after[key] != before.get(key)})
    conditions = sensors.load_conditions(before, after)
    if conditions:
        details[TIMING_CONDITIONS] = "; ".join(conditions)
    measured, raw = timed["variant"], timed.get("raw", timed["variant"])
    metrics.update(measured.stats())
    raw_stats = raw.stats()
    for key in (LATENCY_MS, LATENCY_MS_MEAN, GPU_MS, THROUGHPUT):
        if key in raw_stats:
            metrics["raw_" + key] = raw_stats[key]
    metrics["speedup"] = metrics[RAW_LATENCY_MS] / metrics[LATENCY_MS]
    if GPU_MS in metrics and RAW_GPU_MS in metrics:
        metrics[GPU_SPEEDUP] = metrics[RAW_GPU_MS] / metrics[GPU_MS]
    if scenario == "throughput":
        metrics[THROUGHPUT_SPEEDUP] = metrics[THROUGHPUT] / metrics[RAW_THROUGHPUT]
    else:
        metrics.pop(RAW_THROUGHPUT, None)
    details[TIMING_METHOD] = measured.method
    details[TIMING_LATENCY] = timing.method_description(measured.method, include_copies and target.is_cuda)
    if target.is_cuda:
        details[TIMING_GPU] = timing.GPU_DESCRIPTION if measured.has_gpu else \
            "unavailable: " + (measured.gpu_unavailable or "not timed")
    measurement.latencies_ms = measured.latencies_ms.tolist()
    measurement.raw_latencies_ms = raw.latencies_ms.tolist()  # the Raw point's own calls are its baseline's
    measurement.gpu_ms = measured.gpu_ms.tolist() if measured.has_gpu else []
    measurement.raw_gpu_ms = raw.gpu_ms.tolist() if raw.has_gpu else []


def _pin(target: Target, wanted: bool) -> str:
    """On CUDA, pin this process to one CPU for the timing, the last it may use, the same in every process: the host
    thread that launches the GPU's work then never migrates, and every repeat runs from the same core. CPU points
    are not pinned (their threads: ``threads_for``)."""
    if not (wanted and target.is_cuda and hasattr(os, "sched_setaffinity")):
        return "not pinned"
    cpu = max(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cpu})
    return "pinned to CPU {}".format(cpu)


def _measure(plan: Plan, measurement: Measurement, first: bool) -> None:
    """Measure a runnable point into ``measurement``; ``first``: also check the outputs against eager fp32
    (a repeat only converts, from the cache, and times)."""
    target = resolve_target(plan.device)
    threads = threads_for(plan, target)
    if threads:
        torch.set_num_threads(threads)
    measurement.tags["cpu.threads"] = str(torch.get_num_threads())
    torch.backends.cudnn.benchmark = plan.cudnn_benchmark
    shape = input_shape(plan)
    task = plan.resolution.task
    metrics, details = measurement.metrics, measurement.details
    details["process.pid"] = os.getpid()  # one row per process in repeats.csv (bench.device.repeats)

    log.info("building %s (%s weights) on %s", plan.model.name, plan.model.weights, target.device)
    model = build_model(plan.model, shape[2], shape[3], target.device, plan.seed)
    found = resolve_inputs(plan, task == CLASSIFICATION)
    checked = accuracy.random_inputs(plan.accuracy, shape) if found.accuracy is None \
        else accuracy.folder_inputs(plan, shape, found, task)
    details.update(checked.details)
    inputs = [batch.to(target.device) for batch in (checked.batches if first else checked.batches[:1])]
    reference = []
    if first:
        with torch.no_grad():
            reference = [model(x).float().cpu() for x in inputs]
    converted = _convert(plan, model, inputs[0], target, found, measurement)
    if first:
        with torch.no_grad():
            outputs = [converted.run(_prepare(x, converted)).float().cpu().clone() for x in inputs]
        metrics.update(accuracy.compare(reference, outputs, task, checked.count))
        metrics.update(accuracy.labelled(reference, outputs, checked))
        if checked.files:
            measurement.artifacts["predictions.csv"] = accuracy.predictions_csv(reference, outputs, checked, task)
    _time(plan, model, converted, inputs[0], target, measurement)
    metrics[PEAK_RSS_MB] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if target.is_cuda:
        metrics[PEAK_CUDA_MEM_MB] = torch.cuda.max_memory_allocated(target.device) / 2 ** 20
    details.update(_tf32_settings())


def out_of_memory(exc: BaseException) -> bool:
    """An allocation the device could not satisfy: CUDA's (torch >= 1.13 has its own type, older torch says so),
    the CPU allocator's, ONNX Runtime's."""
    kind = getattr(torch.cuda, "OutOfMemoryError", None)
    text = str(exc).lower()
    return (kind is not None and isinstance(exc, kind)) or any(words in text for words in (
        "out of memory", "failed to allocate memory", "can't allocate memory"))


def device_tags(plan: Plan) -> dict:
    """The fingerprint of the device this plan runs on."""
    device = plan.device
    cuda = fingerprint.cuda_facts(int(device.split(":")[1])) if device.startswith("cuda") else None
    tags = fingerprint.device_tags(device, fingerprint.host_facts(), cuda)
    tags["cpu.threads"] = str(torch.get_num_threads())
    return tags


def measure(plan: Plan, first: bool = True) -> Measurement:
    """Measure one resolved plan in this process; the measurement says ok, skipped or failed, with the reason.

    ``first``: the point's first process, which also checks the outputs; later repeats only time.
    """
    measurement = Measurement(plan, {})
    reason = plan.resolution.skip_reason
    try:
        measurement.tags = device_tags(plan)
        if reason:
            measurement.update(status=SKIPPED, reason=reason)
        else:
            _measure(plan, measurement, first)
            measurement.status = OK
    except Exception as exc:  # noqa: BLE001 - a failing point is a recorded result, not a crash
        reason = "{}: {}".format(type(exc).__name__, exc).splitlines()[0][:500]
        error = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        if out_of_memory(exc):  # the device cannot hold this point: a fact about the device, not a crash
            log.warning("point skipped: out of memory (%s)", reason)
            measurement.update(status=SKIPPED, metrics={}, error=error,
                               reason="{} at batch {}: {}".format(OUT_OF_MEMORY, plan.input.batch_size, reason))
        else:
            log.error("point failed: %s", reason)
            measurement.update(status=FAILED, failure=POINT_FAILURE, metrics={}, reason=reason, error=error)
    measurement.ended_ms = now_ms()
    return measurement
