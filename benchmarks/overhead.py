"""Overhead of the suite's timing path against bare timing loops, measured interleaved in one process.

The bare loops are the textbook measurements of the suite's two figures: end-to-end, the host's
clock around ``model(x)`` and a synchronise; on CUDA also GPU compute, a spin kernel queued first
and a pair of events around ``model(x)``. The suite's path is ``bench.device.timing.measure`` over
the pytorch backend's ``Converted.run``. Rounds alternate bare/suite so drift (clocks, temperature,
other load) hits both alike; the ratio of the pooled medians is printed per figure, and the exit
status is 1 when one is off by more than --tolerance.

    python benchmarks/overhead.py --model resnet18 --size 256 --device auto
"""
from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import torch

from bench.contract.records import Model, Timing
from bench.device.backends.base import ConversionRequest, Target
from bench.device.backends.pytorch import PytorchBackend
from bench.device.models import build_model
from bench.device.resolve import resolve_target
from bench.device.timing import Timed, measure

SPIN_CYCLES = 20_000_000  # about 10 ms of spinning on a 2 GHz GPU: far longer than queuing one call


def bare_end_to_end(model: torch.nn.Module, x: torch.Tensor, iters: int) -> list[float]:
    times = []
    for _ in range(iters):
        start = time.perf_counter_ns()
        model(x)
        if x.is_cuda:
            torch.cuda.synchronize()
        times.append((time.perf_counter_ns() - start) / 1e6)
    return times


def bare_gpu(model: torch.nn.Module, x: torch.Tensor, iters: int) -> list[float]:
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    times = []
    for _ in range(iters):
        torch.cuda._sleep(SPIN_CYCLES)
        start.record()
        model(x)
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
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
    model = build_model(Model(args.model), args.size, args.size, target.device, seed=0)
    x = torch.randn(1, 3, args.size, args.size, device=target.device)
    converted = PytorchBackend({}).convert(ConversionRequest(
        model=model, example=x, precision="fp32", target=target, cache_dir="", cache_key="", threads=None,
        calibration=list))
    settings = Timing(warmup_iters=0, warmup_s=0.0, min_iters=args.iters, min_s=0.0)
    synchronize = (lambda: torch.cuda.synchronize(target.device)) if target.is_cuda else (lambda: None)
    stream = torch.cuda.current_stream(target.device) if target.is_cuda else None
    figures = {"end-to-end": ([], []), **({"GPU compute": ([], [])} if target.is_cuda else {})}
    with torch.inference_mode():
        bare_end_to_end(model, x, args.iters)  # warm-up for both
        for round_ in range(args.rounds):  # alternate which loop goes first
            for loop in (("bare", "suite") if round_ % 2 == 0 else ("suite", "bare")):
                if loop == "bare":
                    figures["end-to-end"][0].extend(bare_end_to_end(model, x, args.iters))
                    if target.is_cuda:
                        figures["GPU compute"][0].extend(bare_gpu(model, x, args.iters))
                    continue
                timed = measure([Timed("suite", lambda: converted.run(x), stream)], settings, 1, "latency",
                                synchronize, on_cuda=target.is_cuda)["suite"]
                figures["end-to-end"][1].extend(timed.latencies_ms.tolist())
                if target.is_cuda:
                    figures["GPU compute"][1].extend(timed.gpu_ms.tolist())
    name = torch.cuda.get_device_name(target.device) if target.is_cuda else "CPU"
    print(f"{args.model} @ {args.size}x{args.size}, batch 1, fp32 eager, {name}, "
          f"{args.rounds} interleaved rounds x {args.iters} calls each")
    print("| figure | loop | median ms | p90 ms | samples |\n|---|---|---|---|---|")
    worst = 0.0
    for figure, (bare, suite) in figures.items():
        for label, values in (("bare", bare), ("suite (bench.device.timing.measure)", suite)):
            print(f"| {figure} | {label} | {np.median(values):.4f} | {np.percentile(values, 90):.4f} | {len(values)} |")
    for figure, (bare, suite) in figures.items():
        ratio = float(np.median(suite) / np.median(bare))
        worst = max(worst, abs(ratio - 1))
        verdict = "within" if abs(ratio - 1) <= args.tolerance else "OUTSIDE"
        print(f"{figure}: suite / bare median = {ratio:.4f} ({verdict} ±{args.tolerance:.0%})")
    return 0 if worst <= args.tolerance else 1


if __name__ == "__main__":
    sys.exit(main())
