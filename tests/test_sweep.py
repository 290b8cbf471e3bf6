"""A real sweep through run.py -m and through the compose API, into a real MLflow store."""
from conftest import runs, run_cli

LATENCY_METRICS = {"latency_ms_mean", "latency_ms_median", "latency_ms_std", "latency_ms_min", "latency_ms_max",
                   "latency_ms_p90", "latency_ms_p95", "latency_ms_p99", "iterations", "throughput_ips"}
POINT_METRICS = LATENCY_METRICS | {"convert_s", "raw_latency_ms_median", "speedup", "acc_max_abs_err",
                                   "acc_rel_l2_err", "acc_cosine", "acc_top1_agreement", "acc_nonfinite",
                                   "peak_rss_mb"}
FINGERPRINT_TAGS = {"device.kind", "device.name", "device.label", "cpu.model", "cpu.threads", "host.name",
                    "sw.torch", "sw.torchvision", "sw.onnxruntime", "bench.commit", "bench.status"}


def test_cli_sweep_records_a_parent_and_one_child_per_point(small_sweep):
    store, proc = small_sweep.store, small_sweep.proc
    assert proc.returncode == 0, proc.stderr[-3000:]
    all_runs = runs(store)
    parents = [r for r in all_runs if r.data.tags.get("bench.role") == "parent"]
    children = [r for r in all_runs if r.data.tags.get("bench.role") == "point"]
    assert len(parents) == 1 and len(children) == 4
    parent = parents[0]
    assert all(c.data.tags["mlflow.parentRunId"] == parent.info.run_id for c in children)
    assert parent.data.metrics == {"points_ok": 3.0, "points_skipped": 1.0, "points_failed": 0.0}
    assert parent.info.status == "FINISHED"

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
        assert m["speedup"] == m["raw_latency_ms_median"] / m["latency_ms_median"]
        assert m["acc_nonfinite"] == 0
    fp32_ort = by_name["resnet18/fp32/onnxruntime/64"].data.metrics
    assert fp32_ort["acc_rel_l2_err"] < 1e-4 and fp32_ort["acc_cosine"] > 0.9999
    raw = by_name["resnet18/fp32/pytorch/64"].data.metrics
    assert raw["speedup"] == 1.0 and raw["acc_max_abs_err"] == 0.0

    from mlflow.tracking import MlflowClient

    artifacts = {a.path for a in MlflowClient(store).list_artifacts(by_name["resnet18/int8/onnxruntime/64"].info.run_id)}
    assert {"config.yaml", "latencies_ms.csv", "raw_latencies_ms.csv"} <= artifacts
    assert "4 point(s): 3 ok, 1 skipped, 0 failed" in proc.stderr + proc.stdout


def test_compose_api_points_of_one_sweep_share_a_parent(make_cfg, store, tmp_path):
    from bench.runner import run_point

    sweep = tmp_path / "sweep"
    first = run_point(make_cfg("backend=pytorch", "precision=fp32"), str(sweep))
    second = run_point(make_cfg("backend=auto", "precision=fp16", "device=cpu"), str(sweep))
    assert first.status == "ok"
    assert second.status == "ok"
    all_runs = runs(store)
    parent = [r for r in all_runs if r.data.tags["bench.role"] == "parent"]
    children = [r for r in all_runs if r.data.tags["bench.role"] == "point"]
    assert len(parent) == 1 and len(children) == 2
    fp16 = next(c for c in children if c.data.params["precision"] == "fp16")
    assert fp16.data.params["backend.requested"] == "auto"
    assert fp16.data.params["backend"] == "inductor"  # onnxruntime has no fp16 on the CPU provider


def test_inductor_compiles_into_the_suite_cache_and_reports_a_hit_the_second_time(make_cfg, cache_dir):
    from bench.runner import run_point

    results = [run_point(make_cfg("backend=inductor", "precision=fp32", "raw_baseline=false")) for _ in range(2)]
    assert [r.status for r in results] == ["ok", "ok"], [r.reason for r in results]
    assert results[0].params["backend.cache_dir"] == str(cache_dir / "inductor")
    assert any((cache_dir / "inductor").rglob("*.py")), "no compiled code in the suite's cache"
    assert results[1].metrics["convert_cache_hit"] == 1.0


def test_a_single_run_is_a_run_of_its_own(tmp_path, cache_dir):
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    proc = run_cli("model=resnet18", "input=64x64", "timing=quick", "backend=pytorch", f"tracking.uri={store}",
                   f"cache_dir={cache_dir}", "tracking.experiment=single", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run,) = runs(store, "single")
    assert "mlflow.parentRunId" not in run.data.tags
    assert run.info.run_name == "resnet18/fp32/pytorch/64"


def test_default_store_is_mlflow_db_in_the_launch_directory(tmp_path, cache_dir):
    proc = run_cli("model=resnet18", "input=64x64", "timing=quick", "backend=pytorch", f"cache_dir={cache_dir}",
                   "raw_baseline=false", cwd=tmp_path, env={"MLFLOW_TRACKING_URI": ""})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "mlflow.db").is_file()
    assert len(runs(f"sqlite:///{tmp_path / 'mlflow.db'}")) == 1
