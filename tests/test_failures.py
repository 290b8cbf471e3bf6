"""Failing, crashing and skipped points are recorded as such, and the sweep goes on."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from conftest import ROOT, SMALL, runs


def _children(pid: int) -> list[tuple[int, str]]:
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


def _point_processes(pid: int) -> list[int]:
    """Point processes of run.py ``pid``: children of its multiprocessing forkserver."""
    servers = [child for child, cmdline in _children(pid) if "forkserver" in cmdline]
    return [point for server in servers for point, _ in _children(server)]


def test_a_crashing_point_is_recorded_as_failed_and_the_sweep_goes_on(tmp_path, cache_dir):
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    # First point times for 120 s (it is killed with SIGSEGV, like a crashing TensorRT build); the second is quick.
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "run.py"), "-m", *SMALL, "backend=pytorch", "timing.min_s=120,0",
         f"tracking.uri={store}", f"cache_dir={cache_dir}", f"hydra.sweep.dir={tmp_path / 'sweep'}"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    deadline = time.time() + 120
    while time.time() < deadline and not _point_processes(proc.pid):
        time.sleep(0.5)
    children = _point_processes(proc.pid)
    assert children, "the point's child process never started"
    time.sleep(8)  # let it reach the timing loop
    os.kill(children[0], signal.SIGSEGV)
    output, _ = proc.communicate(timeout=300)
    assert proc.returncode == 1, output[-3000:]  # exit status = number of failed points
    points = {r.data.params["timing.min_s"]: r for r in runs(store) if r.data.tags["bench.role"] == "point"}
    assert points["120.0"].data.tags["bench.status"] == "failed"
    assert "signal SIGSEGV" in points["120.0"].data.tags["bench.reason"]
    assert points["120.0"].info.status == "FAILED"
    assert points["0.0"].data.tags["bench.status"] == "ok"
    assert "2 point(s): 1 ok, 0 skipped, 1 failed" in output


def test_a_raising_point_is_recorded_with_its_error(make_cfg, store, tmp_path):
    from bench.runner import run_point

    images = tmp_path / "images"
    images.mkdir()
    (images / "broken.jpg").write_bytes(b"this is not a jpeg")
    result = run_point(make_cfg("backend=onnxruntime", "precision=int8", "calibration=folder",
                                f"calibration.folder={images}"))
    assert result.status == "failed"
    assert "UnidentifiedImageError" in result.reason
    (run,) = runs(store)
    assert run.data.tags["bench.status"] == "failed"
    assert "UnidentifiedImageError" in run.data.tags["bench.reason"]
    assert not run.data.metrics
    from mlflow.tracking import MlflowClient

    assert "error.txt" in {a.path for a in MlflowClient(store).list_artifacts(run.info.run_id)}


def test_unsupported_combination_is_skipped_with_reason_never_run_as_another_precision(make_cfg, store):
    from bench.runner import run_point

    result = run_point(make_cfg("backend=onnxruntime", "precision=bf16"))
    assert result.status == "skipped"
    assert "bf16" in result.reason
    (run,) = runs(store)
    assert run.data.tags["bench.status"] == "skipped"
    assert run.data.params["precision"] == "bf16"
    assert not run.data.metrics
