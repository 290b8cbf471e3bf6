"""The timing loop and its statistics. It knows no backend: it times zero-argument calls.

Like trtexec, it warms up for both a number of iterations and a duration, then measures until
both a minimum call count and a minimum duration are met. Two scenarios, never mixed in one run:

- ``latency`` (the blog's "time per image"): each call timed alone, two figures, each named for
  what it times (trtexec's "Latency" and "GPU Compute Time"):
  * **end-to-end**: the host's clock around the call and the device synchronisation that follows
    it, input resident; what an application sees. On the CPU it is the only figure.
  * **GPU compute** (CUDA only): a spin kernel holds the stream until the call is queued, then a
    pair of CUDA events brackets the call, so the GPU runs the call's work without waiting for the
    host's launches (NVBench's blocking kernel). Each call checks that the hold held (the start
    event was not reached when queuing ended); calls where it did not are discarded and counted.
- ``throughput`` (MLPerf's Offline, trtexec's throughput): calls back to back in windows of about
  ``WINDOW_S`` seconds, one device synchronisation per window, timed by the host's wall clock;
  images per second = batch x calls / wall time, and one latency per window (its time / calls).

Several series (the converted model and its eager fp32 baseline) are timed in alternating rounds,
so a machine that drifts during the run slows them alike and their ratio holds. The method is part
of the result, so unlike numbers are never compared.
"""
import math
import time
from typing import Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np
from bench.contract import records
from bench.contract.names import (
    ENERGY_MJ, ENERGY_MJ_PER_IMAGE, GPU_CV, GPU_HOLD_FRACTION, GPU_MS, GPU_MS_P90, GPU_MS_P99, ITERATIONS, LATENCY_CV,
    LATENCY_MS, LATENCY_MS_MAX, LATENCY_MS_MEAN, LATENCY_MS_MIN, LATENCY_MS_P90, LATENCY_MS_P95, LATENCY_MS_P99,
    LATENCY_MS_STD, POWER_W_MEAN, THROUGHPUT)

# Python 3.6 has no perf_counter_ns; perf_counter has the same clock at float resolution.
HOST_CLOCK = "perf_counter_ns" if hasattr(time, "perf_counter_ns") else "perf_counter"
HOST_CLOCK_CUDA = HOST_CLOCK + "_cuda_sync"  # end-to-end on CUDA: the host clock around call + synchronize
WINDOW_WALL_CLOCK = "wall_clock_per_window_sync"
_HOST_TICKS, _HOST_TICKS_PER_MS = getattr(time, HOST_CLOCK), (1e6 if HOST_CLOCK == "perf_counter_ns" else 1e-3)
WINDOW_S = 0.1  # throughput: one device synchronisation per this much work
ROUNDS = 4  # series timed together alternate in this many blocks each
REWARM_CALLS = 2  # untimed calls at the start of a block, after another series had the device
MIN_HOLD_FRACTION = 0.5  # a GPU-compute figure from fewer held calls than this is not reported
MAX_SPIN_MS = 200.0


def host_seconds() -> float:
    return time.perf_counter()


class Timed(NamedTuple):
    """One series to time: its name, the zero-argument call, and the CUDA stream its work is queued on
    (None: no GPU-compute figure; ``gpu_unavailable`` says why where one was expected)."""

    name: str
    call: Callable[[], object]
    stream: object = None
    gpu_unavailable: Optional[str] = None


