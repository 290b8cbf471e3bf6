"""A lab's night on the team's server: eight devices' sweeps start at the same moment while an analyst reads
the store, then the faults a real server sees (its database restarted, the server itself restarted, the
network cut while a point's artifacts are on their way)."""
from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from benchmarks.server_load import run_load, start_sweeps
from conftest import ROOT, SMALL, parents, points, run_cli
from netcut import NetCut
from postgres import TeamServer, as_user, enrol, postgres, team_server  # noqa: F401 - fixtures
from test_spool import waiting

SAVED_VIEW = "mlflow.sharedViewState."


def serve(cluster, folder: Path, workers: int) -> TeamServer:
    server = TeamServer(folder, admin_password=secrets.token_urlsafe(16), postgres=cluster, workers=workers)
    server.init()
    server.start()
    return server


def check_every_sweep_whole(server: TeamServer, devices: list[str], folder: Path, per_sweep: int,
                            report: bool = True) -> None:
    """Each device's one sweep FINISHED with every point once, its saved view (and report) there, its spool empty."""
    client = MlflowClient(server.uri)
    experiment = client.get_experiment_by_name("trt-bench")
    children = points(server.uri)
    assert len({c.data.tags["bench.point_id"] for c in children}) == len(children) == per_sweep * len(devices)
    by_label = {p.data.tags.get("bench.label"): p for p in parents(server.uri)}
    assert sorted(by_label) == sorted(devices)
    for device, parent in by_label.items():
        mine = [c for c in children if c.data.tags["mlflow.parentRunId"] == parent.info.run_id]
        assert len({c.data.tags["bench.point_key"] for c in mine}) == len(mine) == per_sweep, device
        assert parent.info.status == "FINISHED" and parent.data.metrics["points_ok"] == per_sweep, device
        assert SAVED_VIEW + parent.info.run_id in experiment.tags, device
        if report:
            assert "report/report.html" in {a.path for a in client.list_artifacts(parent.info.run_id, "report")}, device
        assert waiting(folder / device / "spool") == [], device


@pytest.mark.slow
def test_eight_devices_sweeping_at_once_while_an_analyst_reads(postgres, tmp_path, cache_dir, monkeypatch):
    server = serve(postgres, tmp_path / "server", workers=4)
    try:
        devices = {f"device-{i:02d}": secrets.token_urlsafe(16) for i in range(8)}
        enrol(server, devices)
        enrol(server, {"analyst": (analyst := secrets.token_urlsafe(16))}, "READ")
        grid = [*SMALL, "backend=pytorch", "raw_baseline=false", "input.batch_size=1,2", f"cache_dir={cache_dir}"]
        load = run_load(server, devices, ("analyst", analyst), tmp_path, grid)
        for sweep in load.sweeps:
            assert sweep.returncode == 0, sweep.stdout[-3000:]
        # Each read is whole or, before the first point is in, says so in one line.
        for read in load.reads:
            assert read.returncode == 0 or read.returncode == 2 and read.stderr.strip().splitlines()[-1].startswith(
                "error: no grid-point runs in experiment 'trt-bench'"), read.stderr[-2000:]
        assert any(read.returncode == 0 for read in load.reads)
        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "analyst")
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", analyst)
        check_every_sweep_whole(server, list(devices), tmp_path, per_sweep=2)
        assert len(load.record_s) == 16  # every point's "recorded as MLflow run" line, read back from the server
    finally:
        server.stop()


def sync(spool: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bench.store.sync", "--spool", str(spool)], cwd=ROOT, capture_output=True,
                          text=True, timeout=300, env=env)


def wait_for_points(client: MlflowClient, label: str, count: int, sweep: subprocess.Popen) -> None:
    """Until ``count`` points of the sweep labelled ``label`` are recorded, whole (the sweep ending first fails)."""
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and sweep.poll() is None:
        experiment = client.get_experiment_by_name("trt-bench").experiment_id
        parent = client.search_runs([experiment], f"tags.`bench.label` = '{label}' and tags.`bench.role` = 'parent'")
        if parent and len(client.search_runs([experiment], f"tags.`mlflow.parentRunId` = '{parent[0].info.run_id}' "
                                                           "and attributes.status = 'FINISHED'")) >= count:
            return
        time.sleep(0.3)
    raise AssertionError(f"{count} point(s) of {label} not recorded within 180 s")


