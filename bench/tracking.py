"""Everything MLflow: where the store is, sweep parent runs, and one run per grid point.

It uses ``MlflowClient`` with explicit run ids rather than ``mlflow.start_run``, so no run is
left "active" in process-global state and parallel launchers cannot cross their runs.
"""
from __future__ import annotations

import fcntl
import io
import logging
import os
import urllib.error
import urllib.request
from pathlib import Path

from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID, MLFLOW_RUN_NAME

from bench.config import TrackingConfig
from bench.errors import ConfigError
from bench.point import FAILED, OK, SKIPPED, PointResult

log = logging.getLogger(__name__)

PARENT, CHILD = "parent", "point"


def tracking_uri(cfg: TrackingConfig) -> str:
    """Config, then $MLFLOW_TRACKING_URI, then SQLite ``mlflow.db`` in the launch directory."""
    return cfg.uri or os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path.cwd() / 'mlflow.db'}"


def check_reachable(uri: str, timeout_s: float = 5.0) -> None:
    """One clear line, before any work, when the store cannot be used."""
    if uri.startswith(("http://", "https://")):
        try:
            urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=timeout_s).close()
        except urllib.error.HTTPError:
            return  # the server answered: reachable (auth is checked by the first real call)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"tracking URI {uri} cannot be reached: {getattr(exc, 'reason', exc)}") from exc
    elif uri.startswith("sqlite:///"):
        folder = Path(uri.removeprefix("sqlite:///")).parent
        if not folder.is_dir():
            raise ConfigError(f"tracking URI {uri}: folder {folder} does not exist")
    elif uri.startswith("file:") or "://" not in uri:
        folder = Path(uri.removeprefix("file://").removeprefix("file:")).parent
        if not folder.is_dir():
            raise ConfigError(f"tracking URI {uri}: folder {folder} does not exist")


class Tracker:
    def __init__(self, cfg: TrackingConfig) -> None:
        self.uri = tracking_uri(cfg)
        check_reachable(self.uri)
        self.client = MlflowClient(self.uri)
        self.kind = cfg.kind
        self.experiment_id = self._experiment(cfg.experiment)

    def _experiment(self, name: str) -> str:
        experiment = self.client.get_experiment_by_name(name)
        if experiment is not None:
            return experiment.experiment_id
        try:
            return self.client.create_experiment(name)
        except Exception:  # noqa: BLE001 - created meanwhile by a parallel job
            experiment = self.client.get_experiment_by_name(name)
            if experiment is None:
                raise
            return experiment.experiment_id

    def parent_run(self, sweep_id: str, lock_dir: Path, tags: dict[str, str]) -> str:
        """The sweep's parent run, created by whichever point gets there first."""
        lock_dir.mkdir(parents=True, exist_ok=True)
        with open(lock_dir / ".mlflow_parent.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            found = self.client.search_runs(
                [self.experiment_id],
                f"tags.`bench.sweep_id` = '{sweep_id}' and tags.`bench.role` = '{PARENT}'",
                max_results=1,
            )
            if found:
                run_id = found[0].info.run_id
                self.client.update_run(run_id, status="RUNNING")
                return run_id
            run = self.client.create_run(
                self.experiment_id,
                run_name=f"{self.kind} {lock_dir.name}",
                tags={**tags, "bench.role": PARENT, "bench.sweep_id": sweep_id, "bench.kind": self.kind},
            )
            log.info("MLflow parent run %s for sweep %s", run.info.run_id, sweep_id)
            return run.info.run_id

    def close_parent(self, run_id: str) -> dict[str, int]:
        """Count the sweep's points so far into the parent's metrics and mark it finished."""
        children = self.client.search_runs([self.experiment_id], f"tags.`{MLFLOW_PARENT_RUN_ID}` = '{run_id}'",
                                           max_results=50000)
        counts = {status: 0 for status in (OK, SKIPPED, FAILED)}
        for child in children:
            status = child.data.tags.get("bench.status")
            if status in counts:
                counts[status] += 1
        self.client.log_batch(run_id, metrics=[Metric(f"points_{k}", v, _now_ms(), 0) for k, v in counts.items()])
        self.client.set_terminated(run_id, "FINISHED")
        return counts

    def record(self, name: str, params: dict[str, str], tags: dict[str, str], result: PointResult,
               config_yaml: str, parent_id: str | None) -> str:
        """One MLflow run for one grid point, whatever its status."""
        run_tags = {
            **tags, **result.tags,
            MLFLOW_RUN_NAME: name, "bench.role": CHILD, "bench.kind": self.kind,
            "bench.status": result.status, "bench.reason": result.reason,
        }
        if parent_id:
            run_tags[MLFLOW_PARENT_RUN_ID] = parent_id
        run = self.client.create_run(self.experiment_id, run_name=name, tags=run_tags)
        run_id = run.info.run_id
        all_params = {**params, **result.params}
        now = _now_ms()
        self.client.log_batch(
            run_id,
            metrics=[Metric(k, float(v), now, 0) for k, v in result.metrics.items()],
            params=[Param(k, str(v)[:6000]) for k, v in all_params.items()],
            tags=[RunTag(k, str(v)[:5000]) for k, v in run_tags.items()],
        )
        self.client.log_text(run_id, config_yaml, "config.yaml")
        if result.latencies_ms:
            self.client.log_text(run_id, _csv(result.latencies_ms), "latencies_ms.csv")
        if result.raw_latencies_ms:
            self.client.log_text(run_id, _csv(result.raw_latencies_ms), "raw_latencies_ms.csv")
        if result.error:
            self.client.log_text(run_id, result.error, "error.txt")
        self.client.set_terminated(run_id, "FAILED" if result.status == FAILED else "FINISHED")
        return run_id


def _now_ms() -> int:
    import time

    return int(time.time() * 1000)


def _csv(values: list[float]) -> str:
    out = io.StringIO()
    out.write("latency_ms\n")
    out.writelines(f"{v:.6f}\n" for v in values)
    return out.getvalue()
