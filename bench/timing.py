"""The timing loop and its statistics. It knows no backend: it times a zero-argument call.

Like trtexec, it warms up for both a number of iterations and a duration, then measures until
both a minimum iteration count and a minimum duration are met. On CUDA every call is timed
with a pair of CUDA events on the stream the work is queued on and synchronised before the
next call (per-call latency, the blog's "time per image"); on the CPU with perf_counter_ns.
The method is part of the result, so unlike numbers are never compared.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from bench.config import TimingConfig

CUDA_EVENTS = "cuda_event_per_call_sync"
PERF_COUNTER = "perf_counter_ns"


@dataclass
class Timing:
    method: str
    latencies_ms: np.ndarray  # one entry per measured call, in call order
    batch_size: int

    def stats(self) -> dict[str, float]:
        lat = self.latencies_ms
        mean = float(lat.mean())
        p90, p95, p99 = np.percentile(lat, [90, 95, 99])
        return {
            "latency_ms_mean": mean,
            "latency_ms_median": float(np.median(lat)),
            "latency_ms_std": float(lat.std(ddof=1)) if lat.size > 1 else 0.0,
            "latency_ms_min": float(lat.min()),
            "latency_ms_max": float(lat.max()),
            "latency_ms_p90": float(p90),
            "latency_ms_p95": float(p95),
            "latency_ms_p99": float(p99),
            "iterations": float(lat.size),
            # batch / mean latency, never a mean of per-iteration rates
            "throughput_ips": self.batch_size * 1000.0 / mean,
        }


def _cpu_call_ms(fn: Callable[[], object]) -> float:
    start = time.perf_counter_ns()
    fn()
    return (time.perf_counter_ns() - start) / 1e6


def _cuda_timer(stream: torch.cuda.Stream) -> Callable[[Callable[[], object]], float]:
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)

    def call_ms(fn: Callable[[], object]) -> float:
        with torch.cuda.stream(stream):
            start.record(stream)
            fn()
            end.record(stream)
        end.synchronize()
        return start.elapsed_time(end)

    return call_ms


def measure(
    fn: Callable[[], object],
    cfg: TimingConfig,
    batch_size: int,
    device: torch.device,
    stream: torch.cuda.Stream | None = None,
) -> Timing:
    """Warm up, then time ``fn`` until ``cfg.min_iters`` calls and ``cfg.min_s`` seconds are both reached."""
    if device.type == "cuda":
        call_ms, method = _cuda_timer(stream or torch.cuda.current_stream(device)), CUDA_EVENTS
        torch.cuda.synchronize(device)
    else:
        call_ms, method = _cpu_call_ms, PERF_COUNTER

    warm_iters, warm_start = 0, time.perf_counter()
    while warm_iters < cfg.warmup_iters or time.perf_counter() - warm_start < cfg.warmup_s:
        call_ms(fn)
        warm_iters += 1

    latencies: list[float] = []
    start = time.perf_counter()
    while len(latencies) < max(cfg.min_iters, 1) or time.perf_counter() - start < cfg.min_s:
        latencies.append(call_ms(fn))
    return Timing(method=method, latencies_ms=np.asarray(latencies), batch_size=batch_size)
