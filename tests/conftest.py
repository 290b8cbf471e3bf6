"""Shared fixtures: real MLflow stores in temp dirs, run.py as a user runs it, the Jetsons' Python stacks, sshd.

``tests/setup.sh`` (run by .ci/run) provides what the tests need beyond ``pip install -e ".[dev]"``:
Debian's openssh-server, chromium and postgresql, and two virtual environments with the Jetsons' stock software
(Python 3.6 + torch 1.10 as on JetPack 4.6; Python 3.8 + torch 2.1 as on JetPack 5). Where one is
missing, the tests that need it are skipped with the reason; with ``TRT_BENCH_REQUIRE_ALL=1`` (CI)
they fail instead.
"""
from __future__ import annotations

import getpass
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

ROOT = Path(__file__).resolve().parent.parent
ENVS = Path(os.environ.get("TRT_BENCH_TEST_ENVS", "~/.cache/trt-bench-tests")).expanduser()
# Small and fast: resnet18 at 64x64 with a handful of timed iterations.
SMALL = ["model=resnet18", "input=64x64", "timing=quick", "accuracy.batches=2", "calibration.num_batches=4"]


def missing(what: str) -> None:
    """Skip a test whose prerequisite is absent here, or fail where every prerequisite is required (CI)."""
    message = f"{what} (run tests/setup.sh)"
    if os.environ.get("TRT_BENCH_REQUIRE_ALL") == "1":
        pytest.fail(message)
    pytest.skip(message)


def interpreter(name: str) -> str:
    path = ENVS / name / "bin" / "python"
    if not path.is_file():
        missing(f"no {name} environment at {path}")
    return str(path)


@pytest.fixture(scope="session")
def py36() -> str:
    """Python 3.6 with torch 1.10, torchvision 0.11, onnx 1.11, onnxruntime 1.10: a Jetson Nano's JetPack 4.6."""
    return interpreter("py36")


@pytest.fixture(scope="session")
def py38() -> str:
    """Python 3.8 with torch 2.1 and torchvision 0.16: a Xavier's JetPack 5.1."""
    return interpreter("py38")


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    """One conversion cache for the whole session, so ONNX exports are made once."""
    return tmp_path_factory.mktemp("bench-cache")


@pytest.fixture(autouse=True)
def private_state(tmp_path_factory, monkeypatch):
    """Journal, locks and logs of run.py go to a folder of the session, never to the user's home."""
    state = tmp_path_factory.getbasetemp() / "state"
    monkeypatch.setenv("XDG_STATE_HOME", str(state))


@dataclass(frozen=True)
class Sweep:
    store: str
    proc: subprocess.CompletedProcess


@pytest.fixture(scope="session")
def small_sweep(tmp_path_factory, cache_dir) -> Sweep:
    """One real ``run.py -m`` sweep that several tests read (they must not add runs to its store).

    resnet18 at 64x64: pytorch and onnxruntime x fp32 and int8, so three measured points and one
    skipped (pytorch int8).
    """
    folder = tmp_path_factory.mktemp("small-sweep")
    store = f"sqlite:///{folder / 'mlflow.db'}"
    proc = run_cli("-m", *SMALL, "backend=pytorch,onnxruntime", "precision=fp32,int8", f"tracking.uri={store}",
                   f"cache_dir={cache_dir}", cwd=folder,
                   env={"XDG_STATE_HOME": str(tmp_path_factory.getbasetemp() / "state")})
    return Sweep(store, proc)


@pytest.fixture
def store(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


def compose_plan(*overrides: str) -> dict:
    """The plan run.py makes for these overrides (Hydra's compose API over conf/, the controller's plan), in the
    JSON form it crosses the wire in."""
    from hydra import compose, initialize_config_dir

    from bench.controller.config import register_configs
    from bench.controller.plan import make_grid

    register_configs()
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=list(overrides))
    return make_grid([cfg], [list(overrides)]).plans[0].to_json()


def measure_here(*overrides: str) -> dict:
    """One point resolved and measured in this process, as a worker's child does it (no store involved), in the
    JSON form the worker sends."""
    from bench.device import point, resolve
    from bench.device.worker import collect_facts

    labels = {device["device"]: device["label"] for device in collect_facts()["devices"]}
    return point.measure(resolve.resolve(compose_plan(*overrides), labels)).to_json()


