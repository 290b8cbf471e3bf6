"""The timing loop times what it is given, honours both minimums, and reports each scenario's numbers."""
import time

import numpy as np
import pytest

from bench.measure.timing import HOST_CLOCK, WINDOW_WALL_CLOCK, Timing, cv_unstable, measure


def settings(**changes) -> dict:
    return {"warmup_iters": 1, "warmup_s": 0, "min_iters": 15, "min_s": 0, "include_copies": False,
            "unstable_cv": 0.1, **changes}


def no_sync() -> None:
    pass


def test_measures_a_known_sleep_within_ten_percent():
    timing = measure(lambda: time.sleep(0.02), settings(), 1, "latency", no_sync)
    assert timing.method == HOST_CLOCK
    assert timing.stats()["latency_ms_median"] == pytest.approx(20.0, rel=0.10)


def test_stops_at_min_iters_when_duration_is_met():
    calls = []
    timing = measure(lambda: calls.append(1), settings(warmup_iters=3, min_iters=7), 1, "latency", no_sync)
    assert len(timing.latencies_ms) == 7
    assert len(calls) == 3 + 7


def test_runs_until_min_duration_when_iterations_are_met():
    start = time.perf_counter()
    timing = measure(lambda: time.sleep(0.005), settings(warmup_iters=0, warmup_s=0.1, min_iters=1, min_s=0.3), 1,
                     "latency", no_sync)
    assert time.perf_counter() - start >= 0.4
    assert timing.latencies_ms.sum() >= 300 * 0.95
    assert len(timing.latencies_ms) > 10


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
    timing = measure(lambda: (calls.append(1), time.sleep(0.002)), settings(min_iters=200, min_s=0.3), 4,
                     "throughput", lambda: syncs.append(1))
    stats = timing.stats()
    assert timing.method == WINDOW_WALL_CLOCK
    measured = stats["iterations"]
    assert measured >= 200 and timing.wall_s >= 0.3
    assert stats["windows"] < measured / 10  # windows of ~0.1 s hold many calls, one sync each
    assert len(syncs) >= stats["windows"]
    assert stats["throughput_ips"] == pytest.approx(4 * measured / timing.wall_s)
    assert stats["throughput_ips"] == pytest.approx(4 * 1000 / 2.0, rel=0.25)  # 2 ms a call, 4 images a call
    assert stats["latency_ms_median"] == pytest.approx(2.0, rel=0.25)  # per call, from each window


def test_a_run_is_unstable_above_its_cv_threshold():
    assert cv_unstable(0.12, 0.10) == "latency CV 12.0% above 10%"
    assert cv_unstable(0.05, 0.10) is None and cv_unstable(5.0, 0) is None
