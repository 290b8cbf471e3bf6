"""Locks between processes on one host, and tokens that name a process unmistakably (a sweep's owner)."""
from __future__ import annotations

import fcntl
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path

from bench.contract.protocol import digest
from bench.store.address import sqlite_path


LOCK_DIR = Path("~/.cache/trt-bench/locks").expanduser()


@contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive lock between processes on one host (or a shared filesystem with working locks)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def store_lock(uri: str):
    """SQLite: parallel writers race on creating the schema and the experiment; serialise them (lock file in
    ~/.cache, not beside the database, whose folder may be read-only)."""
    path = sqlite_path(uri)
    return file_lock(LOCK_DIR / f"store-{digest(path.resolve())}.lock") if path else nullcontext()


def process_token() -> str:
    """This process on this host, unmistakably (pid numbers are reused; their start times are not)."""
    return f"{socket.gethostname()}:{os.getpid()}:{_start_ticks(os.getpid())}"


def _start_ticks(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return "?"


def process_gone(token: str) -> bool | None:
    """Whether the process a token names has ended; None when it ran on another host (unknowable here)."""
    host, _, rest = token.partition(":")
    pid, _, ticks = rest.partition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return None
    return _start_ticks(int(pid)) != ticks
