"""The nightly job as a scheduler runs it: its recipes parse with real tools, the device lock holds across
processes (and dies with them), and ``python nightly.py`` sweeps, resumes, checks and reports."""
from __future__ import annotations

import configparser
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest
import yaml
from mlflow.tracking import MlflowClient

from bench.controller.lock import LockBusy, device_lock
from conftest import ROOT, SMALL, parents, points
from nightly import main, parser, plan
from synthetic import measurement, record_sweep

DEPLOY = ROOT / "deploy"
WORKFLOW = ROOT / ".github" / "workflows" / "nightly.yml"


def nightly_args(command: str) -> list[str]:
    """The arguments a recipe gives ``python nightly.py``."""
    words = shlex.split(command.replace(";", " ; "))
    start = next(i for i, w in enumerate(words) if w.endswith("nightly.py")) + 1
    end = next((i for i, w in enumerate(words[start:], start) if w in (";", "}", "&&", ">>")), len(words))
    return words[start:end]


def check_nightly_args(args: list[str]) -> None:
    """The recipe's options parse and its overrides compose into the real config."""
    parsed = parser().parse_args(args)
    night = plan(parsed.grid, parsed.overrides)
    assert night.device == "auto" and "tracking=server" in night.overrides
    assert len(night.configs) == 7 * 4 and all(c.tracking.kind == "nightly" for c in night.configs)  # the grid


def test_crontab_line_parses_with_croniter_and_sh():
    croniter = pytest.importorskip("croniter", reason="croniter (dev extra) checks the crontab schedule")
    text = (DEPLOY / "crontab").read_text()
    lines = [line for line in text.splitlines() if line.strip() and not line.startswith("#")]
    assert len(lines) == 1
    fields = lines[0].split(None, 5)
    schedule, command = " ".join(fields[:5]), fields[5]
    assert croniter.croniter.is_valid(schedule), schedule
    nights = croniter.croniter(schedule, datetime(2026, 1, 1)).get_next(datetime), \
        croniter.croniter(schedule, datetime(2026, 1, 2)).get_next(datetime)
    assert nights[1] - nights[0] == timedelta(days=1)  # once a night
    assert "%" not in command  # cron turns % into a newline
    assert subprocess.run(["sh", "-n", "-c", command], capture_output=True).returncode == 0  # shell syntax
    check_nightly_args(nightly_args(command))


def test_systemd_service_and_timer(tmp_path):
    units = {}
    for name in ("trt-bench-nightly.service", "trt-bench-nightly.timer"):
        unit = configparser.ConfigParser(interpolation=None, strict=False)
        unit.optionxform = str
        unit.read(DEPLOY / name)
        units[name] = unit
    service, timer = units["trt-bench-nightly.service"], units["trt-bench-nightly.timer"]
    assert service["Service"]["Type"] == "oneshot"  # a running oneshot is never started again by its timer
    assert timer["Timer"]["Persistent"] == "true" and timer["Timer"]["Unit"] == "trt-bench-nightly.service"
    assert timer["Install"]["WantedBy"] == "timers.target"
    check_nightly_args(nightly_args(service["Service"]["ExecStart"]))
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed: the units were checked with configparser only")
    # systemd-analyze checks that the interpreter and folder exist: point them at this checkout.
    for name in units:
        text = (DEPLOY / name).read_text().replace("/opt/trt-bench/.venv/bin/python", sys.executable)
        (tmp_path / name).write_text(text.replace("/opt/trt-bench", str(ROOT)))
    verify = subprocess.run(["systemd-analyze", "verify", *(str(tmp_path / name) for name in units)],
                            capture_output=True, text=True, timeout=60)
    problems = [line for line in (verify.stdout + verify.stderr).splitlines() if "trt-bench-nightly" in line]
    assert verify.returncode == 0 and not problems, verify.stdout + verify.stderr
    calendar = subprocess.run(["systemd-analyze", "calendar", timer["Timer"]["OnCalendar"]], capture_output=True,
                              text=True, timeout=60)
    assert calendar.returncode == 0 and "Next elapse" in calendar.stdout, calendar.stderr


