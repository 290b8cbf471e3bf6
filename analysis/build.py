"""Build a report: select runs, combine repeats, make the tables, write a folder, attach it.

The Python API behind ``python -m analysis.report``; it returns the frames and tables, so a
notebook or another tool (the nightly regression check) can use them without the CLI.
"""
from __future__ import annotations

import logging
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from mlflow.tracking import MlflowClient

from analysis.plots import write_plots
from analysis.render import EXTENSIONS, data_uri, render, table_csv, table_markdown, table_notes
from analysis.select import Selection, aggregate, load_runs, resolve_uri
from bench.store.reader import connect
from analysis.choose import default_budget, recommend, recommendation_table
from analysis.batches import batch_tables
from analysis.cells import Table
from analysis.tables import PRECISION_LABELS, cross_device_tables, device_tables, is_raw
from bench.contract.errors import ConfigError
from bench.contract.names import DESCRIPTION
from bench.contract.protocol import OK
from bench.store.address import redact

log = logging.getLogger(__name__)

NEEDS_ONE_SWEEP = "attaching needs runs of exactly one sweep: select one with --sweep RUN_ID or --latest"


@dataclass
class Report:
    """What ``build_report`` made: the frames behind the tables, the tables, and where files went."""

    runs: pd.DataFrame  # one row per selected run (analysis.select.tidy)
    points: pd.DataFrame  # one row per point after repeats were combined
    tables: list[Table]
    header: list[str]
    uri: str
    sweep_run_id: str | None  # the parent run when every selected run belongs to one sweep
    folder: Path | None = None
    plots: list[Path] = field(default_factory=list)

    def render(self, fmt: str = "text") -> str:
        """The whole report in one of ``FORMATS``; plots where they were written (embedded in HTML)."""
        if fmt == "html":
            return render(self.tables, fmt, self.header, [data_uri(p) for p in self.plots])
        return render(self.tables, fmt, self.header, self._plot_links())

    def _plot_links(self) -> list[str]:
        return [str(p.relative_to(self.folder)) for p in self.plots] if self.folder else []

    def summary_markdown(self, limit: int = 7500) -> str:
        """The sweep at a glance for its parent run's description: the blog tables and speed-ups in Markdown."""
        wanted = [t for t in self.tables if t.key.startswith(("latency_", "speedup_", "throughput_", "recommendation"))]
        parts = [" ".join(self.header), ""]
        for table in wanted:
            block = table_markdown(table)
            if sum(map(len, parts)) + len(block) > limit - 200:
                parts.append("(more tables in the attached report: report/report.html)")
                break
            parts.append(block)
        parts.append("Full report (tables, plots): artifacts report/report.html")
        return "\n".join(parts)


def _header(runs: pd.DataFrame, points: pd.DataFrame, uri: str, selection: Selection, repeats: str,
            sweep: str | None) -> list[str]:
    counts = points["status"].value_counts()
    status = ", ".join(f"{counts[s]} {s}" for s in counts.index)
    singles = int((runs["sweep"] == "").sum())
    where = _sweep_name(uri, sweep) if sweep else f"{runs['sweep'].replace('', pd.NA).nunique()} sweep(s)" + \
        (f" and {singles} single run(s)" if singles else "")
    first, last = runs["start_time"].min(), runs["start_time"].max()
    lines = [
        f"Store {redact(uri)}, experiment {selection.experiment!r}, {where}; runs from {first:%Y-%m-%d %H:%M} "
        f"to {last:%Y-%m-%d %H:%M} UTC.",
        f"{len(runs)} run(s) -> {len(points)} point(s): {status}; repeated points: {repeats}"
        + (" (median of ok runs)" if repeats == "median" else " run") + ".",
    ]
    methods = sorted(set(points.loc[points["status"] == OK, "timing_latency"]) - {""})
    if methods:
        lines.append(f"Latency is {' / '.join(methods)}; median of the timed calls."
                     + (" Mixed definitions: compare within one definition only." if len(methods) > 1 else ""))
    return lines + _why_no_backend(points)


