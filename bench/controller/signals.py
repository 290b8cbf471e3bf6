"""SIGTERM and SIGHUP as an exception, like Ctrl-C's KeyboardInterrupt: a sweep stopped by any of them closes
its parent run and kills its worker before it exits."""
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

    previous = {signum: signal.signal(signum, handler) for signum in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)
