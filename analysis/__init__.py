"""Analysis of benchmark runs in MLflow: tidy frames, the blog's tables, plots, a report CLI.

    from analysis import Selection, load_runs, aggregate, blog_table
    runs = load_runs(Selection(sweep="latest"))      # one row per run
    points = aggregate(runs)                         # one row per point (newest run)
    print(blog_table(points, "Jetson Xavier NX", "1x3x256x256").cells)
    print(check_regressions(Selection(kind="nightly")).render())   # newest nightly vs the previous ones
"""
from analysis.build import Report, build_report
from analysis.findings import RegressionCheck, Rules
from analysis.judge import latency_verdict
from analysis.select import (SERIES_KEYS, Selection, aggregate, load_latencies, load_runs, parse_when, series,
                             tidy)
from analysis.cells import Table
from analysis.tables import (accuracy_table, blog_table, conversion_table, cross_device_table, cross_device_tables,
                             device_tables, raw_baseline, speedup_table)



# check_regressions is imported on first use, so `python -m analysis.regress` does not find its own module
# already imported by the package (runpy warns about that).
def __getattr__(name: str):
    if name == "check_regressions":
        from analysis.regress import check_regressions

        return check_regressions
    raise AttributeError(f"module 'analysis' has no attribute {name!r}")


__all__ = [
    "SERIES_KEYS", "RegressionCheck", "Report", "Rules", "Selection", "Table", "accuracy_table", "aggregate",
    "blog_table", "build_report", "check_regressions", "conversion_table", "cross_device_table",
    "cross_device_tables", "device_tables", "latency_verdict", "load_latencies", "load_runs", "parse_when",
    "raw_baseline", "series", "speedup_table", "tidy",
]
