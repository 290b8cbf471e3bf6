"""The offline spool: measurements a tracking server could not take, waiting on local disk.

Entries are the measuring core's results format (``bench.contract.results``), so a device's offline
results folder and this spool are uploaded the same way, by ``python -m bench.store.sync``. Spool
entries written by earlier versions of the suite (``point.json``: a finished record) still upload.
"""
from __future__ import annotations

import json
from pathlib import Path

from bench.contract import results
from bench.contract.records import Measurement
from bench.store.record import PointRecord

# Kept in step with conf/tracking/server.yaml (tests/test_spool.py checks that they agree).
DEFAULT_SPOOL_DIR = "~/.local/share/trt-bench/spool"
LEGACY_FILE = "point.json"


class Spool:
    """A folder of waiting measurements, oldest first."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def write(self, measurement: Measurement) -> Path:
        return Path(results.write_entry(str(self.folder), measurement.to_json()))

    def entries(self) -> list[Path]:
        return [Path(entry) for entry in results.entries(str(self.folder))]

    def synced(self) -> list[Path]:
        return [Path(entry) for entry in results.entries(str(self.folder / results.SYNCED))]

    @staticmethod
    def load(entry: Path) -> Measurement | PointRecord:
        """A measurement, or a finished record spooled by an earlier version; ValueError for a bad entry."""
        legacy = entry / LEGACY_FILE
        if legacy.is_file():
            try:
                data = json.loads(legacy.read_text())
                artifacts = {f.name: f.read_text() for f in sorted((entry / "artifacts").iterdir())}
                sweep = data.pop("sweep")
                for key in ("uri", "experiment"):
                    data.pop(key)
                time_ms = data.pop("time_ms")
                return PointRecord(**data, start_ms=time_ms, end_ms=time_ms, artifacts=artifacts,
                                   sweep={"legacy": sweep} if sweep else None)
            except (OSError, ValueError, TypeError, KeyError) as exc:
                raise ValueError(f"{legacy} cannot be read: {exc}") from None
        return Measurement.from_json(results.load_entry(str(entry)))

    def recorded(self, sweep_id: str) -> dict[str, Path]:
        """Point key -> entry (waiting or already synced) of this sweep's points, which a resumed sweep keeps."""
        return {key: Path(entry) for (sweep, key), entry in results.recorded(str(self.folder)).items()
                if sweep == sweep_id}

    @staticmethod
    def mark_synced(entry: Path) -> Path:
        return Path(results.mark_synced(str(entry)))

    @staticmethod
    def quarantine(entry: Path) -> Path:
        return Path(results.quarantine(str(entry)))
