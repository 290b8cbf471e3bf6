"""Matplotlib PNGs per device and input: latency bars, speed-up bars, per-call latency boxes.

Figures are made with ``matplotlib.figure.Figure`` (Agg), never pyplot, so nothing is kept in
pyplot's global figure registry and no display is needed.
"""
from __future__ import annotations

import logging
import math
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter
from mlflow.tracking import MlflowClient

from analysis.findings import FASTER, SLOWER, ACCURACY, Finding, RegressionCheck, Rules
from analysis.select import input_label, load_latencies
from bench.store.reader import connect
from analysis.batches import batch_table
from analysis.cells import Table, sig, slug
from analysis.tables import RAW, blog_table, describe_input, find_point, is_raw, model_order, point_rows, speedup_table
from bench.contract.errors import ConfigError
from bench.contract.protocol import OK
from bench.contract.names import GPU_MS, LATENCY_MS, THROUGHPUT

log = logging.getLogger(__name__)


def _save(figure: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110, bbox_inches="tight")
    return path


def _bars(table: Table, ylabel: str, path: Path, reference: float | None = None) -> Path:
    """Grouped bars: one group per model (column), one bar per row; an empty cell is labelled n/a."""
    values = table.values
    figure = Figure(figsize=(max(5.0, 1.6 * len(values.columns) + 2), 4.2))
    ax = figure.subplots()
    width = 0.8 / max(1, len(values.index))
    x = np.arange(len(values.columns))
    for i, (label, row) in enumerate(values.iterrows()):
        offsets = x - 0.4 + width * (i + 0.5)
        bars = ax.bar(offsets, row.fillna(0).to_numpy(), width, label=str(label))
        texts = [table.cells.loc[label, c] for c in values.columns]
        ax.bar_label(bars, labels=[t if math.isfinite(v) else "n/a" if t else "" for t, v in zip(texts, row)],
                     fontsize=7, rotation=90, padding=2)
    if reference is not None:
        ax.axhline(reference, color="grey", linewidth=0.8, linestyle="--")
    ax.set_xticks(x, [str(c) for c in values.columns])
    ax.set_ylabel(ylabel)
    ax.margins(y=0.2)
    ax.set_title("\n".join(textwrap.wrap(table.title, 70)), fontsize=9)
    ax.legend(fontsize=8)
    return _save(figure, path)


def latency_bars(points: pd.DataFrame, device: str, input_shape: str, path: Path) -> Path:
    """The blog table as a chart: median latency per model, one bar per precision (Raw first)."""
    return _bars(blog_table(points, device, input_shape), "median latency (ms)", path)


def speedup_bars(points: pd.DataFrame, device: str, input_shape: str, path: Path) -> Path:
    """Same-run speed-up over Raw per model and precision; the dashed line is 1x (no gain)."""
    return _bars(speedup_table(points, device, input_shape), "speed-up over Raw (×)", path, reference=1.0)


def latency_distribution(points: pd.DataFrame, device: str, input_shape: str, path: Path,
                         client: MlflowClient) -> Path | None:
    """One box per ok point from its per-call ``latencies_ms.csv``; None when no run has that artifact."""
    sub = points[(points["device"] == device) & (points["input_shape"] == input_shape) & (points["status"] == OK)]
    rows, _ = point_rows(sub)
    order = [(RAW, "fp32", "pytorch"), *rows]
    data, names = [], []
    for model in model_order(sub["model"]):
        for label, precision, backend in order:
            point = find_point(sub, model=model, precision=precision, backend=backend)
            if point is None:
                continue
            try:
                latencies = load_latencies(point["run_id"], client=client)
            except ConfigError as exc:
                log.warning("no latency distribution for %s: %s", point["run_name"], exc)
                continue
            data.append(latencies.to_numpy())
            names.append(f"{model} {label}")
    if not data:
        return None
    figure = Figure(figsize=(max(4.0, 0.45 * len(data) + 1.5), 4.5))
    ax = figure.subplots()
    ax.boxplot(data, showfliers=True, flierprops={"markersize": 2})
    ax.set_xticks(range(1, len(data) + 1), names, rotation=60, ha="right", fontsize=8)
    spread = max(float(np.max(d)) for d in data) / max(min(float(np.min(d)) for d in data), 1e-9)
    if spread > 20:
        ax.set_yscale("log")
        for axis in (ax.yaxis.set_major_formatter, ax.yaxis.set_minor_formatter):
            axis(FuncFormatter(lambda v, _: sig(v)))
    ax.set_ylabel("latency per call (ms)")
    ax.set_title(f"{device}: per-call latency, input {describe_input(input_shape)}", fontsize=9)
    return _save(figure, path)


