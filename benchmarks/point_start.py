"""What reaching the device costs: once per sweep (start the worker, ship the core, learn the device's facts)
and once per point (a fresh process forked from the worker, the device's fingerprint, the reply).

A point that does no work (pytorch int8: resolved as skipped on every device) is sent ``--points`` times;
its round trip is the per-point overhead every measurement pays before it builds a model.

    python benchmarks/point_start.py                                  # this interpreter
    python benchmarks/point_start.py --python /usr/bin/python3.6      # another interpreter
    python benchmarks/point_start.py --ssh testdevice --ssh-config ~/.ssh/config --python python3
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.controller.executors import Device  # noqa: E402
from bench.contract.protocol import PROTOCOL  # noqa: E402
from bench.contract.records import Plan  # noqa: E402


def idle_plan() -> dict:
    return {"protocol": PROTOCOL, "sweep": None,
            "model": {"name": "resnet18", "weights": "random", "bn_recalibration_batches": 0},
            "backend": {"name": "pytorch"}, "precision": "int8", "scenario": "latency",
            "input": {"height": 64, "width": 64, "batch_size": 1},
            "timing": {"warmup_iters": 0, "warmup_s": 0, "min_iters": 1, "min_s": 0, "include_copies": False,
                       "repeats": 1, "interval": 0.95, "unstable_spread": 0.05, "lock_clocks": False, "pin_cpu": True},
            "calibration": {"source": "random", "folder": None, "num_batches": 1, "seed": 0, "share_images": False},
            "accuracy": {"source": "random", "folder": None, "masks": None, "max_images": 1, "batches": 1,
                         "seed": 0},
            "energy": "off", "device": "cpu", "threads": None, "cudnn_benchmark": True, "raw_baseline": False,
            "cache_dir": "~/.cache/trt-bench", "seed": 0}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--python", help="the device's interpreter (default: this one; ssh: python3)")
    parser.add_argument("--ssh", metavar="HOST", help="measure over ssh on HOST")
    parser.add_argument("--ssh-config", metavar="FILE")
    parser.add_argument("--points", type=int, default=20)
    args = parser.parse_args()
    executor = {"kind": "ssh" if args.ssh else "local", "python": args.python, "host": args.ssh,
                "ssh_config": args.ssh_config, "connect_timeout_s": 15, "out": None}
    device = Device(executor)
    start = time.perf_counter()
    facts = device.start()
    started = time.perf_counter() - start
    try:
        (resolved,) = device.resolve([Plan.from_json(idle_plan())])
        times = []
        for _ in range(args.points):
            start = time.perf_counter()
            measurement = device.measure(resolved["plan"])
            times.append((time.perf_counter() - start) * 1e3)
            assert measurement.status == "skipped", measurement.to_json()
    finally:
        device.stop()
    print(f"{device.where}: Python {facts['python']}, torch {facts['packages'].get('torch')}, "
          f"{facts['devices'][0]['label']}")
    print("| step | time |\n|---|---|")
    print(f"| once per sweep: start the worker (ship the core), import torch, report the facts | {started:.2f} s |")
    print(f"| once per point: fork, fingerprint, reply (median of {args.points}) | {statistics.median(times):.0f} ms "
          f"(min {min(times):.0f}, max {max(times):.0f}) |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
