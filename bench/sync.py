"""Upload the offline spool to the tracking server, each point exactly once.

    python -m bench.sync                                   # the default spool, each point to its own server
    python -m bench.sync --spool DIR --uri http://mlflow.lab:5000

A point goes under its sweep's parent run (found by ``bench.sweep_id``, created if the server never saw
the sweep) unless a complete run with its ``bench.point_id`` is already there, and leaves the spool only
once it is on the server: an interrupted sync is simply run again. Credentials come from
MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD, as for run.py. Exit status: 0 when the spool is
empty afterwards, 1 when points are left (server unreachable), 2 for a bad setting.
"""
from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import dataclass
from pathlib import Path

from bench.config import TrackingConfig
from bench.errors import ConfigError
from bench.spool import DEFAULT_SPOOL_DIR, Spool
from bench.tracking import SERVER_ERRORS, Tracker, Unreachable, bounded_http, error_line, file_lock

log = logging.getLogger(__name__)


@dataclass
class SyncReport:
    uploaded: int = 0
    already_there: int = 0  # on the server before this sync (an earlier, interrupted sync or record)
    left: int = 0  # still in the spool


def sync(spool: Spool, uri: str | None = None) -> SyncReport:
    """Upload every entry, oldest first; stop at the first server error and leave the rest for next time."""
    report = SyncReport()
    with file_lock(spool.folder / ".sync.lock"):  # two syncs of one spool would race on the same entries
        entries = spool.entries()
        log.info("%d spooled point(s) in %s", len(entries), spool.folder)
        trackers: dict[tuple[str, str], Tracker] = {}
        parents: dict[tuple[str, str, str], str] = {}  # (uri, experiment, sweep id) -> parent run id
        for index, entry in enumerate(entries, 1):
            point = spool.load(entry)
            target = (uri or point.uri, point.experiment)
            try:
                if target not in trackers:
                    trackers[target] = Tracker(TrackingConfig(uri=target[0], experiment=target[1]))
                tracker = trackers[target]
                with bounded_http(tracker.timeout_s, tracker.retries):
                    parent_id = None
                    if point.sweep:
                        key = (*target, point.sweep.sweep_id)
                        if key not in parents:
                            parents[key] = tracker.find_parent(point.sweep, start_ms=point.time_ms)
                        parent_id = parents[key]
                    run_id, uploaded = tracker.upload_once(point, parent_id)
            except (Unreachable, *SERVER_ERRORS) as exc:
                report.left = len(entries) - index + 1
                log.error("%s cannot take %s (%s): %d point(s) stay in the spool, run the sync again later",
                          target[0], point.name, error_line(exc), report.left)
                break
            spool.remove(entry)
            if uploaded:
                report.uploaded += 1
            else:
                report.already_there += 1
            log.info("[%d/%d] %s: %s run %s in %s", index, len(entries), point.name,
                     "uploaded as" if uploaded else "already there as", run_id, target[0])
        for (target_uri, experiment, sweep_id), parent_id in parents.items():
            tracker = trackers[target_uri, experiment]
            try:
                with bounded_http(tracker.timeout_s, tracker.retries):
                    counts = tracker.close_parent(parent_id)
            except SERVER_ERRORS as exc:
                log.warning("sweep %s: parent run %s not updated (%s)", sweep_id, parent_id, error_line(exc))
                continue
            log.info("sweep %s: parent run %s now counts %s", sweep_id, parent_id, counts)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.sync", description=__doc__.splitlines()[0])
    parser.add_argument("--spool", help=f"the spool folder (default {DEFAULT_SPOOL_DIR}, as for tracking=server)")
    parser.add_argument("--uri", help="send every point to this tracking URI instead of the one it was meant for")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s][%(levelname)s] - %(message)s")
    folder = Path(args.spool or DEFAULT_SPOOL_DIR).expanduser()
    try:
        if args.spool and not folder.is_dir():
            raise ConfigError(f"--spool {folder}: no such folder")
        report = sync(Spool(folder), args.uri)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{report.uploaded} uploaded, {report.already_there} already on the server, "
          f"{report.left} left in the spool {folder}")
    return 1 if report.left else 0


if __name__ == "__main__":
    sys.exit(main())
