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
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from analysis.render import table_markdown, table_text
from analysis.select import SERIES_KEYS, UNFINISHED, input_label
from analysis.tables import Table, fmt_err, sig
from bench.contract.errors import ConfigError
from bench.contract.protocol import FAILED, MAD_SCALE, OK, SKIPPED
from bench.store.tracking import redact
from bench.contract.names import (
    ACC_NONFINITE, ACC_PIXEL_AGREEMENT, ACC_REL_L2_ERR, ACC_TOP1_AGREEMENT, GPU_MS, LATENCY_MS, RAW_GPU_MS,
    RAW_LATENCY_MS)

log = logging.getLogger(__name__)

SERIES = ("host", *SERIES_KEYS)
RAW_BACKEND = "raw"  # the derived series of eager fp32 timed inside every run
TESTS = ("mad", "mannwhitney")
AGREEMENT = (ACC_TOP1_AGREEMENT, ACC_PIXEL_AGREEMENT)

SLOWER, FASTER, ACCURACY = "slower", "faster", "accuracy"
NEW_FAILURE, NOW_SKIPPED, FIXED = "new failure", "now skipped", "fixed"
STILL_FAILING, MISSING, NOISE = "still failing", "missing", "within noise"
# Slower, but measured while the GPU was throttled or shared (tag bench.conditions): reported, never counted as
# a regression on its own; the next clean night says whether it was the code.
UNDER_LOAD = "measured under load / throttled"
REGRESSIONS = (SLOWER, ACCURACY, NEW_FAILURE, NOW_SKIPPED)
IMPROVEMENTS = (FASTER, FIXED)
FORMATS = ("text", "markdown")


# Per-call latencies of (run id, raw baseline?) pairs, pooled: how the Mann-Whitney test gets its samples.
Samples = Callable[[list[tuple[str, bool]]], np.ndarray]


@dataclass(frozen=True)
class Rules:
    """How a change is judged; every summary states them."""

    window: int = 10  # baseline: the device's previous N nightlies
    min_baseline: int = 3  # fewer ok baseline values: "no baseline yet" for the series' latency
    threshold: float = 0.05  # relative change of the median latency that matters
    z: float = 3.0  # robust z-score beyond which a change is not noise (test "mad")
    test: str = "mad"  # "mad": robust z on nightly medians; "mannwhitney": U test on per-call samples
    alpha: float = 0.01  # significance level of the Mann-Whitney test
    agreement_drop: float = 0.01  # top-1 / pixel agreement: an absolute drop beyond this (0.01 = 1 point)
    rel_err_factor: float = 2.0  # relative L2 error: above this many times the baseline ...
    rel_err_margin: float = 1e-4  # ... and above it by more than this

    def validate(self) -> None:
        """One line per bad value, naming it."""
        if self.window < 1:
            raise ConfigError(f"window={self.window}: the baseline needs at least 1 nightly")
        if not 1 <= self.min_baseline <= self.window:
            raise ConfigError(f"min_baseline={self.min_baseline} must be between 1 and window={self.window}")
        if not 0 <= self.threshold < 10:
            raise ConfigError(f"threshold={self.threshold:g} must be a fraction >= 0 (0.05 = 5 %)")
        if self.z <= 0:
            raise ConfigError(f"z={self.z:g} must be > 0")
        if self.test not in TESTS:
            raise ConfigError(f"test {self.test!r} is not one of: {', '.join(TESTS)}")
        if not 0 < self.alpha < 1:
            raise ConfigError(f"alpha={self.alpha:g} must be between 0 and 1")
        if self.agreement_drop < 0 or self.rel_err_factor < 1 or self.rel_err_margin < 0:
            raise ConfigError(f"agreement_drop={self.agreement_drop:g} and rel_err_margin={self.rel_err_margin:g} "
                              f"must be >= 0, rel_err_factor={self.rel_err_factor:g} >= 1")

    def describe(self) -> list[str]:
        """The method, in words, for the top of every summary."""
        if self.test == "mad":
            noise = (f"AND its robust z-score, (new - baseline median) / ({MAD_SCALE} x MAD of the baseline "
                     f"nightlies' medians), is beyond ±{self.z:g}")
        else:
            noise = (f"AND a one-sided Mann-Whitney U test of the new run's per-call latencies against the "
                     f"baseline runs' per-call latencies gives p < {self.alpha:g} (within-run noise only; series "
                     f"judged on GPU compute time use the robust z-score beyond ±{self.z:g})")
        return [
            "Series: host x device x model x backend x precision x input shape x scenario; backend 'raw' is eager fp32 "
            "timed inside every run (median over the nightly's runs of that model and input).",
            f"Baseline: each series' values in the device's previous {self.window} nightly(s); latency is judged "
            f"with at least {self.min_baseline} ok value(s) (else 'no baseline yet'), accuracy and status against "
            "one earlier nightly.",
            f"Latency: each series is judged on its GPU compute time (gpu_ms_median) where measured, the figure "
            f"with the least night-to-night noise, else on its end-to-end latency (latency_ms_median). "
            f"Slower/faster when it moved by more than {self.threshold:.0%} from the baseline median {noise}.",
            f"Accuracy: top-1/pixel agreement more than {100 * self.agreement_drop:g} point(s) below the baseline "
            f"median, relative L2 error above {self.rel_err_factor:g}x the baseline median and by more than "
            f"{self.rel_err_margin:g}, or non-finite outputs where the baseline had none.",
            "Status: 'new failure' = failed or cut off now, not failing in the series' previous nightly; "
            "'now skipped' = skipped now, ok before; 'fixed' = ok now, failing before.",
        ]


