"""Overhead of the suite's timing path against a bare timing loop, measured interleaved in one process.

The bare loop is the textbook measurement: on CUDA a pair of events around ``model(x)`` and a
synchronise per call; on the CPU ``perf_counter`` around the call. The suite's path is
``bench.measure.timing.measure`` over the pytorch backend's ``Converted.run``. Rounds alternate
bare/suite so drift (clocks, temperature, other load) hits both alike; the ratio of the pooled
medians is printed, and the exit status is 1 when it is off by more than --tolerance.

    python benchmarks/overhead.py --model resnet18 --size 256 --device auto
"""
from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import torch

from bench.measure.backends.base import ConversionRequest, Target
from bench.measure.backends.pytorch import PytorchBackend
from bench.measure.models import build_model
from bench.measure.resolve import resolve_target
from bench.measure.timing import measure


def bare_loop(model: torch.nn.Module, x: torch.Tensor, iters: int) -> list[float]:
    times = []
    if x.is_cuda:
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        for _ in range(iters):
            start.record()
            model(x)
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
    else:
        for _ in range(iters):
            t0 = time.perf_counter()
            model(x)
            times.append((time.perf_counter() - t0) * 1e3)
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--iters", type=int, default=100, help="timed calls per round and per loop")
    parser.add_argument("--tolerance", type=float, default=0.02)
    args = parser.parse_args()

    target: Target = resolve_target(args.device)
    torch.backends.cudnn.benchmark = True  # as the suite runs
    model = build_model({"name": args.model, "weights": "random", "bn_recalibration_batches": 8}, args.size,
                        args.size, target.device, seed=0)
    x = torch.randn(1, 3, args.size, args.size, device=target.device)
    converted = PytorchBackend({}).convert(ConversionRequest(
        model=model, example=x, precision="fp32", target=target, cache_dir="", cache_key="", threads=None,
        calibration=list))
    settings = {"warmup_iters": 0, "warmup_s": 0.0, "min_iters": args.iters, "min_s": 0.0}
    synchronize = (lambda: torch.cuda.synchronize(target.device)) if target.is_cuda else (lambda: None)
    bare: list[float] = []
    suite: list[float] = []
    with torch.inference_mode():
        bare_loop(model, x, args.iters)  # warm-up for both
        for round_ in range(args.rounds):  # alternate which loop goes first
            for loop in (("bare", "suite") if round_ % 2 == 0 else ("suite", "bare")):
                if loop == "bare":
                    bare += bare_loop(model, x, args.iters)
                else:
                    suite += measure(lambda: converted.run(x), settings, 1, "latency", synchronize,
                                     on_cuda=target.is_cuda).latencies_ms.tolist()
    bare_median, suite_median = float(np.median(bare)), float(np.median(suite))
    ratio = suite_median / bare_median
    method = "CUDA events, sync per call" if target.is_cuda else "perf_counter"
    name = torch.cuda.get_device_name(target.device) if target.is_cuda else "CPU"
    print(f"{args.model} @ {args.size}x{args.size}, batch 1, fp32 eager, {name}, {method}, "
          f"{args.rounds} interleaved rounds x {args.iters} calls each")
    print("| loop | median ms | p90 ms | samples |\n|---|---|---|---|")
    for label, values in (("bare", bare), ("suite (bench.measure.timing.measure)", suite)):
        print(f"| {label} | {np.median(values):.4f} | {np.percentile(values, 90):.4f} | {len(values)} |")
    verdict = "within" if abs(ratio - 1) <= args.tolerance else "OUTSIDE"
    print(f"suite / bare median = {ratio:.4f} ({verdict} ±{args.tolerance:.0%})")
    return 0 if abs(ratio - 1) <= args.tolerance else 1


if __name__ == "__main__":
    sys.exit(main())
