"""Numbers that reproduce, on the CPU: a point measured in several fresh processes is recorded as such (its figure,
interval, spread and every process's row); processes that disagree make it unstable; an eager fp32 baseline that
disagrees with the sweep's is measured again and flagged; the histogram shows both series on one set of bins.

Slowdowns here are real: busy processes started while one process of a point measures, never patched numbers."""
from __future__ import annotations

import contextlib
import csv
import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from bench.contract.records import Measurement, Plan
from bench.store.record import histogram_figure
from conftest import ROOT, SMALL, points
from synthetic import plan
from test_resume import wait_for

HOG = "import time\nend = time.monotonic() + 120\nwhile time.monotonic() < end: pass\n"


@contextlib.contextmanager
def busy_cpus(count: int):
    """``count`` processes that keep a CPU busy each, for at most two minutes."""
    # each in a session of its own: with autogroup scheduling, CPU time is shared between sessions first
    hogs = [subprocess.Popen([sys.executable, "-c", HOG], start_new_session=True) for _ in range(count)]
    try:
        yield
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()


def sweep_with_a_slowed_phase(tmp_path: Path, args: list[str], slowed_from: str) -> tuple[str, str]:
    """Run a sweep; from the first log line containing ``slowed_from`` to its end, the CPUs are busy elsewhere."""
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    log = tmp_path / "sweep.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, str(ROOT / "run.py"), *args, f"tracking.uri={store}"],
                                cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda text: slowed_from in text, log, proc)
        with busy_cpus(4):
            assert proc.wait(timeout=300) == 0, log.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
    return store, log.read_text()


def artifact(store: str, run_id: str, name: str) -> str:
    return Path(MlflowClient(store).download_artifacts(run_id, name)).read_text()


def test_a_point_in_three_processes_is_their_median_with_interval_spread_and_a_row_each(tmp_path, cache_dir):
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    proc = subprocess.run([sys.executable, str(ROOT / "run.py"), *SMALL, "backend=onnxruntime", "timing.repeats=3",
                           "timing.min_s=0.3", f"cache_dir={cache_dir}", f"tracking.uri={store}"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run,) = points(store)
    m, tags = run.data.metrics, run.data.tags
    rows = list(csv.DictReader(io.StringIO(artifact(store, run.info.run_id, "repeats.csv"))))
    assert [row["process"] for row in rows] == ["1", "2", "3"]
    assert len({row["pid"] for row in rows}) == 3  # three fresh processes
    medians = [float(row["latency_ms_median"]) for row in rows]
    # metrics are recorded to 4 significant digits; repeats.csv keeps each process's figures whole
    assert m["latency_ms_median"] == pytest.approx(np.median(medians), rel=1e-3) and m["repeats"] == 3
    assert m["latency_ms_spread"] == pytest.approx(max(medians) / min(medians), rel=1e-3)
    assert m["latency_ms_lo"] <= m["latency_ms_median"] <= m["latency_ms_hi"]
    assert m["speedup"] == pytest.approx(np.median([float(row["speedup"]) for row in rows]), rel=1e-3)
    assert m["speedup_lo"] <= m["speedup"] <= m["speedup_hi"]
    assert tags["timing.interval"] == "95% Student t interval over 3 processes' medians (log scale)"
    assert tags["timing.stability"].startswith("judged from 3 processes") or "bench.unstable" in tags
    assert float(rows[1]["convert_s"]) < float(rows[0]["convert_s"])  # the repeats load the conversion cached
    calls = list(csv.DictReader(io.StringIO(artifact(store, run.info.run_id, "latencies_ms.csv"))))
    assert {row["process"] for row in calls} == {"1", "2", "3"} and len(calls) == m["iterations"]
    assert "gpu_ms_median" not in m and "timing.gpu" not in tags  # on the CPU end-to-end is the only figure
    assert run.data.params["timing.repeats"] == "3"
    assert "end-to-end" in tags["timing.latency"] and "; 3 processes" in tags["mlflow.note.content"]


def test_processes_that_disagree_make_the_point_unstable(tmp_path, cache_dir):
    """The second process of the point runs while four busy processes share the two CPUs."""
    store, text = sweep_with_a_slowed_phase(
        tmp_path, [*SMALL, "backend=pytorch", "timing.repeats=2", "timing.min_s=1", "threads=1",
                   f"cache_dir={cache_dir}"], "process 2 of 2 for this point")
    (run,) = points(store)
    rows = list(csv.DictReader(io.StringIO(artifact(store, run.info.run_id, "repeats.csv"))))
    assert float(rows[1]["latency_ms_median"]) > 1.3 * float(rows[0]["latency_ms_median"]), rows
    assert "2 processes' end-to-end latencies differ by" in run.data.tags["bench.unstable"], text[-2000:]


def test_an_eager_baseline_that_disagrees_with_the_sweep_is_measured_again_then_flagged(tmp_path, cache_dir):
    """The sweep's pytorch fp32 point measures eager fp32 on a quiet machine; the onnxruntime point's Raw is timed
    while four busy processes share the two CPUs, both times it is measured."""
    store, text = sweep_with_a_slowed_phase(
        tmp_path, ["-m", *SMALL, "backend=pytorch,onnxruntime", "timing.min_s=1", f"cache_dir={cache_dir}"],
        "[2/2] resnet18/fp32/onnxruntime/64: measuring")
    assert "the sweep's earlier measurements of the same model" in text and "measuring it again" in text
    by_backend = {run.data.params["backend"]: run for run in points(store)}
    assert "bench.unstable" not in by_backend["pytorch"].data.tags
    flagged = by_backend["onnxruntime"]
    assert "eager fp32 measured beside it" in flagged.data.tags["bench.unstable"]
    assert flagged.data.metrics["raw_latency_ms_median"] > 1.5 * by_backend["pytorch"].data.metrics[
        "latency_ms_median"]


def test_the_histogram_shows_the_variant_beside_raw_on_shared_bins():
    rng = np.random.default_rng(0)
    variant = list(0.35 * np.exp(rng.normal(0, 0.03, 300)))
    raw = list(2.5 * np.exp(rng.normal(0, 0.05, 300))) + [40.0]  # Raw with a heavy tail
    made = plan("resnet18", "inductor", "fp16", 256, {"device.label": "NVIDIA H200"})
    made["resolution"]["variant"] = "inductor+cudagraphs"
    measurement = Measurement(Plan.from_json(made), {})
    measurement.update(latencies_ms=variant, raw_latencies_ms=raw)
    axes = histogram_figure(measurement).axes[0]
    variant_bars, raw_bars = axes.containers
    edges = [[patch.get_x() for patch in bars] for bars in (variant_bars, raw_bars)]
    assert edges[0] == edges[1]  # one set of bins
    assert sum(patch.get_height() > 0 for patch in variant_bars) >= 5  # the variant's calls spread over bins
    assert sum(patch.get_height() for patch in variant_bars) == len(variant)
    assert sum(patch.get_height() for patch in raw_bars) == len(raw)  # the tail is in the last bin, not lost
