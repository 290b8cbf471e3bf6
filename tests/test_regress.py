"""Regression detection on a synthetic nightly history, logged through the suite's own Tracker into a real
MLflow store exactly as run.py and bench.store.sync log points: ten nightlies with ±3 % noise, then a step."""
from __future__ import annotations

import math
import re
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from analysis import Selection
from analysis.findings import ACCURACY, FASTER, MISSING, NEW_FAILURE, NOISE, SLOWER, UNDER_LOAD, Rules
from analysis.judge import latency_verdict, nightly_points
from analysis.regress import check_regressions, main
from analysis.select import load_runs
from bench.contract.errors import ConfigError
from bench.contract.protocol import FAILED
from bench.store.tracking import Store
from synthetic import measurement, record_sweep, tracking

XAVIER = {"device.kind": "cuda", "device.name": "Xavier", "device.label": "Jetson Xavier NX", "device.cc": "7.2",
          "host.name": "xavier-01", "bench.commit": "test"}
XAVIER_2 = {**XAVIER, "host.name": "xavier-02"}  # a second board of the same kind: its own history
# name -> (model, backend, precision, input size, median ms, noise as a fraction)
SERIES = {
    "r18_fp16": ("resnet18", "torch2trt", "fp16", 256, 2.1, 0.03),
    "r18_int8": ("resnet18", "torch2trt", "int8", 256, 1.7, 0.03),
    "r50_fp16": ("resnet50", "torch2trt", "fp16", 256, 4.4, 0.03),
    "fcn_fp16": ("fcn_resnet50", "torch2trt", "fp16", 512, 36.0, 0.03),
}
RAW_MS = {"resnet18": 11.0, "resnet50": 16.0, "fcn_resnet50": 200.0}
START = datetime(2026, 11, 1, 1, 30, tzinfo=timezone.utc)


def log_nightly(uri: str, night: int, device: dict, values: dict[str, float],
                failed: dict[str, str] | None = None, agreement: dict[str, float] | None = None,
                rng: np.random.Generator | None = None) -> str:
    """One nightly as run.py records it (parent run + one run per point), dated ``night`` days after START."""
    rng = rng or np.random.default_rng(night)
    start_ms = int((START + timedelta(days=night)).timestamp() * 1000)
    made = []
    for i, (name, median) in enumerate(values.items()):
        model, backend, precision, size, _, _ = SERIES[name]
        when = start_ms + 1000 * (i + 1)
        if name in (failed or {}):
            made.append(measurement(device, model, backend, precision, size, status=FAILED, reason=failed[name],
                                    start_ms=when, requested="auto"))
            continue
        raw = RAW_MS[model] * (1 + rng.uniform(-0.03, 0.03))
        made.append(measurement(device, model, backend, precision, size, median, raw, start_ms=when,
                                agreement=(agreement or {}).get(name, 0.99),
                                rel_err=1e-2 if precision == "int8" else 1e-3, requested="auto",
                                samples=list(median * (1 + rng.normal(0, 0.01, 30))),
                                raw_samples=list(raw * (1 + rng.normal(0, 0.01, 30)))))
    return record_sweep(uri, f"{device['host.name']}-{night}", made, kind="nightly", started_ms=start_ms)


def noisy(night: int, names=tuple(SERIES), spread: float | None = None) -> dict[str, float]:
    """Every series at its median with uniform noise of ±3 % (or ``spread``), reproducible per night."""
    rng = np.random.default_rng(1000 + night)
    return {n: SERIES[n][4] * (1 + rng.uniform(-1, 1) * (spread if spread is not None else SERIES[n][5]))
            for n in names}


def history(uri: str, nights: int = 10, device: dict = XAVIER) -> None:
    for night in range(nights):
        log_nightly(uri, night, device, noisy(night))


@pytest.fixture(scope="module")
def step_store(tmp_path_factory) -> str:
    """Ten noisy nightlies; then resnet18 fp16 20 % slower and resnet50 fp16 20 % faster. The second board's
    resnet18 is twice as slow all along and unchanged: mixed into the first board's history it would shift it."""
    uri = f"sqlite:///{tmp_path_factory.mktemp('step') / 'mlflow.db'}"
    history(uri)
    for night in range(11):
        log_nightly(uri, night, XAVIER_2, {"r18_fp16": 4.2 * (1 + 0.03 * math.sin(night))})
    newest = noisy(10)
    newest["r18_fp16"] = SERIES["r18_fp16"][4] * 1.20
    newest["r50_fp16"] = SERIES["r50_fp16"][4] * 0.80
    log_nightly(uri, 10, XAVIER, newest)
    return uri


