"""What the nightly regression check can catch on a device, from that device's own recorded runs.

    python benchmarks/regression_power.py --store docs/results/h200-repro-1.db --store docs/results/h200-repro-2.db

For each point recorded several times (reproducibility runs, or nightlies), the per-process medians of
every run (``repeats.csv``) are kept per run. A simulated night draws one of the recorded runs, then
``--repeats`` of its processes (with replacement, keeping each process's end-to-end and GPU compute
figures together), and takes their median, as a sweep does: processes of one run share that minute's
machine, which a draw across all runs would hide. The check of ``analysis.judge`` (GPU compute where measured, robust z over
``--window`` baseline nights and the relative threshold) then judges a new night slowed by 0 / 5 / 10
/ 20 % against a fresh baseline, ``--trials`` times: detection rate per slowdown, false-alarm rate at 0.
Run from the repository's root (the committed stores keep their artifacts at paths relative to it).
"""
from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from analysis.findings import SLOWER, Rules  # noqa: E402
from analysis.judge import judged_figure, latency_verdict  # noqa: E402
from bench.contract.names import CHILD, ROLE, STATUS  # noqa: E402
from bench.contract.protocol import OK  # noqa: E402
from bench.contract.names import DEVICE_LABEL, GPU_MS, LATENCY_MS

SLOWDOWNS = (0.0, 0.05, 0.10, 0.20)
FIGURES = (LATENCY_MS, GPU_MS)


def process_rows(stores: list[Path]) -> dict[tuple[str, str], pd.DataFrame]:
    """(device, point name) -> every recorded process's figures (one row per process, all runs pooled)."""
    from mlflow.tracking import MlflowClient

    found: dict[tuple[str, str], list[pd.DataFrame]] = {}
    for store in stores:
        client = MlflowClient(f"sqlite:///{store.resolve()}")
        for experiment in client.search_experiments():
            for run in client.search_runs([experiment.experiment_id], f"tags.`{ROLE}` = '{CHILD}'", max_results=5000):
                if run.data.tags.get(STATUS) != OK:
                    continue
                try:
                    text = Path(client.download_artifacts(run.info.run_id, "repeats.csv")).read_text()
                except Exception:  # noqa: BLE001 - a run recorded before repeats existed has no table
                    continue
                key = (run.data.tags.get(DEVICE_LABEL, "?"), run.info.run_name)
                found.setdefault(key, []).append(pd.read_csv(io.StringIO(text)).assign(run=run.info.run_id))
    return {key: pd.concat(frames, ignore_index=True) for key, frames in found.items()}


def by_run(rows: pd.DataFrame) -> list[pd.DataFrame]:
    """The recorded processes grouped by their run, once, in the order the runs were read."""
    return [group.reset_index(drop=True) for _, group in rows.groupby("run", sort=False)]


def simulated_night(runs: list[pd.DataFrame], repeats: int, rng: np.random.Generator) -> dict[str, float]:
    """One night: a recorded run drawn at random, then ``repeats`` of its processes drawn with replacement, so the
    night keeps what the processes of one run share (the machine's state that minute)."""
    mine = runs[rng.integers(0, len(runs))]
    drawn = mine.iloc[rng.integers(0, len(mine), repeats)]
    return {figure: float(drawn[figure].median()) for figure in FIGURES if figure in drawn}


def power(rows: pd.DataFrame, rules: Rules, repeats: int, trials: int, seed: int) -> dict[float, float]:
    """Slowdown -> fraction of trials the check called SLOWER, on the figure analysis.judge picks."""
    rng = np.random.default_rng(seed)
    runs = by_run(rows)
    rates = {}
    for slowdown in SLOWDOWNS:
        hits = 0
        for _ in range(trials):
            baseline = pd.DataFrame([simulated_night(runs, repeats, rng) for _ in range(rules.window)])
            new = pd.Series(simulated_night(runs, repeats, rng))
            figure = judged_figure(new, baseline, rules)
            kind, *_ = latency_verdict(baseline[figure].tolist(), new[figure] * (1 + slowdown), rules)
            hits += kind == SLOWER
        rates[slowdown] = hits / trials
    return rates


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", type=Path, action="append", required=True, help="an MLflow sqlite file")
    parser.add_argument("--repeats", type=int, default=3, help="processes per simulated night (timing.repeats)")
    parser.add_argument("--trials", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    options = parser.parse_args()
    rules = Rules()
    points = process_rows(options.store)
    if not points:
        print("error: no ok run with a repeats.csv artifact in the given stores", file=sys.stderr)
        return 2
    print(f"Rules: window {rules.window} nights, threshold {rules.threshold:.0%}, robust z > {rules.z:g}; "
          f"{options.repeats} processes per night, {options.trials} trials per cell.")
    print("| device | point | processes recorded | judged on | false alarms (0 %) | "
          + " | ".join(f"detected at +{s:.0%}" for s in SLOWDOWNS[1:]) + " |")
    print("|---|---|---|---|---|" + "---|" * (len(SLOWDOWNS) - 1))
    for (device, name), rows in sorted(points.items()):
        rates = power(rows, rules, options.repeats, options.trials, options.seed)
        figure = GPU_MS if GPU_MS in rows else LATENCY_MS  # as judged_figure picks
        print(f"| {device} | {name} | {len(rows)} | {figure} | {rates[0.0]:.1%} | "
              + " | ".join(f"{rates[s]:.1%}" for s in SLOWDOWNS[1:]) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
