"""Batch-size curves of the throughput scenario as tables: one row per variant, one column per batch size."""
from __future__ import annotations

import math

import pandas as pd

from analysis.cells import Notes, Table, sig, slug
from analysis.tables import PRECISION_LABELS, RAW, cell, find_point, frames
from bench.contract.names import ENERGY_MJ_PER_IMAGE, LATENCY_MS, THROUGHPUT


def _size(shape: str) -> str:
    """``8x3x256x256`` -> ``256x256``."""
    return "x".join(shape.split("x")[2:])


def _batch(shape: str) -> int:
    return int(shape.split("x")[0])


def batch_rows(group: pd.DataFrame) -> list[tuple[str, str, str]]:
    """(label, precision, backend) for the variants of a batch-size curve, Raw first."""
    order = list(PRECISION_LABELS)
    pairs = sorted(set(zip(group["precision"], group["backend"])),
                   key=lambda pb: (not (pb[1] == "pytorch" and pb[0] == "fp32"),
                                   order.index(pb[0]) if pb[0] in order else len(order), pb[1]))
    return [(RAW if (p, b) == ("fp32", "pytorch") else f"{PRECISION_LABELS.get(p, p)} ({b})", p, b) for p, b in pairs]


def batch_table(points: pd.DataFrame, device: str, model: str, size: str, metric: str) -> Table:
    """A throughput-scenario curve as a table: one row per variant, one column per batch size."""
    group = points[(points["scenario"] == "throughput") & (points["device"] == device) & (points["model"] == model)
                   & (points["input_shape"].map(_size) == size)]
    batches = sorted(set(group["input_shape"].map(_batch)))
    notes, grid = Notes(), {}
    rows = batch_rows(group)
    fmt = (lambda v: f"{v:,.0f}") if metric == THROUGHPUT else sig  # noqa: E731
    for label, precision, backend in rows:
        for batch in batches:
            point = find_point(group, precision=precision, backend=backend, input_shape=f"{batch}x3x{size}")
            grid[(label, batch)] = cell(point, point[metric] if point is not None else math.nan, fmt, notes)
    kind, what, header = BATCH_METRICS[metric]
    values, cells = frames(grid, [r[0] for r in rows], batches, header)
    values.columns.name = cells.columns.name = "batch"
    lines = notes.lines()
    if metric == ENERGY_MJ_PER_IMAGE:
        sources = sorted(set(group.loc[group[metric].notna(), "energy_source"].dropna()))
        lines.append("energy over each run's timed window from " + "; ".join(sources))
    return Table(f"{kind}_{slug(device)}_{slug(model)}_{size}",
                 f"{device}: {model} at {size}, {what} against the batch size (throughput scenario: back-to-back "
                 "calls, one sync per window)", values, cells, lines)


# metric -> (table name, what the table shows, column header)
BATCH_METRICS = {
    THROUGHPUT: ("throughput", "images per second (batch x calls / wall time)", "img/s"),
    LATENCY_MS: ("batchlatency", "latency per call (ms: window time / calls)", "ms per call"),
    ENERGY_MJ_PER_IMAGE: ("energy", "energy per image (mJ: energy over the window / images)", "mJ per image"),
}


def batch_tables(points: pd.DataFrame) -> list[Table]:
    """Throughput, latency and (where measured) energy against the batch size, per device x model x input size of
    the throughput scenario."""
    sub = points[points["scenario"] == "throughput"]
    with_energy = _curves(sub[sub[ENERGY_MJ_PER_IMAGE].notna()])
    return [batch_table(points, *curve, metric) for curve in sorted(_curves(sub)) for metric in BATCH_METRICS
            if metric != ENERGY_MJ_PER_IMAGE or curve in with_energy]


def _curves(points: pd.DataFrame) -> set[tuple[str, str, str]]:
    """(device, model, input size) of each batch-size curve the points belong to."""
    return set(zip(points["device"], points["model"], points["input_shape"].map(_size)))