@dataclass
class Finding:
    """One thing the check has to say about one series, with the numbers that back it."""

    kind: str
    series: tuple[str, ...]  # values of SERIES
    metric: str  # what was compared ("status" for status changes)
    baseline: float  # NaN where there is none
    new: float
    evidence: str
    run_id: str = ""  # the newest nightly's run ("" when the series is missing from it)
    history: list[tuple[pd.Timestamp, float]] = field(default_factory=list)  # baseline values, oldest first
    new_time: pd.Timestamp | None = None
    noise: float = math.nan  # the baseline's robust standard deviation (1.4826 x MAD)

    @property
    def regression(self) -> bool:
        return self.kind in REGRESSIONS

    @property
    def change(self) -> float:
        """Relative change new / baseline - 1 (NaN without both)."""
        return self.new / self.baseline - 1 if self.baseline and math.isfinite(self.baseline) \
            and math.isfinite(self.new) else math.nan

    @property
    def label(self) -> str:
        return series_label(self.series)


def series_label(series: tuple[str, ...]) -> str:
    """``resnet18/fp16/torch2trt/256 on Jetson Xavier NX (xavier-01)``, as run names read."""
    host, device, model, backend, precision, shape, scenario = series
    suffix = "" if scenario == "latency" else f"/{scenario}"
    return f"{model}/{precision}/{backend}/{input_label(shape)}{suffix} on {device} ({host})"


@dataclass
class Nightly:
    """The newest nightly of one device and the baseline nightlies it was compared with."""

    host: str
    device: str
    sweep: str
    started: pd.Timestamp
    baseline: list[tuple[str, pd.Timestamp]]  # (sweep id, start), oldest first


