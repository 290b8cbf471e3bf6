"""The MLflow UI on a store, opened on a sweep: ``python -m bench.store.ui``.

    python -m bench.store.ui                                  # mlflow.db here; the newest sweep's link
    python -m bench.store.ui --sweep e7b4f844 --port 5001     # a sweep by the name it printed
    python -m bench.store.ui --tracking-uri sqlite:////data/trt-bench/mlflow.db

It starts ``mlflow ui`` on the store, waits until it answers, and prints the link to the sweep's saved view
(its runs fastest first, latency and speed-up as columns); Ctrl-C stops it. A tracking server is a UI already:
for an http(s) store the link is printed and nothing is started.

Exit status: 0 stopped with Ctrl-C (or a server's link printed), 1 the UI stopped by itself, 2 bad input (no
store, no such sweep, the port taken), 143 SIGTERM.
"""
from __future__ import annotations

import argparse
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from bench.contract import exits
from bench.contract.errors import ConfigError, OneLineParser
from bench.store.address import is_server, redact, sqlite_path
from bench.store.reader import connect, experiment_id, find_sweep
from bench.store.views import link

STARTUP_S = 90  # mlflow ui on a 2-core machine answers within about 10 s


def parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="python -m bench.store.ui", description=__doc__.split("\n\n")[0],
                      epilog=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--tracking-uri", help="the store (default: $MLFLOW_TRACKING_URI, else ./mlflow.db, as run.py)")
    p.add_argument("--experiment", default="trt-bench")
    p.add_argument("--sweep", default="latest", help="the sweep to open: its name (sweep e7b4f844), parent run id, "
                                                     "or latest (default)")
    p.add_argument("--host", default="127.0.0.1", help="address to serve on (default: %(default)s, this machine only)")
    p.add_argument("--port", type=int, default=5000)
    return p


def port_free(host: str, port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def start_ui(uri: str, host: str, port: int) -> tuple[subprocess.Popen, Path]:
    """``mlflow ui`` on the store, answering; its own log in a file (said if it fails)."""
    log = Path(tempfile.mkstemp(prefix="mlflow-ui-", suffix=".log")[1])
    folder = sqlite_path(uri).parent if sqlite_path(uri) else Path.cwd()  # relative artifact roots resolve there
    with open(log, "w") as out:
        # One worker: one person reads, and it starts in half the time of MLflow's default four.
        ui = subprocess.Popen([sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri, "--host", host,
                               "--port", str(port), "--workers", "1"], cwd=folder, stdout=out, stderr=subprocess.STDOUT)
    try:
        _wait_until_up(ui, f"http://{host}:{port}/health", log)
    except BaseException:
        ui.kill()
        ui.wait()
        raise
    return ui, log


def _wait_until_up(ui: subprocess.Popen, health: str, log: Path) -> None:
    deadline = time.monotonic() + STARTUP_S
    while time.monotonic() < deadline and ui.poll() is None:
        try:
            with urllib.request.urlopen(health, timeout=2):
                return
        except OSError:
            time.sleep(0.5)
    raise ConfigError(f"the MLflow UI did not start within {STARTUP_S} s (exit status {ui.poll()}); its log: {log}")


def serve(args: argparse.Namespace) -> int:
    if args.port < 1 or args.port > 65535:
        raise ConfigError(f"--port {args.port} is not a TCP port (1-65535)")
    client, uri = connect(args.tracking_uri)
    sweep = find_sweep(client, experiment_id(client, args.experiment, uri), args.sweep, args.experiment)
    exp_id = sweep.info.experiment_id
    if is_server(uri):
        print(f"{sweep.info.run_name} in the MLflow UI: {link(uri, exp_id, sweep.info.run_id)}")
        return exits.OK
    if not port_free(args.host, args.port):
        raise ConfigError(f"port {args.port} on {args.host} is taken (another MLflow UI?): give --port N")
    print(f"starting the MLflow UI on {redact(uri)} (10-30 s) ...", file=sys.stderr, flush=True)
    signal.signal(signal.SIGTERM, lambda signum, _frame: sys.exit(exits.SIGNAL + signum))
    ui, log = None, None
    try:
        ui, log = start_ui(uri, args.host, args.port)
        address = f"http://{args.host}:{args.port}"
        print(f"MLflow UI: {address} (log: {log}); Ctrl-C stops it\n"
              f"{sweep.info.run_name}: {link(uri, exp_id, sweep.info.run_id, ui=address)}", flush=True)
        code = ui.wait()
    except KeyboardInterrupt:
        return exits.OK
    finally:
        if ui is not None and ui.poll() is None:
            ui.terminate()
            ui.wait()
    print(f"the MLflow UI stopped by itself (exit status {code}); its log: {log}", file=sys.stderr)
    return exits.FAILED_POINTS


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return serve(args)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exits.BAD_INPUT


if __name__ == "__main__":
    sys.exit(main())
