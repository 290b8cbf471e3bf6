"""The TensorRT backends on a machine without TensorRT or CUDA, through run.py as a user runs it.

Every point is recorded in MLflow as skipped with the missing piece, never as a crash or a
number; ``backend=auto`` falls through the TensorRT backends to the CPU ones.
"""
import importlib.util
import subprocess
import sys

import pytest
from conftest import SMALL, run_cli, runs

pytestmark = pytest.mark.skipif(
    any(importlib.util.find_spec(m) for m in ("tensorrt", "torch2trt", "torch_tensorrt")),
    reason="these tests describe a machine without TensorRT",
)


def _missing(*modules: str) -> str:
    return f"{', '.join(m for m in modules if importlib.util.find_spec(m) is None)} not installed"


def test_tensorrt_points_are_recorded_as_skipped_with_the_reason(tmp_path, cache_dir):
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    proc = run_cli("-m", *SMALL, "backend=torch2trt,tensorrt,torch_tensorrt", "precision=fp16,int8",
                   f"tracking.uri={store}", f"cache_dir={cache_dir}",
                   cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    points = {r.info.run_name: r for r in runs(store) if r.data.tags.get("bench.role") == "point"}
    expected = {
        "torch2trt": _missing("tensorrt", "torch2trt"),
        "tensorrt": _missing("tensorrt"),
        "torch_tensorrt": _missing("tensorrt", "torch_tensorrt"),
    }
    assert set(points) == {f"resnet18/{p}/{b}/64" for b in expected for p in ("fp16", "int8")}
    for name, run in points.items():
        backend = name.split("/")[2]
        assert run.data.tags["bench.status"] == "skipped"
        assert run.data.tags["bench.reason"] == expected[backend]
        assert run.data.params["backend"] == backend
        assert not run.data.metrics  # a skipped point never carries a number
    assert "6 point(s) measured: 0 ok, 6 skipped, 0 failed" in proc.stderr


def test_backend_options_are_part_of_the_schema(tmp_path, cache_dir):
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    proc = run_cli(*SMALL, "backend=torch2trt", "backend.dla_core=0", "backend.calibration_algorithm=minmax",
                   "precision=int8", f"tracking.uri={store}", f"cache_dir={cache_dir}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run,) = runs(store)
    # The options define the point: they are its params (the device cannot run it: recorded as skipped)
    assert run.data.params["backend.dla_core"] == "0"
    assert run.data.params["backend.calibration_algorithm"] == "minmax"
    assert run.data.params["backend.variant"] == "torch2trt+dla0"

    typo = run_cli(*SMALL, "backend=tensorrt", "backend.workspace=64", f"tracking.uri={store}",
                   f"cache_dir={cache_dir}", cwd=tmp_path)
    assert typo.returncode == 2
    assert typo.stderr.strip().splitlines()[-1].startswith("error: backend.workspace is not an option")


def test_auto_falls_through_tensorrt_to_the_cpu_backends(tmp_path, cache_dir):
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    proc = run_cli("-m", *SMALL, "backend=auto", "device=cpu", "precision=fp32,int8", "raw_baseline=false",
                   f"tracking.uri={store}", f"cache_dir={cache_dir}",
                   cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    points = [r for r in runs(store) if r.data.tags.get("bench.role") == "point"]
    assert {r.data.params["precision"]: r.data.params["backend"] for r in points} == {
        "fp32": "onnxruntime", "int8": "onnxruntime"}
    assert all(r.data.tags["bench.status"] == "ok" and r.data.params["backend.requested"] == "auto" for r in points)


def test_a_point_no_backend_can_run_says_so_in_one_short_line_and_the_detail_once(tmp_path, cache_dir):
    """A GPU without TensorRT made a 600-character reason, repeated in every cell and log line: now the cell and the
    log say which backends were tried, and what each one said is in the run's record and once in the report."""
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    proc = run_cli("-m", *SMALL, "backend=auto", "backend.order=[tensorrt,torch2trt,pytorch]", "precision=fp32,int8",
                   f"tracking.uri={store}", f"cache_dir={cache_dir}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (int8,) = [r for r in runs(store) if r.data.params.get("precision") == "int8"]
    short = "no installed backend runs int8 on cpu (tried tensorrt, torch2trt, pytorch)"
    assert int8.data.tags["bench.status"] == "skipped" and int8.data.tags["bench.reason"] == short
    tried = int8.data.tags["backend.auto_tried"].split("; ")
    assert [entry.split(":")[0] for entry in tried] == ["tensorrt", "torch2trt", "pytorch"]
    assert tried[0] == f"tensorrt: {_missing('tensorrt')}" and "int8" in tried[2]
    logged = [line for line in proc.stderr.splitlines() if "resnet18/int8" in line and "skipped" in line]
    assert logged and all(line.split("skipped: ", 1)[1].startswith(short + ";") for line in logged)

    report = subprocess.run([sys.executable, "-m", "analysis.report", "--tracking-uri", store, "--latest"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert report.returncode == 0, report.stderr
    assert report.stdout.count(tried[2]) == 1  # the detail once, above the tables
    assert report.stdout.count(short) >= 1 and max(map(len, report.stdout.splitlines())) < 400
