"""MLflow -> one tidy DataFrame: one row per grid-point run, then one row per point.

Everything downstream (tables, plots, nightly regression checks) works on these frames, so it
never talks to MLflow itself. A *point* is a device x model x backend x precision x input
shape (``SERIES_KEYS``); its repeated measurements are several runs with the same key.
"""
from __future__ import annotations

import logging
import re
import tempfile
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

from bench.contract.errors import ConfigError
from bench.contract.protocol import PRECISIONS
from bench.contract.names import CHILD
from bench.contract.protocol import OK
from bench.store.address import redact, tracking_uri
from bench.store.reader import connect, experiment_id, find_sweep, runs_newest_first
from bench.contract.names import (
    AUTO_TRIED, ACCURACY_INPUTS, ACCURACY_LABELLED, ACC_COSINE, ACC_IMAGES, ACC_MAX_ABS_ERR, ACC_MIOU, ACC_MIOU_VS_REF,
    ACC_NONFINITE, ACC_PIXEL_AGREEMENT, ACC_REL_L2_ERR, ACC_TOP1, ACC_TOP1_AGREEMENT, ACC_TOP5,
    BACKEND_REQUESTED, BACKEND_VARIANT, COMMIT, CONDITIONS, CONVERT_CACHE_HIT, CONVERT_S, CPU_MODEL, DEVICE_CC,
    DEVICE_KIND, DEVICE_LABEL, DEVICE_NAME, ENERGY_MJ_PER_IMAGE, ENERGY_SOURCE, GPU_HOLD_FRACTION, GPU_MS,
    GPU_SPEEDUP, HOST_NAME, INPUT_SHAPE, KIND, LATENCY_CV, LATENCY_MS, LATENCY_MS_MAX, LATENCY_MS_MEAN,
    LATENCY_MS_MIN, LATENCY_MS_P90, LATENCY_MS_P95, LATENCY_MS_P99, LATENCY_MS_STD, MODEL_TASK,
    PEAK_CUDA_MEM_MB, PEAK_RSS_MB, POWER_W_MEAN, RAW_GPU_MS, RAW_LATENCY_MS, RAW_LATENCY_MS_MEAN,
    RAW_THROUGHPUT, REASON, REF_MIOU, REF_TOP1, REF_TOP5, SPEEDUP, STATUS, THROUGHPUT, THROUGHPUT_SPEEDUP,
    TIMING_GPU, TIMING_LATENCY, TIMING_METHOD, UNSTABLE, high_of, low_of, spread_of)

log = logging.getLogger(__name__)

