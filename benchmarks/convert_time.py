"""Conversion time of one point, cold then warm: what a second run of the same point costs.

Runs ``run.py`` as a user does, several times into one scratch store with one fresh cache folder: the first
run converts from nothing, the later ones find the suite's cache (ONNX files, Inductor's and Triton's caches)
filled. Prints each run's ``convert_s``, the compiler's own share of it (``backend.compile.compiler_s``,
torch.compile only) and the rest (first calls: cuDNN autotuning, CUDA graph recording), then warm / cold.

    python benchmarks/convert_time.py model=resnet50 precision=fp16 backend=inductor input=224x224
    python benchmarks/convert_time.py --warm 2 --then cudnn_benchmark=false model=resnet50 precision=fp16
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from mlflow.tracking import MlflowClient
from bench.contract.names import BACKEND_VARIANT, CONVERT_CACHE_HIT, CONVERT_S, DEVICE_LABEL

ROOT = Path(__file__).resolve().parent.parent


def convert(overrides: list[str], store: str, cache: Path) -> dict:
    """One run of the point; its convert_s, the compiler's share and whether the cache was hit."""
    proc = subprocess.run([sys.executable, str(ROOT / "run.py"), *overrides, f"tracking.uri={store}",
                           f"cache_dir={cache}", "resume=new", "raw_baseline=false"],
                          cwd=cache.parent, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"error: run.py {' '.join(overrides)} failed:\n{proc.stderr[-3000:]}")
    client = MlflowClient(store)
    (run,) = client.search_runs([client.get_experiment_by_name("trt-bench").experiment_id],
                                "tags.`bench.role` = 'point'", order_by=["attributes.start_time DESC"],
                                max_results=1)
    tags = run.data.tags
    compiler = tags.get("backend.compile.compiler_s")
    return {CONVERT_S: run.data.metrics[CONVERT_S], "compiler_s": float(compiler) if compiler else None,
            "import_s": tags.get("backend.compile.import_s", ""), "calls_s": tags.get("backend.compile.calls_s", ""),
            "cache_hit": bool(run.data.metrics.get(CONVERT_CACHE_HIT, 0)), "variant": run.data.params.get(
                BACKEND_VARIANT), "device": run.data.tags.get(DEVICE_LABEL)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("overrides", nargs="+", help="run.py overrides that name one point")
    parser.add_argument("--warm", type=int, default=2, help="warm runs after the cold one (default: %(default)s)")
    parser.add_argument("--then", action="append", default=[], metavar="OVERRIDE",
                        help="one more warm run with this override added (repeatable), to see a setting's share")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        store, cache = f"sqlite:///{scratch}/mlflow.db", Path(scratch) / "cache"
        runs = []
        plan = [("cold", []), *[(f"warm {i + 1}", []) for i in range(args.warm)],
                *[(f"warm, {extra}", [extra]) for extra in args.then]]
        for number, (label, extra) in enumerate(plan, 1):
            print(f"[{number}/{len(plan)}] {label} ...", file=sys.stderr, flush=True)
            runs.append((label, convert([*args.overrides, *extra], store, cache)))
    first = runs[0][1]
    print(f"{' '.join(args.overrides)} on {first['device']} ({first['variant']}); run.py each time, "
          "one cache folder, fresh before the first run")
    print("convert_s = import_s (Inductor, Triton) + the first calls (calls_s: compile, then CUDA graph warm-up "
          "and recording); compiler_s is the compiler's share of the first call")
    print(f"{'run':<28} {CONVERT_S:>9} {'import_s':>8} {'compiler_s':>10}  {'calls_s':<18} cache hit")
    for label, run in runs:
        compiler = run["compiler_s"]
        print(f"{label:<28} {run[CONVERT_S]:>9.2f} {run['import_s']:>8} "
              f"{compiler if compiler is not None else float('nan'):>10.2f}  {run['calls_s']:<18} {run['cache_hit']}")
    warm = [run[CONVERT_S] for label, run in runs[1:1 + args.warm]]
    if warm:
        print(f"warm / cold = {statistics.median(warm) / first[CONVERT_S]:.3f} "
              f"(median of {len(warm)} warm run(s); target <= 0.2)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
