"""Executors: how the controller reaches the measuring side. One JSON protocol for all of them.

- ``local``: a worker (``python -m bench.device serve``) run by this interpreter, or by another one
  on this machine (``executor.python``: a Jetson's system Python with its TensorRT bindings), which
  then gets the core's source in a temporary folder;
- ``ssh``: the same worker on a device, through the system ``ssh`` client (so ``~/.ssh/config``, keys
  and jump hosts work; host keys are always checked). The core's source is sent over the connection
  and unpacked into a temporary folder there: nothing is installed on the device, and connecting and
  shipping are paid once per sweep;
- ``plan``: no worker at all: the plans are written to a file for ``python3 -m bench.device``.

A worker that cannot be started is a ConfigError (one line, before any work); one lost while it
measures raises ``WorkerLost``, which the controller records as a failed point.
"""
from __future__ import annotations

import collections
import io
import logging
import os
import re
import shlex
import shutil
import subprocess
import sys
import tarfile
import tempfile
import threading
from pathlib import Path

from bench.contract.errors import ConfigError
from bench.contract.protocol import PROTOCOL, decode, encode
from bench.contract.records import Measurement, Plan

log = logging.getLogger(__name__)

CORE_ROOT = Path(__file__).resolve().parents[2]  # holds bench/__init__.py, bench/contract/ and bench/device/
DEVICE_SIDE = ("contract", "device")  # the packages under bench/ that run on the measured device
MIN_PYTHON = (3, 6)

# Run by the device's interpreter with ``-c``: Python 2-compatible syntax, so that an old interpreter can
# still say it is too old. It reads "<length>\n<tar.gz of the core>" from stdin without buffering (the
# protocol follows on the same stream), unpacks it into a temporary folder and serves.
BOOTSTRAP = r"""
import os, sys, json, platform
if sys.version_info < (3, 6):
    too_old = "Python %s at %s is older than 3.6, which the measuring core needs"
    reply = {"op": "error", "user_error": True, "error": too_old % (platform.python_version(), sys.executable)}
    sys.stdout.write(json.dumps(reply) + "\n")
    sys.exit(3)
import io, shutil, tarfile, tempfile
def read_exactly(count):
    data = b""
    while len(data) < count:
        chunk = os.read(0, count - len(data))
        if not chunk:
            sys.exit(4)
        data += chunk
    return data
header = b""
while not header.endswith(b"\n"):
    header += read_exactly(1)
folder = tempfile.mkdtemp(prefix="trt-bench-core-")
try:
    tarfile.open(fileobj=io.BytesIO(read_exactly(int(header))), mode="r:gz").extractall(folder)
    sys.path.insert(0, folder)
    from bench.device.worker import serve_stdio
    code = serve_stdio()
finally:
    shutil.rmtree(folder, ignore_errors=True)
sys.exit(code)
"""


class WorkerLost(RuntimeError):
    """The worker went away while answering (a crash of the worker itself, a dropped connection)."""