def batch_curves(points: pd.DataFrame, device: str, model: str, size: str, path: Path) -> Path:
    """Throughput and latency per call against the batch size (log scale), one line per variant; a line ends
    where its points stop being ok (the first batch that did not fit)."""
    figure = Figure(figsize=(9, 3.8))
    axes = figure.subplots(1, 2)
    for metric, ax, label in ((THROUGHPUT, axes[0], "images / s"), (LATENCY_MS, axes[1],
                                                                           "latency per call (ms)")):
        table = batch_table(points, device, model, size, metric)
        for row, values in table.values.iterrows():
            ok = values[values.notna()]
            if not ok.empty:
                ax.plot(ok.index.astype(int), ok.to_numpy(), "o-", label=str(row))
        ax.set_xscale("log", base=2)
        ax.set_xticks(list(table.values.columns), [str(b) for b in table.values.columns])
        ax.set_xlabel("batch size")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    figure.suptitle(f"{device}: {model} at {size}, throughput scenario", fontsize=9)
    return _save(figure, path)


def write_plots(points: pd.DataFrame, folder: Path, uri: str | None = None) -> list[Path]:
    """Every plot for every device and input of the points, written under ``folder``."""
    written = []
    curves = points[points["scenario"] == "throughput"]
    for device, model, size in sorted(set(zip(curves["device"], curves["model"],
                                              curves["input_shape"].map(lambda s: "x".join(s.split("x")[2:]))))):
        name = f"batch_{slug(device)}_{slug(model)}_{size}.png"
        written.append(batch_curves(points, device, model, size, folder / name))
    points = points[points["scenario"] == "latency"]
    client = connect(uri)[0] if not points.empty else None  # opened once for every box plot's latencies
    for device, shape in sorted(set(zip(points["device"], points["input_shape"]))):
        stem = f"{slug(device)}_{slug(input_label(shape))}"
        written.append(latency_bars(points, device, shape, folder / f"latency_{stem}.png"))
        at = points[(points["device"] == device) & (points["input_shape"] == shape)]
        if (~is_raw(at)).any():
            written.append(speedup_bars(points, device, shape, folder / f"speedup_{stem}.png"))
        box = latency_distribution(points, device, shape, folder / f"distribution_{stem}.png", client)
        if box is not None:
            written.append(box)
    return written


def plot_history(finding: Finding, rules: Rules, path: Path) -> Path:
    """The series' baseline nightlies, the band the check called noise, and the newest value."""
    figure = Figure(figsize=(7, 3.6))
    ax = figure.subplots()
    times = [t for t, _ in finding.history]
    ax.plot(times, [v for _, v in finding.history], "o-", color="tab:blue", label="baseline nightlies")
    ax.axhline(finding.baseline, color="grey", linewidth=0.8, label="baseline median")
    if finding.metric in (LATENCY_MS, GPU_MS):
        low, high = finding.baseline * (1 - rules.threshold), finding.baseline * (1 + rules.threshold)
        ax.axhspan(low, high, color="grey", alpha=0.15, label=f"±{rules.threshold:.0%}")
        if (rules.test == "mad" or finding.metric == GPU_MS) and math.isfinite(finding.noise):
            ax.axhspan(finding.baseline - rules.z * finding.noise, finding.baseline + rules.z * finding.noise,
                       color="tab:blue", alpha=0.1, label=f"±{rules.z:g} robust sd")
    if finding.new_time is not None:
        ax.plot([finding.new_time], [finding.new], "s", color="tab:red", markersize=8, label=f"newest: {finding.kind}")
    ax.set_ylabel(finding.metric)
    ax.set_title(finding.label, fontsize=9)
    ax.legend(fontsize=7)
    figure.autofmt_xdate()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100, bbox_inches="tight")
    return path


def write_regression_plots(result: RegressionCheck, folder: Path) -> list[Path]:
    """One history plot per flagged series (regressions and improvements with a history)."""
    flagged = [f for f in result.findings if f.kind in (SLOWER, FASTER, ACCURACY) and f.history]
    return [plot_history(f, result.rules, folder / f"{slug(f.label)}_{slug(f.metric)}.png") for f in flagged]
