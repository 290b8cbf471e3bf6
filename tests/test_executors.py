"""The blog's devices, as far as this machine can be them: the measuring core run by the Jetsons' own Python
stacks (3.6 + torch 1.10, 3.8 + torch 2.1), locally, over a real SSH server, and offline through a plans file."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import ROOT, SMALL, missing, parents, points, run_cli
from test_resume import wait_for

GRID = ["-m", *SMALL, "backend=onnxruntime,pytorch", "precision=fp32,fp16,int8"]


def pyenv_python(version: str) -> str:
    found = subprocess.run(["pyenv", "root"], capture_output=True, text=True)
    path = Path(found.stdout.strip()) / "versions" / version / "bin" / "python"
    if found.returncode != 0 or not path.is_file():
        missing(f"no Python {version} from pyenv")
    return str(path)


def ssh_args(sshd, python: str) -> list[str]:
    return ["executor=ssh", f"executor.host={sshd.alias}", f"executor.ssh_config={sshd.config}",
            f"executor.python={python}"]


@pytest.mark.slow
def test_a_sweep_measured_by_the_nanos_python_36_and_torch_110(py36, tmp_path):
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    proc = run_cli(*GRID, f"executor.python={py36}", f"tracking.uri={store}", f"cache_dir={tmp_path / 'cache'}",
                   cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = {r.info.run_name: r for r in points(store)}
    assert len(runs) == 6
    for name in ("resnet18/fp32/onnxruntime/64", "resnet18/int8/onnxruntime/64", "resnet18/fp32/pytorch/64"):
        tags = runs[name].data.tags
        assert tags["bench.status"] == "ok", (name, tags["bench.reason"])
        assert tags["sw.python"] == "3.6.15" and tags["sw.torch"].startswith("1.10.0")
        assert tags["sw.torchvision"].startswith("0.11.1") and tags["sw.onnxruntime"] == "1.10.0"
    int8 = runs["resnet18/int8/onnxruntime/64"]
    # torch 1.10 has only the TorchScript exporter; the opset it used is recorded
    assert int8.data.params["backend.exporter"] == "torchscript" and int(int8.data.params["backend.opset"]) <= 14
    assert int(int8.data.tags["backend.quantized_ops"]) >= 20
    m = int8.data.metrics
    assert m["latency_ms_median"] < m["raw_latency_ms_median"] and m["speedup"] > 1  # int8 beats Raw
    fp16 = runs["resnet18/fp16/pytorch/64"].data.tags
    assert fp16["bench.status"] == "skipped"
    assert fp16["bench.reason"].startswith("torch 1.10.0") and "no fp16 convolution on the CPU" in fp16["bench.reason"]
    assert "CUDAExecutionProvider" in runs["resnet18/fp16/onnxruntime/64"].data.tags["bench.reason"]
    assert runs["resnet18/int8/pytorch/64"].data.tags["bench.status"] == "skipped"
    # onnxruntime 1.10 writes augmented_model.onnx into its working folder: never the user's
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "mlartifacts", "mlflow.db"]


@pytest.mark.slow
def test_over_ssh_with_the_xaviers_python_38_a_lost_connection_fails_points_and_a_rerun_resumes(py38, sshd, tmp_path):
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    args = ["-m", *SMALL, "backend=pytorch", "input.batch_size=1,2,3", "timing.min_s=4", *ssh_args(sshd, py38),
            f"tracking.uri={store}", f"cache_dir={tmp_path / 'cache'}"]
    log = tmp_path / "first.log"
    with open(log, "w") as out:
        first = subprocess.Popen([sys.executable, str(ROOT / "run.py"), *args], cwd=tmp_path, stdout=out,
                                 stderr=subprocess.STDOUT)
    try:
        wait_for(lambda text: "shipping the measuring core" in text, log, first)
        shipped = time.monotonic()
        wait_for(lambda text: text.count(": measuring on ssh testdevice") == 2, log, first)
        time.sleep(1.5)
        sshd.kill()  # the device drops off the network in the middle of point 2
        first.wait(timeout=300)
    finally:
        if first.poll() is None:
            first.kill()
    output = log.read_text()
    assert first.returncode == 1, output[-3000:]
    assert output.count("shipping the measuring core") == 1 + 1  # once per sweep; once more trying to reconnect
    by_name = {r.info.run_name: r for r in points(store)}
    ok = by_name["resnet18/fp32/pytorch/64"].data.tags
    assert ok["bench.status"] == "ok" and ok["sw.python"] == "3.8.18" and ok["sw.torch"].startswith("2.1.")
    lost = by_name["resnet18/fp32/pytorch/64/b2"].data.tags
    assert lost["bench.status"] == "failed" and lost["bench.failure"] == "executor"
    assert lost["bench.reason"].startswith("lost the device while measuring: ssh testdevice ended")
    refused = by_name["resnet18/fp32/pytorch/64/b3"].data.tags
    assert refused["bench.status"] == "failed" and "Connection refused" in refused["bench.reason"]
    (parent,) = parents(store)
    assert parent.info.status == "FAILED" and parent.data.tags["bench.sweep_state"] == "incomplete"
    assert time.monotonic() - shipped > 0

    sshd.start()  # back on the network
    again = run_cli(*args, cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "resnet18/fp32/pytorch/64: already recorded in this sweep" in again.stderr
    assert again.stderr.count(": measuring on ssh testdevice") == 2
    children = points(store)
    assert len(children) == 3 and all(c.data.tags["bench.status"] == "ok" for c in children)
    (parent,) = parents(store)
    assert parent.info.status == "FINISHED" and parent.data.tags["bench.sweep_state"] == "complete"


@pytest.mark.slow
def test_offline_plans_measured_by_python_36_then_synced_each_once(py36, tmp_path):
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    plans = tmp_path / "plans.jsonl"
    made = run_cli("-m", *SMALL, "backend=onnxruntime", "precision=fp32,int8", "executor=plan",
                   f"executor.out={plans}", f"tracking.uri={store}", cwd=tmp_path)
    assert made.returncode == 0, made.stderr[-3000:]
    assert not (tmp_path / "mlflow.db").exists()  # nothing measured, nothing recorded yet
    lines = plans.read_text().splitlines()
    assert len(lines) == 2 and json.loads(lines[0])["sweep"]["uri"] == store
    assert f"python3 -m bench.device {plans.name} --out results/" in made.stderr

    # On the device: only the core, run by its own Python.
    device = tmp_path / "device"
    device.mkdir()
    env = {key: value for key, value in os.environ.items() if not key.startswith("PYTHON")}
    measure = [py36, "-m", "bench.device", str(plans), "--out", str(device / "results")]
    done = subprocess.run(measure, capture_output=True, text=True, cwd=device, timeout=600,
                          env={**env, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr[-3000:]
    assert "2 measured (2 ok, 0 skipped, 0 failed), 0 already in" in done.stdout
    again = subprocess.run(measure, capture_output=True, text=True, cwd=device, timeout=600,
                           env={**env, "PYTHONPATH": str(ROOT)})
    assert "0 measured (0 ok, 0 skipped, 0 failed), 2 already in" in again.stdout  # a re-run resumes

    synced = subprocess.run([sys.executable, "-m", "bench.store.sync", "--spool", str(device / "results")], cwd=ROOT,
                            capture_output=True, text=True, timeout=300)
    assert synced.returncode == 0, synced.stderr[-3000:]
    assert "2 uploaded, 0 already in the store, 0 left" in synced.stdout
    (parent,), children = parents(store), points(store)
    assert sorted(c.info.run_name for c in children) == ["resnet18/fp32/onnxruntime/64",
                                                         "resnet18/int8/onnxruntime/64"]
    assert all(c.data.tags["mlflow.parentRunId"] == parent.info.run_id for c in children)
    assert all(c.data.tags["sw.python"] == "3.6.15" for c in children)
    assert parent.info.status == "FINISHED" and parent.data.metrics["points_ok"] == 2
    twice = subprocess.run([sys.executable, "-m", "bench.store.sync", "--spool", str(device / "results")], cwd=ROOT,
                           capture_output=True, text=True, timeout=300)
    assert twice.returncode == 2 and twice.stderr.startswith("error: --spool ") and "uploaded already" in twice.stderr
    assert len(points(store)) == 2


def test_a_plans_file_that_is_not_json_or_has_an_unknown_field_is_one_line(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    good = run_cli(*SMALL, "executor=plan", f"executor.out={tmp_path / 'plans.jsonl'}", cwd=tmp_path)
    assert good.returncode == 0, good.stderr[-3000:]
    plan = json.loads((tmp_path / "plans.jsonl").read_text())
    cases = {"not json": "{this is not json\n", "unknown field": json.dumps({**plan, "speed": "fast"}) + "\n",
             "nested unknown field": json.dumps({**plan, "timing": {**plan["timing"], "min_iter": 3}}) + "\n"}
    messages = {"not json": "line 1: not JSON", "unknown field": "line 1: unknown field 'speed'",
                "nested unknown field": "line 1: unknown field 'timing.min_iter'"}
    for case, text in cases.items():
        path = tmp_path / f"{case.replace(' ', '_')}.jsonl"
        path.write_text(text)
        done = subprocess.run([sys.executable, "-m", "bench.device", str(path), "--out", str(tmp_path / "r")],
                              capture_output=True, text=True, env=env, timeout=120)
        assert done.returncode == 2, done.stderr[-2000:]
        assert done.stderr.count("\n") == 1 and done.stderr.startswith("error: ") and messages[case] in done.stderr
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("case", ["refused", "unknown host", "no such interpreter", "python 2.7", "no torch"])
def test_a_device_that_cannot_measure_is_one_line_before_any_work(case, sshd, tmp_path):
    python = {"no such interpreter": "/nope/python3", "python 2.7": pyenv_python("2.7.18"),
              "no torch": pyenv_python("3.9.18")}.get(case, "python3")
    args = ssh_args(sshd, python)
    if case == "refused":
        sshd.kill()
    if case == "unknown host":
        args[1] = "executor.host=nosuchhost.invalid"
    expected = {"refused": "Connection refused", "unknown host": "Could not resolve hostname nosuchhost.invalid",
                "no such interpreter": "/nope/python3: No such file or directory",
                "python 2.7": "Python 2.7.18 at ", "no torch": "torch (No module named 'torch') is not installed"}
    proc = run_cli(*SMALL, *args, cwd=tmp_path, timeout=180)
    assert proc.returncode == 2, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and expected[case] in last, proc.stderr[-2000:]
    assert list(tmp_path.iterdir()) == []  # no store: nothing was recorded