# Status of a run that says ok but never reached FINISHED (crashed while being recorded).
UNFINISHED = "unfinished"
SERIES_KEYS = ("device", "model", "backend", "precision", "input_shape", "scenario")
REPEATS = ("newest", "median")
METRICS = (
    LATENCY_MS_MEAN, LATENCY_MS, LATENCY_MS_STD, LATENCY_MS_MIN, LATENCY_MS_MAX,
    LATENCY_MS_P90, LATENCY_MS_P95, LATENCY_MS_P99, LATENCY_CV, "iterations", THROUGHPUT,
    RAW_THROUGHPUT, THROUGHPUT_SPEEDUP, CONVERT_S, CONVERT_CACHE_HIT, RAW_LATENCY_MS,
    RAW_LATENCY_MS_MEAN, "speedup", ACC_MAX_ABS_ERR, ACC_REL_L2_ERR, ACC_COSINE, ACC_TOP1_AGREEMENT,
    ACC_PIXEL_AGREEMENT, ACC_MIOU_VS_REF, ACC_NONFINITE, ACC_IMAGES, ACC_TOP1, ACC_TOP5, REF_TOP1,
    REF_TOP5, ACC_MIOU, REF_MIOU, ENERGY_MJ_PER_IMAGE, POWER_W_MEAN, PEAK_RSS_MB, PEAK_CUDA_MEM_MB,
    # between-process figures (docs/methodology.md): GPU compute beside end-to-end, intervals, spread, processes
    GPU_MS, RAW_GPU_MS, GPU_SPEEDUP, GPU_HOLD_FRACTION, "repeats",
    low_of(LATENCY_MS), high_of(LATENCY_MS), spread_of(LATENCY_MS), low_of(GPU_MS), high_of(GPU_MS), spread_of(GPU_MS),
    low_of(SPEEDUP), high_of(SPEEDUP), spread_of(SPEEDUP), low_of(GPU_SPEEDUP), high_of(GPU_SPEEDUP),
)
# Tidy column -> (source, key[, where older records kept it]) in the MLflow run.
FIELDS = {
    "status": ("tags", STATUS),
    "reason": ("tags", REASON),
    "auto_tried": ("tags", AUTO_TRIED),
    "kind": ("tags", KIND),
    "sweep": ("tags", MLFLOW_PARENT_RUN_ID),
    "device": ("tags", DEVICE_LABEL),
    "device_kind": ("tags", DEVICE_KIND),
    "device_name": ("tags", DEVICE_NAME),
    "device_cc": ("tags", DEVICE_CC),
    "cpu_model": ("tags", CPU_MODEL),
    "host": ("tags", HOST_NAME),
    "commit": ("tags", COMMIT),
    "model": ("params", "model"),
    "task": ("tags", MODEL_TASK, "params"),  # a param in stores recorded before the suite's 2026-11 records
    "backend": ("params", "backend"),
    "backend_variant": ("params", BACKEND_VARIANT),
    "backend_requested": ("params", BACKEND_REQUESTED),
    "precision": ("params", "precision"),
    "input_shape": ("params", INPUT_SHAPE),
    "timing_method": ("params", TIMING_METHOD),
    "timing_latency": ("tags", TIMING_LATENCY, "params"),
    "timing_gpu": ("tags", TIMING_GPU),
    "scenario": ("params", "scenario"),
    "unstable": ("tags", UNSTABLE),
    "conditions": ("tags", CONDITIONS),
    "energy_source": ("tags", ENERGY_SOURCE),
    "accuracy_labelled": ("tags", ACCURACY_LABELLED),
    "accuracy_inputs": ("tags", ACCURACY_INPUTS),
}


@dataclass(frozen=True)
class Selection:
    """Which runs a report or a regression check looks at; empty filters mean everything.

    ``sweep`` is what ``bench.store.reader.find_sweep`` takes: ``"latest"``, a sweep's name or its parent run id. ``since``/``until`` take what
    ``parse_when`` takes. ``devices`` match a case-insensitive part of the device label or a
    host name; ``inputs`` take ``256``, ``256x320`` or a full shape ``1x3x256x256``.
    """

    experiment: str = "trt-bench"
    sweep: str | None = None
    since: str | None = None
    until: str | None = None
    devices: tuple[str, ...] = ()
    models: tuple[str, ...] = ()
    backends: tuple[str, ...] = ()
    precisions: tuple[str, ...] = ()
    inputs: tuple[str, ...] = ()
    kind: str | None = None  # bench.kind: "sweep", "nightly", ...


def resolve_uri(uri: str | None = None) -> str:
    """The same store run.py writes to by default: $MLFLOW_TRACKING_URI, else ./mlflow.db."""
    return tracking_uri(uri)


def parse_when(text: str, now: datetime | None = None) -> pd.Timestamp:
    """``7d``, ``12h``, ``2w`` (that long ago) or an ISO date/time (naive means local time)."""
    now = now or datetime.now(timezone.utc)
    match = re.fullmatch(r"\s*(\d+)\s*([hdw])\s*", text)
    if match:
        unit = {"h": "hours", "d": "days", "w": "weeks"}[match.group(2)]
        return pd.Timestamp(now - timedelta(**{unit: int(match.group(1))}))
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ConfigError(f"time {text!r} is neither an ISO date/time (2024-05-01, 2024-05-01T08:00) "
                          "nor an age like 12h, 7d, 2w") from None
    return pd.Timestamp(when if when.tzinfo else when.astimezone()).tz_convert("UTC")


def _shape_parts(shape: str) -> tuple[int, int, int] | None:
    match = re.fullmatch(r"(\d+)x\d+x(\d+)x(\d+)", shape or "")
    return tuple(int(g) for g in match.groups()) if match else None


