"""Upload spooled or offline measurements to the tracking store, each point exactly once.

    python -m bench.store.sync                                   # the default spool, each point to the store it was meant for
    python -m bench.store.sync --spool results/                  # a device's offline results (python3 -m bench.device ...)
    python -m bench.store.sync --spool results/ --uri http://mlflow.lab:5000

Each point goes under its sweep's parent run (found by ``bench.sweep_id``, created if the store never
saw the sweep) unless a complete run with its ``bench.point_id`` is already there, and moves into the
folder's ``synced/`` only once it is in the store: an interrupted sync is simply run again. An entry
that cannot be read moves into ``quarantine/`` with a one-line warning, and the others go on.
Credentials come from MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD, as for run.py.

Exit status: 0 nothing left to upload, 1 points left (the store could not be reached), 2 bad input.
"""
from __future__ import annotations

import argparse
import logging
import socket
import sys
from dataclasses import dataclass, field
from pathlib import Path

from bench.contract.errors import ConfigError, OneLineParser
from bench.contract.logs import configure_logging
from bench.contract.records import Measurement
from bench.store.record import PointRecord, record_from
from bench.store.spool import DEFAULT_SPOOL_DIR, Spool
from bench.store.address import SERVER_ERRORS, Unreachable, error_line, redact
from bench.store.locks import file_lock
from bench.store.tracking import Store
from bench.store.views import link
from bench.contract.names import HOST_NAME
from bench.contract import names

log = logging.getLogger(__name__)


@dataclass
class SyncReport:
    uploaded: int = 0
    already_there: int = 0  # in the store before this sync (an earlier, interrupted sync)
    left: int = 0  # still waiting
    quarantined: list[Path] = field(default_factory=list)
    sweeps: dict[str, tuple[str, str]] = field(default_factory=dict)  # parent run id -> the sweep's name, its link


def _tracking(uri: str, experiment: str) -> dict:
    return {"uri": uri, "experiment": experiment, "timeout_s": 10, "retries": 2, "spool_dir": None}


def _parent(store: Store, point: PointRecord, parents: dict) -> str | None:
    """The parent run of the point's sweep in ``store`` (found or created once per sync)."""
    sweep = point.sweep
    if not sweep:
        return None
    if "legacy" in sweep:  # a record spooled by an earlier version: its parent's tags travelled with it
        ref = sweep["legacy"]
        sweep = {"id": ref["sweep_id"], "grid_key": ref["tags"].get(names.GRID_KEY, ""), "kind": ref["tags"].get(
            names.KIND, "sweep"), "commit": ref["tags"].get(names.COMMIT, "unknown"), "label": None, "params": {},
            "total": 0, "started_ms": point.start_ms, "controller": ref["tags"].get(HOST_NAME, ""),
            "name": ref["name"]}
    key = (store.uri, store.experiment, sweep["id"])
    if key not in parents:
        parents[key] = (store, store.parent_for(sweep), sweep["name"])
    return parents[key][1]


def _measured_here(loaded: Measurement | PointRecord) -> bool:
    """A measurement this machine took, whose clock's offset from the server's this machine can tell."""
    return isinstance(loaded, Measurement) and loaded.tags.get(HOST_NAME) == socket.gethostname()


def sync(spool: Spool, uri: str | None = None) -> SyncReport:
    """Upload every entry, oldest first; stop at the first store error and leave the rest for next time."""
    report = SyncReport()
    with file_lock(spool.folder / ".sync.lock"):  # two syncs of one folder would race on the same entries
        entries = spool.entries()
        log.info("%d waiting point(s) in %s", len(entries), spool.folder)
        stores: dict[tuple[str, str], Store] = {}
        parents: dict[tuple[str, str, str], tuple[Store, str]] = {}
        for index, entry in enumerate(entries, 1):
            try:
                loaded = spool.load(entry)
                point = loaded if isinstance(loaded, PointRecord) else record_from(loaded)
            except (ValueError, KeyError, TypeError) as exc:
                moved = spool.quarantine(entry)
                report.quarantined.append(moved)
                log.warning("[%d/%d] %s cannot be uploaded (%s); moved it to %s", index, len(entries), entry.name,
                            error_line(exc), moved)
                continue
            sweep = point.sweep if point.sweep and "legacy" not in point.sweep else {}
            target = (uri or sweep.get("uri") or _legacy_uri(entry), sweep.get("experiment") or "trt-bench")
            try:
                if target not in stores:
                    stores[target] = Store(_tracking(*target), spool_allowed=False)
                    stores[target].settle_abandoned()
                store = stores[target]
                if store.clock_offset_ms and _measured_here(loaded):  # in the server's clock, like a live sweep
                    point = record_from(loaded, store.clock_offset_ms)
                run_id, uploaded = store.upload_once(point, _parent(store, point, parents))
            except (Unreachable, *SERVER_ERRORS) as exc:
                report.left = len(entries) - index + 1
                log.error("%s cannot take %s (%s): %d point(s) stay in %s; run the sync again later",
                          redact(target[0]), point.name, error_line(exc), report.left, spool.folder)
                break
            spool.mark_synced(entry)
            report.uploaded += uploaded
            report.already_there += not uploaded
            log.info("[%d/%d] %s: %s run %s in %s", index, len(entries), point.name,
                     "uploaded as" if uploaded else "already there as", run_id, redact(target[0]))
        for store, parent_id, name in parents.values():
            try:
                counts = store.close_parent(parent_id)
            except SERVER_ERRORS as exc:
                log.warning("%s: its MLflow run %s not updated (%s)", name, parent_id, error_line(exc))
                continue
            report.sweeps[parent_id] = (name, link(store.uri, store.experiment_id, parent_id))
            log.info("%s: its MLflow run %s now counts %s", name, parent_id, counts)
    return report


def _legacy_uri(entry: Path) -> str:
    import json

    legacy = entry / "point.json"
    return json.loads(legacy.read_text())["uri"] if legacy.is_file() else ""


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(prog="python -m bench.store.sync", description=__doc__.split("\n\n")[0],
                                     epilog=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--spool", metavar="DIR",
                        help=f"the spool, or a device's results folder (default {DEFAULT_SPOOL_DIR})")
    parser.add_argument("--uri", help="send every point to this tracking URI instead of the one it was meant for")
    args = parser.parse_args(argv)
    configure_logging()
    folder = Path(args.spool or DEFAULT_SPOOL_DIR).expanduser()
    spool = Spool(folder)
    try:
        if args.spool and not folder.is_dir():
            raise ConfigError(f"--spool {folder}: no such folder")
        if args.spool and not spool.entries() and spool.synced():
            raise ConfigError(f"--spool {folder}: all {len(spool.synced())} measurement(s) there were uploaded "
                              f"already (they are in {folder / 'synced'}); nothing to do")
        report = sync(spool, args.uri)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{report.uploaded} uploaded, {report.already_there} already in the store, {report.left} left in "
          f"{folder}" + (f", {len(report.quarantined)} unreadable moved to {folder / 'quarantine'}"
                         if report.quarantined else ""))
    for parent_id, (name, address) in report.sweeps.items():
        print(f"{name} in the MLflow UI: {address}  (tables: python -m analysis.report --sweep {parent_id} --attach)")
    return 1 if report.left else 0


if __name__ == "__main__":
    sys.exit(main())
