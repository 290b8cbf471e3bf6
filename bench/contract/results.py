"""Measurements on disk: a device's offline results folder and the controller's spool share this format.

``write_file_atomic`` is every side's way to write one file whole (a journal entry, a plans file, a
TensorRT timing cache). Each entry is one folder ``<YYYYmmddTHHMMSS>-<point_id>/measurement.json``, written under a hidden
name, flushed to disk and renamed into place, so a crash or a power cut never leaves half an entry
that an upload would read. ``python -m bench.store.sync`` moves an uploaded entry into ``synced/`` and an
entry that does not load into ``quarantine/``, so nothing is ever lost or uploaded twice.
"""
import json
import os
import shutil
import time
from typing import List

from bench.contract.names import HOST_NAME
from bench.contract.records import Plan

ENTRY_FILE = "measurement.json"
SYNCED, QUARANTINE = "synced", "quarantine"


def _fsync_file(path: str, text: str) -> None:
    with open(path, "w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())


def _fsync_dir(path: str) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def write_file_atomic(path: str, data: bytes) -> None:
    """One file written whole or not at all: written beside it under a partial name, flushed, renamed over it."""
    folder = os.path.dirname(path)
    if folder:
        os.makedirs(folder, exist_ok=True)
    partial = "{}.partial-{}".format(path, os.getpid())
    with open(partial, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(partial, path)


def write_entry(folder: str, measurement: dict) -> str:
    """Write one measurement (all or nothing); returns the entry's folder."""
    os.makedirs(folder, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%S", time.localtime(measurement["started_ms"] / 1000))
    final = os.path.join(folder, "{}-{}".format(stamp, measurement["point_id"]))
    incoming = os.path.join(folder, ".incoming-{}".format(measurement["point_id"]))
    shutil.rmtree(incoming, ignore_errors=True)
    os.makedirs(incoming)
    _fsync_file(os.path.join(incoming, ENTRY_FILE), json.dumps(measurement, indent=1, sort_keys=True))
    _fsync_dir(incoming)
    os.rename(incoming, final)
    _fsync_dir(folder)
    return final


def entries(folder: str) -> List[str]:
    """Entries waiting in ``folder``, oldest first (hidden, half-written, synced and quarantined ones left out)."""
    if not os.path.isdir(folder):
        return []
    return sorted(os.path.join(folder, name) for name in os.listdir(folder)
                  if not name.startswith(".") and name not in (SYNCED, QUARANTINE)
                  and os.path.isdir(os.path.join(folder, name)))


def load_entry(entry: str) -> dict:
    """The measurement of an entry; ValueError (with the reason) when it cannot be read."""
    path = os.path.join(entry, ENTRY_FILE)
    try:
        with open(path) as handle:
            measurement = json.load(handle)
    except (OSError, ValueError) as exc:
        raise ValueError("{} cannot be read: {}".format(path, exc))
    if not isinstance(measurement, dict) or "point_id" not in measurement or "plan" not in measurement:
        raise ValueError("{} is not a measurement".format(path))
    return measurement


def recorded(folder: str) -> dict:
    """(sweep id, point key) -> entry, for every measurement ``folder`` holds, waiting or uploaded: the points a
    resumed sweep, or a plans file measured again, must not measure twice. Each entry is read once."""
    found = {}
    for entry in entries(folder) + entries(os.path.join(folder, SYNCED)):
        try:
            measurement = load_entry(entry)
            plan = Plan.from_json(measurement["plan"])
        except ValueError:  # an entry that does not load, or whose plan is not this suite's: not this point
            continue
        found[((plan.sweep or {}).get("id"), plan.key(measurement["tags"].get(HOST_NAME, "")))] = entry
    return found


def _move(entry: str, subfolder: str) -> str:
    target_dir = os.path.join(os.path.dirname(entry), subfolder)
    os.makedirs(target_dir, exist_ok=True)
    target = os.path.join(target_dir, os.path.basename(entry))
    if os.path.isdir(target):  # the same measurement (its name holds its point id) was moved there before
        shutil.rmtree(entry)
    else:
        os.rename(entry, target)
    return target


def mark_synced(entry: str) -> str:
    return _move(entry, SYNCED)


def quarantine(entry: str) -> str:
    return _move(entry, QUARANTINE)
