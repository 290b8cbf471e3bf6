"""The offline spool: a point's complete result on local disk while the tracking server cannot take it.

Each entry is one self-contained folder (``point.json`` and ``artifacts/``), written under a hidden
name and renamed into place, so a crash or a full disk never leaves half an entry that ``sync`` would
upload. Entries carry an idempotency key (``bench.point_id``), which is what makes ``python -m
bench.sync`` upload each point exactly once however often it is interrupted and re-run.
"""
from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

# Kept in step with conf/tracking/server.yaml (tests/test_spool.py checks that they agree).
DEFAULT_SPOOL_DIR = "~/.local/share/trt-bench/spool"
POINT_FILE, ARTIFACTS = "point.json", "artifacts"


@dataclass
class SweepRef:
    """Enough to find or create a sweep's parent run on any server, later (by ``bench.sweep_id``)."""
    sweep_id: str
    name: str  # the parent run's name
    tags: dict[str, str]  # the parent run's tags


@dataclass
class PointRecord:
    """One point's complete result, as it goes to MLflow or, when the server is away, to the spool."""
    point_id: str  # tag bench.point_id: unique per recorded point, checked on the server before uploading
    name: str
    uri: str  # the tracking URI it was meant for (never with credentials in it)
    experiment: str
    run_status: str  # the MLflow run status: FINISHED or FAILED
    time_ms: int  # when the point was recorded: the run's start and end, kept through the spool
    params: dict[str, str]
    tags: dict[str, str]
    metrics: dict[str, float]
    artifacts: dict[str, str]  # file name -> text
    sweep: SweepRef | None = None


class Spool:
    """A folder of spooled points, oldest first."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def write(self, point: PointRecord) -> Path:
        """Write the entry under a hidden name, then rename it into place (all or nothing)."""
        stamp = time.strftime("%Y%m%dT%H%M%S", time.localtime(point.time_ms / 1000))
        final = self.folder / f"{stamp}-{point.point_id}"
        incoming = self.folder / f".incoming-{point.point_id}"
        (incoming / ARTIFACTS).mkdir(parents=True, exist_ok=True)
        data = asdict(point)
        data.pop("artifacts")
        (incoming / POINT_FILE).write_text(json.dumps(data, indent=1, sort_keys=True))
        for name, text in point.artifacts.items():
            (incoming / ARTIFACTS / name).write_text(text)
        incoming.rename(final)
        return final

    def entries(self) -> list[Path]:
        """Complete entries in the order they were recorded (hidden, half-written ones are skipped)."""
        if not self.folder.is_dir():
            return []
        return sorted(p for p in self.folder.iterdir() if p.is_dir() and not p.name.startswith(".")
                      and (p / POINT_FILE).is_file())

    @staticmethod
    def load(entry: Path) -> PointRecord:
        data = json.loads((entry / POINT_FILE).read_text())
        sweep = data.pop("sweep")
        artifacts = {f.name: f.read_text() for f in sorted((entry / ARTIFACTS).iterdir())}
        return PointRecord(**data, artifacts=artifacts, sweep=SweepRef(**sweep) if sweep else None)

    @staticmethod
    def remove(entry: Path) -> None:
        shutil.rmtree(entry)
