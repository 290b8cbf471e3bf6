"""What the field measures besides per-call latency: throughput over batch sizes, the spread of every timed run,
energy where a sensor exists (none here: said so, never invented), the device's state around the window."""
from __future__ import annotations

import csv
import io
import subprocess
import sys

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from conftest import ROOT, SMALL, points, run_cli


@pytest.fixture(scope="module")
def throughput_sweep(tmp_path_factory, cache_dir):
    folder = tmp_path_factory.mktemp("throughput")
    store = f"sqlite:///{folder / 'mlflow.db'}"
    proc = run_cli("-m", *SMALL, "scenario=throughput", "timing.min_s=0.5", "backend=pytorch,onnxruntime",
                   "precision=fp32", "input.batch_size=1,4", f"tracking.uri={store}", f"cache_dir={cache_dir}",
                   cwd=folder)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return store, folder


def test_throughput_is_images_over_wall_time_with_one_latency_per_window(throughput_sweep):
    store, _ = throughput_sweep
    client = MlflowClient(store)
    runs = {r.info.run_name: r for r in points(store)}
    assert set(runs) == {"resnet18/fp32/pytorch/64/throughput", "resnet18/fp32/pytorch/64/b4/throughput",
                         "resnet18/fp32/onnxruntime/64/throughput", "resnet18/fp32/onnxruntime/64/b4/throughput"}
    for name, run in runs.items():
        m, params = run.data.metrics, run.data.params
        batch = int(params["input.batch_size"])
        assert params["scenario"] == "throughput" and params["timing.method"] == "wall_clock_per_window_sync"
        windows = [float(row["latency_ms"]) for row in csv.DictReader(io.StringIO(open(
            client.download_artifacts(run.info.run_id, "latencies_ms.csv")).read()))]
        assert len(windows) == m["windows"] and m["iterations"] % m["windows"] == 0  # equal windows, one sync each
        # Windows hold equally many calls, so images / wall time = batch x 1000 / mean window latency per call.
        # Metrics are recorded to 4 significant digits, hence the 1e-3 tolerance on what is recomputed from the CSV.
        assert m["throughput_ips"] == pytest.approx(batch * 1000 / np.mean(windows), rel=1e-3)
        assert m["latency_cv"] == pytest.approx(np.std(windows, ddof=1) / np.mean(windows), rel=1e-3)
        # The same-run baseline was timed the same way: the ratio compares like with like.
        assert m["throughput_speedup"] == pytest.approx(m["throughput_ips"] / m["raw_throughput_ips"], rel=1e-3)
        # One process per point (timing=quick): a heavy tail within it never makes a point unstable.
        assert "bench.unstable" not in run.data.tags
        assert run.data.tags["timing.stability"] == "not judged: one process (timing.repeats=1)"


def test_energy_is_unavailable_here_with_the_reason_and_never_invented(throughput_sweep):
    for run in points(throughput_sweep[0]):
        assert run.data.tags["energy.source"].startswith("unavailable: ")
        assert not {"energy_mj_per_image", "power_w_mean", "energy_mj"} & set(run.data.metrics)
        assert not [key for key in run.data.tags if key.startswith("state.state.")]  # one prefix, as documented


def test_the_report_draws_throughput_and_latency_against_the_batch_size(throughput_sweep, tmp_path):
    store, _ = throughput_sweep
    report = subprocess.run([sys.executable, "-m", "analysis.report", "--tracking-uri", store, "--latest",
                             "--out", str(tmp_path / "report")], cwd=ROOT, capture_output=True, text=True,
                            timeout=300)
    assert report.returncode == 0, report.stderr
    assert "images per second (batch x calls / wall time) against the batch size" in report.stdout
    table = report.stdout.split("against the batch size")[1]
    assert "img/s" in table.splitlines()[2] and table.splitlines()[2].split()[1:] == ["1", "4"]
    assert "energy per image" not in report.stdout  # no source here: no table of invented numbers
    assert (tmp_path / "report" / "plots" / "batch_amd-epyc_resnet18_64x64.png").is_file() or \
        list((tmp_path / "report" / "plots").glob("batch_*_resnet18_64x64.png"))


def test_energy_required_without_a_source_is_one_line(tmp_path):
    proc = run_cli(*SMALL, "energy=require", cwd=tmp_path)
    assert proc.returncode == 2
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: energy=require, but cpu has no energy source here (unavailable: ")
    assert not (tmp_path / "mlflow.db").exists()