@pytest.mark.slow
def test_a_database_restart_and_a_server_restart_mid_sweep_lose_no_point_and_record_none_twice(
        postgres, tmp_path, cache_dir, monkeypatch):
    server = serve(postgres, tmp_path / "server", workers=2)
    try:
        devices = {"db-restart": secrets.token_urlsafe(16), "server-restart": secrets.token_urlsafe(16)}
        enrol(server, devices)
        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "admin")
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", server.admin_password)
        client = MlflowClient(server.uri)
        # Three points of at least 3 s each, so each fault falls while the sweep is measuring.
        grid = [*SMALL, "backend=pytorch", "raw_baseline=false", "input.batch_size=1,2,3", "timing.min_s=3",
                f"cache_dir={cache_dir}"]
        outputs, spooled = [], {}
        for device, fault in (("db-restart", lambda: (postgres.stop("fast"), postgres.start())),
                              ("server-restart", lambda: (server.stop(), time.sleep(5), server.start()))):
            (sweep,) = start_sweeps(server, {device: devices[device]}, tmp_path, grid)
            try:
                wait_for_points(client, device, 1, sweep)
                fault()
                outputs.append(sweep.communicate(timeout=300)[0])
            finally:
                sweep.kill()
            assert sweep.returncode == 0, outputs[-1][-3000:]
            # What waited in the spool goes up now, once; run again, the sync finds nothing left to do.
            spool, env = tmp_path / device / "spool", {**os.environ, **as_user(device, devices[device])}
            spooled[device] = len(waiting(spool))
            if spooled[device]:
                first = sync(spool, env)
                assert first.returncode == 0, first.stderr[-2000:]
                assert f"{spooled[device]} uploaded, 0 already in the store, 0 left" in first.stdout
                again = sync(spool, env)
                assert again.returncode == 2 and "uploaded already" in again.stderr, again.stderr[-2000:]
        # No report required: a sweep that ends while the server is away cannot attach one (it says so).
        check_every_sweep_whole(server, list(devices), tmp_path, per_sweep=3, report=False)
        assert spooled["server-restart"] >= 1, outputs[1][-3000:]  # the server's restart did send points to the spool
    finally:
        server.stop()


def test_a_network_cut_during_an_artifact_upload_leaves_no_run_looking_complete(team_server, tmp_path, cache_dir,
                                                                                  monkeypatch):
    password = secrets.token_urlsafe(16)
    enrol(team_server, {"jetson-07": password})
    link = NetCut(team_server.port, trigger=b"PUT /api/2.0/mlflow-artifacts/artifacts/")
    spool = tmp_path / "spool"
    device = {**os.environ, **as_user("jetson-07", password)}
    try:
        proc = run_cli("-m", *SMALL, "backend=pytorch", "raw_baseline=false", "input.batch_size=1,2", "tracking=server",
                       f"tracking.uri={link.uri}", f"tracking.spool_dir={spool}", f"cache_dir={cache_dir}",
                       cwd=tmp_path, env=as_user("jetson-07", password))
        assert proc.returncode == 0 and link.cut_once.is_set(), proc.stderr[-3000:]
        assert len(waiting(spool)) == 2, proc.stderr[-3000:]
        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "admin")
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", team_server.admin_password)
        (cut,) = points(team_server.uri)  # the run whose artifacts were on their way: left RUNNING, not FINISHED
        assert cut.info.status == "RUNNING" and parents(team_server.uri)[0].info.status != "FINISHED"
        link.restore()
        done = sync(spool, device)
        assert done.returncode == 0 and "2 uploaded, 0 already in the store, 0 left" in done.stdout, done.stderr
        children = points(team_server.uri)
        assert cut.info.run_id not in {c.info.run_id for c in children}  # replaced, not kept beside the whole one
        assert len(children) == 2 and all(c.info.status == "FINISHED" for c in children)
        assert parents(team_server.uri)[0].info.status == "FINISHED"
        client = MlflowClient(team_server.uri)
        assert all("config.yaml" in {a.path for a in client.list_artifacts(c.info.run_id)} for c in children)
    finally:
        link.close()
