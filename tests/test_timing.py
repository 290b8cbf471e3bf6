"""The timing loop times what it is given, honours both minimums, interleaves series, and reports each
scenario's numbers; the statistics across processes (intervals, spread, instability) are right."""
import math
import time

import numpy as np
import pytest
from scipy import stats as scipy_stats

from bench.contract import records
from synthetic import plan
from bench.device import repeats
from bench.device.timing import HOST_CLOCK, ROUNDS, WINDOW_WALL_CLOCK, Timed, Timing, measure


def settings(**changes) -> records.Timing:
    return records.Timing(**{"warmup_iters": 1, "warmup_s": 0, "min_iters": 15, "min_s": 0, "include_copies": False,
                             "repeats": 1, "interval": 0.95, "unstable_spread": 0.05, "lock_clocks": False,
                             "pin_cpu": True, **changes})


def no_sync() -> None:
    pass


def one(fn, timing: records.Timing, batch: int = 1, scenario: str = "latency", sync=no_sync) -> Timing:
    return measure([Timed("variant", fn)], timing, batch, scenario, sync)["variant"]


def test_measures_a_known_sleep_within_ten_percent():
    timing = one(lambda: time.sleep(0.02), settings())
    assert timing.method == HOST_CLOCK
    assert timing.stats()["latency_ms_median"] == pytest.approx(20.0, rel=0.10)
    assert "gpu_ms_median" not in timing.stats()  # the CPU has one figure, end-to-end


def test_stops_at_min_iters_when_duration_is_met():
    calls = []
    timing = one(lambda: calls.append(1), settings(warmup_iters=3, min_iters=7))
    assert len(timing.latencies_ms) == 7
    assert len(calls) == 3 + 7


def test_runs_until_min_duration_when_iterations_are_met():
    start = time.perf_counter()
    timing = one(lambda: time.sleep(0.005), settings(warmup_iters=0, warmup_s=0.1, min_iters=1, min_s=0.3))
    assert time.perf_counter() - start >= 0.4
    assert timing.latencies_ms.sum() >= 300 * 0.95
    assert len(timing.latencies_ms) > 10


def test_two_series_alternate_in_rounds_and_each_gets_the_minimums():
    order = []
    timed = measure([Timed("variant", lambda: order.append("v")), Timed("raw", lambda: order.append("r"))],
                    settings(warmup_iters=2, min_iters=8), 1, "latency", no_sync)
    assert len(timed["variant"].latencies_ms) >= 8 and len(timed["raw"].latencies_ms) >= 8
    switches = sum(1 for a, b in zip(order, order[1:]) if a != b)
    assert switches >= 2 * ROUNDS - 1  # v..r..v..r.. : the two series take turns, not one after the other


def test_a_slow_phase_of_the_machine_slows_both_interleaved_series_alike():
    """A drift (the machine slowing down halfway) changes both medians, not their ratio."""
    started = time.perf_counter()

    def slowed(base: float):
        return lambda: time.sleep(base * (2.0 if time.perf_counter() - started > 0.6 else 1.0))

    timed = measure([Timed("variant", slowed(0.002)), Timed("raw", slowed(0.006))],
                    settings(warmup_iters=0, min_iters=1, min_s=1.2), 1, "latency", no_sync)
    ratio = timed["raw"].stats()["latency_ms_mean"] / timed["variant"].stats()["latency_ms_mean"]
    assert ratio == pytest.approx(3.0, rel=0.25)


def test_throughput_is_batch_over_mean_latency_in_the_latency_scenario():
    stats = Timing(HOST_CLOCK, [10.0, 20.0, 30.0, 40.0], 8, 4, 0.1, "latency").stats()
    assert stats["throughput_ips"] == pytest.approx(8 * 1000 / 25.0)
    assert stats["latency_ms_median"] == 25.0
    assert stats["latency_ms_min"] == 10.0 and stats["latency_ms_max"] == 40.0
    assert stats["latency_ms_p90"] == pytest.approx(37.0)
    assert stats["iterations"] == 4
    assert stats["latency_cv"] == pytest.approx(np.std([10, 20, 30, 40], ddof=1) / 25.0)


def test_the_throughput_scenario_syncs_once_per_window_and_counts_images_over_wall_time():
    calls, syncs = [], []
    timing = one(lambda: (calls.append(1), time.sleep(0.002)), settings(min_iters=200, min_s=0.3), 4, "throughput",
                 lambda: syncs.append(1))
    stats = timing.stats()
    assert timing.method == WINDOW_WALL_CLOCK
    measured = stats["iterations"]
    assert measured >= 200 and timing.wall_s >= 0.3
    assert stats["windows"] < measured / 10  # windows of ~0.1 s hold many calls, one sync each
    assert len(syncs) >= stats["windows"]
    assert stats["throughput_ips"] == pytest.approx(4 * measured / timing.wall_s)
    assert stats["throughput_ips"] == pytest.approx(4 * 1000 / 2.0, rel=0.25)  # 2 ms a call, 4 images a call
    assert stats["latency_ms_median"] == pytest.approx(2.0, rel=0.25)  # per call, from each window


