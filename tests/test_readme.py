"""README.md's commands, run as a newcomer runs them: in a fresh folder and a fresh home, after README's sweep.

Every command line of README's ```bash blocks runs as written and must exit 0, except:
- installs (pip, tests/setup.sh, deploy/, export): CI installed the suite as README says before this runs, and
  the test command itself;
- what needs what is not here: an SSH device or a Jetson (xavier), a tracking server, SLURM, CUDA, and lines
  that are templates (``...``);
- commands that measure (run.py, nightly.py) get small settings appended (64x64 inputs, quick timing; the
  nightly one model and two precisions), so the suite's tests fit CI's time; their own words are unchanged;
- ``python -m bench.store.ui`` serves until stopped: it runs until it prints its link, which is opened, then it
  is stopped with Ctrl-C.
"""
from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import ROOT, free_port, parents

SMALL = ["input=64x64", "timing=quick", "accuracy.batches=2", "calibration.num_batches=4"]
NIGHTLY_SMALL = ["model=resnet18", "precision=fp32,int8", *SMALL]
NOT_HERE = {  # what a line needs that this machine has not, by a word in the line
    "pip install": "an install", "tests/setup.sh": "an install", "deploy/": "a server install",
    "export ": "a tracking server", "tracking=server": "a tracking server", "executor=ssh": "an SSH device",
    "xavier": "a Jetson's runs", "hydra/launcher=slurm": "a SLURM cluster", "device=cuda": "a GPU",
    "...": "a template", "python -m pytest": "the tests themselves",
}
LOG_LINE = re.compile(r"\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}\]\[[\w.]+\]\[(DEBUG|INFO|WARNING|ERROR)\] - ")


def readme_commands() -> list[str]:
    """Every command line of README's bash blocks, continuation lines joined, comments dropped."""
    text = (ROOT / "README.md").read_text()
    lines = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = re.split(r"\s+#", line.strip(), maxsplit=1)[0].strip()
            if line and not line.startswith("#"):
                lines += [" ".join(command.split()) for command in line.split(" && ")]
    return lines


def why_not_here(command: str) -> str | None:
    return next((why for word, why in NOT_HERE.items() if word in command), None)


def argv(command: str) -> list[str]:
    """The line as argv for this interpreter and checkout, with small settings for the commands that measure."""
    words = shlex.split(command)
    assert words[0] == "python", command
    words[0] = sys.executable
    if words[1] in ("run.py", "nightly.py"):
        words[1] = str(ROOT / words[1])
        words += SMALL if words[1].endswith("run.py") else NIGHTLY_SMALL
    return words


def open_ui(command: list[str], folder: Path, env: dict) -> tuple[str, str]:
    """Run ``python -m bench.store.ui`` until it prints the sweep's link; what the UI says of the sweep's parent."""
    if "--port" not in command and not port_free(5000):
        command = [*command, "--port", str(free_port())]
    proc = subprocess.Popen(command, cwd=folder, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        printed = [proc.stdout.readline(), proc.stdout.readline()]
        link = printed[1].split(": ", 1)[1].strip()
        base, query = link.split("/#/")[0], link.split("viewStateShareKey=")[1]
        with urllib.request.urlopen(f"{base}/api/2.0/mlflow/runs/get?run_id={query}", timeout=30) as answer:
            run = json.load(answer)["run"]
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 0, proc.stderr.read()
        return printed[1].split(": ", 1)[0], run["info"]["run_name"]
    finally:
        if proc.poll() is None:
            proc.kill()


def port_free(port: int) -> bool:
    import socket

    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) != 0


@pytest.mark.slow
def test_every_command_in_readme_runs_as_written_after_readmes_sweep(tmp_path):
    commands = readme_commands()
    runnable = [c for c in commands if why_not_here(c) is None]
    assert runnable[0].startswith("python run.py -m model=resnet18,resnet50")  # README's own sweep comes first
    assert "python -m analysis.recommend" in runnable and "python -m bench.store.ui" in runnable
    folder, home = tmp_path / "work", tmp_path / "home"
    folder.mkdir()
    home.mkdir()
    env = {**os.environ, "HOME": str(home), "PYTHONPATH": str(ROOT)}
    env.pop("MLFLOW_TRACKING_URI", None)
    for command in runnable:
        started = time.monotonic()
        if command.startswith("python -m bench.store.ui"):
            name, shown = open_ui(argv(command), folder, env)
            (parent,) = [p for p in parents(f"sqlite:///{folder / 'mlflow.db'}") if p.info.run_name == shown]
            assert name == shown  # the sweep under one name, in the printed line and in the UI
            continue
        proc = subprocess.run(argv(command), cwd=folder, env=env, capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, f"{command}\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
        said = proc.stdout + proc.stderr
        assert "fontManager" not in said and "Traceback" not in said, command
        logged = [line for line in proc.stderr.splitlines() if line.startswith(("[", "20"))]
        assert all(LOG_LINE.match(line) for line in logged), [line for line in logged if not LOG_LINE.match(line)]
        print(f"{time.monotonic() - started:5.0f} s  {command}")
    for command in commands:
        if why_not_here(command):
            print(f"not here ({why_not_here(command)}): {command}")