def input_label(shape: str) -> str:
    """``1x3x256x256`` -> ``256``; non-square ``256x320``; batches ``256/b8`` (as run names do)."""
    parts = _shape_parts(shape)
    if not parts:
        return shape
    batch, height, width = parts
    size = f"{height}" if height == width else f"{height}x{width}"
    return f"{size}/b{batch}" if batch > 1 else size


def tidy(runs: list) -> pd.DataFrame:
    """One row per MLflow run: named key columns, every metric, and all params/tags prefixed."""
    rows = []
    for run in runs:
        data = {"params": run.data.params, "tags": run.data.tags}
        row = {
            "run_id": run.info.run_id,
            "run_name": run.info.run_name,
            "start_time": pd.Timestamp(run.info.start_time, unit="ms", tz="UTC"),
            "mlflow_status": run.info.status,
        }
        row.update({column: data[source].get(key) or (data[older[0]].get(key, "") if older else "")
                    for column, (source, key, *older) in FIELDS.items()})
        if row["status"] == OK and run.info.status != "FINISHED":
            row["status"], row["reason"] = UNFINISHED, f"the run never finished (MLflow status {run.info.status})"
        row.update({name: float(run.data.metrics[name]) if name in run.data.metrics else float("nan")
                    for name in METRICS})
        row.update({f"params.{k}": v for k, v in run.data.params.items()})
        row.update({f"tags.{k}": v for k, v in run.data.tags.items()})
        rows.append(row)
    frame = pd.DataFrame(rows, columns=None if rows else ["run_id", "run_name", "start_time", "mlflow_status",
                                                            *FIELDS, *METRICS])
    frame["device"] = frame["device"].where(frame["device"] != "", frame["device_name"])
    # Options that change what is measured (CUDA graphs, max-autotune, ...) make their own point.
    frame["backend"] = frame["backend_variant"].where(frame["backend_variant"] != "", frame["backend"])
    frame["input"] = frame["input_shape"].map(input_label)
    frame["scenario"] = frame["scenario"].where(frame["scenario"] != "", "latency")  # runs recorded before scenarios
    return frame.sort_values("start_time", ascending=False, kind="stable").reset_index(drop=True)


def _input_matches(wanted: str, shape: str) -> bool:
    parts = _shape_parts(shape)
    if parts is None:
        return False
    batch, height, width = parts
    text = wanted.strip().lower()
    if re.fullmatch(r"\d+x3x\d+x\d+", text):
        return text == shape
    match = re.fullmatch(r"(\d+)(?:x(\d+))?", text)
    if not match:
        raise ConfigError(f"input {wanted!r}: give a size like 256, 256x320 or a full shape like 1x3x256x256")
    return (height, width) == (int(match.group(1)), int(match.group(2) or match.group(1)))


def _device_matches(wanted: str, label: str, host: str) -> bool:
    return wanted.casefold() in label.casefold() or wanted.casefold() == host.casefold()


def apply_filters(frame: pd.DataFrame, selection: Selection) -> pd.DataFrame:
    """Keep the runs the selection asks for; an emptying filter is named with what was there."""
    bad = [p for p in selection.precisions if p not in PRECISIONS]
    if bad:
        raise ConfigError(f"precision {bad[0]!r} is not one of: {', '.join(PRECISIONS)}")
    checks = [
        ("device", selection.devices,
         lambda f, w: f.apply(lambda r: any(_device_matches(x, r["device"], r["host"]) for x in w), axis=1)),
        ("model", selection.models, lambda f, w: f["model"].isin(w)),
        ("backend", selection.backends, lambda f, w: f["backend"].isin(w)),
        ("precision", selection.precisions, lambda f, w: f["precision"].isin(w)),
        ("input", selection.inputs,
         lambda f, w: f["input_shape"].map(lambda s: any(_input_matches(x, s) for x in w))),
        ("kind", (selection.kind,) if selection.kind else (), lambda f, w: f["kind"].isin(w)),
    ]
    for column, wanted, keep in checks:
        if not wanted or frame.empty:
            continue
        kept = frame[keep(frame, wanted).astype(bool)]
        if kept.empty:
            there = sorted(set(frame[column]))
            raise ConfigError(f"no runs match {column}={','.join(wanted)} (the selection has {column}: "
                              f"{', '.join(there)})")
        frame = kept
    return frame


