"""Judging the newest nightly against its history: plain functions of frames, no store, no plots.

A *series* is one host x device x model x backend x precision x input shape, plus ``raw``: eager fp32
timed inside every run (the blog's Raw), one value per nightly (the median over that nightly's runs of the
model and input). Its *baseline* is its values in the device's previous ``window`` nightlies. A series is
slower (or faster) only when its median latency moved by more than a relative threshold AND beyond the
series' own night-to-night noise (robust z-score on the baseline's median/MAD), or, with
``test="mannwhitney"``, a one-sided Mann-Whitney U test on the per-call latencies (asv's test). Accuracy
drops, points that start failing and points that are no longer run are regressions of their own.
"""
from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd

from analysis.findings import ACCURACY, AGREEMENT, FASTER, FIXED, MISSING, NEW_FAILURE, NOISE, NOW_SKIPPED, \
    SLOWER, STILL_FAILING, UNDER_LOAD, Finding, Nightly, RegressionCheck, Rules, series_label
from analysis.select import SERIES_KEYS, UNFINISHED
from analysis.cells import sig
from bench.contract.errors import ConfigError
from bench.contract.protocol import FAILED, MAD_SCALE, OK, SKIPPED
from bench.contract.names import ACC_NONFINITE, ACC_REL_L2_ERR, GPU_MS, LATENCY_MS, RAW_GPU_MS, RAW_LATENCY_MS

log = logging.getLogger(__name__)

SERIES = ("host", *SERIES_KEYS)
RAW_BACKEND = "raw"  # the derived series of eager fp32 timed inside every run


# Per-call latencies of (run id, raw baseline?) pairs, pooled: how the Mann-Whitney test gets its samples.
Samples = Callable[[list[tuple[str, bool]]], np.ndarray]


