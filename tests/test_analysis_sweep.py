"""A real sweep made by run.py on the CPU, reported by ``python -m analysis.report`` as a user would, in a
process where torch cannot be imported: reading a store never needs it."""
from __future__ import annotations

import os
import re
import subprocess
import sys

from conftest import ROOT

PNG = b"\x89PNG\r\n\x1a\n"
# Runs a module as `python -m` would, with torch made unimportable first (as in an environment without it).
WITHOUT_TORCH = """
import runpy, sys
class NoTorch:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch.") or name == "torchvision":
            raise ModuleNotFoundError(f"No module named {name!r} (this test's environment has no torch)")
sys.meta_path.insert(0, NoTorch())
sys.argv = [sys.argv[1], *sys.argv[2:]]
runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)
"""


def without_torch(module: str, *args: str, store: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", WITHOUT_TORCH, module, *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=300, env={**os.environ, "MLFLOW_TRACKING_URI": store})


def test_report_of_a_real_cpu_sweep_in_an_environment_without_torch(tmp_path, small_sweep):
    store, sweep = small_sweep.store, small_sweep.proc
    # Three measured points (eager fp32 = Raw, ONNX Runtime fp32 and int8) and one skipped (pytorch int8).
    assert sweep.returncode == 0, sweep.stderr[-3000:]
    out = tmp_path / "report"
    proc = without_torch("analysis.report", "--latest", "--format", "markdown", "--out", str(out), store=store)
    assert proc.returncode == 0, proc.stderr[-3000:]
    markdown = proc.stdout
    assert "| median latency (ms) | resnet18 |" in markdown
    rows = {line.split("|")[1].strip(): line.split("|")[2].strip() for line in markdown.splitlines()
            if line.startswith("| ") and "median latency" not in line}
    for label in ("Raw", "FP32 (onnxruntime)", "INT8 (onnxruntime)"):
        # A cell is "0.386", or "0.386 [2]" where this noisy machine made the latency unstable (a footnote says so).
        assert float(rows[label].split(" [")[0]) > 0, (label, rows)
    skipped = re.fullmatch(r"— (\[\d+\])", rows["INT8 (pytorch)"])
    assert skipped, rows
    note = f"{skipped.group(1)} skipped: "
    assert note in markdown and "int8" in markdown.split(note)[1].splitlines()[0]
    assert "4 run(s) -> 4 point(s): 3 ok, 1 skipped" in markdown
    plots = sorted((out / "plots").glob("*.png"))
    assert {p.name.split("_")[0] for p in plots} == {"latency", "speedup", "distribution"}
    for plot in plots:
        assert plot.read_bytes().startswith(PNG) and plot.stat().st_size > 5000, plot
    assert (out / "report.html").read_text().count("<table") >= 4

    regress = without_torch("analysis.regress", store=store)
    assert regress.returncode == 0 and "No nightly runs yet" in regress.stdout, regress.stderr[-3000:]
