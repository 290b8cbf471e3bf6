"""The blog's tables and their cross-device relatives, as pure pandas: points in, ``Table`` out.

Input is the per-point frame of ``analysis.select.aggregate``. A cell whose point was skipped
or failed is a marked empty cell (``— [1]``) whose footnote gives the reason; a cell with no
point at all is blank. "Raw" is eager fp32 PyTorch: the point's own ``backend=pytorch
precision=fp32`` run when there is one, else the Raw baseline the other runs timed in-run.
"""
from __future__ import annotations

import math
import re

import pandas as pd

from analysis.cells import Notes, Table, fmt_err, fmt_pct, fmt_points, fmt_ratio, sig, slug
from analysis.select import input_label
from bench.contract.protocol import BLOG_SIZES
from bench.contract.protocol import OK
from bench.contract.names import (
    ACC_MIOU, ACC_PIXEL_AGREEMENT, ACC_REL_L2_ERR, ACC_TOP1, ACC_TOP1_AGREEMENT, CONVERT_CACHE_HIT, CONVERT_S,
    GPU_MS, LATENCY_MS, REF_MIOU, REF_TOP1, SPEEDUP, THROUGHPUT, THROUGHPUT_SPEEDUP)

RAW = "Raw"
PRECISION_LABELS = {"fp32": "FP32", "fp16": "FP16", "bf16": "BF16", "int8": "INT8"}
TIMED = (LATENCY_MS, SPEEDUP, THROUGHPUT, THROUGHPUT_SPEEDUP)  # footnoted when unstable
# What each latency figure times (docs/methodology.md): the blog's tables are end-to-end.
FIGURE_WORDS = {LATENCY_MS: "end-to-end latency", GPU_MS: "GPU compute time"}
RAW_OWN = "own run"
RAW_IN_RUN = "in-run baseline"


def describe_input(shape: str) -> str:
    """``1x3x256x256`` -> ``256x256``; with a batch, ``256x256, batch 8``."""
    parts = shape.split("x")
    if len(parts) != 4:
        return shape
    batch, _, height, width = parts
    return f"{height}x{width}" + (f", batch {batch}" if batch != "1" else "")


def model_order(models) -> list[str]:
    """The blog's order for its models (resnet18/34/50, fcn, deeplabv3), then natural order."""
    blog = list(BLOG_SIZES)
    natural = lambda name: [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]  # noqa: E731
    return sorted(set(models), key=lambda m: (blog.index(m) if m in blog else len(blog), natural(m)))


def is_raw(points: pd.DataFrame) -> pd.Series:
    return (points["backend"] == "pytorch") & (points["precision"] == "fp32")


def point_rows(points: pd.DataFrame) -> tuple[list[tuple[str, str, str]], str]:
    """Non-Raw rows as (label, precision, backend), and the caption's backend text.

    One backend on the device: the caption names it and labels are the blog's FP32/FP16/...;
    several: each label names its backend, e.g. ``FP16 (inductor)``.
    """
    rest = points[~is_raw(points)]
    backends = sorted(set(rest["backend"]))
    order = list(PRECISION_LABELS)
    pairs = sorted(set(zip(rest["precision"], rest["backend"])),
                   key=lambda pb: (order.index(pb[0]) if pb[0] in order else len(order), pb[0], pb[1]))
    single = len(backends) == 1
    rows = [(PRECISION_LABELS.get(p, p) if single else f"{PRECISION_LABELS.get(p, p)} ({b})", p, b)
            for p, b in pairs]
    return rows, (f"rows {', '.join(r[0] for r in rows)}: {backends[0]}" if single else "")


