"""One point measured in several fresh processes, summarised the way pyperf and asv do.

Within one process the calls of a model agree closely; between processes they often do not (where
threads land, which algorithms cuDNN's autotuner picks, the allocator, the machine's load that
minute). So a point's figure is the median of its processes' medians, and how far the processes
agree is measured and kept with it:

- an interval at ``timing.interval`` (default 95 %): Student's t over the logarithms of the process
  medians, i.e. of their geometric mean (latencies and speed-ups are ratios at heart); with one
  process, the distribution-free interval of that process's median latency from its calls, which
  says nothing of other processes;
- the spread, max / min of the process medians;
- unstable, when the robust dispersion of the process medians (1.4826 x MAD / median) exceeds
  ``timing.unstable_spread``: a heavy tail inside one process no longer makes a point unstable.

Standard library and numpy only: this runs on the device (Python 3.6).
"""
import math
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from bench.contract import records
from bench.device.timing import call_stats
from bench.contract.protocol import MAD_SCALE
from bench.contract.names import (
    CONVERT_S, ENERGY_MJ, ENERGY_MJ_PER_IMAGE, GPU_CV, GPU_HOLD_FRACTION, GPU_MS, GPU_MS_P90, GPU_MS_P99,
    GPU_SPEEDUP, LATENCY_CV, LATENCY_MS, POWER_W_MEAN, RAW_GPU_MS, RAW_LATENCY_MS, RAW_LATENCY_MS_MEAN,
    RAW_THROUGHPUT, THROUGHPUT, THROUGHPUT_SPEEDUP, TIMING_GPU, TIMING_UNSTABLE)

# Figures summarised across processes: metric -> the stem of its interval and spread metrics.
FIGURES = {LATENCY_MS: "latency_ms", GPU_MS: "gpu_ms", "speedup": "speedup",
           GPU_SPEEDUP: GPU_SPEEDUP, THROUGHPUT: THROUGHPUT, THROUGHPUT_SPEEDUP: THROUGHPUT_SPEEDUP}
# Per-process figures whose median across processes is the point's (no interval of their own).
MEDIANS = (RAW_LATENCY_MS, RAW_LATENCY_MS_MEAN, RAW_GPU_MS, RAW_THROUGHPUT,
           GPU_MS_P90, GPU_MS_P99, GPU_CV, ENERGY_MJ, POWER_W_MEAN, ENERGY_MJ_PER_IMAGE)
CALL_SERIES = ("latencies_ms", "raw_latencies_ms", "gpu_ms", "raw_gpu_ms")  # per-call figures, kept per process


