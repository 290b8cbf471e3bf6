"""Choosing: the fastest variant within an accuracy budget, per device and model, and the faster ones it
turned down (``python -m analysis.recommend`` is the command line).

For every device x model x input x scenario, the candidates (each backend x precision x variant measured
there, Raw included) are taken fastest first (median latency; images/s in the throughput scenario). The
first one within the budget is chosen; each faster one is listed with why it was turned down: over the
budget, an unstable or throttled measurement, no labelled accuracy to judge it by, failed or skipped. A
top-1 budget is judged only on labelled images (``accuracy=folder`` with class folders), against eager fp32
on the same images; noise-only accuracy is never used for it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

import pandas as pd

from analysis.select import input_label
from analysis.cells import Table, sig
from analysis.tables import PRECISION_LABELS, RAW, is_raw
from bench.contract.errors import ConfigError
from bench.contract.protocol import OK
from bench.store.record import rounded
from bench.contract.names import (
    ACC_PIXEL_AGREEMENT, ACC_TOP1, ACC_TOP1_AGREEMENT, LATENCY_MS, REF_TOP1, THROUGHPUT, high_of, low_of)


UNSTABLE_TAKEN = "recommended, unstable"


@dataclass(frozen=True)
class Budget:
    """How much accuracy a faster variant may cost; stated in every recommendation."""

    max_top1_drop: float | None = None  # percentage points of top-1 below eager fp32 on the same labelled images
    min_agreement: float | None = None  # share of top-1 classes (or pixels) that agree with eager fp32
    allow_unstable: bool = False  # take runs tagged unstable or measured under load as they are
    chosen_for: str = ""  # why this budget, when the data chose it rather than the user

    def validate(self) -> None:
        if self.max_top1_drop is None and self.min_agreement is None:
            raise ConfigError("give a budget: --max-top1-drop POINTS (labelled images) or --min-agreement "
                              "FRACTION (agreement with eager fp32)")
        if self.max_top1_drop is not None and self.max_top1_drop < 0:
            raise ConfigError(f"--max-top1-drop {self.max_top1_drop:g} must be >= 0 (percentage points)")
        if self.min_agreement is not None and not 0 <= self.min_agreement <= 1:
            raise ConfigError(f"--min-agreement {self.min_agreement:g} must be between 0 and 1 (0.99 = 99 %)")

    def describe(self) -> str:
        parts = []
        if self.max_top1_drop is not None:
            parts.append(f"top-1 at most {self.max_top1_drop:g} point(s) below eager fp32 on the same labelled images")
        if self.min_agreement is not None:
            parts.append(f"top-1 / pixel agreement with eager fp32 at least {100 * self.min_agreement:g} %")
        stable = "" if self.allow_unstable else "; unstable or throttled measurements are turned down"
        why = f" (the default {self.chosen_for})" if self.chosen_for else ""
        return f"Budget{why}: " + " and ".join(parts) + stable + "."


@dataclass
class Choice:
    """The answer for one device x model x input x scenario."""

    device: str
    model: str
    input_shape: str
    scenario: str
    chosen: pd.Series | None
    rejected: list[tuple[pd.Series, str]]  # faster candidates (and failed ones), each with why not
    unstable_taken: bool = False  # no stable candidate was within the budget, so unstable ones were taken as they are


def variant_label(point: pd.Series) -> str:
    if point["backend"] == "pytorch" and point["precision"] == "fp32":
        return f"{RAW} (eager fp32)"
    return f"{PRECISION_LABELS.get(point['precision'], point['precision'])} {point['backend']}"


def _agreement(point: pd.Series) -> float:
    value = point[ACC_TOP1_AGREEMENT] if point["task"] == "classification" else point[ACC_PIXEL_AGREEMENT]
    return float(value)


def verdict(point: pd.Series, budget: Budget) -> str | None:
    """Why this candidate is turned down, or None when it is within the budget."""
    if point["status"] != OK:
        return f"{point['status']}: {point['reason']}"
    if not budget.allow_unstable and point.get("unstable", ""):
        return f"unstable: {point['unstable']}"
    if not budget.allow_unstable and point.get("conditions", ""):
        return f"measured under load or throttled: {point['conditions']}"
    raw = is_raw(pd.DataFrame([point])).iloc[0]
    if budget.max_top1_drop is not None and not raw:
        if not (math.isfinite(point[ACC_TOP1]) and math.isfinite(point[REF_TOP1])):
            return "no labelled accuracy (noise inputs only): cannot be judged against a top-1 budget"
        drop = 100 * (point[REF_TOP1] - point[ACC_TOP1])
        if drop > budget.max_top1_drop:
            return f"top-1 {-drop:+.1f} points vs eager fp32, over the {budget.max_top1_drop:g}-point budget"
    if budget.min_agreement is not None and not raw:
        agreement = _agreement(point)
        if not math.isfinite(agreement) or agreement < budget.min_agreement:
            return f"agreement {100 * agreement:.1f} % below {100 * budget.min_agreement:g} %"
    return None


def recommend(points: pd.DataFrame, budget: Budget) -> list[Choice]:
    """One choice per device x model x input x scenario of the points (one row per point, analysis.aggregate)."""
    budget.validate()
    if budget.max_top1_drop is not None and not points[[ACC_TOP1, REF_TOP1]].notna().all(axis=1).any():
        raise ConfigError("no selected run was measured on labelled images (accuracy=folder with class folders), so "
                          "--max-top1-drop cannot be judged: measure with labels, or use --min-agreement")
    choices = []
    for (device, model, shape, scenario), group in points.groupby(["device", "model", "input_shape", "scenario"],
                                                                  sort=True):
        choice = _choose(group, budget, (device, model, shape, scenario))
        if choice.chosen is None and not budget.allow_unstable:
            # Every candidate within the budget was unstable (a noisy machine): still answer, and say so.
            relaxed = _choose(group, replace(budget, allow_unstable=True), (device, model, shape, scenario))
            if relaxed.chosen is not None:
                choice = replace(relaxed, unstable_taken=True)
        choices.append(choice)
    return choices


def _choose(group: pd.DataFrame, budget: Budget, where: tuple[str, str, str, str]) -> Choice:
    """The fastest ok candidate of one device x model x input x scenario within the budget, and the rest."""
    scenario = where[3]
    ok = group[group["status"] == OK]
    speed, ascending = (THROUGHPUT, False) if scenario == "throughput" else (LATENCY_MS, True)
    rejected, chosen = [], None
    for _, point in ok.sort_values(speed, ascending=ascending, kind="stable").iterrows():
        why = verdict(point, budget)
        if why is None:
            chosen = point
            break
        rejected.append((point, why))
    for _, point in group[group["status"] != OK].iterrows():
        rejected.append((point, verdict(point, budget)))
    return Choice(*where, chosen, rejected)


def _speed(point: pd.Series, scenario: str) -> str:
    """The figure, rounded to what its interval supports, with the interval where the run recorded one."""
    if scenario == "throughput":
        return f"{point[THROUGHPUT]:,.0f} img/s"
    low, high = point.get(low_of(LATENCY_MS), math.nan), point.get(high_of(LATENCY_MS), math.nan)
    if not (math.isfinite(low) and math.isfinite(high)):
        return f"{sig(point[LATENCY_MS])} ms"
    return f"{rounded(point[LATENCY_MS], low, high)} ms ({rounded(low, low, high)}-{rounded(high, low, high)})"


def _accuracy(point: pd.Series) -> str:
    if math.isfinite(point[ACC_TOP1]) and math.isfinite(point[REF_TOP1]):
        return (f"top-1 {100 * point[ACC_TOP1]:.1f} % ({100 * (point[ACC_TOP1] - point[REF_TOP1]):+.1f} "
                "vs fp32)")
    agreement = _agreement(point)
    if not math.isfinite(agreement):
        return ""
    noise = " (noise inputs)" if str(point.get("accuracy_inputs", "")).startswith("random") else ""
    return f"agreement {100 * agreement:.1f} %{noise}"


def default_budget(points: pd.DataFrame, allow_unstable: bool = False) -> Budget:
    """The budget when none is given: 1 point of top-1 where images were labelled, else 99 % agreement with
    eager fp32 (noise inputs carry no labels, so agreement is all they can be judged by)."""
    if points[[ACC_TOP1, REF_TOP1]].notna().all(axis=1).any():
        return Budget(max_top1_drop=1.0, allow_unstable=allow_unstable, chosen_for="for labelled images")
    return Budget(min_agreement=0.99, allow_unstable=allow_unstable,
                  chosen_for="without labelled images: agreement is all they can be judged by")


def recommendation_table(choices: list[Choice], budget: Budget) -> Table:
    """The choices as one table: a row per device x model x input (the recommended variant), then its rejects."""
    rows, index, notes = [], [], [budget.describe()]
    for choice in choices:
        where = (choice.device, f"{choice.model} {input_label(choice.input_shape)}"
                 + ("" if choice.scenario == "latency" else f" {choice.scenario}"))
        point = choice.chosen
        if point is None:
            index.append((*where, "recommended"))
            rows.append(["none within the budget", "", "", "", ""])
        else:
            index.append((*where, UNSTABLE_TAKEN if choice.unstable_taken else "recommended"))
            rows.append([variant_label(point), _speed(point, choice.scenario), f"{point['speedup']:.2f}x",
                         _accuracy(point), ""])
        for point, why in choice.rejected:
            index.append((*where, "turned down"))
            ok = point["status"] == OK
            rows.append([variant_label(point), _speed(point, choice.scenario) if ok else "",
                         f"{point['speedup']:.2f}x" if ok and math.isfinite(point["speedup"]) else "",
                         _accuracy(point) if ok else "", why])
    if any(choice.unstable_taken for choice in choices):
        notes.append(f"{UNSTABLE_TAKEN}: no stable measurement was within the budget, so this is the fastest "
                     "within it among unstable ones; measure again (timing=thorough) before relying on it.")
    notes.append("Speed: the time per call from the host's side (end-to-end latency), the median over the point's "
                 "processes, in ms with its 95 % interval; or images/s in the throughput scenario. Speed-up: "
                 "over eager fp32 timed in the same processes.")
    columns = ["variant", "speed", "speed-up (same run)", "accuracy", "why not"]
    idx = pd.MultiIndex.from_tuples(index, names=["device", "model", "verdict"]) if index else \
        pd.MultiIndex.from_tuples([], names=["device", "model", "verdict"])
    cells = pd.DataFrame(rows, index=idx, columns=columns, dtype=object)
    values = pd.DataFrame(math.nan, index=idx, columns=columns, dtype=float)
    return Table("recommendation", "Recommendation: the fastest variant within the accuracy budget", values, cells,
                 notes)
