"""Resume: a sweep killed with SIGKILL in the middle of a point, run again with the same sweep folder,
measures only what it had not recorded, and ends with each point recorded exactly once."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from conftest import ROOT, SMALL, run_cli, runs
from test_server import free_port


def points(store: str) -> list:
    return [r for r in runs(store) if r.data.tags.get("bench.role") == "point"]


def wait_for(condition, log: Path, proc: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not condition(log.read_text()):
        assert proc.poll() is None, f"the sweep ended before it could be interrupted:\n{log.read_text()[-3000:]}"
        assert time.monotonic() < deadline, log.read_text()[-3000:]
        time.sleep(0.2)


@pytest.mark.slow
def test_a_sweep_killed_mid_point_resumes_and_records_each_point_once(tmp_path, cache_dir):
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    # Three points in this order: fp32 and fp16 are measured (seconds each), int8 is skipped on pytorch.
    args = ["-m", *SMALL, "backend=pytorch", "precision=fp32,fp16,int8", f"tracking.uri={store}",
            f"cache_dir={cache_dir}", f"hydra.sweep.dir={tmp_path / 'sweep'}"]
    log = tmp_path / "first.log"
    with open(log, "w") as out:
        # Its own process group, so SIGKILL reaches run.py and the point's process as `kill -9` on a job would.
        first = subprocess.Popen([sys.executable, str(ROOT / "run.py"), *args], cwd=tmp_path, stdout=out,
                                 stderr=subprocess.STDOUT, start_new_session=True)
    try:
        # The first point recorded, the second one measuring: kill everything there.
        wait_for(lambda text: "recorded as MLflow run" in text and text.count(": measuring on") == 2, log, first)
        time.sleep(1.0)
        os.killpg(first.pid, signal.SIGKILL)
    finally:
        first.wait(timeout=60)
    assert first.returncode == -signal.SIGKILL
    text = log.read_text()
    assert text.count("recorded as MLflow run") == 1 and "resnet18/fp16/pytorch/64: measuring on" in text, text
    (recorded,) = points(store)
    assert recorded.info.run_name == "resnet18/fp32/pytorch/64" and recorded.info.status == "FINISHED"

    again = run_cli(*args, cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    output = again.stdout + again.stderr
    assert "resnet18/fp32/pytorch/64: already recorded in this sweep (MLflow run " in output
    assert output.count(": measuring on") == 1 and "resnet18/fp16/pytorch/64: measuring on" in output
    children = points(store)
    assert sorted(r.info.run_name for r in children) == ["resnet18/fp16/pytorch/64", "resnet18/fp32/pytorch/64",
                                                         "resnet18/int8/pytorch/64"]
    assert len({r.data.tags["bench.point_key"] for r in children}) == 3
    assert all(r.info.status == "FINISHED" for r in children)
    assert recorded.info.run_id in {r.info.run_id for r in children}  # kept, not measured again
    (parent,) = [r for r in runs(store) if r.data.tags["bench.role"] == "parent"]
    assert parent.info.status == "FINISHED"
    assert parent.data.metrics == {"points_ok": 2.0, "points_skipped": 1.0, "points_failed": 0.0}


def test_a_run_cut_off_while_it_was_recorded_is_not_taken_for_finished(make_cfg, store, tmp_path):
    """kill -9 between creating a point's run and terminating it leaves a RUNNING run with every tag: the
    resumed sweep deletes it and records the point again (pytorch int8: recorded as skipped, no timing)."""
    from bench.runner import run_point

    sweep = str(tmp_path / "sweep")
    cfg = make_cfg("backend=pytorch", "precision=int8")
    assert run_point(cfg, sweep).status == "skipped"
    (complete,) = points(store)
    client = MlflowClient(store)
    client.delete_run(complete.info.run_id)  # what is left is only the cut-off copy below
    cut_off = client.create_run(complete.info.experiment_id, tags=complete.data.tags).info.run_id
    assert client.get_run(cut_off).info.status == "RUNNING"

    result = run_point(cfg, sweep)
    assert result.status == "skipped" and not result.reason.startswith("already recorded")
    (again,) = points(store)
    assert again.info.run_id != cut_off and again.info.status == "FINISHED"
    assert client.get_run(cut_off).info.lifecycle_stage == "deleted"

    resumed = run_point(cfg, sweep)
    assert resumed.reason == f"already recorded in this sweep as MLflow run {again.info.run_id}"
    assert len(points(store)) == 1
    # Another sweep folder is another sweep: the point is recorded there again.
    assert not run_point(cfg, str(tmp_path / "tomorrow")).reason.startswith("already recorded")
    assert len(points(store)) == 2


def test_a_point_in_the_spool_counts_as_recorded(make_cfg, tmp_path):
    """Offline, a recorded point is in the spool: a resumed sweep must not spool it a second time."""
    from bench.runner import run_point

    dead = f"http://127.0.0.1:{free_port()}"
    spool = tmp_path / "spool"
    cfg = make_cfg("backend=pytorch", "precision=int8", "tracking=server", f"tracking.uri={dead}",
                   f"tracking.spool_dir={spool}")
    sweep = str(tmp_path / "sweep")
    assert run_point(cfg, sweep).status == "skipped"
    (entry,) = [p for p in spool.iterdir() if not p.name.startswith(".")]
    resumed = run_point(cfg, sweep)
    assert resumed.reason == f"already recorded in this sweep as spool entry {entry}"
    assert [p for p in spool.iterdir() if not p.name.startswith(".")] == [entry]
