"""One timing job per device: an exclusive lock held for a whole nightly, so two never time the same device.

An ``fcntl.flock`` on ``<folder>/<name>.lock``: the kernel drops it when the last process holding the
file dies, so a nightly killed with ``kill -9`` never leaves a stale lock behind. The holder writes its
pid, start time and command into the file, so a second nightly can say who it is waiting for.
"""
from __future__ import annotations

import fcntl
import logging
import os
import re
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

log = logging.getLogger(__name__)

DEFAULT_LOCK_DIR = "~/.cache/trt-bench/locks"
POLL_S = 2.0
PROGRESS_S = 60.0  # how often a waiting nightly says it is still waiting


class LockBusy(RuntimeError):
    """Another process holds the device lock (and we were not to wait, or waited long enough)."""


def lock_name(device: str) -> str:
    """A file name for a device: ``cuda:0`` -> ``cuda0``, ``cpu`` -> ``cpu``."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "", device) or "device"


def _holder(handle: IO[str]) -> str:
    handle.seek(0)
    return handle.read().strip() or "a process that has not written its name yet"


@contextmanager
def device_lock(device: str, folder: Path, wait_s: float = 0.0) -> Iterator[IO[str]]:
    """Hold the lock for ``device`` while the block runs; wait up to ``wait_s`` seconds for it.

    Yields the open lock file: pass its descriptor to a child process (``pass_fds``) and the lock
    stays held while that child lives, even if this process is killed first.
    """
    folder = folder.expanduser()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{lock_name(device)}.lock"
    # "a+", not "w": opening must not wipe the holder's note before we have the lock.
    with open(path, "a+", encoding="utf-8") as handle:
        started = time.monotonic()
        said = started
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                waited = time.monotonic() - started
                if waited >= wait_s:
                    raise LockBusy(f"device {device} is locked by another nightly ({_holder(handle)}; lock file "
                                   f"{path}){f' after waiting {waited:.0f} s' if wait_s else ''}") from None
                if time.monotonic() - said >= PROGRESS_S:
                    said = time.monotonic()
                    log.info("still waiting for the lock on device %s (%.0f of %.0f s): held by %s", device, waited,
                             wait_s, _holder(handle))
                time.sleep(min(POLL_S, max(0.0, wait_s - waited)))
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} since {time.strftime('%Y-%m-%d %H:%M:%S')}: {' '.join(sys.argv)}\n")
        handle.flush()
        log.info("holding the lock on device %s (%s)", device, path)
        yield handle
