"""What a regression check says: the rules it applied, one finding per series, and the check rendered as text."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import pandas as pd

from analysis.render import table_markdown, table_text
from analysis.select import input_label
from analysis.cells import Table, fmt_err, sig
from bench.contract import exits
from bench.contract.errors import ConfigError
from bench.contract.names import ACC_PIXEL_AGREEMENT, ACC_REL_L2_ERR, ACC_TOP1_AGREEMENT
from bench.contract.protocol import MAD_SCALE
from bench.store.address import redact

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
        """3 when anything regressed, else 0 (no baseline yet included): bench/contract/exits.py."""
        return exits.REGRESSION if self.regressions else exits.OK

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
