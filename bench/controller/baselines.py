"""The gross-baseline guard: eager fp32 measured inside a point must agree with the sweep's other measurements.

Every point times eager fp32 (the blog's Raw) beside its variant, and the pytorch fp32 point times
it as its own figure. Within one sweep, on one device, these are measurements of the same thing; a
point whose Raw is far from the others (a busy minute, a process that landed badly) would turn into a
headline speed-up. The controller measures such a point once more, and flags it if it still
disagrees, so the report and the recommendation never take its speed-up at face value.
"""
from __future__ import annotations

import statistics

from bench.contract.protocol import OK
from bench.contract.names import LATENCY_MS, RAW, THROUGHPUT
from bench.contract.records import Measurement, Plan

BOUND = 1.5  # a Raw this many times above or below the sweep's median for the same model is "gross"


def _key(plan: Plan) -> tuple:
    size = plan.input
    return (plan.model.name, plan.model.weights, size.height, size.width, size.batch_size, plan.scenario,
            plan.device, plan.resolution.device_label, plan.threads)


def raw_figure(measurement: Measurement) -> float | None:
    """The measurement's eager fp32 figure: its Raw baseline, or its own for the pytorch fp32 point."""
    plan, metrics = measurement.plan, measurement.metrics
    if measurement.status != OK or plan.timing.include_copies:
        return None  # with copies, the Raw point times them and the other points' Raw does not
    key = THROUGHPUT if plan.scenario == "throughput" else LATENCY_MS
    if plan.backend["name"] == "pytorch" and plan.precision == "fp32":
        return metrics.get(key)
    return metrics.get(RAW + key) if plan.raw_baseline else None  # without Raw, raw_* is the variant's own


class Baselines:
    """The sweep's eager fp32 figures so far (the points measured before), per model, input, scenario and
    device."""

    def __init__(self) -> None:
        self.seen: dict[tuple, list[float]] = {}

    def disagreement(self, measurement: dict) -> str | None:
        """Why this measurement's Raw is not to be trusted beside the sweep's others, or None."""
        value = raw_figure(measurement)
        others = self.seen.get(_key(measurement.plan), [])
        if value is None or not others:
            return None
        reference = statistics.median(others)
        ratio = value / reference
        if 1 / BOUND <= ratio <= BOUND:
            return None
        return (f"eager fp32 measured beside it ({value:.3g}) is {ratio:.2f}x the sweep's earlier measurements of "
                f"the same model ({reference:.3g}, median of {len(others)}): its speed-up is not comparable")

    def add(self, measurement: dict) -> None:
        value = raw_figure(measurement)
        if value is not None:
            self.seen.setdefault(_key(measurement.plan), []).append(value)