def load_runs(selection: Selection = Selection(), uri: str | None = None) -> pd.DataFrame:
    """Every grid-point run the selection names, newest first (``tidy`` describes the columns)."""
    client, uri = connect(uri)
    exp_id = experiment_id(client, selection.experiment, uri)
    clauses = [f"tags.`bench.role` = '{CHILD}'"]
    where = f"experiment {selection.experiment!r}"
    if selection.sweep:
        parent = find_sweep(client, exp_id, selection.sweep, selection.experiment)
        clauses.append(f"tags.`{MLFLOW_PARENT_RUN_ID}` = '{parent.info.run_id}'")
        where += f", {parent.info.run_name}"
    for bound, op in ((selection.since, ">="), (selection.until, "<=")):
        if bound:
            clauses.append(f"attributes.start_time {op} {int(parse_when(bound).timestamp() * 1000)}")
            where += f", {'since' if op == '>=' else 'until'} {bound}"
    frame = tidy(list(runs_newest_first(client, exp_id, " and ".join(clauses))))
    if frame.empty:
        raise ConfigError(f"no grid-point runs in {where} at {redact(uri)}")
    frame = apply_filters(frame, selection)
    log.info("%d run(s) selected from %s at %s", len(frame), where, redact(uri))
    return frame


def aggregate(runs: pd.DataFrame, repeats: str = "newest") -> pd.DataFrame:
    """One row per point: its newest run, or the median of its ok runs' metrics.

    With ``newest`` a point whose newest run failed shows as failed, even if an older run was
    ok: the table says what happens now. With ``median`` only ok runs count; a point with none
    keeps its newest run's status and reason. ``repeats`` counts the runs, ``ok_repeats`` the ok ones.
    """
    if repeats not in REPEATS:
        raise ConfigError(f"repeats={repeats!r} is not one of: {', '.join(REPEATS)}")
    rows = []
    for _, group in runs.sort_values("start_time", ascending=False, kind="stable").groupby(
            list(SERIES_KEYS), sort=False):
        ok = group[group["status"] == OK]
        if repeats == "newest" or ok.empty:
            row = group.iloc[0].copy()
        else:
            row = ok.iloc[0].copy()
            row[list(METRICS)] = ok[list(METRICS)].median(skipna=True)
        row["repeats"], row["ok_repeats"] = len(group), len(ok)
        rows.append(row)
    return pd.DataFrame(rows).reset_index(drop=True)


def series(runs: pd.DataFrame, device: str, model: str, backend: str, precision: str, input_shape: str,
           ok_only: bool = True) -> pd.DataFrame:
    """All runs of one point, oldest first: the history a nightly regression check compares."""
    key = dict(zip(SERIES_KEYS, (device, model, backend, precision, input_shape)))
    mask = pd.Series(True, index=runs.index)
    for column, value in key.items():
        mask &= runs[column] == value
    if ok_only:
        mask &= runs["status"] == OK
    return runs[mask].sort_values("start_time", kind="stable").reset_index(drop=True)


def load_latencies(run_id: str, uri: str | None = None, raw: bool = False,
                   client: MlflowClient | None = None) -> pd.Series:
    """Per-iteration latencies (ms) of one run, from its ``latencies_ms.csv`` (``raw``: the Raw baseline's);
    ``client``: a store already open (callers reading many runs open it once)."""
    if client is None:
        client, uri = connect(uri)
    name = "raw_latencies_ms.csv" if raw else "latencies_ms.csv"
    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = client.download_artifacts(run_id, name, tmp)
        except (MlflowException, OSError) as exc:
            raise ConfigError(f"run {run_id} has no artifact {name} ({str(exc).splitlines()[0]})") from None
        return pd.read_csv(path)["latency_ms"].rename(run_id)