@dataclass
class RegressionCheck:
    """What ``check_regressions`` found: findings per series, which nightlies were compared, and how."""

    rules: Rules
    uri: str
    experiment: str
    nightlies: list[Nightly] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    compared: int = 0  # series whose latency had a baseline
    no_baseline: list[str] = field(default_factory=list)  # series labels
    notes: list[str] = field(default_factory=list)

    @property
    def regressions(self) -> list[Finding]:
        return [f for f in self.findings if f.regression]

    @property
    def improvements(self) -> list[Finding]:
        return [f for f in self.findings if f.kind in IMPROVEMENTS]

    @property
    def status(self) -> str:
        if self.regressions:
            return "regression"
        return "ok" if self.compared or any(n.baseline for n in self.nightlies) else "no baseline"

    @property
    def exit_code(self) -> int:
        """1 when anything regressed, else 0 (no baseline yet included)."""
        return 1 if self.regressions else 0

    def result_line(self) -> str:
        if self.status == "no baseline":
            return "Result: no baseline yet: nothing to compare (exit status 0)."
        quiet = self.compared - len({f.series for f in self.findings if f.kind in (SLOWER, FASTER)})
        return (f"Result: {len(self.regressions)} regression(s), {len(self.improvements)} improvement(s); "
                f"{self.compared} series compared on latency, {quiet} unchanged within threshold or noise.")

    def header(self) -> list[str]:
        lines = [f"Regression check of store {redact(self.uri)}, experiment {self.experiment!r}.", *self.notes]
        for n in self.nightlies:
            base = (f"{len(n.baseline)} earlier nightly(s), {n.baseline[0][1]:%Y-%m-%d} to {n.baseline[-1][1]:%Y-%m-%d}"
                    if n.baseline else "none (this is its first nightly): no baseline yet")
            lines.append(f"{n.device} on {n.host}: newest nightly {n.sweep} ({n.started:%Y-%m-%d %H:%M} UTC); "
                         f"baseline: {base}.")
        return lines + self.rules.describe()

    def tables(self) -> list[Table]:
        groups = [("regressions", "Regressions", self.regressions),
                  ("improvements", "Improvements", self.improvements),
                  ("noise", f"Changed by more than {self.rules.threshold:.0%} but within the series' noise "
                            "(not flagged)", [f for f in self.findings if f.kind == NOISE]),
                  ("other", "Also noted", [f for f in self.findings if f.kind in (STILL_FAILING, MISSING,
                                                                                  UNDER_LOAD)])]
        tables = [_findings_table(key, f"{title} ({len(found)})", found) for key, title, found in groups if found]
        if self.no_baseline:
            index = pd.Index(self.no_baseline, name="series")
            why = f"fewer than {self.rules.min_baseline} ok latency value(s) in the baseline nightlies"
            tables.append(Table("no_baseline", f"No baseline yet ({len(self.no_baseline)})",
                                pd.DataFrame({"why": math.nan}, index=index), pd.DataFrame({"why": why}, index=index)))
        return tables

    def render(self, fmt: str = "text") -> str:
        """The summary a person reads in the morning, in ``text`` or ``markdown``."""
        if fmt not in FORMATS:
            raise ConfigError(f"format {fmt!r} is not one of: {', '.join(FORMATS)}")
        tables = self.tables()
        if fmt == "markdown":
            parts = ["# trt-bench regression check", "", *(f"{line}\n" for line in self.header())]
            parts += [table_markdown(t) for t in tables] + [f"**{self.result_line()}**", ""]
            return "\n".join(parts)
        return "\n".join([*self.header(), "", *(table_text(t) for t in tables), self.result_line(), ""])


def _fmt(metric: str, value: float) -> str:
    if not math.isfinite(value):
        return ""
    if metric.startswith(("latency", "gpu_ms")):
        return f"{sig(value)} ms"
    if metric in AGREEMENT:
        return f"{100 * value:.1f} %"
    if metric == ACC_REL_L2_ERR:
        return fmt_err(value)
    return sig(value)


def _fmt_change(finding: Finding) -> str:
    if finding.metric in AGREEMENT and math.isfinite(finding.new - finding.baseline):
        return f"{100 * (finding.new - finding.baseline):+.1f} points"
    if finding.metric == ACC_REL_L2_ERR and math.isfinite(finding.change):
        return f"x{finding.new / finding.baseline:.2g}"
    return f"{finding.change:+.1%}" if math.isfinite(finding.change) else ""


def _findings_table(key: str, title: str, findings: list[Finding]) -> Table:
    columns = ["what", "metric", "baseline", "new", "change", "evidence"]
    index = pd.Index([f.label for f in findings], name="series")
    cells = pd.DataFrame([[f.kind, f.metric, _fmt(f.metric, f.baseline), _fmt(f.metric, f.new), _fmt_change(f),
                           f.evidence] for f in findings], index=index, columns=columns)
    values = pd.DataFrame([[math.nan, math.nan, f.baseline, f.new, f.change, math.nan] for f in findings],
                          index=index, columns=columns)
    return Table(key, title, values, cells)


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
