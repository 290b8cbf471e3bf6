"""A device whose clock is hours off records its runs in the tracking server's time, so sweeps of several devices
are ordered as they happened and the newest is the newest. The skewed clock is real: Debian's libfaketime shifts
every wall-clock call of the sweep's processes (controller and worker); nothing of the suite is mocked."""
import os
import re
import subprocess
import sys
import time
from pathlib import Path

from conftest import ROOT, SMALL, missing, parents, points, run_cli
from test_server import mlflow_server  # noqa: F401 - the fixture

LIBFAKETIME = Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1")
AHEAD_S = 6 * 3600


def test_a_device_clock_hours_ahead_records_in_the_servers_time(mlflow_server, tmp_path, cache_dir):
    if not LIBFAKETIME.exists():
        missing("Debian's faketime (libfaketime, for a device clock that is off)")
    server = mlflow_server()
    common = ["-m", *SMALL, "backend=pytorch", "precision=fp32", "tracking=server", f"tracking.uri={server.uri}",
              f"tracking.spool_dir={tmp_path / 'spool'}", f"cache_dir={cache_dir}"]
    ahead = {**os.environ, "LD_PRELOAD": str(LIBFAKETIME), "FAKETIME": f"+{AHEAD_S}",
             "FAKETIME_DONT_FAKE_MONOTONIC": "1"}
    began = time.time()
    early = run_cli(*common, "label=clock-ahead", cwd=tmp_path, env=ahead)
    assert early.returncode == 0, early.stderr[-3000:]
    said = re.search(r"this machine's clock is (\d+) s ahead of the tracking server's", early.stderr)
    assert said and abs(int(said.group(1)) - AHEAD_S) <= 2, early.stderr[-3000:]  # the Date header has 1 s steps
    late = run_cli(*common, "label=clock-right", cwd=tmp_path)  # another device, later, with a right clock
    assert late.returncode == 0, late.stderr[-3000:]
    ended = time.time()

    sweeps = {run.data.tags["bench.label"]: run for run in parents(server.uri)}
    skewed, right = sweeps["clock-ahead"], sweeps["clock-right"]
    assert abs(float(skewed.data.tags["bench.clock_offset_s"]) + AHEAD_S) < 60
    assert "bench.clock_offset_s" not in right.data.tags
    mine = [p for p in points(server.uri) if p.data.tags["bench.sweep_id"] == skewed.data.tags["bench.sweep_id"]]
    assert mine and all(p.data.tags["bench.clock_offset_s"] == skewed.data.tags["bench.clock_offset_s"] for p in mine)
    for run in [skewed, *mine]:
        assert began * 1000 - 60_000 <= run.info.start_time <= ended * 1000 + 60_000, run.info.run_name
    assert skewed.info.start_time < right.info.start_time  # as it happened, not as the device's clock said
    newest = subprocess.run([sys.executable, "-m", "analysis.report", "--tracking-uri", server.uri, "--latest",
                             "--format", "markdown"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert newest.returncode == 0, newest.stderr[-3000:]
    assert f"experiment 'trt-bench', {right.info.run_name};" in newest.stdout  # the newest sweep, by its name
    assert skewed.info.run_name not in newest.stdout
