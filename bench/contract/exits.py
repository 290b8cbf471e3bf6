"""Exit statuses: one meaning each, whichever entry point ends with it (README.md, "Exit status").

    0    all well: every point ok or skipped, nothing regressed, every spooled entry uploaded
    1    points failed, a sweep was left incomplete, spooled entries are still waiting, or the MLflow UI that
         python -m bench.store.ui started stopped by itself
    2    bad input: one line ``error: ...``; nothing was measured or recorded
    3    a regression (python nightly.py, python -m analysis.regress)
    4    the device is locked by another nightly (python nightly.py)
    128+N  stopped by signal N (130: Ctrl-C, 143: SIGTERM); the same command again finishes the sweep
"""
OK, FAILED_POINTS, BAD_INPUT, REGRESSION, LOCKED, SIGNAL = 0, 1, 2, 3, 4, 128
