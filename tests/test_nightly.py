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

from bench.contract.records import Plan
from bench.controller.estimate import Probe, duration, hours_above, point_seconds, read_history
from bench.controller.lock import LockBusy, device_lock
from conftest import ROOT, SMALL, parents, points
from nightly import main, parser, plan
from synthetic import measurement, plan as synthetic_plan, record_sweep

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
    (["--budget", "0"], "argument --budget: 0 must be more than 0 hours"),
    (["--budget", "abc"], "argument --budget: 'abc' is not a number of hours"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, args, message):
    try:
        code = main(["--lock-dir", str(tmp_path / "locks"), *args])
    except SystemExit as exc:  # argparse's own checks (--budget) exit there
        code = exc.code
    assert code == 2
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
    for step in ("step 1/3: estimate", "nightly grid: 1 point(s), about", "step 2/3: sweep 2026-11-24 on cpu",
                 "step 3/3: regression check"):
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
    assert "nightly grid: 1 point(s) (1 recorded tonight already), about 0 s" in second.stderr  # nothing left to time
    assert "Regressions (2)" in second.stdout and "Exit status 3 (regression)" in second.stdout, second.stdout
    assert f"resnet18/fp32/pytorch/64 on {child.data.tags['device.label']} ({socket.gethostname()})" in second.stdout
    assert re.search(r" \+(19|20)\d\.\d% +robust z \+", second.stdout), second.stdout  # about +200 %
    tonight = [r for r in points(store) if r.data.tags.get("bench.sweep_id") == child.data.tags["bench.sweep_id"]]
    assert [r.info.run_id for r in tonight] == [child.info.run_id]
    assert client.get_run(parent.info.run_id).data.tags["nightly.regressions"] == "2"
    plots = {a.path for a in client.list_artifacts(parent.info.run_id, "regressions/plots")}
    assert len(plots) == 2 and all(p.endswith(".png") for p in plots)


# A team's own grid, outside conf/ (found through Hydra's search path): a cheap model and one about ten times as
# expensive on a CPU, at one small input, eager fp32, quick timing.
TWO_MODELS = """# @package _global_
defaults:
  - override /input: 64x64
  - override /timing: quick
input:
  height: 128
  width: 128
accuracy:
  batches: 2
hydra:
  sweeper:
    params:
      model: resnet18,deeplabv3_resnet101
      backend: pytorch
      precision: fp32
"""
# 5 s: resnet18's point is estimated at 1-2 s here, the two together at about 15 s.
TIGHT = ["--budget", "0.0013"]


@pytest.fixture
def two_models(tmp_path, cache_dir) -> list[str]:
    """``python nightly.py`` arguments that sweep TWO_MODELS on the CPU into the test's store and lock folder."""
    (tmp_path / "grids" / "experiment").mkdir(parents=True)
    (tmp_path / "grids" / "experiment" / "two_models.yaml").write_text(TWO_MODELS)
    return ["--lock-dir", str(tmp_path / "locks"), "--date", "2026-11-24", "--grid", "two_models",
            f"hydra.searchpath=[file://{tmp_path / 'grids'}]", "device=cpu", f"tracking.uri=sqlite:///"
            f"{tmp_path / 'mlflow.db'}", f"cache_dir={cache_dir}"]


def test_a_grid_over_the_budget_drops_its_most_expensive_model_in_one_line(tmp_path, two_models):
    proc = nightly(*TIGHT, *two_models, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    probed = re.findall(r"\[\d/2\] probed (\S+) at 128x128: one eager fp32 call", proc.stderr)
    assert probed == ["resnet18", "deeplabv3_resnet101"], proc.stderr[-3000:]  # no history yet: each probed once
    (line,) = [line for line in proc.stderr.splitlines() if "dropped" in line]
    assert re.search(r"- the grid would take about \d+ s here \(budget 5 s\): dropped deeplabv3_resnet101 "
                     r"\(\d+ s\); measuring the other 1 model\(s\), about \d s; keep them with --budget [\d.]+ or "
                     r"choose the models yourself \(model=\.\.\.\)$", line), line
    assert "nightly grid:" not in proc.stderr  # the one line says it all
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    (parent,), (child,) = parents(store), points(store)
    assert child.data.params["model"] == "resnet18" and parent.data.params["model"] == "resnet18"
    # The next night estimates resnet18 by this run: its point's wall time, read back from the store.
    host, key = child.data.tags["host.name"], child.data.tags["bench.point_key"]
    walls = read_history(store, "trt-bench", "nightly", host, "nightly-2026-11-25", {key, "another point"}).walls
    assert walls == {key: (child.info.end_time - child.info.start_time) / 1000}
    assert read_history(store, "trt-bench", "nightly", "another-host", "nightly-2026-11-25", {key}).walls == {}


def test_a_grid_of_chosen_models_over_the_budget_is_refused_before_measuring(tmp_path, two_models):
    proc = nightly(*TIGHT, *two_models, "model=resnet18,deeplabv3_resnet101", cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if "error" in line.lower()]
    assert errors == [proc.stderr.strip().splitlines()[-1]], proc.stderr[-3000:]
    assert re.fullmatch(r"error: the nightly grid would take about \d+ s on this device \(budget 5 s\): give "
                        r"--budget [\d.]+ or more, or fewer points \(model=\.\.\., precision=\.\.\.\)", errors[0])
    assert "step 2/3" not in proc.stderr and not (tmp_path / "mlflow.db").exists()  # nothing swept, nothing recorded


def test_the_estimate_of_a_probed_point():
    """The formula of bench.controller.estimate on real plans: one call 0.1 s, 2 s to start a process."""
    tags = {"device.label": "H200"}
    probe = Probe(call_s=0.1, start_s=2.0)
    # CUDA, onnxruntime fp32 beside eager (2 series, 2 blocks each): warm-up max(10 x 0.1, 1.0) = 1; per block
    # max(50 x 0.1, 3.0) + 4 rounds x 2 re-warm calls x 0.1 = 5.8; accuracy 2 x 4 batches.
    cuda = Plan.from_json(synthetic_plan("resnet50", "onnxruntime", "fp32", 224, tags))
    assert point_seconds(cuda, probe) == pytest.approx(2 + 2 * (1 + 2 * 5.8) + 8 * 0.1)
    int8 = Plan.from_json(synthetic_plan("resnet50", "onnxruntime", "int8", 224, tags))
    assert point_seconds(int8, probe) == pytest.approx(point_seconds(cuda, probe) + 8 * 0.1)  # + calibration
    eager = cuda._replace(device="cpu", backend={"name": "pytorch"}, timing=cuda.timing._replace(repeats=3))
    assert point_seconds(eager, probe) == pytest.approx(3 * (2 + 1 + 5) + 8 * 0.1)  # one series, 3 processes
    assert [duration(s) for s in (4.4, 100, 6600, 50760)] == ["4 s", "2 min", "1 h 50 min", "14 h"]
    assert [hours_above(s) for s in (4.4, 50760)] == ["0.0013", "15"]
