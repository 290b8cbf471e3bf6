import time

import numpy as np
import pytest
import torch

from bench.config import TimingConfig
from bench.timing import PERF_COUNTER, Timing, measure


def test_measures_a_known_sleep_within_ten_percent():
    timing = measure(lambda: time.sleep(0.02), TimingConfig(warmup_iters=1, warmup_s=0, min_iters=15, min_s=0),
                     batch_size=1, device=torch.device("cpu"))
    assert timing.method == PERF_COUNTER
    assert timing.stats()["latency_ms_median"] == pytest.approx(20.0, rel=0.10)


def test_stops_at_min_iters_when_duration_is_met():
    calls = []
    timing = measure(lambda: calls.append(1), TimingConfig(warmup_iters=3, warmup_s=0, min_iters=7, min_s=0),
                     batch_size=1, device=torch.device("cpu"))
    assert len(timing.latencies_ms) == 7
    assert len(calls) == 3 + 7


def test_runs_until_min_duration_when_iterations_are_met():
    start = time.perf_counter()
    timing = measure(lambda: time.sleep(0.005), TimingConfig(warmup_iters=0, warmup_s=0.1, min_iters=1, min_s=0.3),
                     batch_size=1, device=torch.device("cpu"))
    assert time.perf_counter() - start >= 0.4
    assert timing.latencies_ms.sum() >= 300 * 0.95
    assert len(timing.latencies_ms) > 10


def test_throughput_is_batch_over_mean_latency():
    stats = Timing(PERF_COUNTER, np.array([10.0, 20.0, 30.0, 40.0]), batch_size=8).stats()
    assert stats["throughput_ips"] == pytest.approx(8 * 1000 / 25.0)
    assert stats["latency_ms_median"] == 25.0
    assert stats["latency_ms_min"] == 10.0 and stats["latency_ms_max"] == 40.0
    assert stats["latency_ms_p90"] == pytest.approx(37.0)
    assert stats["iterations"] == 4
