"""Analysis of benchmark runs in MLflow: tidy frames, the blog's tables, plots, a report CLI.

    from analysis import Selection, load_runs, aggregate, blog_table
    runs = load_runs(Selection(sweep="latest"))      # one row per run
    points = aggregate(runs)                         # one row per point (newest run)
    print(blog_table(points, "Jetson Xavier NX", "1x3x256x256").cells)
"""
from analysis.build import Report, build_report
from analysis.select import (SERIES_KEYS, Selection, aggregate, load_latencies, load_runs, parse_when, series,
                             tidy)
from analysis.tables import (Table, accuracy_table, blog_table, conversion_table, cross_device_table,
                             cross_device_tables, device_tables, raw_baseline, speedup_table)

__all__ = [
    "SERIES_KEYS", "Report", "Selection", "Table", "accuracy_table", "aggregate", "blog_table", "build_report",
    "conversion_table", "cross_device_table", "cross_device_tables", "device_tables", "load_latencies", "load_runs",
    "parse_when", "raw_baseline", "series", "speedup_table", "tidy",
]