def test_github_workflow_runs_on_the_gpu_runner_nightly_and_by_hand():
    workflow = yaml.safe_load(WORKFLOW.read_text())
    triggers = workflow.get("on", workflow.get(True))  # YAML 1.1 reads a bare `on` as true
    assert "workflow_dispatch" in triggers
    (schedule,) = triggers["schedule"]
    croniter = pytest.importorskip("croniter", reason="croniter (dev extra) checks the schedule")
    assert croniter.croniter.is_valid(schedule["cron"])
    assert workflow["concurrency"]["cancel-in-progress"] is False and workflow["concurrency"]["group"]
    (job,) = workflow["jobs"].values()
    assert job["runs-on"] == ["self-hosted", "gpu"]
    commands = [step["run"] for step in job["steps"] if "run" in step]
    for command in commands:
        assert subprocess.run(["bash", "-n", "-c", command], capture_output=True).returncode == 0, command
    (nightly,) = [c for c in commands if "nightly.py" in c]
    check_nightly_args([a for a in nightly_args(nightly) if a != "$OVERRIDES"])


def test_the_device_lock_excludes_a_second_holder_and_dies_with_its_process(tmp_path):
    with device_lock("cuda:0", tmp_path) as held:
        assert (tmp_path / "cuda0.lock").read_text().startswith(f"pid {os.getpid()} ")
        with pytest.raises(LockBusy, match=rf"device cuda:0 is locked by another nightly \(pid {os.getpid()} "):
            with device_lock("cuda:0", tmp_path):
                pass
        started = time.monotonic()
        with pytest.raises(LockBusy, match="after waiting 1 s"):
            with device_lock("cuda:0", tmp_path, wait_s=1.0):
                pass
        assert time.monotonic() - started >= 1.0
        with device_lock("cuda:1", tmp_path):  # another device: its own lock
            pass
        assert held.fileno() >= 0
    with device_lock("cuda:0", tmp_path):  # released
        pass
    # A holder killed with SIGKILL leaves no stale lock behind.
    script = ("import sys, time; from pathlib import Path; from bench.controller.lock import device_lock\n"
              "with device_lock('cpu', Path(sys.argv[1])):\n print('held', flush=True); time.sleep(60)")
    holder = subprocess.Popen([sys.executable, "-c", script, str(tmp_path)], cwd=ROOT, stdout=subprocess.PIPE,
                              text=True)
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(LockBusy):
        with device_lock("cpu", tmp_path):
            pass
    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=30)
    with device_lock("cpu", tmp_path):
        pass