def cell(point: pd.Series | None, value: float, fmt, notes: Notes, timed: bool = True) -> tuple[float, str]:
    """A number, or a marked empty cell whose footnote says why; times measured under doubtful conditions
    (an unstable run, a throttled or shared GPU) carry a footnote saying so."""
    if point is None:
        return math.nan, ""
    if point["status"] != OK:
        note = f"{point['status']}: {point['reason'] or 'no reason recorded'}"
        return math.nan, f"— {notes.mark(note)}"
    if not math.isfinite(value):
        return math.nan, ""
    text = fmt(value)
    for column, what in (("unstable", "unstable"), ("conditions", "measured under load or throttled")):
        if timed and point.get(column, ""):
            text += f" {notes.mark(f'{what}: {point[column]}')}"
    return value, text


def frames(grid: dict, rows: list[str], columns: list[str], index_name: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    values = pd.DataFrame(math.nan, index=pd.Index(rows, name=index_name), columns=columns, dtype=float)
    cells = pd.DataFrame("", index=values.index, columns=columns, dtype=object)
    for (row, column), (value, text) in grid.items():
        values.loc[row, column], cells.loc[row, column] = value, text
    return values, cells


def find_point(points: pd.DataFrame, **key: str) -> pd.Series | None:
    """The one point with these column values (the frame is one row per point), or None."""
    mask = pd.Series(True, index=points.index)
    for column, value in key.items():
        mask &= points[column] == value
    found = points[mask]
    return found.iloc[0] if len(found) else None


def raw_baseline(points: pd.DataFrame, metric: str = LATENCY_MS) -> pd.DataFrame:
    """Raw (eager fp32 PyTorch) per device x input x model, with where it came from.

    ``source`` is ``own run`` (an ok pytorch fp32 point) or ``in-run baseline`` (the median of
    the other ok runs' ``raw_<metric>``). Without either, a non-ok pytorch fp32 point gives its
    status and reason. ``metric``: end-to-end latency, or GPU compute time (``gpu_ms_median``).
    """
    rows = []
    for (device, shape, model), group in points.groupby(["device", "input_shape", "model"], sort=False):
        own = group[is_raw(group)]
        others = group[(group["status"] == OK) & ~is_raw(group) & group["raw_" + metric].notna()]
        row = {"device": device, "input_shape": shape, "model": model, "raw_ms": math.nan, "source": RAW_OWN,
               "status": OK, "reason": ""}
        if len(own) and own.iloc[0]["status"] == OK and math.isfinite(own.iloc[0][metric]):
            row["raw_ms"] = own.iloc[0][metric]
        elif len(others):
            row.update(raw_ms=others["raw_" + metric].median(), source=RAW_IN_RUN)
        elif len(own):
            row.update(status=own.iloc[0]["status"], reason=own.iloc[0]["reason"])
        else:
            continue
        rows.append(row)
    return pd.DataFrame(rows, columns=["device", "input_shape", "model", "raw_ms", "source", "status", "reason"])


def _raw_note(raw: pd.DataFrame) -> str:
    """Where the Raw numbers came from, naming the cells that fell back to the in-run baseline."""
    own = "Raw: eager fp32 PyTorch, measured as a point of its own (backend=pytorch precision=fp32)"
    in_run = raw[raw["source"] == RAW_IN_RUN]
    if in_run.empty:
        return f"{own}."
    fallback = ("eager fp32 as timed beside each variant in the variant's own processes (no pytorch fp32 point "
                "was selected), the median over those variants")
    if len(in_run) == len(raw):
        return f"Raw: {fallback}."
    parts = []
    for device, group in in_run.groupby("device", sort=True):
        every = set(group["model"]) == set(raw.loc[raw["device"] == device, "model"])
        models = ", ".join(model_order(group["model"]))
        parts.append(models if raw["device"].nunique() == 1 else device if every else f"{device} ({models})")
    return f"{own}; for {'; '.join(parts)}: {fallback}."


def _device_points(points: pd.DataFrame, device: str, input_shape: str) -> pd.DataFrame:
    return points[(points["device"] == device) & (points["input_shape"] == input_shape)]


def _title(device: str, what: str, input_shape: str, backend_text: str) -> str:
    return f"{device}: {what}, input {describe_input(input_shape)}" + (f" ({backend_text})" if backend_text else "")


def blog_table(points: pd.DataFrame, device: str, input_shape: str, metric: str = LATENCY_MS) -> Table:
    """The blog's table for one device and input: rows Raw/FP32/FP16/BF16/INT8, columns models, median ms.

    ``metric``: end-to-end latency per call (the blog's figure), or GPU compute time per call beside it."""
    sub = _device_points(points, device, input_shape)
    models = model_order(sub["model"])
    rows, backend_text = point_rows(sub)
    notes, grid = Notes(), {}
    raw = raw_baseline(sub, metric)
    for item in raw.itertuples():
        point = pd.Series({"status": item.status, "reason": item.reason})
        grid[(RAW, item.model)] = cell(point, item.raw_ms, sig, notes)
    for label, precision, backend in rows:
        for model in models:
            point = find_point(sub, model=model, precision=precision, backend=backend)
            grid[(label, model)] = cell(point, point[metric] if point is not None else math.nan, sig, notes)
    labels = ([RAW] if len(raw) else []) + [r[0] for r in rows]
    gpu = metric == GPU_MS
    values, cells = frames(grid, labels, models, f"median {'GPU compute' if gpu else 'latency'} (ms)")
    plain = [_raw_note(raw)] if len(raw) else []
    what = f"median {FIGURE_WORDS[metric]} per call (ms)"
    return Table(f"{'gpu' if gpu else 'latency'}_{slug(device)}_{slug(input_label(input_shape))}",
                 _title(device, what, input_shape, backend_text), values, cells, plain + notes.lines())


def _metric_table(points: pd.DataFrame, device: str, input_shape: str, metric: str, fmt, kind: str, what: str,
                  header: str, extra_note=None) -> Table:
    sub = _device_points(points, device, input_shape)
    models = model_order(sub["model"])
    rows, backend_text = point_rows(sub)
    notes, grid = Notes(), {}
    for label, precision, backend in rows:
        for model in models:
            point = find_point(sub, model=model, precision=precision, backend=backend)
            value, text = cell(point, point[metric] if point is not None else math.nan, fmt, notes,
                                timed=metric in TIMED)
            if extra_note and point is not None and point["status"] == OK and extra_note[0](point):
                text = f"{text} {notes.mark(extra_note[1])}"
            grid[(label, model)] = (value, text)
    values, cells = frames(grid, [r[0] for r in rows], models, header)
    return Table(f"{kind}_{slug(device)}_{slug(input_label(input_shape))}",
                 _title(device, what, input_shape, backend_text), values, cells, notes.lines())


def speedup_table(points: pd.DataFrame, device: str, input_shape: str) -> Table:
    """Speed-up over Raw as each run recorded it: Raw median / median, both timed in the same run."""
    return _metric_table(points, device, input_shape, "speedup", fmt_ratio, "speedup",
                         "speed-up over Raw (×, Raw median / median, timed in the same run)", "speed-up (×)")


def conversion_table(points: pd.DataFrame, device: str, input_shape: str) -> Table:
    """Conversion (build) time per cell; cells served from the engine cache are marked."""
    return _metric_table(points, device, input_shape, CONVERT_S, sig, "convert", "conversion time (s)",
                         "conversion (s)",
                         (lambda p: p[CONVERT_CACHE_HIT] == 1, "conversion cache hit: a cached engine was loaded, "
                                                                  "not built"))


def accuracy_table(points: pd.DataFrame, device: str, input_shape: str) -> Table:
    """Accuracy next to speed, one row per model x precision: the numbers that decide a trade-off.

    On labelled images the columns say what each precision costs against the labels (top-1 in points, or
    mean IoU against masks) beside eager fp32 on the same images; on noise only agreement with fp32, which
    says a conversion is not broken, not how accurate it is (the footnote says so).
    """
    sub = _device_points(points, device, input_shape)
    rows, backend_text = point_rows(sub)
    tasks = set(sub.loc[~is_raw(sub), "task"])
    agreement = {"classification": "top-1", "segmentation": "pixel"}
    agree_header = f"{' / '.join(agreement.get(t, t) for t in sorted(tasks)) or 'top-1'} agreement (%)"
    columns = {"median (ms)": (LATENCY_MS, sig), "speed-up (×)": ("speedup", fmt_ratio),
               "rel. L2 error": (ACC_REL_L2_ERR, fmt_err), agree_header: (None, fmt_pct)}
    sub = sub.assign(top1_drop=100 * (sub[ACC_TOP1] - sub[REF_TOP1]),
                     miou_drop=100 * (sub[ACC_MIOU] - sub[REF_MIOU]))
    labelled = {"top-1 (%)": (ACC_TOP1, fmt_pct), "top-1 vs fp32 (points)": ("top1_drop", fmt_points),
                "mIoU (%)": (ACC_MIOU, fmt_pct), "mIoU vs fp32 (points)": ("miou_drop", fmt_points)}
    extra = {column: spec for column, spec in labelled.items() if sub[spec[0]].notna().any()}
    columns.update(extra)
    notes, index, value_rows, cell_rows = Notes(), [], [], []
    for model in model_order(sub["model"]):
        for label, precision, backend in rows:
            point = find_point(sub, model=model, precision=precision, backend=backend)
            if point is None:
                continue
            index.append((model, label))
            pairs = []
            for metric, fmt in columns.values():
                if metric is None:
                    metric = ACC_TOP1_AGREEMENT if point["task"] == "classification" else ACC_PIXEL_AGREEMENT
                pairs.append(cell(point, point[metric], fmt, notes, timed=metric in TIMED))
            value_rows.append([v for v, _ in pairs])
            cell_rows.append([t for _, t in pairs])
    idx = pd.MultiIndex.from_tuples(index, names=["model", "precision"]) if index else \
        pd.MultiIndex.from_tuples([], names=["model", "precision"])
    inputs = sorted(set(sub.loc[sub["status"] == OK, "accuracy_inputs"]) - {""})
    where = [f"inputs: {text}" for text in inputs] or []
    if extra:
        where.append("top-1 / mIoU: against the labels; vs fp32: the converted model's figure minus eager fp32's "
                     "on the same images, in percentage points")
    return Table(f"accuracy_{slug(device)}_{slug(input_label(input_shape))}",
                 _title(device, "accuracy vs eager fp32 next to speed", input_shape, backend_text),
                 pd.DataFrame(value_rows, index=idx, columns=list(columns), dtype=float),
                 pd.DataFrame(cell_rows, index=idx, columns=list(columns), dtype=object),
                 ["rel. L2 error: ||out - ref|| / ||ref|| against eager fp32 outputs on the same inputs; "
                  "agreement: share of top-1 classes (classification) or pixels' classes (segmentation) that "
                  "match.", *where, *notes.lines()])


def cross_device_table(points: pd.DataFrame, precision: str, input_shape: str, backend: str | None = None,
                       speedup: bool = False, metric: str = LATENCY_MS) -> Table:
    """Devices side by side for one precision (or ``raw``): median ms, or speed-up over each device's own Raw;
    ``metric``: end-to-end latency or GPU compute time."""
    raw = raw_baseline(points[points["input_shape"] == input_shape], metric)
    figure = "GPU compute" if metric == GPU_MS else "latency"
    notes, grid = Notes(), {}
    if precision == "raw":
        if speedup:
            raise ValueError("Raw over Raw is 1 by definition")
        for item in raw.itertuples():
            grid[(item.device, item.model)] = cell(pd.Series({"status": item.status, "reason": item.reason}),
                                                    item.raw_ms, sig, notes)
        rows, models = sorted(set(raw["device"])), model_order(raw["model"])
        what, backend_text, plain = f"Raw (eager fp32 PyTorch) median {figure} (ms)", "", [_raw_note(raw)]
    else:
        sub = points[(points["input_shape"] == input_shape) & (points["precision"] == precision)]
        sub = sub[sub["backend"] == backend] if backend else sub[~is_raw(sub)]
        pairs = sorted(set(zip(sub["device"], sub["backend"])))
        one_backend = len({b for _, b in pairs}) == 1
        labels = {(d, b): d if one_backend else f"{d} ({b})" for d, b in pairs}
        rows, models = [labels[p] for p in pairs], model_order(sub["model"])
        raw_ms = {(r.device, r.model): r.raw_ms for r in raw.itertuples()}
        for (device, back), label in labels.items():
            for model in models:
                point = find_point(sub, device=device, backend=back, model=model)
                value = math.nan
                if point is not None:
                    value = raw_ms.get((device, model), math.nan) / point[metric] if speedup else point[metric]
                grid[(label, model)] = cell(point, value, fmt_ratio if speedup else sig, notes)
        name = PRECISION_LABELS.get(precision, precision)
        what = f"{name} {figure} speed-up over the device's own Raw (×)" if speedup else \
            f"{name} median {figure} (ms)"
        backend_text = f"backend {pairs[0][1]}" if one_backend and pairs else ""
        plain = [_raw_note(raw)] if speedup and len(raw) else []
    values, cells = frames(grid, rows, models, "speed-up (×)" if speedup else "median (ms)")
    values.index.name = cells.index.name = f"device: {'speed-up (×)' if speedup else 'median (ms)'}"
    kind = ("cross_gpu_" if metric == GPU_MS else "cross_") + ("speedup" if speedup else "latency")
    suffix = f"_{backend}" if backend else ""
    return Table(f"{kind}_{precision}{suffix}_{slug(input_label(input_shape))}",
                 f"All devices: {what}, input {describe_input(input_shape)}"
                 + (f" ({backend_text})" if backend_text else ""), values, cells, plain + notes.lines())


def device_tables(points: pd.DataFrame) -> list[Table]:
    """Per device and input: latency (the blog's), speed-up, accuracy, conversion time (latency scenario)."""
    points = points[points["scenario"] == "latency"]
    tables = []
    for device, shape in sorted(set(zip(points["device"], points["input_shape"])),
                                key=lambda ds: (ds[0], _shape_key(ds[1]))):
        tables.append(blog_table(points, device, shape))
        if _device_points(points, device, shape)[GPU_MS].notna().any():
            tables.append(blog_table(points, device, shape, GPU_MS))
        if (~is_raw(_device_points(points, device, shape))).any():
            tables += [speedup_table(points, device, shape), accuracy_table(points, device, shape),
                       conversion_table(points, device, shape)]
    return tables


def cross_device_tables(points: pd.DataFrame, precisions: list[str] | None = None,
                        backend: str | None = None) -> list[Table]:
    """For every input measured on two or more devices: Raw, then latency and speed-up per precision."""
    points = points[points["scenario"] == "latency"]
    tables = []
    for shape in sorted(set(points["input_shape"]), key=_shape_key):
        at_shape = points[points["input_shape"] == shape]
        if at_shape["device"].nunique() < 2:
            continue
        if not precisions or "raw" in precisions:
            tables.append(cross_device_table(points, "raw", shape))
        present = set(at_shape["precision"])
        wanted = [p for p in PRECISION_LABELS if p in present and (not precisions or p in precisions)]
        for precision in wanted:
            candidates = at_shape[at_shape["precision"] == precision]
            candidates = candidates[candidates["backend"] == backend] if backend else candidates[~is_raw(candidates)]
            if candidates["device"].nunique() < 2:
                continue
            tables += [cross_device_table(points, precision, shape, backend),
                       cross_device_table(points, precision, shape, backend, speedup=True)]
            if candidates.groupby("device")[GPU_MS].count().gt(0).sum() >= 2:
                tables += [cross_device_table(points, precision, shape, backend, metric=GPU_MS),
                           cross_device_table(points, precision, shape, backend, True, GPU_MS)]
    return tables


def _shape_key(shape: str) -> tuple:
    return tuple(int(p) if p.isdigit() else 0 for p in shape.split("x"))
