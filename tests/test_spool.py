"""Nothing lost: points the tracking server cannot take go to the spool, the sweep goes on, and
``python -m bench.sync`` uploads each of them later exactly once, under its sweep's parent run."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from conftest import ROOT, SMALL, run_cli, runs
from test_server import MlflowServer, free_port


def sync(*args: str) -> subprocess.CompletedProcess:
    """``python -m bench.sync`` as a user runs it."""
    return subprocess.run([sys.executable, "-m", "bench.sync", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)


def spooled(spool: Path) -> list[Path]:
    return sorted(p for p in spool.iterdir() if not p.name.startswith(".")) if spool.is_dir() else []


def by_role(uri: str) -> tuple[list, list]:
    all_runs = runs(uri)
    return ([r for r in all_runs if r.data.tags["bench.role"] == "parent"],
            [r for r in all_runs if r.data.tags["bench.role"] == "point"])


def test_an_offline_sweep_spools_every_point_and_sync_uploads_each_once(tmp_path, cache_dir):
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens: a Jetson in the field
    spool = tmp_path / "spool"
    proc = run_cli("-m", *SMALL, "backend=pytorch", "input.batch_size=1,2", "tracking=server",
                   f"tracking.uri={dead}", f"tracking.spool_dir={spool}", f"cache_dir={cache_dir}",
                   f"hydra.sweep.dir={tmp_path / 'sweep'}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "2 point(s): 2 ok, 0 skipped, 0 failed" in proc.stdout + proc.stderr
    entries = spooled(spool)
    assert len(entries) == 2
    point = json.loads((entries[0] / "point.json").read_text())
    assert point["uri"] == dead and point["run_status"] == "FINISHED"
    assert point["params"]["input.shape"] == "1x3x64x64" and point["metrics"]["latency_ms_median"] > 0
    assert point["tags"]["bench.point_id"] == point["point_id"] and point["sweep"]["sweep_id"]
    assert {"config.yaml", "latencies_ms.csv"} <= {f.name for f in (entries[0] / "artifacts").iterdir()}
    backup = tmp_path / "backup"
    shutil.copytree(spool, backup)

    # Still offline: sync says so and keeps every point.
    offline = sync("--spool", str(spool))
    assert offline.returncode == 1, offline.stderr[-3000:]
    assert "0 uploaded, 0 already on the server, 2 left" in offline.stdout
    assert len(spooled(spool)) == 2

    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    first = sync("--spool", str(spool), "--uri", store)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "2 uploaded, 0 already on the server, 0 left" in first.stdout
    assert spooled(spool) == []
    (parent,), children = by_role(store)
    assert len(children) == 2
    assert all(c.data.tags["mlflow.parentRunId"] == parent.info.run_id for c in children)
    assert parent.data.metrics["points_ok"] == 2 and parent.info.status == "FINISHED"
    uploaded = next(c for c in children if c.data.tags["bench.point_id"] == point["point_id"])
    assert uploaded.data.metrics["latency_ms_median"] == point["metrics"]["latency_ms_median"]
    assert uploaded.data.params == point["params"]
    assert uploaded.info.start_time == point["time_ms"]  # when it was measured, not when it was synced
    artifacts = MlflowClient(store).list_artifacts(uploaded.info.run_id)
    assert {"config.yaml", "latencies_ms.csv"} <= {a.path for a in artifacts}

    # An entry synced before (a sync interrupted before it removed the entry) is not uploaded again.
    for entry in backup.iterdir():
        shutil.copytree(entry, spool / entry.name)
    again = sync("--spool", str(spool), "--uri", store)
    assert again.returncode == 0 and "0 uploaded, 2 already on the server, 0 left" in again.stdout
    assert len(by_role(store)[1]) == 2

    # A run cut off half-way through an upload (still RUNNING) is replaced, not kept beside the full one.
    client = MlflowClient(store)
    client.delete_run(uploaded.info.run_id)
    partial = client.create_run(parent.info.experiment_id, tags={"bench.point_id": point["point_id"],
                                                                 "bench.role": "point"})
    shutil.copytree(backup / entries[0].name, spool / entries[0].name)
    replaced = sync("--spool", str(spool), "--uri", store)
    assert replaced.returncode == 0 and "1 uploaded, 0 already on the server, 0 left" in replaced.stdout
    _, children = by_role(store)
    assert len(children) == 2 and partial.info.run_id not in {c.info.run_id for c in children}
    assert sorted(c.data.tags["bench.point_id"] for c in children) == sorted(
        json.loads((e / "point.json").read_text())["point_id"] for e in backup.iterdir())


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
                 f"cache_dir={cache_dir}", f"hydra.sweep.dir={tmp_path / 'sweep'}"],
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
        assert "3 point(s): 3 ok, 0 skipped, 0 failed" in output
        offline = len(spooled(spool))
        assert offline >= 1, output[-3000:]  # 2 unless the machine is so slow that point 2 beat the stop

        server.start()  # back, same port and data
        done = sync("--spool", str(spool))
        assert done.returncode == 0, done.stderr[-3000:]
        assert f"{offline} uploaded, 0 already on the server, 0 left" in done.stdout
        (parent,), children = by_role(server.uri)
        assert sorted(c.info.run_name for c in children) == [
            "resnet18/fp32/pytorch/64", "resnet18/fp32/pytorch/64/b2", "resnet18/fp32/pytorch/64/b3"]
        assert len({c.data.tags["bench.point_id"] for c in children}) == 3
        assert all(c.data.tags["mlflow.parentRunId"] == parent.info.run_id for c in children)
        assert all(c.data.metrics["latency_ms_median"] > 0 and c.info.status == "FINISHED" for c in children)
        assert parent.data.metrics["points_ok"] == 3 and parent.info.status == "FINISHED"
        client = MlflowClient(server.uri)
        assert all("config.yaml" in {a.path for a in client.list_artifacts(c.info.run_id)} for c in children)
        assert "0 uploaded, 0 already on the server, 0 left" in sync("--spool", str(spool)).stdout
        assert len(by_role(server.uri)[1]) == 3
    finally:
        server.stop()


def _wait_for_first_point(uri: str, sweep: subprocess.Popen, timeout_s: float = 180) -> None:
    """Until the first point is recorded and counted into the parent run."""
    client = MlflowClient(uri)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and sweep.poll() is None:
        experiment = client.get_experiment_by_name("trt-bench")
        if experiment and any(r.data.metrics.get("points_ok") == 1 for r in client.search_runs(
                [experiment.experiment_id], "tags.`bench.role` = 'parent'")):
            return
        time.sleep(0.3)
    raise AssertionError(f"the first point was not recorded within {timeout_s} s")


def test_run_py_and_sync_use_the_same_spool_by_default(make_cfg):
    from bench.spool import DEFAULT_SPOOL_DIR

    assert make_cfg("tracking=server").tracking.spool_dir == DEFAULT_SPOOL_DIR
