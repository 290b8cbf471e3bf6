"""One grid point, measured: build -> reference -> raw baseline -> convert -> check -> time.

This runs in a child process by default (see bench.runner), so it returns a plain
``PointResult`` and never touches MLflow.
"""
from __future__ import annotations

import copy
import functools
import logging
import resource
import sys
import time
import traceback
from pathlib import Path
from dataclasses import dataclass, field

import torch
from omegaconf import DictConfig, OmegaConf

from bench import accuracy, calibration, timing
from bench.backends import BACKENDS
from bench.backends.base import ConversionRequest, Converted, Target, digest
from bench.config import Config
from bench.errors import ConfigError
from bench.models import build_model, model_spec

log = logging.getLogger(__name__)

OK, SKIPPED, FAILED = "ok", "skipped", "failed"


@dataclass
class PointResult:
    status: str
    reason: str = ""
    metrics: dict[str, float] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    latencies_ms: list[float] = field(default_factory=list)
    raw_latencies_ms: list[float] = field(default_factory=list)
    error: str = ""  # full traceback of a failure


def resolve_target(device: str) -> Target:
    """``auto`` -> the first CUDA device if torch sees one, else the CPU."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(device)
    except RuntimeError as exc:
        raise ConfigError(f"device={device!r} is not a device: use auto, cpu, cuda or cuda:N") from exc
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device={device} but torch sees no CUDA device here (use device=auto or cpu)")
        dev = torch.device("cuda", dev.index or 0)
        if dev.index >= torch.cuda.device_count():
            raise ConfigError(f"device={device}: only {torch.cuda.device_count()} CUDA device(s) here")
        return Target(dev, torch.cuda.get_device_capability(dev))
    if dev.type != "cpu":
        raise ConfigError(f"device={device!r} is not supported: use auto, cpu, cuda or cuda:N")
    return Target(dev)


def input_shape(cfg: Config) -> tuple[int, int, int, int]:
    spec = model_spec(cfg.model.name)
    return (cfg.input.batch_size, 3, cfg.input.height or spec.default_size, cfg.input.width or spec.default_size)


def weights_digest(model: torch.nn.Module) -> str:
    """Identifies the exact weights, so caches never serve another model's engine."""
    parts = [f"{name}:{tuple(t.shape)}:{float(t.double().sum()):.10e}" for name, t in model.state_dict().items()]
    return digest(*parts)


def _synchronize(target: Target) -> None:
    if target.is_cuda:
        torch.cuda.synchronize(target.device)


def _timed_call(converted: Converted, x: torch.Tensor, target: Target, include_copies: bool):
    """The zero-argument call the timer measures; with copies, the input starts on the host."""
    if include_copies and target.is_cuda:
        host = x.cpu().pin_memory()
        return lambda: converted.run(host.to(target.device, non_blocking=True)).cpu()
    return lambda: converted.run(x)


def _prepare(x: torch.Tensor, converted: Converted) -> torch.Tensor:
    x = x.to(converted.input_dtype)
    return x.contiguous(memory_format=torch.channels_last) if converted.channels_last else x


