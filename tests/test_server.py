"""A real ``mlflow server`` on 127.0.0.1: a sweep reports to it, and its basic-auth app takes good
credentials and stops wrong ones before any work, without a password ever reaching a run or a log."""
from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from conftest import SMALL, free_port, run_cli, runs, wait_until_up


@dataclass
class MlflowServer:
    """``mlflow server`` on 127.0.0.1, SQLite backend and artifacts folder in ``folder``. ``stop`` then
    ``start`` keeps the port and the data: a server back after an outage."""
    folder: Path
    admin_password: str | None = None  # set: MLflow's basic-auth app, with the user "admin"
    port: int = field(default_factory=free_port)
    process: subprocess.Popen | None = None

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 180) -> None:
        command = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(self.port),
                   "--workers", "1", "--backend-store-uri", f"sqlite:///{self.folder / 'mlflow.db'}",
                   "--artifacts-destination", str(self.folder / "artifacts")]
        # No background job runner (a dozen worker processes we do not need on a 2-core machine).
        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        self.folder.mkdir(parents=True, exist_ok=True)
        if self.admin_password:
            config = self.folder / "basic_auth.ini"
            config.write_text("[mlflow]\ndefault_permission = READ\n"
                              f"database_uri = sqlite:///{self.folder / 'auth.db'}\nadmin_username = admin\n"
                              "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n")
            env.update(MLFLOW_AUTH_CONFIG_PATH=str(config), MLFLOW_AUTH_ADMIN_PASSWORD=self.admin_password,
                       MLFLOW_FLASK_SERVER_SECRET_KEY=secrets.token_hex(16))
            command += ["--app-name", "basic-auth"]
        with open(self.folder / "server.log", "ab") as log_file:
            # Its own process group, so stop() reaches the uvicorn worker it starts too.
            self.process = subprocess.Popen(command, cwd=self.folder, env=env, stdout=log_file,
                                            stderr=subprocess.STDOUT, start_new_session=True)
        wait_until_up(self, timeout_s)

    def stop(self) -> None:
        """SIGTERM to the server's process group, SIGKILL for whatever is left after 30 s."""
        if self.process is None:
            return
        for sig, wait_s in ((signal.SIGTERM, 30), (signal.SIGKILL, 10)):
            try:
                os.killpg(self.process.pid, sig)
            except ProcessLookupError:
                break
            deadline = time.monotonic() + wait_s
            while time.monotonic() < deadline and _group_alive(self.process):
                time.sleep(0.2)
            if not _group_alive(self.process):
                break
        self.process = None

    def log(self) -> str:
        return (self.folder / "server.log").read_text(errors="replace")