class Timing:
    """What one series measured in one process: per-call (or per-window) latencies and their wall time."""

    def __init__(self, method: str, latencies_ms: List[float], batch_size: int, calls: int, wall_s: float,
                 scenario: str, energy: Optional[Tuple[float, float]] = None,
                 gpu_ms: Optional[List[float]] = None, gpu_attempts: int = 0,
                 gpu_unavailable: Optional[str] = None) -> None:
        self.method = method
        self.latencies_ms = np.asarray(latencies_ms, dtype=float)
        self.batch_size = batch_size
        self.calls = calls
        self.wall_s = wall_s
        self.scenario = scenario
        self.energy = energy  # (millijoules, mean watts) over the timed calls, where a meter watched them
        self.gpu_ms = np.asarray(gpu_ms if gpu_ms is not None else [], dtype=float)
        self.gpu_attempts = gpu_attempts
        self.gpu_unavailable = gpu_unavailable
        if gpu_attempts and self.gpu_ms.size < MIN_HOLD_FRACTION * gpu_attempts:
            self.gpu_unavailable = ("the stream was held in only {} of {} calls (the call waits for the GPU from "
                                    "the host)".format(self.gpu_ms.size, gpu_attempts))

    @property
    def has_gpu(self) -> bool:
        return self.gpu_unavailable is None and self.gpu_ms.size > 0

    def stats(self) -> Dict[str, float]:
        lat = self.latencies_ms
        stats = dict(call_stats(lat), **{LATENCY_MS: float(np.median(lat)), ITERATIONS: float(self.calls)})
        if self.scenario == "throughput":
            # images over the wall time of every window, never a mean of per-window rates
            stats[THROUGHPUT] = self.batch_size * self.calls / self.wall_s
            stats["windows"] = float(lat.size)
        else:
            stats[THROUGHPUT] = self.batch_size * 1000.0 / stats[LATENCY_MS_MEAN]
        if self.has_gpu:
            gpu = self.gpu_ms
            stats.update({GPU_MS: float(np.median(gpu)), GPU_MS_P90: float(np.percentile(gpu, 90)),
                          GPU_MS_P99: float(np.percentile(gpu, 99)),
                          GPU_CV: float(gpu.std(ddof=1) / gpu.mean()) if gpu.size > 1 else 0.0,
                          GPU_HOLD_FRACTION: gpu.size / float(self.gpu_attempts)})
        if self.energy is not None:
            energy_mj, power_w = self.energy
            stats.update({ENERGY_MJ: energy_mj, POWER_W_MEAN: power_w,
                          ENERGY_MJ_PER_IMAGE: energy_mj / (self.calls * self.batch_size)})
        return stats


def call_stats(latencies: np.ndarray) -> Dict[str, float]:
    """Mean, std, min, max, p90/p95/p99 and CV of per-call latencies (one process's, or every process's pooled)."""
    mean = float(latencies.mean())
    std = float(latencies.std(ddof=1)) if latencies.size > 1 else 0.0
    p90, p95, p99 = np.percentile(latencies, [90, 95, 99])
    return {LATENCY_MS_MEAN: mean, LATENCY_MS_STD: std, LATENCY_MS_MIN: float(latencies.min()),
            LATENCY_MS_MAX: float(latencies.max()), LATENCY_MS_P90: float(p90), LATENCY_MS_P95: float(p95),
            LATENCY_MS_P99: float(p99), LATENCY_CV: std / mean if mean > 0 else 0.0}


class StreamHold:
    """GPU compute time of one call: a spin kernel holds ``stream`` until the call is queued.

    The spin lasts three times the host's typical queuing time of a call (the median of the warm-up's)
    and doubles whenever a call finds the hold gone, up to ``MAX_SPIN_MS``.
    """

    def __init__(self, stream, queue_ms: float) -> None:
        import torch

        self.torch, self.stream = torch, stream
        self.start = torch.cuda.Event(enable_timing=True)
        self.end = torch.cuda.Event(enable_timing=True)
        self.spin_ms = min(MAX_SPIN_MS, max(1.0, 3.0 * queue_ms))
        self.cycles_per_ms = self._cycles_per_ms()

    def _cycles_per_ms(self) -> float:
        cycles = 1000000
        with self.torch.cuda.stream(self.stream):
            self.start.record(self.stream)
            self.torch.cuda._sleep(cycles)
            self.end.record(self.stream)
        self.end.synchronize()
        return cycles / max(self.start.elapsed_time(self.end), 1e-3)

    def call_ms(self, fn: Callable[[], object]) -> Optional[float]:
        """The call's GPU time in ms, or None when the GPU reached the call before it was queued."""
        with self.torch.cuda.stream(self.stream):
            self.torch.cuda._sleep(int(self.spin_ms * self.cycles_per_ms))
            self.start.record(self.stream)
            fn()
            self.end.record(self.stream)
        held = not self.start.query()
        self.end.synchronize()
        if not held:
            self.spin_ms = min(MAX_SPIN_MS, 2 * self.spin_ms)
            return None
        return self.start.elapsed_time(self.end)