def measure_point(cfg: Config, backend_cfg: DictConfig) -> PointResult:
    """Measure one point with an already-resolved, runnable backend."""
    target = resolve_target(cfg.device)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.backends.cudnn.benchmark = cfg.cudnn_benchmark
    spec = model_spec(cfg.model.name)
    shape = input_shape(cfg)
    params: dict[str, str] = {}
    metrics: dict[str, float] = {}

    log.info("building %s (%s weights) on %s", cfg.model.name, cfg.model.weights, target.device)
    model = build_model(cfg.model, shape[2], shape[3], target.device, cfg.seed)
    generator = torch.Generator().manual_seed(cfg.accuracy.seed)
    inputs = [torch.randn(shape, generator=generator).to(target.device) for _ in range(cfg.accuracy.batches)]
    with torch.inference_mode():
        reference = [model(x).float().cpu() for x in inputs]

    raw = None
    is_raw_point = backend_cfg.name == "pytorch" and cfg.precision.name == "fp32"
    if cfg.raw_baseline and not is_raw_point:
        log.info("timing the raw baseline (eager fp32)")
        with torch.inference_mode():
            raw = timing.measure(functools.partial(model, inputs[0]), cfg.timing, shape[0], target.device)
        log.info("raw baseline: median %.3f ms", raw.stats()["latency_ms_median"])

    backend = BACKENDS[backend_cfg.name](backend_cfg)
    request = ConversionRequest(
        model=copy.deepcopy(model),
        example=inputs[0],
        precision=cfg.precision.name,
        target=target,
        cache_dir=cfg_cache_dir(cfg),
        cache_key=digest(cfg.model.name, weights_digest(model), shape, cfg.precision.name,
                         OmegaConf.to_yaml(cfg.calibration) if cfg.precision.name == "int8" else "",
                         torch.cuda.get_device_name(target.device) if target.is_cuda else "cpu"),
        threads=cfg.threads,
        calibration=lambda: [b.to(target.device) for b in calibration.batches(cfg.calibration, shape)],
    )
    if cfg.precision.name == "int8":
        params["calibration.source"] = calibration.describe(cfg.calibration)
    del model  # the reference is computed; free its memory before the backend builds
    if target.is_cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(target.device)
    log.info("converting with %s at %s", backend.name, cfg.precision.name)
    start = time.perf_counter()
    converted = backend.convert(request)
    _synchronize(target)
    metrics["convert_s"] = time.perf_counter() - start
    if converted.cache_hit is not None:
        metrics["convert_cache_hit"] = float(converted.cache_hit)
    params.update({f"backend.{k}": str(v) for k, v in converted.details.items()})
    log.info("converted in %.1f s%s", metrics["convert_s"], " (cache hit)" if converted.cache_hit else "")

    with torch.inference_mode():
        outputs = [converted.run(_prepare(x, converted)).float().cpu().clone() for x in inputs]
    metrics.update(accuracy.compare(reference, outputs, spec.task))

    log.info("timing %s", backend.name)
    x = _prepare(inputs[0], converted)
    with torch.inference_mode():
        measured = timing.measure(_timed_call(converted, x, target, cfg.timing.include_copies), cfg.timing,
                                  shape[0], target.device, converted.stream)
    metrics.update(measured.stats())
    raw = raw or measured
    metrics["raw_latency_ms_median"] = raw.stats()["latency_ms_median"]
    metrics["raw_latency_ms_mean"] = raw.stats()["latency_ms_mean"]
    metrics["speedup"] = metrics["raw_latency_ms_median"] / metrics["latency_ms_median"]
    metrics["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if target.is_cuda:
        metrics["peak_cuda_mem_mb"] = torch.cuda.max_memory_allocated(target.device) / 2**20
    params["timing.method"] = measured.method
    params["torch.cudnn_allow_tf32"] = str(torch.backends.cudnn.allow_tf32)
    params["torch.float32_matmul_precision"] = torch.get_float32_matmul_precision()
    params["timing.latency"] = "host latency incl. H2D/D2H copies" if cfg.timing.include_copies and target.is_cuda \
        else "device compute per call, input resident"
    return PointResult(status=OK, metrics=metrics, params=params, latencies_ms=measured.latencies_ms.tolist(),
                       raw_latencies_ms=raw.latencies_ms.tolist())


def cfg_cache_dir(cfg: Config) -> Path:
    path = Path(cfg.cache_dir).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path


def failed(exc: BaseException) -> PointResult:
    return PointResult(status=FAILED, reason=f"{type(exc).__name__}: {exc}".splitlines()[0][:500],
                       error="".join(traceback.format_exception(exc)))


def child_main(cfg_dict: dict, backend_dict: dict, connection) -> None:
    """Entry point of the per-point child process: measure, send the result back, exit."""
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="[%(asctime)s][%(name)s][%(levelname)s] - %(message)s")
    for chatty in ("onnx_ir", "onnxscript", "torch.onnx"):
        logging.getLogger(chatty).setLevel(logging.WARNING)
    cfg = OmegaConf.merge(OmegaConf.structured(Config), cfg_dict)
    backend_cfg = OmegaConf.merge(OmegaConf.structured(BACKENDS[backend_dict["name"]].config_class), backend_dict)
    try:
        result = measure_point(cfg, backend_cfg)
    except Exception as exc:  # noqa: BLE001 - a failing point is a recorded result, not a crash
        log.error("point failed: %s", exc)
        result = failed(exc)
    connection.send(result)
    connection.close()
