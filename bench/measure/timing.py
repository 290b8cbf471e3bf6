"""The timing loop and its statistics. It knows no backend: it times a zero-argument call.

Like trtexec, it warms up for both a number of iterations and a duration, then measures until
both a minimum call count and a minimum duration are met. Two scenarios, never mixed in one run:

- ``latency`` (the blog's "time per image"): each call timed alone and synchronised before the
  next. On CUDA with a pair of CUDA events on the stream the work is queued on; on the CPU with
  the host's performance counter.
- ``throughput`` (MLPerf's Offline, trtexec's throughput): calls back to back in windows of about
  ``WINDOW_S`` seconds, one device synchronisation per window, timed by the host's wall clock;
  images per second = batch x calls / wall time, and one latency per window (its time / calls).

The method is part of the result, so unlike numbers are never compared.
"""
import math
import time
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np

CUDA_EVENTS = "cuda_event_per_call_sync"
WINDOW_WALL_CLOCK = "wall_clock_per_window_sync"
# Python 3.6 has no perf_counter_ns; perf_counter has the same clock at float resolution.
HOST_CLOCK = "perf_counter_ns" if hasattr(time, "perf_counter_ns") else "perf_counter"
_HOST_TICKS, _HOST_TICKS_PER_MS = getattr(time, HOST_CLOCK), (1e6 if HOST_CLOCK == "perf_counter_ns" else 1e-3)
WINDOW_S = 0.1  # throughput: one device synchronisation per this much work


def host_seconds() -> float:
    return time.perf_counter()


class Timing:
    """What one timed run measured: per-call (or per-window) latencies and the wall time they took."""

    def __init__(self, method: str, latencies_ms: List[float], batch_size: int, calls: int, wall_s: float,
                 scenario: str, energy: Optional[Tuple[float, float]] = None) -> None:
        self.method = method
        self.latencies_ms = np.asarray(latencies_ms, dtype=float)
        self.batch_size = batch_size
        self.calls = calls
        self.wall_s = wall_s
        self.scenario = scenario
        self.energy = energy  # (millijoules, mean watts) over the timed window, where a meter watched it

    def stats(self) -> Dict[str, float]:
        lat = self.latencies_ms
        mean = float(lat.mean())
        p90, p95, p99 = np.percentile(lat, [90, 95, 99])
        std = float(lat.std(ddof=1)) if lat.size > 1 else 0.0
        stats = {
            "latency_ms_mean": mean,
            "latency_ms_median": float(np.median(lat)),
            "latency_ms_std": std,
            "latency_ms_min": float(lat.min()),
            "latency_ms_max": float(lat.max()),
            "latency_ms_p90": float(p90),
            "latency_ms_p95": float(p95),
            "latency_ms_p99": float(p99),
            "latency_cv": std / mean if mean > 0 else 0.0,
            "iterations": float(self.calls),
        }
        if self.scenario == "throughput":
            # images over the wall time of every window, never a mean of per-window rates
            stats["throughput_ips"] = self.batch_size * self.calls / self.wall_s
            stats["windows"] = float(lat.size)
        else:
            stats["throughput_ips"] = self.batch_size * 1000.0 / mean
        if self.energy is not None:
            energy_mj, power_w = self.energy
            stats.update(energy_mj=energy_mj, power_w_mean=power_w,
                         energy_mj_per_image=energy_mj / (self.calls * self.batch_size))
        return stats


def _host_call_ms(fn: Callable[[], object]) -> float:
    start = _HOST_TICKS()
    fn()
    return (_HOST_TICKS() - start) / _HOST_TICKS_PER_MS


def _cuda_call_timer(stream) -> Callable[[Callable[[], object]], float]:
    import torch

    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)

    def call_ms(fn: Callable[[], object]) -> float:
        with torch.cuda.stream(stream):
            start.record(stream)
            fn()
            end.record(stream)
        end.synchronize()
        return start.elapsed_time(end)

    return call_ms


def _warm_up(call: Callable[[], object], timing: dict) -> float:
    """Warm up for both ``warmup_iters`` calls and ``warmup_s`` seconds; seconds per call, for sizing windows."""
    calls, start = 0, host_seconds()
    while calls < timing["warmup_iters"] or host_seconds() - start < timing["warmup_s"]:
        call()
        calls += 1
    return (host_seconds() - start) / max(calls, 1)


def measure(fn: Callable[[], object], timing: dict, batch_size: int, scenario: str,
            synchronize: Callable[[], None], stream=None, on_cuda: bool = False, meter=None) -> Timing:
    """Time ``fn`` in ``scenario`` until ``timing["min_iters"]`` calls and ``timing["min_s"]`` seconds.

    ``synchronize`` waits for the device (a no-op on the CPU); ``stream`` is the CUDA stream the
    work is queued on (latency scenario on CUDA only). ``meter`` (``start()``, ``stop() -> (mJ, W)``)
    watches exactly the timed calls, warm-up excluded.
    """
    min_calls = max(timing["min_iters"], 1)
    if scenario == "latency":
        if on_cuda:
            import torch

            call_ms, method = _cuda_call_timer(stream or torch.cuda.current_stream()), CUDA_EVENTS
        else:
            call_ms, method = _host_call_ms, HOST_CLOCK
        synchronize()
        _warm_up(lambda: call_ms(fn), timing)
        latencies = []  # type: List[float]
        if meter:
            meter.start()
        start = host_seconds()
        while len(latencies) < min_calls or host_seconds() - start < timing["min_s"]:
            latencies.append(call_ms(fn))
        wall = host_seconds() - start
        return Timing(method, latencies, batch_size, len(latencies), wall, scenario, meter.stop() if meter else None)

    def sync_call() -> None:
        fn()
        synchronize()

    synchronize()
    per_call = _warm_up(sync_call, timing)
    window = max(1, min(min_calls, int(math.ceil(WINDOW_S / max(per_call, 1e-9)))))
    windows, calls, wall = [], 0, 0.0
    if meter:
        meter.start()
    while calls < min_calls or wall < timing["min_s"]:
        start = host_seconds()
        for _ in range(window):
            fn()
        synchronize()
        elapsed = host_seconds() - start
        windows.append(elapsed * 1e3 / window)
        calls += window
        wall += elapsed
    return Timing(WINDOW_WALL_CLOCK, windows, batch_size, calls, wall, scenario, meter.stop() if meter else None)


def method_description(method: str, include_copies: bool) -> str:
    """What latency a method measures, in words, for every record."""
    if method == WINDOW_WALL_CLOCK:
        return "throughput: back-to-back calls, one sync per window, wall clock; latency = window time / calls"
    if include_copies:
        return "host latency incl. H2D/D2H copies, sync per call"
    return "device compute per call, input resident, sync per call"


def cv_unstable(cv: float, threshold: float) -> Optional[str]:
    """The reason a run counts as unstable (like trtexec's warning), or None."""
    if threshold > 0 and cv > threshold:
        return "latency CV {:.1%} above {:.0%}".format(cv, threshold)
    return None
