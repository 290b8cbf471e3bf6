"""Resume: the same command, run again after its sweep was interrupted, finishes that sweep, measuring only
what it had not recorded; run again after the sweep finished, it starts a new one."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from conftest import ROOT, SMALL, free_port, parents, points, run_cli


def wait_for(condition, log: Path, proc: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not condition(log.read_text()):
        assert proc.poll() is None, f"the sweep ended before it could be interrupted:\n{log.read_text()[-3000:]}"
        assert time.monotonic() < deadline, log.read_text()[-3000:]
        time.sleep(0.2)


@pytest.mark.slow
def test_the_same_command_after_kill_9_resumes_and_records_each_point_once(tmp_path, cache_dir):
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    # Three points in this order: fp32 and bf16 are measured (4 s each), int8 is skipped on pytorch.
    args = ["-m", *SMALL, "backend=pytorch", "precision=fp32,bf16,int8", "timing.min_s=4", f"tracking.uri={store}",
            f"cache_dir={cache_dir}"]
    log = tmp_path / "first.log"
    with open(log, "w") as out:
        # Its own process group, so SIGKILL reaches run.py and its worker as `kill -9` of a job would.
        first = subprocess.Popen([sys.executable, str(ROOT / "run.py"), *args], cwd=tmp_path, stdout=out,
                                 stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for(lambda text: "recorded as MLflow run" in text and text.count(": measuring on") == 2, log, first)
        time.sleep(1.0)
        os.killpg(first.pid, signal.SIGKILL)
    finally:
        first.wait(timeout=60)
    assert first.returncode == -signal.SIGKILL
    (recorded,) = points(store)
    assert recorded.info.run_name == "resnet18/fp32/pytorch/64" and recorded.info.status == "FINISHED"
    (killed,) = parents(store)
    assert killed.info.status == "RUNNING"  # nobody was left to close it

    again = run_cli(*args, cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    output = again.stderr
    assert "was abandoned by" in output and f"resuming sweep {killed.data.tags['bench.sweep_id'][:8]}" in output
    assert "resnet18/fp32/pytorch/64: already recorded in this sweep (MLflow run " in output
    assert output.count(": measuring on") == 2 and "resnet18/bf16/pytorch/64: measuring on" in output
    children = points(store)
    assert sorted(r.info.run_name for r in children) == ["resnet18/bf16/pytorch/64", "resnet18/fp32/pytorch/64",
                                                         "resnet18/int8/pytorch/64"]
    assert len({r.data.tags["bench.point_key"] for r in children}) == 3
    assert all(r.info.status == "FINISHED" for r in children)
    assert recorded.info.run_id in {r.info.run_id for r in children}  # kept, not measured again
    (parent,) = parents(store)
    assert parent.info.run_id == killed.info.run_id and parent.info.status == "FINISHED"
    assert parent.data.metrics == {"points_ok": 2.0, "points_skipped": 1.0, "points_failed": 0.0}
    assert parent.data.tags["bench.sweep_state"] == "complete"

    # Finished: the same command now starts a new sweep, and resume=new always does.
    third = run_cli(*args, cwd=tmp_path)
    assert third.returncode == 0 and len(parents(store)) == 2 and "resuming" not in third.stderr


def test_a_run_cut_off_while_it_was_recorded_is_not_taken_for_finished(tmp_path, cache_dir):
    """kill -9 between creating a point's run and terminating it leaves a RUNNING run with every tag: the
    resumed sweep deletes it and records the point again (pytorch int8: recorded as skipped, no timing)."""
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    args = ["-m", *SMALL, "backend=pytorch", "precision=int8", f"tracking.uri={store}", f"cache_dir={cache_dir}"]
    assert run_cli(*args, cwd=tmp_path).returncode == 0
    (complete,), (parent,) = points(store), parents(store)
    client = MlflowClient(store)
    client.delete_run(complete.info.run_id)  # what is left is only the cut-off copy below
    cut_off = client.create_run(complete.info.experiment_id, tags=complete.data.tags).info.run_id
    client.set_tag(parent.info.run_id, "bench.sweep_state", "incomplete")  # as the interrupted sweep left it
    client.set_terminated(parent.info.run_id, "KILLED")

    again = run_cli(*args, cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "cut off while recorded" in again.stderr
    (point,) = points(store)
    assert point.info.run_id != cut_off and point.info.status == "FINISHED"
    assert client.get_run(cut_off).info.lifecycle_stage == "deleted"
    assert client.get_run(parent.info.run_id).info.status == "FINISHED"


def test_offline_a_spooled_point_counts_as_recorded(tmp_path, cache_dir):
    """The store is away: the first run spools its point; the same command again finds it in the spool (the
    journal says the sweep is not done until it is uploaded) and measures nothing twice."""
    dead = f"http://127.0.0.1:{free_port()}"
    spool = tmp_path / "spool"
    args = ["-m", *SMALL, "backend=pytorch", "precision=int8", "tracking=server", f"tracking.uri={dead}",
            f"tracking.spool_dir={spool}", f"cache_dir={cache_dir}"]
    first = run_cli(*args, cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    (entry,) = [p for p in spool.iterdir() if not p.name.startswith(".")]
    again = run_cli(*args, cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"already recorded in this sweep (spool entry {entry})" in again.stderr
    assert [p for p in spool.iterdir() if not p.name.startswith(".")] == [entry]