def run_cli(*args: str, cwd: Path, env: dict | None = None, timeout: int = 600,
            script: str = "run.py") -> subprocess.CompletedProcess:
    """Run run.py (or another of the suite's scripts) as a user would."""
    return subprocess.run([sys.executable, str(ROOT / script), *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


def runs(store: str, experiment: str = "trt-bench"):
    client = MlflowClient(store)
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None, f"experiment {experiment} not in {store}"
    return client.search_runs([exp.experiment_id], max_results=1000)


def points(store: str) -> list:
    return [r for r in runs(store) if r.data.tags.get("bench.role") == "point"]


def parents(store: str) -> list:
    return [r for r in runs(store) if r.data.tags.get("bench.role") == "parent"]


def wait_until_up(server, timeout_s: float) -> None:
    """Poll a just-started ``mlflow server``'s /health until it answers (``server``: its ``process``, ``uri``,
    ``log()`` and ``stop()``); its log in the error when it exits or never answers."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"mlflow server exited: {server.log()[-3000:]}")
        try:
            urllib.request.urlopen(f"{server.uri}/health", timeout=2).close()
            return
        except OSError:
            time.sleep(0.5)
    server.stop()
    raise RuntimeError(f"mlflow server not up within {timeout_s} s: {server.log()[-3000:]}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def descendants(pid: int) -> list[int]:
    """Every process below ``pid``, children first."""
    parent_of = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent_of[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
    found, frontier = [], [pid]
    while frontier:
        children = [child for child, parent in parent_of.items() if parent in frontier]
        found += children
        frontier = children
    return found


@dataclass
class SshServer:
    """A real OpenSSH server on 127.0.0.1 with a throw-away host key, and a client config that trusts only it."""

    folder: Path
    port: int
    process: subprocess.Popen | None = None
    alias: str = "testdevice"

    @property
    def config(self) -> Path:
        return self.folder / "ssh_config"

    def start(self) -> None:
        self.process = subprocess.Popen(["/usr/sbin/sshd", "-D", "-e", "-f", str(self.folder / "sshd_config")],
                                        stdout=subprocess.DEVNULL, stderr=open(self.folder / "sshd.log", "a"),
                                        start_new_session=True)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.1)
        raise RuntimeError(f"sshd did not listen on {self.port}: {(self.folder / 'sshd.log').read_text()[-2000:]}")

    def kill(self) -> None:
        """The server and every session it serves, at once (a device that drops off the network)."""
        if self.process is None or self.process.poll() is not None:
            return
        for pid in [*descendants(self.process.pid), self.process.pid]:  # sessions run in sessions of their own
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.process.wait()


@pytest.fixture
def sshd(tmp_path_factory):
    """An sshd the test can kill and restart; the executor reaches it as ``testdevice`` through ssh_config."""
    if not Path("/usr/sbin/sshd").is_file() or not shutil.which("ssh"):
        missing("no OpenSSH server (/usr/sbin/sshd) or client")
    folder = tmp_path_factory.mktemp("ssh")
    for key in ("host_key", "client_key"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(folder / key)], check=True)
    shutil.copy(folder / "client_key.pub", folder / "authorized_keys")
    Path("/run/sshd").mkdir(exist_ok=True)  # OpenSSH's privilege-separation folder
    server = SshServer(folder, free_port())
    (folder / "sshd_config").write_text(
        f"Port {server.port}\nListenAddress 127.0.0.1\nHostKey {folder / 'host_key'}\n"
        f"AuthorizedKeysFile {folder / 'authorized_keys'}\nPasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\nStrictModes no\nUsePAM no\n"
        f"PidFile {folder / 'sshd.pid'}\n")
    host_key = (folder / "host_key.pub").read_text().split()[:2]
    (folder / "known_hosts").write_text(f"[127.0.0.1]:{server.port} {' '.join(host_key)}\n")
    (folder / "ssh_config").write_text(
        f"Host {server.alias}\n  HostName 127.0.0.1\n  Port {server.port}\n  User {getpass.getuser()}\n"
        f"  IdentityFile {folder / 'client_key'}\n  IdentitiesOnly yes\n  UserKnownHostsFile {folder / 'known_hosts'}\n"
        "  StrictHostKeyChecking yes\n")
    server.start()
    yield server
    server.kill()
