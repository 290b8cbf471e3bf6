"""SIGTERM and SIGHUP as an exception, like Ctrl-C's KeyboardInterrupt: a sweep stopped by any of them closes
its parent run and kills its worker before it exits.

A signal the sweep was started ignoring stays ignored: ``nohup`` ignores SIGHUP so that a nightly outlives its
terminal, and a shell's background job ignores SIGINT (Python then installs no KeyboardInterrupt for it).
"""
from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager


class Interrupted(BaseException):
    """The sweep was stopped by a signal (Ctrl-C, SIGTERM, SIGHUP); ``signum`` says which."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


@contextmanager
def signals_interrupt() -> Iterator[None]:
    """SIGTERM and SIGHUP stop the sweep the way Ctrl-C does, so it is closed and its worker killed."""
    def handler(signum, _frame):
        raise Interrupted(signum)

    taken = [signum for signum in (signal.SIGTERM, signal.SIGHUP) if signal.getsignal(signum) != signal.SIG_IGN]
    previous = {signum: signal.signal(signum, handler) for signum in taken}
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)