def nightly(*args: str, cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    """``python nightly.py`` as cron or systemd runs it."""
    return subprocess.run([sys.executable, str(ROOT / "nightly.py"), *args], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout)


def test_a_second_nightly_on_a_locked_device_exits_4_at_once(tmp_path, store):
    with device_lock("cpu", tmp_path / "locks"):
        proc = nightly("--lock-dir", str(tmp_path / "locks"), *SMALL, "device=cpu", f"tracking.uri={store}",
                       cwd=tmp_path)
    assert proc.returncode == 4, proc.stderr[-3000:]
    assert proc.stderr.strip().splitlines()[-1].startswith("error: device cpu is locked by another nightly (pid ")
    assert not (tmp_path / "mlflow.db").exists()


@pytest.mark.parametrize("args, message", [
    (["model=resnet181"], "Could not find 'model/resnet181'"),
    (["label=mine"], "the nightly command sets label; use --date instead"),
    (["device=cpu,cuda"], "one nightly times one device"),
    (["--date", "24.11.2026"], "--date '24.11.2026' is not a date"),
    (["--threshold", "-1"], "threshold=-0.01 must be a fraction >= 0"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, args, message):
    assert main(["--lock-dir", str(tmp_path / "locks"), *args]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and err.startswith("error: ") and message in err, err
    assert not (tmp_path / "locks").exists()  # stopped before the lock, the sweep or the store


def seed_history(uri: str, child, nights: int, factor: float) -> None:
    """``nights`` earlier nightlies of the real run's point (same device, host, model, input), ``factor`` times
    its latency, recorded as measurements through the real record and store code, each a day before the next."""
    tags = {k: v for k, v in child.data.tags.items() if k.startswith(("device.", "host.", "cpu."))}
    median = child.data.metrics["latency_ms_median"] * factor
    rng = np.random.default_rng(0)
    model, precision, backend, size = child.info.run_name.split("/")
    for night in range(nights, 0, -1):
        when = datetime.fromtimestamp(child.info.start_time / 1000, timezone.utc) - timedelta(days=night)
        start_ms = int(when.timestamp() * 1000)
        value = median * (1 + rng.uniform(-0.01, 0.01))
        made = measurement(tags, model, backend, precision, int(size), value, value, start_ms=start_ms + 1000,
                           agreement=1.0, rel_err=0.0)
        record_sweep(uri, f"seed-{night}", [made], kind="nightly", started_ms=start_ms)


@pytest.mark.slow
def test_nightly_sweeps_checks_reports_and_resumes(tmp_path, store, cache_dir):
    args = ("--lock-dir", str(tmp_path / "locks"), "--date", "2026-11-24", *SMALL, "backend=pytorch",
            "precision=fp32", "device=cpu", f"tracking.uri={store}", f"cache_dir={cache_dir}")
    first = nightly(*args, "--out", str(tmp_path / "out"), cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "no baseline yet" in first.stdout and "Exit status 0 (all well)" in first.stdout, first.stdout
    for step in ("step 1/2: sweep 2026-11-24 on cpu", "step 2/2: regression check"):
        assert step in first.stderr
    (parent,), (child,) = parents(store), points(store)
    for run in (parent, child):
        assert run.data.tags["bench.kind"] == "nightly" and run.data.tags["bench.commit"]
    assert parent.info.run_name == "nightly-2026-11-24" and parent.data.tags["bench.label"] == "nightly-2026-11-24"
    assert parent.data.tags["nightly.status"] == "no baseline"
    client = MlflowClient(store)
    attached = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"report", "regressions"} <= attached
    assert {"regressions/regressions.md", "regressions/regressions.txt"} <= {
        a.path for a in client.list_artifacts(parent.info.run_id, "regressions")}
    assert (tmp_path / "out" / "report" / "report.html").is_file()
    assert (tmp_path / "out" / "regressions" / "regressions.md").is_file()

    # Three earlier nights at a third of tonight's latency: tonight is 3x slower. Run the same night again:
    # the sweep continues (the point is not measured twice) and the check flags the point and its raw series.
    seed_history(store, child, 3, 1 / 3)
    second = nightly(*args, cwd=tmp_path)
    assert second.returncode == 3, second.stderr[-3000:]
    assert "already recorded in this sweep" in second.stderr
    assert "Regressions (2)" in second.stdout and "Exit status 3 (regression)" in second.stdout, second.stdout
    assert f"resnet18/fp32/pytorch/64 on {child.data.tags['device.label']} ({socket.gethostname()})" in second.stdout
    assert re.search(r" \+(19|20)\d\.\d% +robust z \+", second.stdout), second.stdout  # about +200 %
    tonight = [r for r in points(store) if r.data.tags.get("bench.sweep_id") == child.data.tags["bench.sweep_id"]]
    assert [r.info.run_id for r in tonight] == [child.info.run_id]
    assert client.get_run(parent.info.run_id).data.tags["nightly.regressions"] == "2"
    plots = {a.path for a in client.list_artifacts(parent.info.run_id, "regressions/plots")}
    assert len(plots) == 2 and all(p.endswith(".png") for p in plots)
