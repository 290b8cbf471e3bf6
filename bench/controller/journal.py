"""This machine's sweeps, so that a re-run knows without the store what the store would say.

One small JSON file per sweep in ``~/.local/state/trt-bench/journal/``: its grid, its store, whether
it ended complete, and the points recorded (or spooled) so far. The store is the authority when it
can be reached; the journal answers while it cannot (a tracking server down during a nightly), so
that an interrupted sweep is resumed and a finished one is not measured again into itself.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from bench.contract.results import write_file_atomic
from bench.contract.names import COMPLETE, INCOMPLETE
from bench.store.locks import process_gone, process_token

JOURNAL_DIR = Path(os.environ.get("XDG_STATE_HOME", "~/.local/state")).expanduser() / "trt-bench" / "journal"


class Journal:
    def __init__(self, folder: Path = JOURNAL_DIR) -> None:
        self.folder = folder

    def _path(self, sweep_id: str) -> Path:
        return self.folder / f"{sweep_id}.json"

    def _read(self, sweep_id: str) -> dict | None:
        try:
            return json.loads(self._path(sweep_id).read_text())
        except (OSError, ValueError):
            return None

    def _write(self, entry: dict) -> None:
        write_file_atomic(str(self._path(entry["id"])), json.dumps(entry, sort_keys=True).encode())

    def start(self, sweep: dict) -> None:
        entry = self._read(sweep["id"]) or {"id": sweep["id"], "grid_key": sweep["grid_key"], "uri": sweep["uri"],
                                            "experiment": sweep["experiment"], "started_ms": sweep["started_ms"],
                                            "points": {}}
        entry.update(state=INCOMPLETE, process=process_token())
        self._write(entry)

    def point(self, sweep_id: str, key: str, status: str) -> None:
        entry = self._read(sweep_id)
        if entry is not None:
            entry["points"][key] = status
            self._write(entry)

    def finish(self, sweep_id: str, complete: bool) -> None:
        entry = self._read(sweep_id)
        if entry is not None:
            entry["state"] = COMPLETE if complete else INCOMPLETE
            self._write(entry)

    def latest_sweep(self, grid_key: str, uri: str, experiment: str) -> tuple[str, str] | None:
        """(sweep id, state) of the newest sweep of this grid into this store that this machine ran and no live
        process is running, or None."""
        mine = []
        for path in self.folder.glob("*.json") if self.folder.is_dir() else []:
            entry = self._read(path.stem)
            if entry and (entry["grid_key"], entry["uri"], entry["experiment"]) == (grid_key, uri, experiment) \
                    and process_gone(entry.get("process", "")) is not False:
                mine.append(entry)
        newest = max(mine, key=lambda e: e["started_ms"], default=None)
        return (newest["id"], newest["state"]) if newest else None

    def recorded(self, sweep_id: str) -> dict[str, str]:
        """Point key -> status of the points this sweep recorded or spooled."""
        entry = self._read(sweep_id)
        return dict(entry["points"]) if entry else {}
