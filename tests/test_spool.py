"""Nothing lost: points the tracking server cannot take go to the spool, the sweep goes on, and
``python -m bench.store.sync`` uploads each of them later exactly once, under its sweep's parent run."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from conftest import ROOT, SMALL, compose_plan, free_port, parents, points, run_cli
from test_server import MlflowServer
from bench.store.record import shown


def sync(*args: str) -> subprocess.CompletedProcess:
    """``python -m bench.store.sync`` as a user runs it."""
    return subprocess.run([sys.executable, "-m", "bench.store.sync", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)


def waiting(spool: Path) -> list[Path]:
    return sorted(p for p in spool.iterdir() if p.is_dir() and not p.name.startswith(".")
                  and p.name not in ("synced", "quarantine")) if spool.is_dir() else []


def test_an_offline_sweep_spools_every_point_and_sync_uploads_each_once(tmp_path, cache_dir):
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens: a Jetson in the field
    spool = tmp_path / "spool"
    proc = run_cli("-m", *SMALL, "backend=pytorch", "input.batch_size=1,2", "tracking=server",
                   f"tracking.uri={dead}", f"tracking.spool_dir={spool}", f"cache_dir={cache_dir}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "2 point(s) measured: 2 ok, 0 skipped, 0 failed; 2 waiting in the spool" in proc.stderr
    entries = waiting(spool)
    assert len(entries) == 2
    measured = json.loads((entries[0] / "measurement.json").read_text())
    assert measured["status"] == "ok" and measured["plan"]["sweep"]["uri"] == dead
    assert measured["plan"]["input"]["height"] == 64 and measured["metrics"]["latency_ms_median"] > 0
    backup = tmp_path / "backup"
    shutil.copytree(spool, backup)

    # Still offline: sync says so and keeps every point.
    offline = sync("--spool", str(spool))
    assert offline.returncode == 1, offline.stderr[-3000:]
    assert "0 uploaded, 0 already in the store, 2 left" in offline.stdout
    assert len(waiting(spool)) == 2

    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    first = sync("--spool", str(spool), "--uri", store)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "2 uploaded, 0 already in the store, 0 left" in first.stdout
    assert waiting(spool) == [] and len(list((spool / "synced").iterdir())) == 2  # kept, moved aside
    (parent,), children = parents(store), points(store)
    assert len(children) == 2
    assert all(c.data.tags["mlflow.parentRunId"] == parent.info.run_id for c in children)
    assert parent.data.metrics["points_ok"] == 2 and parent.info.status == "FINISHED"
    uploaded = next(c for c in children if c.data.tags["bench.point_id"] == measured["point_id"])
    assert uploaded.data.metrics["latency_ms_median"] == shown(measured["metrics"]["latency_ms_median"])
    assert uploaded.info.start_time == measured["started_ms"]  # when it was measured, not when it was synced
    artifacts = MlflowClient(store).list_artifacts(uploaded.info.run_id)
    assert {"config.yaml", "latencies_ms.csv"} <= {a.path for a in artifacts}

    # Entries synced before (a sync interrupted before it moved them) are not uploaded again.
    for entry in waiting(backup):
        shutil.copytree(entry, spool / entry.name)
    again = sync("--spool", str(spool), "--uri", store)
    assert again.returncode == 0 and "0 uploaded, 2 already in the store, 0 left" in again.stdout
    assert len(points(store)) == 2

    # A run cut off half-way through an upload (still RUNNING) is replaced, not kept beside the full one.
    client = MlflowClient(store)
    client.delete_run(uploaded.info.run_id)
    partial = client.create_run(parent.info.experiment_id, tags={"bench.point_id": measured["point_id"],
                                                                 "bench.role": "point"})
    shutil.copytree(backup / entries[0].name, spool / entries[0].name)
    replaced = sync("--spool", str(spool), "--uri", store)
    assert replaced.returncode == 0 and "1 uploaded, 0 already in the store, 0 left" in replaced.stdout
    children = points(store)
    assert len(children) == 2 and partial.info.run_id not in {c.info.run_id for c in children}


@pytest.mark.slow
def test_a_server_stopped_mid_sweep_loses_no_point(tmp_path, cache_dir):
    server = MlflowServer(tmp_path / "server")
    spool = tmp_path / "spool"
    try:
        server.start()
        # Three points, each timed for at least 3 s, so the server goes away while the second one runs.
        log = tmp_path / "sweep.log"
        with open(log, "w") as out:
            sweep = subprocess.Popen(
                [sys.executable, str(ROOT / "run.py"), "-m", *SMALL, "backend=pytorch", "input.batch_size=1,2,3",
                 "timing.min_s=3", "tracking=server", f"tracking.uri={server.uri}", f"tracking.spool_dir={spool}",
                 f"cache_dir={cache_dir}"],
                cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT)
        try:
            _wait_for_first_point(server.uri, sweep)
            server.stop()
            sweep.wait(timeout=300)
        finally:
            if sweep.poll() is None:
                sweep.kill()
                sweep.wait()
        output = log.read_text()
        assert sweep.returncode == 0, output[-3000:]
        assert "3 point(s) measured: 3 ok, 0 skipped, 0 failed" in output
        offline = len(waiting(spool))
        assert offline >= 1, output[-3000:]  # 2 unless the machine is so slow that point 2 beat the stop

        server.start()  # back, same port and data
        done = sync("--spool", str(spool))
        assert done.returncode == 0, done.stderr[-3000:]
        assert f"{offline} uploaded, 0 already in the store, 0 left" in done.stdout
        (parent,), children = parents(server.uri), points(server.uri)
        assert sorted(c.info.run_name for c in children) == [
            "resnet18/fp32/pytorch/64", "resnet18/fp32/pytorch/64/b2", "resnet18/fp32/pytorch/64/b3"]
        assert len({c.data.tags["bench.point_id"] for c in children}) == 3
        assert all(c.data.tags["mlflow.parentRunId"] == parent.info.run_id for c in children)
        assert all(c.data.metrics["latency_ms_median"] > 0 and c.info.status == "FINISHED" for c in children)
        assert parent.data.metrics["points_ok"] == 3 and parent.info.status == "FINISHED"
        client = MlflowClient(server.uri)
        assert all("config.yaml" in {a.path for a in client.list_artifacts(c.info.run_id)} for c in children)
        again = sync("--spool", str(spool))  # a folder whose every point is uploaded: said in one line
        assert again.returncode == 2 and again.stderr.startswith(f"error: --spool {spool}: all {offline} measurement")
        assert len(points(server.uri)) == 3
    finally:
        server.stop()


def _wait_for_first_point(uri: str, sweep: subprocess.Popen, timeout_s: float = 180) -> None:
    """Until the first point's run is in the store, whole."""
    client = MlflowClient(uri)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and sweep.poll() is None:
        experiment = client.get_experiment_by_name("trt-bench")
        if experiment and client.search_runs([experiment.experiment_id], "tags.`bench.role` = 'point' and "
                                                                          "attributes.status = 'FINISHED'"):
            return
        time.sleep(0.3)
    raise AssertionError(f"the first point was not recorded within {timeout_s} s")


def test_run_py_and_sync_use_the_same_spool_by_default():
    from bench.store.spool import DEFAULT_SPOOL_DIR

    import yaml

    assert yaml.safe_load((ROOT / "conf" / "tracking" / "server.yaml").read_text())["spool_dir"] == DEFAULT_SPOOL_DIR
    assert compose_plan("tracking=server")["protocol"] == 1  # the composed config is valid with it
