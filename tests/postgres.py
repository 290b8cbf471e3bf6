"""The team's server as docs/deployment.md builds it: a throw-away PostgreSQL 15 cluster (Debian's
``postgresql``, ``initdb`` + ``pg_ctl`` on 127.0.0.1 and a free port) and ``deploy/mlflow-server.sh``
starting ``mlflow server --app-name basic-auth`` on it with several workers."""
from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from bench.store.tracking import EXPERIMENT_TAGS

from conftest import ROOT, free_port, missing, wait_until_up
from test_server import MlflowServer

SCRIPT = ROOT / "deploy" / "mlflow-server.sh"


def pg_bin(name: str) -> str:
    """Debian keeps initdb and pg_ctl off PATH, in /usr/lib/postgresql/<version>/bin."""
    found = shutil.which(name) or next(iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))[::-1]), None)
    if found is None or not shutil.which("psql"):
        missing(f"no PostgreSQL server ({name}) or psql: Debian's postgresql")
    return found


@dataclass
class Postgres:
    """One cluster in a folder of its own. initdb refuses root, so as root it runs as Debian's ``postgres``
    user (the folder is made outside pytest's private tmp for that); otherwise as the user running the tests."""
    folder: Path
    port: int = field(default_factory=free_port)
    password: str = field(default_factory=lambda: secrets.token_urlsafe(16))

    def _run(self, *command: str) -> None:
        user = "postgres" if os.geteuid() == 0 else None
        subprocess.run(command, check=True, user=user, cwd=self.folder, capture_output=True, timeout=120)

    def init(self) -> None:
        if os.geteuid() == 0:
            os.chown(self.folder, pwd.getpwnam("postgres").pw_uid, -1)
        (self.folder / "pw").write_text(self.password)
        try:
            self._run(pg_bin("initdb"), "-D", str(self.folder / "data"), "-U", "postgres", "-E", "UTF8",
                      "--pwfile", str(self.folder / "pw"), "--auth-host=scram-sha-256", "--auth-local=trust",
                      "--no-sync")
        finally:
            (self.folder / "pw").unlink()

    def start(self) -> None:
        self._run(pg_bin("pg_ctl"), "-D", str(self.folder / "data"), "-l", str(self.folder / "postgres.log"),
                  "-o", f"-h 127.0.0.1 -p {self.port} -k {self.folder}", "-w", "start")

    def stop(self, mode: str = "fast") -> None:
        if (self.folder / "data" / "postmaster.pid").exists():
            self._run(pg_bin("pg_ctl"), "-D", str(self.folder / "data"), "-m", mode, "-w", "stop")

    def env(self) -> dict[str, str]:
        """libpq's settings for the superuser, as the deploy script's ``init`` takes them."""
        return {"PGHOST": "127.0.0.1", "PGPORT": str(self.port), "PGUSER": "postgres", "PGPASSWORD": self.password}


@dataclass
class TeamServer(MlflowServer):
    """``deploy/mlflow-server.sh start`` on a ``Postgres``: basic auth, ``workers`` uvicorn workers."""
    postgres: Postgres | None = None
    workers: int = 2
    db_password: str = field(default_factory=lambda: secrets.token_urlsafe(16))
    secret_key: str = field(default_factory=lambda: secrets.token_hex(16))

    def settings(self) -> dict[str, str]:
        # PYTHONPATH: the server imports this checkout's bench.store.server_auth, as `pip install -e ".[server]"` provides.
        return {**os.environ, **self.postgres.env(), "MLFLOW_DB_PASSWORD": self.db_password,
                "MLFLOW_STATE_DIR": str(self.folder), "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
                "PYTHONPATH": str(ROOT)}

    def init(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        subprocess.run(["bash", str(SCRIPT), "init"], env=self.settings(), check=True, capture_output=True,
                       timeout=60)

    def start(self, timeout_s: float = 180) -> None:
        env = {**self.settings(), "MLFLOW_AUTH_ADMIN_PASSWORD": self.admin_password,
               "MLFLOW_FLASK_SERVER_SECRET_KEY": self.secret_key, "MLFLOW_PORT": str(self.port),
               "MLFLOW_WORKERS": str(self.workers)}
        for name in ("PGUSER", "PGPASSWORD"):  # the superuser's: the server must not need them
            env.pop(name)
        with open(self.folder / "server.log", "ab") as log_file:
            self.process = subprocess.Popen(["bash", str(SCRIPT), "start"], cwd=self.folder, env=env,
                                            stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True)
        wait_until_up(self, timeout_s)


@pytest.fixture
def postgres():
    """A started cluster, removed when the test ends."""
    folder = Path(tempfile.mkdtemp(prefix="trt-bench-pg-"))
    cluster = Postgres(folder)
    try:
        cluster.init()
        cluster.start()
        yield cluster
    finally:
        cluster.stop("immediate")
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def team_server(postgres, tmp_path):
    """The deploy script's server on ``postgres``, admin password random; stopped when the test ends."""
    server = TeamServer(tmp_path / "server", admin_password=secrets.token_urlsafe(16), postgres=postgres)
    server.init()
    server.start()
    try:
        yield server
    finally:
        server.stop()


def as_user(user: str, password: str) -> dict[str, str]:
    """The environment a device's run.py or bench.store.sync gets: its own account."""
    return {"MLFLOW_TRACKING_USERNAME": user, "MLFLOW_TRACKING_PASSWORD": password}


def admin_call(server: TeamServer, call):
    """``call(auth_client, tracking_client)`` logged in as the admin, this process's environment left as it was."""
    from mlflow.server import get_app_client
    from mlflow.tracking import MlflowClient

    saved = {name: os.environ.get(name) for name in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")}
    os.environ.update(as_user("admin", server.admin_password))
    try:
        return call(get_app_client("basic-auth", tracking_uri=server.uri), MlflowClient(server.uri))
    finally:
        for name, value in saved.items():
            os.environ.pop(name) if value is None else os.environ.__setitem__(name, value)


def enrol(server: TeamServer, devices: dict[str, str], permission: str = "EDIT", experiment: str = "trt-bench") -> str:
    """The admin's part of docs/deployment.md: the experiment, one account per device with ``permission`` on it."""
    def setup(auth, client) -> str:
        found = client.get_experiment_by_name(experiment)
        experiment_id = found.experiment_id if found else client.create_experiment(
            experiment, tags=EXPERIMENT_TAGS)
        for user, password in devices.items():
            auth.create_user(user, password)
            auth.grant_user_permission(user, "experiment", experiment_id, permission)
        return experiment_id

    return admin_call(server, setup)
