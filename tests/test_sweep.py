"""A real sweep through run.py -m into a real MLflow store: one parent run that summarises the sweep, one
child per point that reads well in the MLflow UI."""
import re

import pytest
import yaml
from mlflow.tracking import MlflowClient

from bench.store.record import rounded
from conftest import SMALL, parents, points, run_cli, runs

LATENCY_METRICS = {"latency_ms_mean", "latency_ms_median", "latency_ms_std", "latency_ms_min", "latency_ms_max",
                   "latency_ms_p90", "latency_ms_p95", "latency_ms_p99", "latency_cv", "iterations", "throughput_ips"}
POINT_METRICS = LATENCY_METRICS | {"convert_s", "raw_latency_ms_median", "speedup", "acc_max_abs_err",
                                   "acc_rel_l2_err", "acc_cosine", "acc_top1_agreement", "acc_nonfinite",
                                   "peak_rss_mb"}
FINGERPRINT_TAGS = {"device.kind", "device.label", "cpu.count", "cpu.threads", "host.name", "sw.python", "sw.torch",
                    "sw.torchvision", "sw.onnxruntime", "bench.commit", "bench.status", "bench.point_key"}


def test_cli_sweep_records_a_parent_and_one_child_per_point(small_sweep):
    store, proc = small_sweep.store, small_sweep.proc
    assert proc.returncode == 0, proc.stderr[-3000:]
    (parent,), children = parents(store), points(store)
    assert len(children) == 4
    assert all(c.data.tags["mlflow.parentRunId"] == parent.info.run_id for c in children)
    assert parent.data.metrics == {"points_ok": 3.0, "points_skipped": 1.0, "points_failed": 0.0}
    assert parent.info.status == "FINISHED" and parent.data.tags["bench.sweep_state"] == "complete"
    # The parent's params are the sweep's command line: its axes with their values, and its fixed settings.
    assert parent.data.params["backend"] == "pytorch,onnxruntime" and parent.data.params["precision"] == "fp32,int8"
    assert parent.data.params["model"] == "resnet18" and parent.data.params["input"] == "64x64"

    by_name = {c.info.run_name: c for c in children}
    assert set(by_name) == {"resnet18/fp32/pytorch/64", "resnet18/int8/pytorch/64",
                            "resnet18/fp32/onnxruntime/64", "resnet18/int8/onnxruntime/64"}
    skipped = by_name["resnet18/int8/pytorch/64"]
    assert skipped.data.tags["bench.status"] == "skipped"
    assert "int8" in skipped.data.tags["bench.reason"]
    assert not skipped.data.metrics  # a skipped point never carries a number

    for name in ("resnet18/fp32/pytorch/64", "resnet18/fp32/onnxruntime/64", "resnet18/int8/onnxruntime/64"):
        run = by_name[name]
        assert run.data.tags["bench.status"] == "ok"
        assert POINT_METRICS <= set(run.data.metrics), POINT_METRICS - set(run.data.metrics)
        assert FINGERPRINT_TAGS <= set(run.data.tags), FINGERPRINT_TAGS - set(run.data.tags)
        assert run.data.params["input.shape"] == "1x3x64x64"
        assert run.data.params["timing.method"] == "perf_counter_ns"
        assert run.data.params["timing.min_iters"] == "5"
        assert run.data.tags["device.kind"] == "cpu"
        m = run.data.metrics
        assert 0 < m["latency_ms_min"] <= m["latency_ms_median"] <= m["latency_ms_max"] < 10_000
        assert m["iterations"] >= 5
        # as the UI lists them: 4 significant digits, so the ratio holds to the rounding
        assert m["speedup"] == pytest.approx(m["raw_latency_ms_median"] / m["latency_ms_median"], rel=2e-3)
        assert all(float(f"{value:.4g}") == value for value in m.values())
        assert m["acc_nonfinite"] == 0
        assert run.info.end_time > run.info.start_time  # the point's measurement window, not 0 ms
        note = run.data.tags["mlflow.note.content"]
        assert note.startswith(f"end-to-end {rounded(m['latency_ms_median'], m['latency_ms_lo'], m['latency_ms_hi'])} ms (")
        assert "; 1 process" in note  # timing=quick: one process per point, said so
    fp32_ort = by_name["resnet18/fp32/onnxruntime/64"].data.metrics
    assert fp32_ort["acc_rel_l2_err"] < 1e-4 and fp32_ort["acc_cosine"] > 0.9999
    raw = by_name["resnet18/fp32/pytorch/64"].data.metrics
    assert raw["speedup"] == 1.0 and raw["acc_max_abs_err"] == 0.0

    client = MlflowClient(store)
    int8 = by_name["resnet18/int8/onnxruntime/64"]
    artifacts = {a.path for a in client.list_artifacts(int8.info.run_id)}
    assert {"config.yaml", "latencies_ms.csv", "raw_latencies_ms.csv", "latency_histogram.png"} <= artifacts
    config = yaml.safe_load(open(client.download_artifacts(int8.info.run_id, "config.yaml")))
    assert config["backend"]["name"] == "onnxruntime" and config["input"]["height"] == 64  # resolved, not "auto"
    assert open(client.download_artifacts(int8.info.run_id, "latencies_ms.csv")).readline() == \
        "process,call,latency_ms\n"  # each call with the process (1, 2, ...) that timed it
    assert "4 point(s) measured: 3 ok, 1 skipped, 0 failed" in proc.stderr
    # One name for the sweep: its MLflow run's, in the log, the last lines and the report's commands.
    name = parent.info.run_name
    assert name == f"sweep {parent.data.tags['bench.sweep_id'][:8]}"
    assert f"{name}: its runs go under MLflow parent run {parent.info.run_id}" in proc.stderr
    assert f"{name}: 4 point(s) measured" in proc.stderr
    measuring = [line for line in proc.stderr.splitlines() if ": measuring on local" in line]
    assert not measuring[0].endswith("left") and all(re.search(r"; about \d+ s left$", line) for line in measuring[1:])
    ui, tables = proc.stdout.strip().splitlines()[-2:]
    assert ui.startswith(f"{name} in the MLflow UI: http://127.0.0.1:5000/#/experiments/") and \
        ui.endswith("(start the UI first: python -m bench.store.ui)")  # the store is the launch folder's mlflow.db
    assert tables == f"{name} as tables: python -m analysis.report --sweep {name.split()[1]}"