def _t_two_sided(t: float, df: int) -> float:
    """P(|T| <= t) for Student's t with integer ``df`` (Abramowitz & Stegun 26.7.3-4)."""
    theta = math.atan(t / math.sqrt(df))
    cos2, sin = math.cos(theta) ** 2, math.sin(theta)
    if df % 2:
        if df == 1:
            return 2 * theta / math.pi
        term = total = math.cos(theta)
        for k in range(1, (df - 3) // 2 + 1):
            term *= cos2 * (2 * k) / (2 * k + 1)
            total += term
        return 2 / math.pi * (theta + sin * total)
    term = total = 1.0
    for k in range(1, (df - 2) // 2 + 1):
        term *= cos2 * (2 * k - 1) / (2 * k)
        total += term
    return sin * total


def t_quantile(level: float, df: int) -> float:
    """The t with P(|T| <= t) = ``level`` (two-sided), by bisection."""
    low, high = 0.0, 1.0
    while _t_two_sided(high, df) < level:
        high *= 2
    for _ in range(100):
        middle = (low + high) / 2
        low, high = (middle, high) if _t_two_sided(middle, df) < level else (low, middle)
    return (low + high) / 2


def _normal_quantile(level: float) -> float:
    """The z with P(|Z| <= z) = ``level``."""
    low, high = 0.0, 40.0
    for _ in range(100):
        middle = (low + high) / 2
        low, high = (middle, high) if math.erf(middle / math.sqrt(2)) < level else (low, middle)
    return (low + high) / 2


def median_interval(values: Sequence[float], level: float) -> Tuple[float, float]:
    """A distribution-free interval of the median of ``values`` (order statistics, normal approximation of
    the binomial): for the calls of one process."""
    ordered = np.sort(np.asarray(values, dtype=float))
    n = ordered.size
    half = _normal_quantile(level) * math.sqrt(n) / 2
    # 1-based ranks floor(n/2 - half) and ceil(n/2 + half) + 1 (the binomial's symmetric tails), here 0-based
    low = max(int(math.floor(n / 2.0 - half)) - 1, 0)
    high = min(int(math.ceil(n / 2.0 + half)), n - 1)
    return float(ordered[low]), float(ordered[high])


def process_interval(medians: Sequence[float], level: float) -> Tuple[float, float]:
    """Student's t interval of the processes' centre on a log scale, i.e. of their geometric mean (n >= 2)."""
    logs = np.log(np.asarray(medians, dtype=float))
    half = t_quantile(level, logs.size - 1) * float(logs.std(ddof=1)) / math.sqrt(logs.size)
    centre = float(logs.mean())
    return math.exp(centre - half), math.exp(centre + half)


def dispersion(values: Sequence[float]) -> float:
    """Robust relative spread: 1.4826 x MAD / median."""
    values = np.asarray(values, dtype=float)
    centre = float(np.median(values))
    return MAD_SCALE * float(np.median(np.abs(values - centre))) / centre if centre > 0 else 0.0


def _per_process(measurement: records.Measurement, index: int) -> Dict[str, float]:
    """One process's own figures, as the repeats table lists them."""
    metrics = measurement.metrics
    row = {"process": float(index), "pid": float(measurement.details.pop("process.pid", 0))}
    for key in (LATENCY_MS, RAW_LATENCY_MS, GPU_MS, RAW_GPU_MS, "speedup",
                GPU_SPEEDUP, THROUGHPUT, THROUGHPUT_SPEEDUP, LATENCY_CV, GPU_HOLD_FRACTION,
                "iterations", CONVERT_S):
        if key in metrics:
            row[key] = float(metrics[key])
    return row


def combine(measurements: List[records.Measurement], timing: records.Timing) -> records.Measurement:
    """The point's measurement from its processes' (all ok, the first the full one): figures, intervals, spread."""
    first = measurements[0]
    level, n = timing.interval, len(measurements)
    metrics, details = first.metrics, first.details
    rows = [_per_process(m, index) for index, m in enumerate(measurements, 1)]
    common = lambda key: all(key in m.metrics for m in measurements)  # noqa: E731
    if not common(GPU_MS):  # a figure some processes could not measure is no figure of the point
        held = sum(GPU_MS in m.metrics for m in measurements)
        for key in [key for key in metrics if key.startswith(("gpu_", "raw_gpu_"))]:
            del metrics[key]
        if held:
            details[TIMING_GPU] = "unavailable: the stream was held in too few calls in {} of {} processes".format(
                n - held, n)
        for m in measurements:
            m.gpu_ms, m.raw_gpu_ms = [], []
    for key in MEDIANS:
        if common(key):
            metrics[key] = float(np.median([m.metrics[key] for m in measurements]))
        else:
            metrics.pop(key, None)
    metrics.update(call_stats(np.concatenate([np.asarray(m.latencies_ms, dtype=float) for m in measurements])))
    metrics["iterations"] = float(sum(m.metrics["iterations"] for m in measurements))
    unstable = []
    headline = THROUGHPUT if first.plan.scenario == "throughput" else LATENCY_MS
    for key, stem in FIGURES.items():
        if not common(key):
            metrics.pop(key, None)
            continue
        values = [m.metrics[key] for m in measurements]
        metrics[key] = float(np.median(values))
        if n > 1:
            low, high = process_interval(values, level)
            metrics[stem + "_spread"] = max(values) / min(values)
            spread = dispersion(values)
            if key == headline and spread > timing.unstable_spread > 0:
                what = "end-to-end latencies" if key == LATENCY_MS else "throughputs"
                unstable.append("its {} processes' {} differ by {:.1%} (robust spread, more than the {:.0%} "
                                "allowed)".format(n, what, spread, timing.unstable_spread))
        else:
            low, high = _single_interval(first, key, level)
        if low is not None:
            metrics[stem + "_lo"], metrics[stem + "_hi"] = low, high
    metrics["repeats"] = float(n)
    details["timing.interval"] = (
        "{:.0%} Student t interval over {} processes' medians (log scale)".format(level, n) if n > 1 else
        "{:.0%} interval of one process's median latency from its calls (other processes not measured: "
        "timing.repeats=1)".format(level))
    details["timing.stability"] = unstable[0] if unstable else (
        "judged from {} processes: robust spread within {:.0%}".format(n, timing.unstable_spread) if n > 1
        else "not judged: one process (timing.repeats=1)")
    if unstable:
        details[TIMING_UNSTABLE] = unstable[0]
    first.calls_per_process = {}
    for key in CALL_SERIES:
        first.calls_per_process[key] = [len(getattr(m, key)) for m in measurements]
        setattr(first, key, [value for m in measurements for value in getattr(m, key)])
    first.repeats = rows
    return first


def _single_interval(measurement: records.Measurement, key: str, level: float) -> Tuple[Optional[float], Optional[float]]:
    """With one process: the interval of its median latency from its calls (speed-ups get none)."""
    calls = {LATENCY_MS: measurement.latencies_ms, GPU_MS: measurement.gpu_ms}.get(key)
    if not calls or measurement.plan.scenario == "throughput":
        return None, None
    return median_interval(calls, level)