def _group_alive(process: subprocess.Popen) -> bool:
    process.poll()  # reap the leader, so a zombie does not count as alive
    try:
        os.killpg(process.pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture
def mlflow_server(tmp_path):
    """Start servers with ``mlflow_server(admin_password=None)``; all are stopped when the test ends."""
    servers: list[MlflowServer] = []

    def _start(admin_password: str | None = None) -> MlflowServer:
        server = MlflowServer(tmp_path / f"server{len(servers)}", admin_password)
        servers.append(server)
        server.start()
        return server

    try:
        yield _start
    finally:
        for server in servers:
            server.stop()


def test_a_sweep_reports_to_a_real_tracking_server(mlflow_server, tmp_path, cache_dir):
    server = mlflow_server()
    proc = run_cli("-m", *SMALL, "backend=pytorch", "input.batch_size=1,2", "tracking=server",
                   f"tracking.spool_dir={tmp_path / 'spool'}", f"cache_dir={cache_dir}", cwd=tmp_path,
                   env={"MLFLOW_TRACKING_URI": server.uri})
    assert proc.returncode == 0, proc.stderr[-3000:]
    output = proc.stdout + proc.stderr
    assert "recorded as MLflow run" in output and "saved to" not in output
    all_runs = runs(server.uri)
    (parent,) = [r for r in all_runs if r.data.tags["bench.role"] == "parent"]
    children = [r for r in all_runs if r.data.tags["bench.role"] == "point"]
    assert sorted(c.info.run_name for c in children) == ["resnet18/fp32/pytorch/64", "resnet18/fp32/pytorch/64/b2"]
    assert all(c.data.tags["mlflow.parentRunId"] == parent.info.run_id for c in children)
    assert parent.data.metrics["points_ok"] == 2 and parent.info.status == "FINISHED"
    assert len({c.data.tags["bench.point_key"] for c in children}) == 2
    assert all(c.data.metrics["latency_ms_median"] > 0 for c in children)
    # Artifacts went through the server into its artifacts folder.
    client = MlflowClient(server.uri)
    for child in children:
        assert {"config.yaml", "latencies_ms.csv"} <= {a.path for a in client.list_artifacts(child.info.run_id)}
    assert list((server.folder / "artifacts").rglob("latencies_ms.csv"))
    assert not (tmp_path / "spool").exists()
    # The printed link opens the sweep's runs on the server itself, in the model-training view.
    assert f"{server.uri}/#/experiments/{parent.info.experiment_id}/runs?workflowType=machine_learning" in proc.stdout


def test_basic_auth_takes_good_credentials_and_stops_wrong_ones_before_any_work(mlflow_server, tmp_path,
                                                                                 cache_dir, monkeypatch):
    password = secrets.token_urlsafe(16)
    server = mlflow_server(admin_password=password)
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "admin")  # for this test's own client; each run.py gets its own
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", password)
    device = tmp_path / "device"  # the launch folder
    device.mkdir()
    spool = tmp_path / "spool"
    args = [*SMALL, "backend=pytorch", "raw_baseline=false", "tracking=server", f"tracking.spool_dir={spool}",
            f"cache_dir={cache_dir}"]

    def login(user: str, secret: str) -> dict[str, str]:
        return {"MLFLOW_TRACKING_URI": server.uri, "MLFLOW_TRACKING_USERNAME": user,
                "MLFLOW_TRACKING_PASSWORD": secret}

    good = run_cli(*args, cwd=device, env=login("admin", password))
    assert good.returncode == 0, good.stderr[-3000:]
    (run,) = runs(server.uri)
    assert run.data.tags["bench.status"] == "ok"
    config_yaml = MlflowClient(server.uri).download_artifacts(run.info.run_id, "config.yaml", str(tmp_path))

    wrong = run_cli(*args, cwd=device, env=login("admin", password + "-wrong"))
    assert wrong.returncode == 2, wrong.stderr[-3000:]
    error = wrong.stderr.strip().splitlines()[-1]
    assert error.startswith(f"error: tracking server {server.uri} rejected the login (HTTP 401)"), error
    assert "measuring" not in wrong.stdout + wrong.stderr  # stopped before any work

    anonymous = run_cli(*args, cwd=device, env=login("", ""))
    assert anonymous.returncode == 2
    assert "requires a login (HTTP 401): set MLFLOW_TRACKING_USERNAME" in anonymous.stderr.strip().splitlines()[-1]

    assert len(runs(server.uri)) == 1  # neither wrong login logged anything
    # The password is nowhere: not in params, tags, artifacts, outputs, logs or a spool.
    assert password not in repr(run.data.params) + repr(run.data.tags) + Path(config_yaml).read_text()
    for proc in (good, wrong, anonymous):
        assert password not in proc.stdout + proc.stderr
    for path in [*device.rglob("*"), *spool.rglob("*"), *Path(os.environ["XDG_STATE_HOME"]).rglob("*")]:
        if path.is_file():
            assert password not in path.read_text(errors="replace"), path


def test_tracking_server_settings_are_checked_before_any_work(tmp_path):
    proc = run_cli(*SMALL, "tracking=server", "tracking.uri=null", cwd=tmp_path, env={"MLFLOW_TRACKING_URI": ""})
    assert proc.returncode == 2
    assert "tracking=server needs an http(s):// tracking server" in proc.stderr.strip().splitlines()[-1]
    proc = run_cli(*SMALL, "tracking=server", "tracking.uri=http://admin:hunter2@127.0.0.1:9", cwd=tmp_path)
    assert proc.returncode == 2 and "hunter2" not in proc.stdout + proc.stderr
    assert "tracking URI http://***@127.0.0.1:9/ has credentials in it" in proc.stderr or \
        "tracking URI http://***@127.0.0.1:9 has credentials in it" in proc.stderr
