"""Failing, crashing and skipped points are recorded as such, and the sweep goes on."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from mlflow.tracking import MlflowClient

from conftest import ROOT, SMALL, points, run_cli


def children(pid: int) -> list[tuple[int, str]]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found.append((int(entry.name), cmdline))
    return found


def point_processes(pid: int) -> list[int]:
    """Processes measuring a point for run.py ``pid``: children of its worker (``python -m bench.device serve``)."""
    workers = [child for child, cmdline in children(pid) if "bench.device" in cmdline]
    return [point for worker in workers for point, _ in children(worker)]


def test_a_crashing_point_is_recorded_as_failed_and_the_sweep_goes_on(tmp_path, cache_dir):
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    # First point times for 120 s (it is killed with SIGSEGV, like a crashing TensorRT build); the second is quick.
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "run.py"), "-m", *SMALL, "backend=pytorch", "timing.min_s=120,0",
         f"tracking.uri={store}", f"cache_dir={cache_dir}"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    # The worker forks short-lived children too (facts, resolving); the point's is the one that lasts.
    deadline, seen = time.time() + 120, {}
    while time.time() < deadline:
        for pid in point_processes(proc.pid):
            seen.setdefault(pid, time.time())
        lasting = [pid for pid, since in seen.items() if time.time() - since > 8 and pid in point_processes(proc.pid)]
        if lasting:
            break
        time.sleep(0.5)
    assert lasting, "the point's process never started"
    os.kill(lasting[0], signal.SIGSEGV)
    output, _ = proc.communicate(timeout=300)
    assert proc.returncode == 1, output[-3000:]  # 1: some points failed
    by_min_s = {r.data.params["timing.min_s"]: r for r in points(store)}
    assert by_min_s["120.0"].data.tags["bench.status"] == "failed"
    assert "signal SIGSEGV" in by_min_s["120.0"].data.tags["bench.reason"]
    assert by_min_s["120.0"].info.status == "FAILED"
    assert by_min_s["0.0"].data.tags["bench.status"] == "ok"
    assert "2 point(s) measured: 1 ok, 0 skipped, 1 failed" in output


def test_a_point_that_raises_is_recorded_with_its_error(tmp_path, cache_dir):
    """maxvit's einsum has no ONNX form before opset 12: the export fails on the device, for real."""
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    proc = run_cli("model=torchvision", "model.name=maxvit_t", "model.bn_recalibration_batches=0", "timing=quick",
                   "accuracy.batches=1", "raw_baseline=false", "backend=onnxruntime", "backend.exporter=torchscript",
                   "backend.opset=9", f"tracking.uri={store}", f"cache_dir={cache_dir}", cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr[-3000:]
    (run,) = points(store)
    assert run.data.tags["bench.status"] == "failed" and run.info.status == "FAILED"
    assert "UnsupportedOperatorError" in run.data.tags["bench.reason"] and "einsum" in run.data.tags["bench.reason"]
    assert run.data.tags["bench.failure"] == "point"
    assert not run.data.metrics
    error = open(MlflowClient(store).download_artifacts(run.info.run_id, "error.txt")).read()
    assert error.startswith("Traceback") and "onnx_export.py" in error


def test_unsupported_combination_is_skipped_with_reason_never_run_as_another_precision(tmp_path, cache_dir):
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    proc = run_cli(*SMALL, "backend=onnxruntime", "precision=bf16", f"tracking.uri={store}",
                   f"cache_dir={cache_dir}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run,) = points(store)
    assert run.data.tags["bench.status"] == "skipped" and "bf16" in run.data.tags["bench.reason"]
    assert run.data.params["precision"] == "bf16"
    assert not run.data.metrics


def test_a_batch_the_device_cannot_hold_is_skipped_and_ends_its_series(tmp_path, cache_dir):
    """100000 images of 512x512 need 314 GB: the allocator refuses at once, the point is recorded as skipped
    with the reason, and the larger batch of the same series is not even tried."""
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    proc = run_cli("-m", "model=resnet18", "input=512x512", "timing=quick", "accuracy.batches=1", "raw_baseline=false",
                   "backend=pytorch", "input.batch_size=1,100000,200000", f"tracking.uri={store}",
                   f"cache_dir={cache_dir}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]  # a skip is no failure
    by_batch = {r.data.params["input.batch_size"]: r.data.tags for r in points(store)}
    assert by_batch["1"]["bench.status"] == "ok"
    assert by_batch["100000"]["bench.status"] == "skipped"
    assert by_batch["100000"]["bench.reason"].startswith("out of memory at batch 100000: ")
    assert "can't allocate memory" in by_batch["100000"]["bench.reason"]
    assert by_batch["200000"]["bench.status"] == "skipped"
    assert by_batch["200000"]["bench.reason"] == ("out of memory: batch 100000 of this series did not fit on the "
                                                  "device, so larger ones were not tried")
    assert proc.stderr.count(": measuring on") == 2