def test_child_params_define_the_point_and_nothing_else(small_sweep):
    """No nulls, no CUDA-only settings on a CPU point, no paths: those are tags; one device label."""
    int8 = next(r for r in points(small_sweep.store) if r.info.run_name == "resnet18/int8/onnxruntime/64")
    params, tags = int8.data.params, int8.data.tags
    assert "None" not in params.values() and "null" not in params.values()
    assert not {"cudnn_benchmark", "timing.include_copies", "backend.cuda_graphs"} & set(params)
    assert not [value for value in params.values() if value.startswith("/")]
    assert tags["backend.onnx_path"].startswith("/") and "calibration.folder" not in tags
    assert params["calibration.source"] == "random" and params["backend.exporter"] in ("dynamo", "torchscript")
    assert len([k for k in tags if k in ("device.name", "device.label", "cpu.model")]) == 1
    assert len(params) <= 30, sorted(params)


def test_the_parent_run_summarises_the_sweep(small_sweep):
    """Its description is the blog's table in Markdown; the report (tables, plots) is attached, plots embedded."""
    (parent,) = parents(small_sweep.store)
    description = parent.data.tags["mlflow.note.content"]
    assert "| median latency (ms) | resnet18 |" in description and "| Raw |" in description
    skipped = re.search(r"\| INT8 \(pytorch\) \| — (\[\d+\]) \|", description)  # [1], or [2] after an unstable cell
    assert skipped and f"{skipped.group(1)} skipped: " in description, description
    client = MlflowClient(small_sweep.store)
    attached = {a.path for a in client.list_artifacts(parent.info.run_id, "report")}
    assert {"report/report.md", "report/report.html", "report/plots", "report/tables"} <= attached
    html = open(client.download_artifacts(parent.info.run_id, "report/report.html")).read()
    assert html.count('<img src="data:image/png;base64,') >= 2 and "plots/" not in html
    tables = client.list_artifacts(parent.info.run_id, "report/tables")
    csv = next(t.path for t in tables if t.path.endswith(".csv"))
    assert "#" not in open(client.download_artifacts(parent.info.run_id, csv)).read()


def test_a_single_run_is_a_run_of_its_own(tmp_path, cache_dir):
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    proc = run_cli(*SMALL, "backend=pytorch", f"tracking.uri={store}", f"cache_dir={cache_dir}",
                   "tracking.experiment=single", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run,) = runs(store, "single")
    assert "mlflow.parentRunId" not in run.data.tags
    assert run.info.run_name == "resnet18/fp32/pytorch/64"


def test_the_launch_folder_holds_only_the_store(tmp_path, cache_dir):
    """mlflow.db and the artifacts beside it; no lock file, no ./mlruns, no Hydra outputs/ (those go to
    ~/.local/state/trt-bench)."""
    proc = run_cli(*SMALL, "backend=pytorch", f"cache_dir={cache_dir}", "raw_baseline=false", cwd=tmp_path,
                   env={"MLFLOW_TRACKING_URI": ""})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mlartifacts", "mlflow.db"]
    assert len(runs(f"sqlite:///{tmp_path / 'mlflow.db'}")) == 1
