"""A real sweep made by run.py on the CPU, reported by ``python -m analysis.report`` as a user would."""
from __future__ import annotations

import os
import subprocess
import sys

from mlflow.tracking import MlflowClient

from conftest import ROOT

PNG = b"\x89PNG\r\n\x1a\n"


def test_report_of_a_real_cpu_sweep_renders_plots_and_attaches_to_the_parent(tmp_path, small_sweep):
    store, sweep = small_sweep.store, small_sweep.proc
    # Three measured points (eager fp32 = Raw, ONNX Runtime fp32 and int8) and one skipped (pytorch int8).
    assert sweep.returncode == 0, sweep.stderr[-3000:]

    out = tmp_path / "report"
    proc = subprocess.run([sys.executable, "-m", "analysis.report", "--latest", "--format", "markdown",
                           "--out", str(out), "--attach"], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "MLFLOW_TRACKING_URI": store})
    assert proc.returncode == 0, proc.stderr[-3000:]
    markdown = proc.stdout
    assert "| median latency (ms) | resnet18 |" in markdown
    rows = {line.split("|")[1].strip(): line.split("|")[2].strip() for line in markdown.splitlines()
            if line.startswith("| ") and "median latency" not in line}
    for label in ("Raw", "FP32 (onnxruntime)", "INT8 (onnxruntime)"):
        assert float(rows[label]) > 0, (label, rows)
    assert rows["INT8 (pytorch)"] == "— [1]"
    assert "[1] skipped: " in markdown and "int8" in markdown.split("[1] skipped: ")[1].splitlines()[0]
    assert "4 run(s) -> 4 point(s): 3 ok, 1 skipped" in markdown

    plots = sorted((out / "plots").glob("*.png"))
    assert {p.name.split("_")[0] for p in plots} == {"latency", "speedup", "distribution"}
    for plot in plots:
        assert plot.read_bytes().startswith(PNG) and plot.stat().st_size > 5000, plot
    assert (out / "report.html").read_text().count("<table") >= 4

    client = MlflowClient(store)
    (parent,) = client.search_runs([client.get_experiment_by_name("trt-bench").experiment_id],
                                   "tags.`bench.role` = 'parent'")
    attached = {a.path for a in client.list_artifacts(parent.info.run_id, "report")}
    assert {"report/report.md", "report/report.html", "report/plots", "report/tables"} <= attached
    assert len(client.list_artifacts(parent.info.run_id, "report/plots")) == len(plots)