@pytest.mark.parametrize("df", [1, 2, 3, 4, 7, 30])
@pytest.mark.parametrize("level", [0.5, 0.9, 0.95, 0.99])
def test_the_t_quantile_is_students(df, level):
    assert repeats.t_quantile(level, df) == pytest.approx(scipy_stats.t.ppf((1 + level) / 2, df), rel=1e-6)


def test_the_interval_of_one_process_median_holds_the_median_of_its_calls_at_its_level():
    rng = np.random.default_rng(0)
    covered = 0
    for _ in range(400):
        calls = rng.lognormal(0.0, 0.5, 101)
        low, high = repeats.median_interval(calls, 0.9)
        covered += low <= 1.0 <= high  # the true median of the lognormal is 1
    assert 0.85 <= covered / 400 <= 0.97


def test_the_interval_over_processes_holds_their_true_centre_at_its_level():
    rng = np.random.default_rng(1)
    hits = sum(low <= 2.0 <= high for low, high in
               (repeats.process_interval(2.0 * np.exp(rng.normal(0, 0.05, 3)), 0.95) for _ in range(1000)))
    assert 0.92 <= hits / 1000 <= 0.98


def process(median: float, raw: float, calls: int = 20) -> records.Measurement:
    """One process's measurement as point.measure returns it (figures only)."""
    made = records.Measurement(records.Plan.from_json(plan("resnet18", "pytorch", "fp16", 64, {"device.label": "x"})),
                               {})
    made.update(status="ok", latencies_ms=[median] * calls, raw_latencies_ms=[raw] * calls,
                metrics={"latency_ms_median": median, "raw_latency_ms_median": raw, "speedup": raw / median,
                         "iterations": float(calls), "latency_cv": 0.0})
    return made


def test_a_point_is_the_median_of_its_processes_with_interval_and_spread():
    combined = repeats.combine([process(1.0, 5.0), process(1.1, 5.2), process(0.95, 5.1)],
                               settings(repeats=3)).to_json()
    m = combined["metrics"]
    assert m["latency_ms_median"] == 1.0 and m["raw_latency_ms_median"] == 5.1
    assert m["speedup"] == pytest.approx(5.0)  # the median of the processes' own speed-ups
    assert m["latency_ms_spread"] == pytest.approx(1.1 / 0.95)
    assert m["latency_ms_lo"] < 1.0 < m["latency_ms_hi"] and m["repeats"] == 3
    logs = np.log([1.0, 1.1, 0.95])
    half = scipy_stats.t.ppf(0.975, 2) * logs.std(ddof=1) / math.sqrt(3)
    assert m["latency_ms_hi"] == pytest.approx(math.exp(logs.mean() + half))  # around the geometric mean
    assert m["iterations"] == 60 and combined["calls_per_process"]["latencies_ms"] == [20, 20, 20]
    assert [row["latency_ms_median"] for row in combined["repeats"]] == [1.0, 1.1, 0.95]
    assert "differ by 7.4% (robust spread" in combined["details"]["timing.unstable"]  # 1.4826 x MAD 0.05 / median 1.0


def test_processes_that_disagree_make_the_point_unstable_and_a_tail_inside_one_does_not():
    agree = repeats.combine([process(1.0, 5.0), process(1.01, 5.0), process(0.99, 5.0)],
                            settings(repeats=3)).to_json()
    assert "timing.unstable" not in agree["details"]
    assert agree["details"]["timing.stability"].startswith("judged from 3 processes")
    disagree = repeats.combine([process(1.0, 5.0), process(1.3, 5.0), process(0.8, 5.0)],
                               settings(repeats=3)).to_json()
    assert "processes' end-to-end latencies differ by" in disagree["details"]["timing.unstable"]
    single = repeats.combine([process(1.0, 5.0)], settings()).to_json()
    assert single["details"]["timing.stability"] == "not judged: one process (timing.repeats=1)"
    assert "timing.unstable" not in single["details"] and "latency_ms_spread" not in single["metrics"]


def test_a_figure_some_processes_could_not_measure_is_no_figure_of_the_point():
    held = process(1.0, 5.0)
    held.metrics.update(gpu_ms_median=0.5, raw_gpu_ms_median=2.0, gpu_speedup=4.0, gpu_hold_fraction=1.0)
    held.gpu_ms, held.raw_gpu_ms = [0.5] * 20, [2.0] * 20
    combined = repeats.combine([held, process(1.0, 5.0)], settings(repeats=2)).to_json()
    assert not [key for key in combined["metrics"] if key.startswith(("gpu_", "raw_gpu_"))]
    assert combined["gpu_ms"] == [] and "1 of 2 processes" in combined["details"]["timing.gpu"]