def nightly_points(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per nightly x series (the nightly's newest run of it), plus the derived ``raw`` series;
    ``sweep_time`` is when the nightly began (its first run)."""
    runs = runs[runs["sweep"] != ""].sort_values("start_time", ascending=False, kind="stable")
    points = runs.drop_duplicates(["sweep", *SERIES]).assign(raw_samples=False)
    timed = runs[(runs["status"] == OK) & runs[RAW_LATENCY_MS].notna()]
    raw = timed.groupby(["sweep", "host", "device", "model", "input_shape", "scenario"], sort=False).agg(
        run_id=("run_id", "first"), start_time=("start_time", "first"),
        **{LATENCY_MS: (RAW_LATENCY_MS, "median"), GPU_MS: (RAW_GPU_MS, "median")}).reset_index()
    raw = raw.assign(backend=RAW_BACKEND, precision="fp32", status=OK, reason="", raw_samples=True)
    frame = pd.concat([points, raw], ignore_index=True) if not raw.empty else points
    frame["sweep_time"] = frame["sweep"].map(runs.groupby("sweep")["start_time"].min())
    return frame.reset_index(drop=True)


def latency_verdict(baseline: Sequence[float], new: float, rules: Rules) -> tuple[str | None, float, float, float]:
    """The "mad" rule on plain numbers: (SLOWER, FASTER, NOISE or None, baseline median, robust sd, z).

    Robust sd = 1.4826 x MAD: one outlying night in the baseline barely moves it, unlike the standard
    deviation. A baseline without spread gives z = ±inf: then only the threshold decides.
    """
    values = np.asarray(baseline, dtype=float)
    center = float(np.median(values))
    sigma = MAD_SCALE * float(np.median(np.abs(values - center)))
    change = new / center - 1
    z = (new - center) / sigma if sigma > 0 else math.copysign(math.inf, change) if change else 0.0
    if abs(change) <= rules.threshold:
        return None, center, sigma, z
    return (SLOWER if change > 0 else FASTER) if abs(z) > rules.z else NOISE, center, sigma, z


def judged_figure(new: pd.Series, base: pd.DataFrame, rules: Rules) -> str:
    """The figure a series' speed is judged on: GPU compute time where the new nightly and enough of the baseline
    have it (its night-to-night noise is a few percent where end-to-end latency's carries the host's jitter;
    docs/methodology.md), else end-to-end latency."""
    gpu = base[GPU_MS].dropna() if GPU_MS in base else pd.Series(dtype=float)
    has_gpu = GPU_MS in new and math.isfinite(new[GPU_MS])
    return GPU_MS if has_gpu and len(gpu) >= rules.min_baseline else LATENCY_MS


def _latency(series: tuple[str, ...], new: pd.Series, base: pd.DataFrame, rules: Rules,
             samples: Samples) -> Finding | None:
    """Slower, faster, within noise, or nothing to say (None), on the series' judged figure."""
    metric = judged_figure(new, base, rules)
    base = base[base[metric].notna()]
    values = base[metric].to_numpy(dtype=float)
    value = float(new[metric])
    kind, center, sigma, z = latency_verdict(values, value, rules)
    if kind is None:
        return None
    change = value / center - 1
    if rules.test == "mad" or metric != LATENCY_MS:
        evidence = (f"robust z {z:+.1f} (limit ±{rules.z:g}): baseline median {sig(center)} ms, MAD x {MAD_SCALE} = "
                    f"{sig(sigma)} ms over {len(values)} nightlies; change {change:+.1%} "
                    f"(limit ±{rules.threshold:.0%})")
    else:
        from scipy.stats import mannwhitneyu  # here: scipy.stats takes a second to import, only this test needs it

        try:
            fresh = samples([(new["run_id"], new["raw_samples"])])
            before = samples(list(zip(base["run_id"], base["raw_samples"])))
        except ConfigError as exc:
            log.warning("%s: no Mann-Whitney test: %s", series, exc)
            return None
        p = float(mannwhitneyu(fresh, before, alternative="greater" if change > 0 else "less").pvalue)
        kind = (SLOWER if change > 0 else FASTER) if p < rules.alpha else NOISE
        evidence = (f"Mann-Whitney p = {p:.2g} (limit {rules.alpha:g}): {len(fresh)} new vs {len(before)} baseline "
                    f"per-call latencies from {len(values)} nightlies; change {change:+.1%} from the baseline median "
                    f"(limit ±{rules.threshold:.0%})")
    return Finding(kind, series, metric, center, value, evidence,
                   new["run_id"], list(zip(base["sweep_time"], values)), new["sweep_time"], sigma)


def _accuracy(series: tuple[str, ...], new: pd.Series, base: pd.DataFrame, rules: Rules) -> list[Finding]:
    found = []
    history = lambda metric: list(zip(base["sweep_time"], base[metric]))  # noqa: E731
    for metric in AGREEMENT:
        before = base[metric].dropna()
        if before.empty or not math.isfinite(new[metric]):
            continue
        center = float(before.median())
        if new[metric] < center - rules.agreement_drop:
            found.append(Finding(ACCURACY, series, metric, center, float(new[metric]),
                                 f"{100 * (center - new[metric]):.1f} points below the median of {len(before)} "
                                 f"nightlies (limit {100 * rules.agreement_drop:g})", new["run_id"],
                                 history(metric), new["sweep_time"]))
    before = base[ACC_REL_L2_ERR].dropna()
    value = float(new[ACC_REL_L2_ERR])
    if not before.empty and math.isfinite(value):
        center = float(before.median())
        if value > rules.rel_err_factor * center and value - center > rules.rel_err_margin:
            found.append(Finding(ACCURACY, series, ACC_REL_L2_ERR, center, value,
                                 f"above {rules.rel_err_factor:g}x the median of {len(before)} nightlies and by more "
                                 f"than {rules.rel_err_margin:g}", new["run_id"], history(ACC_REL_L2_ERR),
                                 new["sweep_time"]))
    before = base[ACC_NONFINITE].dropna()
    if not before.empty and float(before.max()) == 0 and new[ACC_NONFINITE] > 0:
        found.append(Finding(ACCURACY, series, ACC_NONFINITE, 0.0, float(new[ACC_NONFINITE]),
                             f"non-finite outputs; none in {len(before)} earlier nightlies", new["run_id"]))
    return found


def _status(series: tuple[str, ...], new: pd.Series, previous: pd.Series | None) -> Finding | None:
    failing = (FAILED, UNFINISHED)
    before = previous["status"] if previous is not None else None
    where = f"previous nightly {previous['sweep']}: {before}" if previous is not None else "no earlier nightly"
    if new["status"] in failing:
        kind = STILL_FAILING if before in failing else NEW_FAILURE
        return Finding(kind, series, "status", math.nan, math.nan, f"{new['status']}: {new['reason']} ({where})",
                       new["run_id"])
    if new["status"] == SKIPPED and before == OK:
        return Finding(NOW_SKIPPED, series, "status", math.nan, math.nan, f"skipped: {new['reason']} ({where})",
                       new["run_id"])
    if new["status"] == OK and before in failing:
        return Finding(FIXED, series, "status", math.nan, math.nan, f"ok again ({where}: {previous['reason']})",
                       new["run_id"])
    return None


def judge_device(check: RegressionCheck, points: pd.DataFrame, nightly: Nightly, previous: str | None,
                 samples: Samples) -> None:
    """Every series of one device's newest nightly against its baseline nightlies."""
    rules = check.rules
    base_ids = [sweep for sweep, _ in nightly.baseline]
    mine = points[(points["host"] == nightly.host) & (points["device"] == nightly.device)]
    history = mine[mine["sweep"].isin(base_ids)].sort_values("sweep_time", kind="stable")
    bases = dict(iter(history.groupby(list(SERIES), sort=False)))
    keys = lambda frame: [tuple(k) for k in frame[list(SERIES)].itertuples(index=False)]  # noqa: E731
    newest = mine[mine["sweep"] == nightly.sweep]
    for key, (_, new) in zip(keys(newest), newest.iterrows()):
        base = bases.get(key, history.iloc[:0])
        status = _status(key, new, base.iloc[-1] if not base.empty else None)
        if status:
            check.findings.append(status)
        if new["status"] != OK:
            continue
        ok = base[(base["status"] == OK) & base[LATENCY_MS].notna()]
        check.findings += _accuracy(key, new, ok, rules)
        if len(ok) < rules.min_baseline:
            check.no_baseline.append(series_label(key))
            continue
        check.compared += 1
        latency = _latency(key, new, ok, rules, samples)
        conditions = new.get("conditions")
        if latency and latency.kind == SLOWER and isinstance(conditions, str) and conditions:
            latency.kind = UNDER_LOAD
            latency.evidence = f"{conditions}; {latency.evidence}"
        if latency:
            check.findings.append(latency)
    if previous is None:
        return
    before = mine[mine["sweep"] == previous]
    present = set(keys(newest))
    for key, (_, row) in zip(keys(before), before.iterrows()):
        if key not in present:
            check.findings.append(Finding(MISSING, key, "status", math.nan, math.nan,
                                          f"in the previous nightly {previous} ({row['status']}), not in this one"))