def _why_no_backend(points: pd.DataFrame) -> list[str]:
    """What backend=auto tried, once per device and precision: the cells' footnotes give only the short reason."""
    unserved = points[(points["status"] != OK) & (points["auto_tried"] != "")]
    return [f"No backend ran {precision} on {device}; backend=auto tried {tried}."
            for (device, precision, tried), _ in unserved.groupby(["device", "precision", "auto_tried"], sort=True)]


def _sweep_name(uri: str, parent_id: str) -> str:
    """What the sweep's log, its MLflow run and its final lines call it (``sweep e7b4f844``, or its label); the
    store was opened and checked when its runs were loaded."""
    return MlflowClient(uri).get_run(parent_id).info.run_name


def _one_sweep(runs: pd.DataFrame) -> str | None:
    sweeps = set(runs["sweep"])
    return sweeps.pop() if len(sweeps) == 1 and "" not in sweeps else None


def write(report: Report, folder: Path, plots: bool = True) -> Path:
    """``report.{txt,md,html}``, ``tables/<key>.csv`` and ``plots/*.png`` under ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    report.folder = folder
    report.plots = write_plots(report.points, folder / "plots", report.uri) if plots else []
    for table in report.tables:
        (folder / "tables").mkdir(exist_ok=True)
        (folder / "tables" / f"{table.key}.csv").write_text(table_csv(table), encoding="utf-8")
        (folder / "tables" / f"{table.key}.notes.txt").write_text(table_notes(table), encoding="utf-8")
    for fmt in ("text", "markdown", "html"):
        (folder / f"report.{EXTENSIONS[fmt]}").write_text(report.render(fmt), encoding="utf-8")
    log.info("report written to %s", folder)
    return folder


def attach(report: Report, folder: Path) -> str:
    """Log the written report as artifacts ``report/`` of the sweep's parent run; its tables become the run's
    description (what the MLflow UI shows first)."""
    if report.sweep_run_id is None:
        raise ConfigError(NEEDS_ONE_SWEEP)
    client, _ = connect(report.uri)
    client.log_artifacts(report.sweep_run_id, str(folder), artifact_path="report")
    client.set_tag(report.sweep_run_id, DESCRIPTION, report.summary_markdown())
    log.info("report attached to parent run %s as artifacts report/", report.sweep_run_id)
    return report.sweep_run_id


def build_report(selection: Selection = Selection(), uri: str | None = None, repeats: str = "newest",
                 cross_precisions: Sequence[str] = (), cross_backend: str | None = None,
                 folder: Path | None = None, plots: bool = True, attach_to_sweep: bool = False) -> Report:
    """Select runs, make every table; optionally write a folder and attach it to the sweep's parent run."""
    bad = [p for p in cross_precisions if p != "raw" and p not in PRECISION_LABELS]
    if bad:
        raise ConfigError(f"cross-device precision {bad[0]!r} is not one of: raw, {', '.join(PRECISION_LABELS)}")
    uri = resolve_uri(uri)
    runs = load_runs(selection, uri)
    points = aggregate(runs, repeats)
    sweep = _one_sweep(runs)
    tables = device_tables(points) + batch_tables(points) + cross_device_tables(points, list(cross_precisions),
                                                                                 cross_backend)
    if ((points["status"] == OK) & ~is_raw(points)).any():
        budget = default_budget(points)
        tables.append(recommendation_table(recommend(points, budget), budget))
    report = Report(runs, points, tables, _header(runs, points, uri, selection, repeats, sweep), uri, sweep)
    if attach_to_sweep and sweep is None:
        raise ConfigError(NEEDS_ONE_SWEEP)
    if folder is not None:
        write(report, folder, plots)
        if attach_to_sweep:
            attach(report, folder)
    elif attach_to_sweep:
        with tempfile.TemporaryDirectory() as tmp:
            attach(report, write(report, Path(tmp), plots))
        report.folder, report.plots = None, []
    return report