@pytest.fixture(scope="module")
def noise_store(tmp_path_factory) -> str:
    """Eleven nightlies of pure noise: a quiet series at ±3 %, and a noisy one at ±10 % whose newest value is
    7 % slower, above the 5 % threshold but well within its own spread (baseline median -0.5 %, robust sd 10 %)."""
    uri = f"sqlite:///{tmp_path_factory.mktemp('noise') / 'mlflow.db'}"
    spread = [-0.10, 0.08, -0.06, 0.09, -0.02, 0.05, -0.09, 0.01, -0.04, 0.10]
    for night in range(10):
        log_nightly(uri, night, XAVIER, {**noisy(night, ("r18_fp16",)), "fcn_fp16": 36.0 * (1 + spread[night])})
    log_nightly(uri, 10, XAVIER, {**noisy(10, ("r18_fp16",)), "fcn_fp16": 36.0 * 1.07})
    return uri


@pytest.fixture(scope="module")
def failing_store(tmp_path_factory) -> str:
    """Ten good nightlies; then resnet50 fp16 fails, resnet18 int8 agreement drops from 99 % to 95 %, and the
    fcn point is no longer in the grid."""
    uri = f"sqlite:///{tmp_path_factory.mktemp('failing') / 'mlflow.db'}"
    history(uri)
    log_nightly(uri, 10, XAVIER, noisy(10, ("r18_fp16", "r18_int8", "r50_fp16")),
                failed={"r50_fp16": "RuntimeError: engine build failed: out of memory"}, agreement={"r18_int8": 0.95})
    return uri


def kinds(result) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for f in result.findings:
        found.setdefault(f.kind, set()).add(f"{f.series[0]}:{f.series[2]}/{f.series[4]}/{f.series[3]}")
    return found


@pytest.mark.parametrize("test", ["mad", "mannwhitney"])
def test_a_20_percent_step_flags_exactly_that_series(step_store, test):
    result = check_regressions(Selection(kind="nightly"), step_store, Rules(test=test))
    assert kinds(result) == {SLOWER: {"xavier-01:resnet18/fp16/torch2trt"},
                             FASTER: {"xavier-01:resnet50/fp16/torch2trt"}}, result.render()
    assert result.exit_code == 3 and result.status == "regression"
    (slower,) = result.regressions
    assert slower.baseline == pytest.approx(2.1, rel=0.03) and slower.new == pytest.approx(2.52)
    assert slower.change == pytest.approx(0.2, abs=0.03)
    assert len(slower.history) == 10  # the previous ten nightlies
    # Both boards judged, each against its own ten nightlies; raw (eager fp32) is a series of its own.
    assert {(n.host, len(n.baseline)) for n in result.nightlies} == {("xavier-01", 10), ("xavier-02", 10)}
    assert result.compared == 4 + 3 + 2  # board 1: four points, three raw series; board 2: one point, one raw
    text = result.render("text")
    evidence = "robust z" if test == "mad" else "Mann-Whitney p ="
    assert evidence in slower.evidence and "change +2" in slower.evidence
    assert "more than 5% from the baseline median" in text and "previous 10 nightly(s)" in text
    assert "Result: 1 regression(s), 1 improvement(s); 9 series compared" in text


def test_pure_noise_flags_nothing_and_the_noise_test_is_what_keeps_it_quiet(noise_store):
    result = check_regressions(Selection(kind="nightly"), noise_store)
    assert result.regressions == [] and result.improvements == [], result.render()
    assert result.exit_code == 0 and result.status == "ok"
    (noise,) = [f for f in result.findings if f.kind == NOISE]  # listed, with its evidence, but not flagged
    assert noise.series[2] == "fcn_resnet50" and noise.change == pytest.approx(0.07, abs=0.03)
    assert "robust z +" in noise.evidence
    # The threshold alone would have woken someone up; the series' own spread is what says "noise".
    loud = check_regressions(Selection(kind="nightly"), noise_store, Rules(z=0.01))
    assert [f.series[2] for f in loud.regressions] == ["fcn_resnet50"]