def core_bundle() -> bytes:
    """What runs on the device (bench/__init__.py, bench/contract/**.py and bench/device/**.py) as a tar.gz."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as archive:
        files = [CORE_ROOT / "bench" / "__init__.py", *(path for side in DEVICE_SIDE
                                                          for path in sorted((CORE_ROOT / "bench" / side).rglob("*.py")))]
        for path in files:
            info = archive.gettarinfo(str(path), arcname=str(path.relative_to(CORE_ROOT)))
            info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
            with open(path, "rb") as handle:
                archive.addfile(info, handle)
    return out.getvalue()


class Worker:
    """A running measuring side, spoken to over its stdin/stdout; its stderr is relayed to the log."""

    def __init__(self, argv: list[str], description: str, env: dict | None = None,
                 preamble: bytes = b"", cleanup: str | None = None) -> None:
        self.description = description
        self.cleanup = cleanup  # a temporary folder to delete when the worker ends
        self.tail: collections.deque[str] = collections.deque(maxlen=30)
        device_log = logging.getLogger(f"device.{description.split()[0]}")
        # Its own session: Ctrl-C in the terminal reaches the controller, which stops the worker itself.
        self.process = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                        env=env, start_new_session=True)
        self._relay = threading.Thread(target=self._relay_stderr, args=(device_log,), daemon=True)
        self._relay.start()
        if preamble:
            self._send(preamble)

    def _relay_stderr(self, device_log: logging.Logger) -> None:
        for raw in self.process.stderr:
            line = raw.decode("utf-8", "replace").rstrip()
            if not line:
                continue
            self.tail.append(line)
            # "LEVEL logger: message" from the worker's logging; anything else (ssh, a traceback) as it came
            match = re.match(r"(DEBUG|INFO|WARNING|ERROR|CRITICAL) (.*)", line)
            level, text = (getattr(logging, match.group(1)), match.group(2)) if match else (logging.INFO, line)
            device_log.log(level, "%s", text)

    def _send(self, data: bytes) -> None:
        try:
            self.process.stdin.write(data)
            self.process.stdin.flush()
        except (BrokenPipeError, OSError):
            raise WorkerLost(self._death()) from None

    def _death(self) -> str:
        """Why the worker went away: its exit status and the last thing it (or ssh) said."""
        try:
            code = self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            return f"{self.description} stopped answering"
        self._relay.join(timeout=5)
        said = next((line for line in reversed(self.tail) if line.strip()), "")
        how = f"signal {-code}" if code < 0 else f"exit status {code}"
        return f"{self.description} ended ({how}){': ' + said if said else ''}"

    def request(self, message: dict) -> dict:
        """Send one request and wait for its reply."""
        self._send(encode(message))
        line = self.process.stdout.readline()
        if not line:
            raise WorkerLost(self._death())
        reply = decode(line)
        if reply["op"] == "error":
            if reply.get("user_error"):
                raise ConfigError(f"{self.description}: {reply['error']}")
            raise WorkerLost(f"{self.description}: {reply['error']}")
        return reply

    def stop(self) -> None:
        """End the worker (and the point it measures): politely if it is idle, by force otherwise."""
        if self.process.poll() is None:
            try:
                self.process.stdin.write(encode({"op": "bye"}))
                self.process.stdin.close()
                self.process.wait(timeout=5)
            except (OSError, subprocess.TimeoutExpired):
                self.kill()
        if self.cleanup:
            shutil.rmtree(self.cleanup, ignore_errors=True)

    def kill(self) -> None:
        """Kill the worker's whole process group at once (the worker and the child measuring a point)."""
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, 9)
            except ProcessLookupError:
                pass
            self.process.wait()
        if self.cleanup:
            shutil.rmtree(self.cleanup, ignore_errors=True)


