"""The team's server as docs/deployment.md builds it (PostgreSQL, basic auth, several workers): devices
report to it with their own accounts, each account can only do what it was granted, and every mistake in
the server's settings is one line before anything is measured."""
from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from conftest import ROOT, SMALL, parents, run_cli, runs
from postgres import admin_call, as_user, enrol, postgres, team_server  # noqa: F401 - fixtures


# What the controller does first: open the team's experiment (get it, or create it on a fresh server).
OPEN_STORE = """
import os, sys, time
from bench.store.tracking import Store
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


def test_accounts_do_only_what_they_were_granted_and_bad_settings_stop_before_any_work(
        team_server, tmp_path, cache_dir, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "admin")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", team_server.admin_password)
    devices = {"xavier-01": secrets.token_urlsafe(16), "orin-02": secrets.token_urlsafe(16)}
    enrol(team_server, devices)
    enrol(team_server, {"reader-03": (reader := secrets.token_urlsafe(16))}, "READ")
    spool, state = tmp_path / "spool", tmp_path / "state"
    args = ["-m", *SMALL, "backend=pytorch", "raw_baseline=false", f"tracking.spool_dir={spool}", f"cache_dir={cache_dir}"]

    def sweep(*extra: str, user: str = "xavier-01", password: str | None = None, pg_password: str = ""):
        env = {"MLFLOW_TRACKING_URI": team_server.uri, "XDG_STATE_HOME": str(state), "PGPASSWORD": pg_password,
               **as_user(user, devices.get(user) if password is None else password)}
        return run_cli(*args, *extra, cwd=tmp_path, env=env)

    done = [sweep("tracking=server")]
    assert done[0].returncode == 0, done[0].stderr[-3000:]
    (theirs,) = parents(team_server.uri)
    pg, port = team_server.postgres, team_server.postgres.port
    refused = {  # what each mistake must say, in its one line
        "HTTP 403): it needs EDIT permission": sweep("tracking=server", user="reader-03", password=reader),
        # A database URI's password comes from libpq's PGPASSWORD, never the command line (Hydra saves that).
        'database "nope" does not exist': sweep(f"tracking.uri=postgresql://mlflow@127.0.0.1:{port}/nope",
                                                pg_password=team_server.db_password),
        'password authentication failed for user "mlflow"': sweep(
            f"tracking.uri=postgresql://mlflow@127.0.0.1:{port}/mlflow", pg_password=pg.password),
        "has credentials in it": sweep("tracking=server", f"tracking.uri=http://orin-02@127.0.0.1:{team_server.port}"),
    }
    for message, proc in refused.items():
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2 and lines[-1].startswith("error: ") and message in lines[-1], proc.stderr[-2000:]
        assert "measuring" not in proc.stdout + proc.stderr
    assert len(runs(team_server.uri)) == 2 and not spool.exists()  # the one sweep's parent and point, nothing else

    # Neither a device of the same experiment (EDIT: bench/store/server_auth.py's rule) nor another team's device (EDIT
    # on its own experiment only) can delete, end or rename this sweep, nor make a run in this device's name.
    enrol(team_server, {"nano-04": (other_team := secrets.token_urlsafe(16))}, experiment="team-b")
    changes = {"delete": lambda client, run: client.delete_run(run),
               "end": lambda client, run: client.set_terminated(run, "KILLED"),
               "rename": lambda client, run: client.update_run(run, name="renamed")}
    changes["forge"] = lambda client, run: client.create_run(theirs.info.experiment_id,
                                                             tags={"mlflow.user": "xavier-01"})
    for user, password, tried in (("orin-02", devices["orin-02"], list(changes)),
                                  ("nano-04", other_team, ["delete", "end", "rename"])):
        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", user)
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", password)
        for change in tried:
            with pytest.raises(MlflowException, match="error code 403"):
                changes[change](MlflowClient(team_server.uri), theirs.info.run_id)
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "admin")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", team_server.admin_password)
    (still,) = parents(team_server.uri)
    assert (still.info.lifecycle_stage, still.info.status, still.info.run_name) == \
        ("active", "FINISHED", theirs.info.run_name)

    secrets_ = [team_server.admin_password, reader, other_team, team_server.db_password, pg.password,
                *devices.values()]
    where = {f"run {r.info.run_id}": repr(r.data.params) + repr(r.data.tags) for r in runs(team_server.uri)}
    where.update({str(p): p.read_text(errors="replace") for folder in (tmp_path, Path(pg.folder))
                  for p in folder.rglob("*") if p.is_file() and p.suffix not in (".db", "")})
    where.update({f"output {i}": p.stdout + p.stderr for i, p in enumerate([*done, *refused.values()])})
    assert list((team_server.folder / "artifacts").rglob("config.yaml"))  # the artifacts are among the files
    for secret in secrets_:
        assert not [name for name, text in where.items() if secret in text], secret