@pytest.mark.parametrize("spread, false_alarms, step_found", [(0.03, 0.002, 1.0), (0.10, 0.06, 0.4)])
def test_the_mad_rule_on_simulated_series(spread, false_alarms, step_found):
    """Many simulated series, ten baseline nightlies each: how often pure noise is flagged, and a 20 % step found."""
    rng = np.random.default_rng(7)
    rules = Rules()
    noise = [latency_verdict(1 + rng.uniform(-spread, spread, 10), 1 + rng.uniform(-spread, spread), rules)[0]
             for _ in range(2000)]
    steps = [latency_verdict(1 + rng.uniform(-spread, spread, 10), 1.2 * (1 + rng.uniform(-spread, spread)), rules)[0]
             for _ in range(500)]
    assert np.mean([v in (SLOWER, FASTER) for v in noise]) < false_alarms
    assert np.mean([v == SLOWER for v in steps]) >= step_found
    if spread > rules.threshold:  # the threshold alone would flag about half of the noisy nights
        assert np.mean([v is not None for v in noise]) > 0.4


def test_a_point_that_starts_failing_and_an_accuracy_drop_are_regressions(failing_store):
    result = check_regressions(Selection(kind="nightly"), failing_store)
    found = kinds(result)
    assert found[NEW_FAILURE] == {"xavier-01:resnet50/fp16/torch2trt"}
    assert found[ACCURACY] == {"xavier-01:resnet18/int8/torch2trt"}
    # Raw comes from a nightly's ok runs: with resnet50's only point failing, its raw series is missing too.
    assert found[MISSING] == {"xavier-01:fcn_resnet50/fp16/torch2trt", "xavier-01:fcn_resnet50/fp32/raw",
                              "xavier-01:resnet50/fp32/raw"}
    assert SLOWER not in found and result.exit_code == 3
    failure = next(f for f in result.regressions if f.kind == NEW_FAILURE)
    assert "engine build failed: out of memory" in failure.evidence and "previous nightly" in failure.evidence
    drop = next(f for f in result.regressions if f.kind == ACCURACY)
    assert (drop.metric, drop.baseline, drop.new) == ("acc_top1_agreement", 0.99, 0.95)
    markdown = result.render("markdown")
    assert "### Regressions (2)" in markdown and "| 99.0 % | 95.0 % | -4.0 points |" in markdown


def test_cli_summary_exit_code_and_history_plots(step_store, tmp_path, capsys):
    assert main(["--tracking-uri", step_store, "--format", "markdown", "--plots", str(tmp_path / "plots")]) == 3
    out = capsys.readouterr().out
    assert re.search(r"\| resnet18/fp16/torch2trt/256 on Jetson Xavier NX \(xavier-01\) \| slower \| "
                     r"latency_ms_median \| 2\.\d+ ms \| 2\.52 ms \| \+2\d\.\d% \| robust z \+\d+", out), out
    assert {p.name for p in (tmp_path / "plots").iterdir()} == {
        "resnet18-fp16-torch2trt-256-on-jetson-xavier-nx-xavier-01_latency-ms-median.png",
        "resnet50-fp16-torch2trt-256-on-jetson-xavier-nx-xavier-01_latency-ms-median.png"}
    # A filter narrows the series: without resnet18 nothing regressed.
    assert main(["--tracking-uri", step_store, "--model", "resnet50"]) == 0
    assert "0 regression(s), 1 improvement(s)" in capsys.readouterr().out


def test_an_older_nightly_is_judged_against_the_nightlies_before_it(step_store):
    runs = load_runs(Selection(kind="nightly", devices=("xavier-01",)), step_store)
    points = nightly_points(runs)
    fifth = points.sort_values("sweep_time")["sweep"].drop_duplicates().iloc[4]
    result = check_regressions(Selection(kind="nightly"), step_store, newest=fifth)
    assert [len(n.baseline) for n in result.nightlies] == [4] and result.exit_code == 0
    assert result.regressions == [] and result.improvements == []


def test_no_history_yet_is_exit_0_with_no_baseline(tmp_path, capsys):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    Store(tracking(uri))  # a store with the experiment and no nightly yet
    assert main(["--tracking-uri", uri]) == 0
    out = capsys.readouterr().out
    assert "No nightly runs yet in experiment 'trt-bench'" in out and "no baseline yet" in out

    log_nightly(uri, 0, XAVIER, noisy(0))  # the first nightly: nothing to compare with
    result = check_regressions(Selection(kind="nightly"), uri)
    assert result.status == "no baseline" and result.exit_code == 0 and result.findings == []
    assert "none (this is its first nightly): no baseline yet" in result.render()
    log_nightly(uri, 1, XAVIER, noisy(1))  # the second: status is compared, latency needs 3 nightlies
    result = check_regressions(Selection(kind="nightly"), uri)
    assert result.exit_code == 0 and result.compared == 0 and len(result.no_baseline) == 4 + 3