def _end_to_end(fn: Callable[[], object], synchronize: Callable[[], None]) -> float:
    """One call on the host's clock, until the device has finished it."""
    start = _HOST_TICKS()
    fn()
    synchronize()
    return (_HOST_TICKS() - start) / _HOST_TICKS_PER_MS


def _queue_ms(fn: Callable[[], object], synchronize: Callable[[], None]) -> float:
    """How long the host takes to queue one call (the device then finishes it)."""
    start = _HOST_TICKS()
    fn()
    queued = (_HOST_TICKS() - start) / _HOST_TICKS_PER_MS
    synchronize()
    return queued


def _warm_up(call: Callable[[], float], timing: records.Timing) -> List[float]:
    """Warm up for both ``warmup_iters`` calls and ``warmup_s`` seconds; what each call returned."""
    seen, start = [], host_seconds()
    while len(seen) < timing.warmup_iters or host_seconds() - start < timing.warmup_s:
        seen.append(call())
    return seen


def _block(call: Callable[[], Optional[float]], calls: int, seconds: float) -> Tuple[List[float], int, float]:
    """Time ``call`` until ``calls`` attempts and ``seconds``: (the values it gave, attempts, wall seconds)."""
    values, attempts, start = [], 0, host_seconds()
    while attempts < calls or host_seconds() - start < seconds:
        value = call()
        attempts += 1
        if value is not None:
            values.append(value)
    return values, attempts, host_seconds() - start


class _Series:
    """Accumulates one series' blocks."""

    def __init__(self, timed: Timed) -> None:
        self.timed = timed
        self.latencies, self.calls, self.wall = [], 0, 0.0
        self.gpu, self.gpu_attempts = [], 0
        self.energy_mj, self.metered_s = 0.0, 0.0
        self.window = 1
        self.hold = None  # type: Optional[StreamHold]


def measure(series: Sequence[Timed], timing: records.Timing, batch_size: int, scenario: str,
            synchronize: Callable[[], None], on_cuda: bool = False, meter=None) -> Dict[str, Timing]:
    """Time every series in ``scenario`` until ``timing.min_iters`` calls and ``timing.min_s`` seconds each.

    With more than one series they alternate in ``ROUNDS`` blocks (each block re-warms briefly); on CUDA each
    block times the end-to-end calls, then the GPU-compute calls, each to the block's share of the minimums.
    ``synchronize`` waits for the device (a no-op on the CPU). ``meter`` (``start()``,
    ``stop() -> (mJ, W)``) watches the first series' end-to-end blocks, warm-up excluded.
    """
    rounds = ROUNDS if len(series) > 1 else 1
    block_calls = int(math.ceil(max(timing.min_iters, 1) / float(rounds)))
    block_s = timing.min_s / float(rounds)
    rewarm = REWARM_CALLS if rounds > 1 else 0
    states = [_Series(timed) for timed in series]
    synchronize()
    for state in states:
        fn = state.timed.call
        if scenario == "throughput":
            warm = _warm_up(lambda: _end_to_end(fn, synchronize), timing)
            per_call_ms = sum(warm) / max(len(warm), 1)
            state.window = max(1, min(timing.min_iters, int(math.ceil(WINDOW_S * 1e3 / max(per_call_ms, 1e-6)))))
            continue
        if on_cuda and state.timed.stream is not None and state.timed.gpu_unavailable is None:
            queued = _warm_up(lambda: _queue_ms(fn, synchronize), timing) or [1.0]
            # the typical queuing time: the first calls can record CUDA graphs or autotune, far longer than the rest
            state.hold = StreamHold(state.timed.stream, float(np.median(queued)))
        else:
            _warm_up(lambda: _end_to_end(fn, synchronize), timing)
    for _ in range(rounds):
        for index, state in enumerate(states):
            _time_block(state, scenario, block_calls, block_s, rewarm, synchronize, meter if index == 0 else None)
    return {state.timed.name: _timing(state, on_cuda, batch_size, scenario, meter is not None and index == 0)
            for index, state in enumerate(states)}


