"""The team's server as docs/deployment.md builds it (PostgreSQL, basic auth, several workers): devices
report to it with their own accounts, each account can only do what it was granted, and every mistake in
the server's settings is one line before anything is measured."""
from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time

from conftest import ROOT, SMALL, parents, points, run_cli
from postgres import admin_call, as_user, enrol, postgres, team_server  # noqa: F401 - fixtures


def test_the_deploy_recipe_serves_a_device_sweep(team_server, tmp_path, cache_dir, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "admin")  # this test's own reads; each run.py has its device's
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", team_server.admin_password)
    password = secrets.token_urlsafe(16)
    enrol(team_server, {"xavier-01": password})
    proc = run_cli("-m", *SMALL, "backend=pytorch", "input.batch_size=1,2", "tracking=server",
                   f"tracking.spool_dir={tmp_path / 'spool'}", f"cache_dir={cache_dir}", cwd=tmp_path,
                   env={"MLFLOW_TRACKING_URI": team_server.uri, **as_user("xavier-01", password)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    (parent,), children = parents(team_server.uri), points(team_server.uri)
    assert parent.info.status == "FINISHED" and len(children) == 2


# What the controller does first: open the team's experiment (get it, or create it on a fresh server).
OPEN_STORE = """
import os, sys, time
from bench.tracking import Store
open(sys.argv[3] + ".ready", "w").close()
while not os.path.exists(sys.argv[1]):  # every process released at the same moment: nightlies at the same minute
    time.sleep(0.001)
store = Store({"uri": sys.argv[2], "experiment": "trt-bench", "timeout_s": 10, "retries": 0, "server": True,
               "spool_dir": sys.argv[3]})
print(store.online, store.experiment_id if store.online else "")
"""


def test_devices_opening_the_experiment_at_once_all_reach_the_server(team_server, tmp_path):
    """Eight devices on a fresh server race to create the experiment; each losing create is a
    RESOURCE_ALREADY_EXISTS that must be read as "it is there now", not as an unreachable server."""
    devices = {f"jetson-{i:02d}": secrets.token_urlsafe(16) for i in range(8)}
    admin_call(team_server, lambda auth, _: [auth.create_user(user, pw) for user, pw in devices.items()])
    go = tmp_path / "go"
    procs = [subprocess.Popen([sys.executable, "-c", OPEN_STORE, str(go), team_server.uri, str(tmp_path / user)],
                              cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env={**os.environ, **as_user(user, pw)}) for user, pw in devices.items()]
    while len(list(tmp_path.glob("*.ready"))) < len(devices) and all(p.poll() is None for p in procs):
        time.sleep(0.1)  # until every process has imported MLflow and waits for the signal
    go.touch()
    outputs = [proc.communicate(timeout=120) for proc in procs]
    opened = {out.strip() for out, _ in outputs}
    assert len(opened) == 1 and opened.pop().startswith("True "), outputs