@pytest.mark.parametrize("args, message", [
    (["--model", "resnet181"], "no runs match model=resnet181 (the selection has model: "),
    (["--device", "nano"], "no runs match device=nano"),
    (["--precision", "fp8"], "precision 'fp8' is not one of"),
    (["--sweep", "0" * 32], "no such sweep"),
    (["--threshold", "-5"], "threshold=-0.05 must be a fraction >= 0"),
    (["--window", "2", "--min-baseline", "3"], "min_baseline=3 must be between 1 and window=2"),
])
def test_bad_input_is_one_line_and_exit_2(step_store, capsys, args, message):
    assert main(["--tracking-uri", step_store, *args]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and err.startswith("error: ") and message in err, err


def test_rules_name_the_bad_value():
    with pytest.raises(ConfigError, match="test 'ttest' is not one of: mad, mannwhitney"):
        check_regressions(rules=Rules(test="ttest"))


def test_a_slower_nightly_measured_on_a_throttled_gpu_is_reported_not_counted(tmp_path):
    """Ten good nights; the eleventh is 20 % slower but its run says the GPU was throttling: no regression."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    history(uri)
    newest = noisy(10)
    newest["r18_fp16"] = SERIES["r18_fp16"][4] * 1.20
    parent = log_nightly(uri, 10, XAVIER, newest)
    client = MlflowClient(uri)
    (run,) = [r for r in client.search_runs([client.get_run(parent).info.experiment_id],
                                            f"tags.`mlflow.parentRunId` = '{parent}'")
              if r.info.run_name == "resnet18/fp16/torch2trt/256"]
    client.set_tag(run.info.run_id, "bench.conditions", "throttled: sw_thermal_slowdown")
    result = check_regressions(Selection(kind="nightly"), uri)
    assert result.regressions == [] and result.exit_code == 0, result.render()
    (under_load,) = [f for f in result.findings if f.kind == UNDER_LOAD]
    assert under_load.series[2] == "resnet18" and under_load.evidence.startswith("throttled: sw_thermal_slowdown; ")
    assert "measured under load / throttled" in result.render()


def gpu_history(uri: str, newest_gpu_ms: float) -> None:
    """Eleven nightlies of a CUDA point whose end-to-end latency carries the host's jitter (±25 %) while its GPU
    compute time holds within ±1 %; the newest nightly's GPU compute time is ``newest_gpu_ms``."""
    rng = np.random.default_rng(7)
    for night in range(11):
        made = measurement(XAVIER, "resnet18", "torch2trt", "fp16", 256, 2.1 * (1 + rng.uniform(-0.25, 0.25)), 11.0,
                           start_ms=int((START + timedelta(days=night)).timestamp() * 1000) + 1000)
        gpu = newest_gpu_ms if night == 10 else 1.0 * (1 + rng.uniform(-0.01, 0.01))
        made.metrics.update(gpu_ms_median=gpu, raw_gpu_ms_median=3.0, gpu_speedup=3.0 / gpu)
        record_sweep(uri, f"xavier-01-{night}", [made], kind="nightly",
                     started_ms=int((START + timedelta(days=night)).timestamp() * 1000))


@pytest.mark.parametrize("newest, slower", [(1.10, True), (1.0, False)])
def test_a_cuda_series_is_judged_on_its_gpu_compute_time(tmp_path, newest, slower):
    """A 10 % slower GPU compute time is caught beneath end-to-end noise that would hide it; unchanged, nothing
    is flagged however the end-to-end figure wanders."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    gpu_history(uri, newest)
    result = check_regressions(Selection(kind="nightly"), uri)
    latency = [f for f in result.findings if f.kind in (SLOWER, FASTER, NOISE)
               and f.series[3] == "torch2trt"]
    if slower:
        (finding,) = latency
        assert finding.kind == SLOWER and finding.metric == "gpu_ms_median"
        assert finding.change == pytest.approx(0.10, abs=0.015)
    else:
        assert latency == [] and result.exit_code == 0