def _time_block(state: _Series, scenario: str, calls: int, seconds: float, rewarm: int,
                synchronize: Callable[[], None], meter) -> None:
    fn = state.timed.call
    if scenario == "throughput":
        def window_ms() -> float:
            start = _HOST_TICKS()
            for _ in range(state.window):
                fn()
            synchronize()
            return (_HOST_TICKS() - start) / _HOST_TICKS_PER_MS / state.window
        windows = int(math.ceil(calls / float(state.window)))
        call = window_ms
    else:
        windows, call = calls, (lambda: _end_to_end(fn, synchronize))
    for _ in range(rewarm):
        call()
    if meter:  # started after the re-warm: it watches exactly the timed calls
        meter.start()
    values, attempts, wall = _block(call, windows, seconds)
    if meter:
        energy_mj, _ = meter.stop()
        state.energy_mj += energy_mj
        state.metered_s += wall
    state.latencies.extend(values)
    if scenario == "throughput":  # the wall time of the windows themselves: images / wall = batch / mean window
        state.calls += attempts * state.window
        state.wall += sum(values) * state.window / 1e3
    else:
        state.calls += attempts
        state.wall += wall
    if state.hold is not None:
        for _ in range(rewarm):
            state.hold.call_ms(fn)
        gpu, attempts, _ = _block(lambda: state.hold.call_ms(fn), calls, seconds)
        state.gpu.extend(gpu)
        state.gpu_attempts += attempts


def _timing(state: _Series, on_cuda: bool, batch_size: int, scenario: str, metered: bool) -> Timing:
    if scenario == "throughput":
        method, unavailable = WINDOW_WALL_CLOCK, "throughput windows are timed by the host clock"
    else:
        method = HOST_CLOCK_CUDA if on_cuda else HOST_CLOCK
        unavailable = state.timed.gpu_unavailable or (None if state.hold else "no CUDA stream to hold")
    energy = None
    if metered and state.metered_s > 0:
        energy = (state.energy_mj, state.energy_mj / 1e3 / state.metered_s)
    return Timing(method, state.latencies, batch_size, state.calls, state.wall, scenario, energy,
                  state.gpu if state.hold else None, state.gpu_attempts, unavailable if on_cuda else None)


def method_description(method: str, include_copies: bool) -> str:
    """What the end-to-end figure of a method times, in words, for every record."""
    if method == WINDOW_WALL_CLOCK:
        return "throughput: back-to-back calls, one sync per window, wall clock; latency = window time / calls"
    if method == HOST_CLOCK_CUDA:
        copies = "incl. host-to-device and device-to-host copies" if include_copies else "input resident on the GPU"
        return "end-to-end per call: host clock around the call + CUDA synchronize, {}".format(copies)
    return "end-to-end per call: host clock around the call, input resident"


GPU_DESCRIPTION = ("GPU compute per call: CUDA events around the call while a spin kernel holds the stream until "
                   "the call is queued (no host launch gaps inside); the hold is checked per call")