class Device:
    """The measuring side of a sweep: one worker, started once, asked for facts, resolutions and measurements."""

    def __init__(self, executor: dict) -> None:
        self.executor = executor
        self.worker: Worker | None = None
        self.facts: dict = {}

    @property
    def where(self) -> str:
        """The device as a person names it: ``local``, ``local /usr/bin/python3`` or ``ssh xavier.local``."""
        kind = self.executor["kind"]
        if kind == "ssh":
            return f"ssh {self.executor['host']}"
        return f"local {self.executor['python']}" if self.executor["python"] else "local"

    def start(self) -> dict:
        """Start the worker and learn what the device is and has; ConfigError when it cannot measure."""
        try:
            # A device that is gone can already refuse the core's bundle, once it outgrows the pipe's buffer.
            self.worker = self._start_worker()
            self.facts = self.worker.request({"op": "facts"})["facts"]
        except WorkerLost as exc:
            if self.worker is not None:
                self.worker.kill()
            raise ConfigError(f"{self.where} cannot be used: {exc}") from None
        if self.facts.get("protocol") != PROTOCOL:
            raise ConfigError(f"{self.where} speaks protocol {self.facts.get('protocol')}, this controller {PROTOCOL}")
        if "missing" in self.facts:
            hint = " (pip install -e '.[measure]', or measure with another Python: executor.python=...)" \
                if self.where == "local" else ""
            raise ConfigError(f"{self.where}: Python {self.facts['python']} at {self.facts['executable']} cannot "
                              f"measure: {self.facts['missing']} is not installed there{hint}")
        return self.facts

    def _start_worker(self) -> Worker:
        kind = self.executor["kind"]
        if kind == "ssh":
            return self._ssh_worker()
        python = self.executor["python"]
        if not python or Path(python).resolve() == Path(sys.executable).resolve():
            env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(CORE_ROOT),
                                                                             os.environ.get("PYTHONPATH")]))}
            return Worker([sys.executable, "-m", "bench.device", "serve"], "local worker", env)
        if not shutil.which(python):
            raise ConfigError(f"executor.python={python}: no such interpreter on this machine")
        folder = tempfile.mkdtemp(prefix="trt-bench-core-")
        with tarfile.open(fileobj=io.BytesIO(core_bundle()), mode="r:gz") as archive:
            archive.extractall(folder)
        # Only the core's folder: the other interpreter must never import this one's site-packages.
        env = {key: value for key, value in os.environ.items() if not key.startswith("PYTHON")}
        env["PYTHONPATH"] = folder
        return Worker([python, "-m", "bench.device", "serve"], f"{python} worker", env, cleanup=folder)

    def _ssh_worker(self) -> Worker:
        host, python = self.executor["host"], self.executor["python"] or "python3"
        if not host:
            raise ConfigError("executor=ssh needs executor.host=[user@]host")
        if not shutil.which("ssh"):
            raise ConfigError("executor=ssh needs the ssh client on this machine (apt-get install openssh-client)")
        argv = ["ssh", "-o", "BatchMode=yes", "-o", f"ConnectTimeout={self.executor['connect_timeout_s']}",
                "-o", "ServerAliveInterval=15", "-o", "ServerAliveCountMax=4"]
        if self.executor["ssh_config"]:
            config = Path(self.executor["ssh_config"]).expanduser()
            if not config.is_file():
                raise ConfigError(f"executor.ssh_config={config}: no such file")
            argv += ["-F", str(config)]
        argv += [host, f"{shlex.quote(python)} -c {shlex.quote(BOOTSTRAP)}"]
        bundle = core_bundle()
        log.info("connecting to %s and shipping the measuring core (%d KiB)", host, len(bundle) // 1024)
        return Worker(argv, f"ssh {host}", preamble=f"{len(bundle)}\n".encode() + bundle)

    def resolve(self, plans: list[Plan]) -> list[dict]:
        """Each plan resolved on the device: ``{"plan": Plan}``, or ``{"error": "one line"}``."""
        points = self.worker.request({"op": "resolve", "plans": [plan.to_json() for plan in plans]})["points"]
        return [{"plan": Plan.from_json(point["plan"])} if "plan" in point else point for point in points]

    def measure(self, plan: Plan) -> Measurement:
        """Measure one resolved plan; a worker lost on the way is started again for the next point."""
        if self.worker is None or self.worker.process.poll() is not None:
            self.restart()
        try:
            return Measurement.from_json(self.worker.request({"op": "measure", "plan": plan.to_json()})["measurement"])
        except WorkerLost:
            self.worker.kill()
            self.worker = None
            raise

    def restart(self) -> None:
        """A new worker after a lost one; WorkerLost when the device still cannot be reached."""
        try:
            self.start()
        except ConfigError as exc:
            if self.worker is not None:
                self.worker.kill()
            self.worker = None
            raise WorkerLost(str(exc)) from None

    def stop(self) -> None:
        if self.worker is not None:
            self.worker.stop()

    def kill(self) -> None:
        if self.worker is not None:
            self.worker.kill()
