"""Run the same sweep N times (fresh sweeps, one store) and show how far each point's figures move.

    python benchmarks/reproducibility.py --runs 5 --store /tmp/repro -- -m model=resnet18 input=64x64 \\
        backend=pytorch,onnxruntime precision=fp32,int8

Per point and figure it prints every run's value, max / min over the runs, and in how many runs the
recorded interval contains the N-run median (an interval that claims 95 % should, most of the time).
Figures: end-to-end latency, GPU compute time (CUDA), and the same-run speed-ups over eager fp32.
Also each run's wall time. ``--json`` writes everything for docs/results/.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.device.repeats import FIGURES  # noqa: E402
from bench.contract.names import CHILD, LABEL, ROLE, STATUS, SWEEP_ID  # noqa: E402
from bench.contract.protocol import OK  # noqa: E402
from bench.contract.names import RUN_NAME


def run_sweeps(runs: int, store: Path, args: list[str]) -> list[tuple[str, float]]:
    """(sweep label, wall seconds) of each run; every run is a new sweep into ``store``."""
    store.mkdir(parents=True, exist_ok=True)
    done = []
    for index in range(1, runs + 1):
        label = f"repro-{int(time.time())}-{index}"
        command = [sys.executable, str(ROOT / "run.py"), *args, f"tracking.uri=sqlite:///{store}/mlflow.db",
                   "resume=new", f"label={label}"]
        print(f"run {index} of {runs}: {' '.join(command[1:])}", file=sys.stderr, flush=True)
        start = time.perf_counter()
        finished = subprocess.run(command, cwd=store, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        wall = time.perf_counter() - start
        if finished.returncode not in (0, 1):
            print(finished.stderr[-3000:], file=sys.stderr)
            raise SystemExit(f"error: run {index} exited {finished.returncode}")
        print(f"run {index} of {runs}: {wall:.0f} s", file=sys.stderr, flush=True)
        done.append((label, wall))
    return done


def collect(stores: list[Path], labels: list[str]) -> dict[str, list[dict]]:
    """Point name -> one dict of metrics per run (in run order), ok points only, from any of ``stores``."""
    found: dict[str, list[dict]] = {}
    for label in labels:
        for store in stores:
            _collect(store, label, found)
    return found


def _collect(store: Path, label: str, found: dict[str, list[dict]]) -> None:
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{store if store.suffix == '.db' else store / 'mlflow.db'}")
    experiment_ids = [e.experiment_id for e in client.search_experiments()]
    parents = client.search_runs(experiment_ids, f"tags.`{LABEL}` = '{label}'")
    for sweep_id in {run.data.tags[SWEEP_ID] for run in parents if SWEEP_ID in run.data.tags}:
        children = client.search_runs(experiment_ids,
                                      f"tags.`{SWEEP_ID}` = '{sweep_id}' and tags.`{ROLE}` = '{CHILD}'")
        for run in children:
            if run.data.tags.get(STATUS) == OK:
                found.setdefault(run.data.tags[RUN_NAME], []).append(dict(run.data.metrics))


def summarise(points: dict[str, list[dict]]) -> list[dict]:
    rows = []
    for name in sorted(points):
        runs = points[name]
        for key, stem in FIGURES.items():
            values = [m[key] for m in runs if key in m]
            if len(values) != len(runs) or not values:
                continue
            centre = statistics.median(values)
            covered = sum(1 for m in runs if m.get(f"{stem}_lo", float("nan")) <= centre <= m.get(f"{stem}_hi",
                                                                                                  float("nan")))
            has_interval = all(f"{stem}_lo" in m for m in runs)
            rows.append({"point": name, "figure": key, "values": values, "max_min": max(values) / min(values),
                         "covered": covered if has_interval else None, "runs": len(values),
                         "process_spread": [m.get(f"{stem}_spread") for m in runs]})
    return rows


def table(rows: list[dict]) -> str:
    lines = ["| point | figure | per run | max/min | runs whose interval holds the median |", "|---|---|---|---|---|"]
    for row in rows:
        values = " / ".join(f"{v:.4g}" for v in row["values"])
        covered = "-" if row["covered"] is None else f"{row['covered']} of {row['runs']}"
        lines.append(f"| {row['point']} | {row['figure']} | {values} | {row['max_min']:.3f} | {covered} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--store", type=Path, required=True, action="append",
                        help="folder of the store the runs record into (its mlflow.db), or with --labels an "
                             "MLflow sqlite file too; repeat to read several")
    parser.add_argument("--json", type=Path, help="write the runs' figures and the summary here")
    parser.add_argument("--labels", nargs="*", help="summarise these earlier runs' labels instead of running")
    parser.add_argument("args", nargs="*", help="run.py's arguments (after --)")
    options = parser.parse_args()
    if options.runs < 1:
        print("error: --runs must be >= 1", file=sys.stderr)
        return 2
    stores = [store.resolve() for store in options.store]
    walls = [(label, None) for label in options.labels] if options.labels else \
        run_sweeps(options.runs, stores[0], options.args)
    rows = summarise(collect(stores, [label for label, _ in walls]))
    print(table(rows))
    if walls[0][1] is not None:
        print("\nwall time per run: " + ", ".join(f"{wall:.0f} s" for _, wall in walls))
    if options.json:
        options.json.write_text(json.dumps({"args": options.args, "runs": [{"label": label, "wall_s": wall}
                                                                            for label, wall in walls],
                                            "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
