"""Safe to leave unattended: caches that cannot be poisoned, sweeps that neither duplicate nor merge, processes
that die with their sweep, stores checked before anything is measured, a spool that one bad entry cannot block.
Real processes, real signals, a real mlflow server."""
from __future__ import annotations

import contextlib
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import ROOT, SMALL, descendants, parents, points, run_cli
from test_resume import wait_for
from test_server import MlflowServer
from test_spool import sync, waiting


def test_a_poisoned_cache_entry_is_discarded_and_rebuilt_and_a_killed_build_leaves_nothing_used(tmp_path):
    cache = tmp_path / "cache"
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    args = [*SMALL, "backend=onnxruntime", "precision=int8", f"cache_dir={cache}", f"tracking.uri={store}"]
    assert run_cli(*args, cwd=tmp_path).returncode == 0
    (first,) = points(store)
    quantized = Path(first.data.tags["backend.onnx_path"])
    exported = quantized.parent.parent / quantized.parent.name.split("-int8-")[0] / "model.onnx"
    assert quantized.is_file() and exported.is_file()
    # What a process killed while writing used to leave: truncated files where the cache looks (both entries),
    # and a temporary folder of a build whose process is gone.
    for model in (quantized, exported):
        model.write_bytes(model.read_bytes()[: model.stat().st_size // 10])
    orphan = Path(f"{exported.parent}.partial-{2 ** 22 + 7}")
    orphan.mkdir()
    (orphan / "model.onnx").write_bytes(b"half")

    again = run_cli(*args, cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    second = next(r for r in points(store) if r.info.run_id != first.info.run_id)
    assert second.data.tags["bench.status"] == "ok" and second.data.tags["backend.onnx_path"] == str(quantized)
    events = second.data.tags["bench.events"]
    assert f"discarded cache entry {quantized.parent} that failed to load" in events
    assert f"discarded cache entry {exported.parent} that failed to load" in events
    assert second.data.metrics["convert_cache_hit"] == 0 and not orphan.exists()
    assert quantized.stat().st_size > 100_000  # rebuilt whole


def test_two_identical_sweeps_started_together_do_not_merge(tmp_path, cache_dir):
    """Two cron lines at the same minute: two sweeps, each with each point once, none in the other's."""
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    command = [sys.executable, str(ROOT / "run.py"), "-m", *SMALL, "backend=pytorch", "precision=fp32,int8",
               f"tracking.uri={store}", f"cache_dir={cache_dir}"]
    procs = [subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for _ in range(2)]
    outputs = [proc.communicate(timeout=600)[0] for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0], outputs
    assert not any("resuming sweep" in output for output in outputs)
    sweeps = parents(store)
    assert len(sweeps) == 2 and all(p.info.status == "FINISHED" for p in sweeps)
    children = points(store)
    for parent in sweeps:
        mine = [c for c in children if c.data.tags["mlflow.parentRunId"] == parent.info.run_id]
        assert sorted(c.info.run_name for c in mine) == ["resnet18/fp32/pytorch/64", "resnet18/int8/pytorch/64"]
    logs = {line.split("log: ")[1] for output in outputs for line in output.splitlines() if "log: " in line}
    assert len(logs) == 2  # each sweep its own log folder, even when started in the same second


@pytest.mark.slow
def test_a_finished_sweep_run_again_while_the_server_is_down_measures_nothing_twice(tmp_path, cache_dir):
    server = MlflowServer(tmp_path / "server")
    spool = tmp_path / "spool"
    args = ["-m", *SMALL, "backend=pytorch", "precision=fp32,int8", "tracking=server", "resume=last",
            f"tracking.spool_dir={spool}", f"cache_dir={cache_dir}"]
    try:
        server.start()
        first = run_cli(*args, f"tracking.uri={server.uri}", cwd=tmp_path)
        assert first.returncode == 0, first.stderr[-3000:]
        server.stop()
        offline = run_cli(*args, f"tracking.uri={server.uri}", cwd=tmp_path)
        assert offline.returncode == 0, offline.stderr[-3000:]
        assert offline.stderr.count("already recorded in this sweep (this machine's journal") == 2
        assert "measuring on" not in offline.stderr and waiting(spool) == []
        server.start()
        assert len(points(server.uri)) == 2 and len(parents(server.uri)) == 1
    finally:
        server.stop()


def long_sweep(tmp_path: Path, cache_dir: Path, ignored: tuple[signal.Signals, ...] = ()) -> subprocess.Popen:
    """A two-point sweep that times for a minute, started as from a terminal: every signal at its default but
    ``ignored``. Whoever runs the tests may be a background job (SIGINT ignored) or under nohup (SIGHUP ignored),
    and a child inherits what its parent ignores: without this, SIGINT reached a sweep that could not hear it."""
    def dispositions() -> None:
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, signal.SIG_IGN if signum in ignored else signal.SIG_DFL)

    with open(tmp_path / "sweep.log", "w") as out:
        return subprocess.Popen([sys.executable, str(ROOT / "run.py"), "-m", *SMALL, "backend=pytorch",
                                 "timing.min_s=60", "precision=fp32,bf16",
                                 f"tracking.uri=sqlite:///{tmp_path}/mlflow.db", f"cache_dir={cache_dir}"], cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT,
                                preexec_fn=dispositions)


@pytest.mark.parametrize("how", ["SIGKILL", "SIGTERM", "SIGINT"])
def test_a_stopped_sweep_leaves_no_process_behind_and_says_so_in_one_line(how, tmp_path, cache_dir):
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    log = tmp_path / "sweep.log"
    proc = long_sweep(tmp_path, cache_dir)
    try:
        wait_for(lambda text: "timing pytorch" in text, log, proc)
        below = descendants(proc.pid)
        assert len(below) >= 2  # the worker and the point it measures
        proc.send_signal(getattr(signal, how))
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(Path(f"/proc/{pid}").exists() for pid in below):
        time.sleep(0.1)
    left = [pid for pid in below if Path(f"/proc/{pid}").exists()
            and "(Z)" not in " ".join(Path(f"/proc/{pid}/stat").read_text().split()[2:3])]
    assert left == [], f"left running after {how} of run.py: {left}"
    text = log.read_text()
    (parent,) = parents(store)
    if how == "SIGKILL":
        assert proc.returncode == -signal.SIGKILL and parent.info.status == "RUNNING"  # settled by the next sweep
        return
    assert proc.returncode == 128 + getattr(signal, how)
    assert "Traceback" not in text and text.count(f"interrupted ({how})") == 1
    assert text.strip().splitlines()[-1].startswith(f"interrupted ({how}): 0 point(s) measured")
    assert parent.info.status == "KILLED" and parent.data.tags["bench.sweep_state"] == "incomplete"



def test_a_sweep_under_nohup_outlives_a_hangup(tmp_path, cache_dir):
    """nohup ignores SIGHUP so that a nightly outlives its terminal: the sweep keeps it ignored."""
    log = tmp_path / "sweep.log"
    proc = long_sweep(tmp_path, cache_dir, ignored=(signal.SIGHUP,))
    try:
        wait_for(lambda text: "timing pytorch" in text, log, proc)
        proc.send_signal(signal.SIGHUP)
        with pytest.raises(subprocess.TimeoutExpired):
            proc.wait(timeout=3)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 128 + signal.SIGTERM
    finally:
        if proc.poll() is None:
            proc.kill()
    assert "interrupted (SIGHUP)" not in log.read_text() and "interrupted (SIGTERM)" in log.read_text()

@contextlib.contextmanager
def read_only(*paths: Path):
    """Read-only for root too: root ignores permission bits, so as root the files are made immutable (chattr +i),
    which the kernel refuses to write for every user."""
    if os.geteuid() != 0:
        modes = [p.stat().st_mode for p in paths]
        for p in paths:
            p.chmod(stat.S_IRUSR | (stat.S_IXUSR if p.is_dir() else 0))
        try:
            yield
        finally:
            for p, mode in zip(paths, modes):
                p.chmod(mode)
        return
    if not shutil.which("chattr") or subprocess.run(["chattr", "+i", *map(str, paths)],
                                                    capture_output=True).returncode != 0:
        pytest.skip("running as root on a file system without chattr +i: a read-only store cannot be staged")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", *map(str, paths)], check=True)


def test_a_store_that_cannot_be_used_is_found_before_anything_is_measured(tmp_path, cache_dir):
    # a corrupt database
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "mlflow.db").write_bytes(b"this is not an SQLite database" * 100)
    proc = run_cli(*SMALL, f"tracking.uri=sqlite:///{corrupt / 'mlflow.db'}", f"cache_dir={cache_dir}", cwd=corrupt)
    assert proc.returncode == 2 and "measuring on" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith(f"error: tracking URI sqlite:///{corrupt / 'mlflow.db'}: "
                                                           "not a readable MLflow database")
    report = subprocess.run([sys.executable, "-m", "analysis.report", "--tracking-uri",
                             f"sqlite:///{corrupt / 'mlflow.db'}"], cwd=ROOT, capture_output=True, text=True)
    assert report.returncode == 2 and report.stderr.count("\n") == 1 and "not a readable MLflow database" in \
        report.stderr
    # a read-only database (and a read-only folder around a store)
    readonly = tmp_path / "readonly"
    readonly.mkdir()
    assert run_cli(*SMALL, "backend=pytorch", "precision=int8", f"tracking.uri=sqlite:///{readonly / 'mlflow.db'}",
                   f"cache_dir={cache_dir}", cwd=readonly).returncode == 0
    before = len(points(f"sqlite:///{readonly / 'mlflow.db'}"))
    with read_only(readonly / "mlflow.db", readonly):
        proc = run_cli(*SMALL, "backend=pytorch", f"tracking.uri=sqlite:///{readonly / 'mlflow.db'}",
                       f"cache_dir={cache_dir}", cwd=tmp_path)
    assert proc.returncode == 2 and "measuring on" not in proc.stderr
    assert "cannot be written" in proc.stderr.strip().splitlines()[-1]
    assert len(points(f"sqlite:///{readonly / 'mlflow.db'}")) == before


def test_one_bad_spool_entry_is_quarantined_and_the_others_are_uploaded(tmp_path, cache_dir):
    spool = tmp_path / "spool"
    proc = run_cli("-m", *SMALL, "backend=pytorch", "precision=fp32,int8", "tracking=server",
                   "tracking.uri=http://127.0.0.1:9", f"tracking.spool_dir={spool}", f"cache_dir={cache_dir}",
                   cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    entries = waiting(spool)
    assert len(entries) == 2
    (entries[0] / "measurement.json").write_text("")  # what a power cut before fsync could leave
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    done = sync("--spool", str(spool), "--uri", store)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "1 uploaded, 0 already in the store, 0 left" in done.stdout and "1 unreadable moved to" in done.stdout
    warnings = [line for line in done.stderr.splitlines() if "cannot be uploaded" in line]
    assert len(warnings) == 1 and entries[0].name in warnings[0]
    assert (spool / "quarantine" / entries[0].name).is_dir() and len(points(store)) == 1


def test_the_tests_pass_from_a_source_tarball(tmp_path):
    """git archive (no .git): the suite's commit is 'unknown' there, not an error."""
    if subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True).returncode != 0:
        pytest.skip("this tree is itself no checkout")
    archive = subprocess.run(["git", "archive", "--format=tar", "HEAD"], cwd=ROOT, capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(tmp_path)], input=archive.stdout, check=True)
    assert not (tmp_path / ".git").exists()
    env = {**os.environ, "GIT_CEILING_DIRECTORIES": str(tmp_path.parent)}
    env.pop("BENCH_COMMIT", None)
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_models.py",
                           "tests/test_core.py", "-k", "commit or plan"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert " passed" in done.stdout
