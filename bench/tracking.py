"""Everything MLflow: where the store is, sweep parent runs, one run per grid point, resume, and the spool.

It uses ``MlflowClient`` with explicit run ids rather than ``mlflow.start_run``, so no run is
left "active" in process-global state and parallel launchers cannot cross their runs.

A tracking server is asked for the experiment when the ``Tracker`` is made, before any work, so
wrong credentials stop a sweep at once. When the server cannot take a point's result (a Jetson in
the field, a network blip), the complete result goes to the spool (``bench.spool``) and the sweep
goes on; ``python -m bench.sync`` uploads it later.
"""
from __future__ import annotations

import fcntl
import io
import json
import logging
import os
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path

from mlflow.entities import Metric, Param
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID, MLFLOW_RUN_NAME
from requests.exceptions import RequestException

from bench.backends.base import digest
from bench.config import TrackingConfig
from bench.errors import ConfigError
from bench.point import FAILED, OK, SKIPPED, PointResult
from bench.spool import PointRecord, Spool, SweepRef

log = logging.getLogger(__name__)

PARENT, CHILD = "parent", "point"
# What a server that is down, restarting or unreachable raises; a point's result then goes to the spool.
SERVER_ERRORS = (MlflowException, RequestException, OSError)
COMPLETE = ("FINISHED", "FAILED")  # a run in another state was cut off while it was being uploaded


class Unreachable(ConfigError):
    """The tracking server does not answer (as opposed to answering with an error)."""


def tracking_uri(cfg: TrackingConfig) -> str:
    """Config, then $MLFLOW_TRACKING_URI, then SQLite ``mlflow.db`` in the launch directory."""
    return cfg.uri or os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path.cwd() / 'mlflow.db'}"


def check_config(uri: str, cfg: TrackingConfig) -> None:
    """Mistakes in the tracking settings, one line each; a password in the URI is never echoed."""
    parts = urllib.parse.urlsplit(uri)
    if parts.scheme in ("http", "https") and (parts.username or parts.password):
        shown = urllib.parse.urlunsplit(parts._replace(netloc=f"***@{parts.hostname}:{parts.port or ''}".rstrip(":")))
        raise ConfigError(f"tracking URI {shown} has credentials in it: set MLFLOW_TRACKING_USERNAME and "
                          "MLFLOW_TRACKING_PASSWORD instead, so they never reach a config file, a run or a log")
    if cfg.server and parts.scheme not in ("http", "https"):
        raise ConfigError(f"tracking=server needs an http(s):// tracking server in tracking.uri or "
                          f"$MLFLOW_TRACKING_URI, got {uri}")
    if cfg.timeout_s < 1 or cfg.retries < 0:
        raise ConfigError(f"tracking.timeout_s={cfg.timeout_s} must be >= 1 and tracking.retries={cfg.retries} >= 0")


def check_reachable(uri: str, timeout_s: float = 5.0) -> None:
    """One clear line, before any work, when the store cannot be used."""
    if uri.startswith(("http://", "https://")):
        try:
            urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=timeout_s).close()
        except urllib.error.HTTPError:
            return  # the server answered: reachable (auth is checked by the first real call)
        except (OSError, ValueError) as exc:
            raise Unreachable(f"tracking URI {uri} cannot be reached: {getattr(exc, 'reason', exc)}") from exc
    elif uri.startswith("sqlite:///"):
        folder = Path(uri.removeprefix("sqlite:///")).parent
        if not folder.is_dir():
            raise ConfigError(f"tracking URI {uri}: folder {folder} does not exist")
    elif uri.startswith("file:") or "://" not in uri:
        folder = Path(uri.removeprefix("file://").removeprefix("file:")).parent
        if not folder.is_dir():
            raise ConfigError(f"tracking URI {uri}: folder {folder} does not exist")


@contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive lock between processes on one host (or a shared filesystem with working locks)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


@contextmanager
def bounded_http(timeout_s: int, retries: int) -> Iterator[None]:
    """Bound MLflow's HTTP retries for this block, so an unreachable server costs seconds, not minutes.

    MLflow reads its retry policy only from the environment (by default about 4 minutes of retries
    per request). A user's own MLFLOW_HTTP_REQUEST_* settings win; what is set here is undone after.
    """
    limits = {"MLFLOW_HTTP_REQUEST_TIMEOUT": str(timeout_s), "MLFLOW_HTTP_REQUEST_MAX_RETRIES": str(retries),
              "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1"}
    added = [name for name in limits if name not in os.environ]
    os.environ.update({name: limits[name] for name in added})
    try:
        yield
    finally:
        for name in added:
            os.environ.pop(name, None)


def _store_lock(uri: str):
    """SQLite: parallel launcher jobs race on creating the schema, which MlflowClient() does; serialise them."""
    if uri.startswith("sqlite:///"):
        return file_lock(Path(uri.removeprefix("sqlite:///").split("?")[0] + ".lock"))
    return nullcontext()


def point_key(config: dict, tags: dict[str, str]) -> str:
    """What the point is, wherever its result goes: the resolved config (less where results and caches
    live) on this device. Tag ``bench.point_key``: the same point measured again has the same key."""
    measured = {k: v for k, v in config.items() if k not in ("tracking", "cache_dir")}
    return digest(json.dumps(measured, sort_keys=True, default=str), tags.get("device.label"), tags.get("host.name"))


@dataclass
class Sweep:
    """A sweep as one point sees it: its identity (kept in the spool) and its parent run, once found."""
    ref: SweepRef
    lock_dir: Path  # parallel jobs of one sweep agree on one parent run under a lock here
    parent_id: str | None = None


@dataclass
class Recorded:
    """A point already recorded in its sweep, which a resumed sweep skips."""
    where: str  # "MLflow run <id>" or "spool entry <path>"
    status: str  # its bench.status: ok, skipped or failed


class Tracker:
    def __init__(self, cfg: TrackingConfig) -> None:
        self.uri = tracking_uri(cfg)
        check_config(self.uri, cfg)
        self.kind = cfg.kind
        self.experiment = cfg.experiment
        self.timeout_s, self.retries = cfg.timeout_s, cfg.retries
        self.spool = Spool(Path(cfg.spool_dir).expanduser()) if cfg.spool_dir else None
        self._experiment_id: str | None = None
        with _store_lock(self.uri):
            self.client = MlflowClient(self.uri)
        try:
            check_reachable(self.uri)
            self._experiment_id = self._connect()
        except (Unreachable, *SERVER_ERRORS) as exc:
            if self.spool is None:
                raise
            log.warning("%s; the result goes to the spool %s if it still cannot be reached when the point ends",
                        error_line(exc), self.spool.folder)

    @property
    def online(self) -> bool:
        return self._experiment_id is not None

    @property
    def experiment_id(self) -> str:
        if self._experiment_id is None:
            self._experiment_id = self._connect()
        return self._experiment_id

    def _connect(self) -> str:
        """The experiment's id: the first authenticated call, so bad credentials stop the sweep here."""
        with bounded_http(self.timeout_s, self.retries):
            try:
                return self._experiment(self.experiment)
            except MlflowException as exc:
                if exc.get_http_status_code() in (401, 403):
                    raise ConfigError(_auth_message(self.uri, exc.get_http_status_code())) from exc
                raise

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

    def sweep_ref(self, sweep_id: str, lock_dir: Path, tags: dict[str, str]) -> SweepRef:
        return SweepRef(sweep_id, f"{self.kind} {lock_dir.name}",
                        {**tags, "bench.role": PARENT, "bench.sweep_id": sweep_id, "bench.kind": self.kind})

    def open_sweep(self, sweep_id: str, lock_dir: Path, tags: dict[str, str]) -> Sweep:
        """This point's sweep, its parent run found or created now if the server can be reached."""
        sweep = Sweep(self.sweep_ref(sweep_id, lock_dir, tags), lock_dir)
        if self.online:
            try:
                with bounded_http(self.timeout_s, self.retries):
                    sweep.parent_id = self.find_parent(sweep.ref, lock_dir)
            except SERVER_ERRORS as exc:
                if self.spool is None:
                    raise
                log.warning("sweep %s: no parent run yet (%s); trying again when the point ends", sweep_id,
                            error_line(exc))
        return sweep

    def parent_run(self, sweep_id: str, lock_dir: Path, tags: dict[str, str]) -> str:
        """The sweep's parent run, created by whichever point gets there first."""
        return self.find_parent(self.sweep_ref(sweep_id, lock_dir, tags), lock_dir)

    def find_parent(self, ref: SweepRef, lock_dir: Path | None = None, start_ms: int | None = None) -> str:
        """Find the parent run by ``bench.sweep_id`` or create it (under a lock in ``lock_dir``, if given;
        ``start_ms``: when the sweep ran, for a parent created only when its spooled points are synced)."""
        with file_lock(lock_dir / ".mlflow_parent.lock") if lock_dir else nullcontext():
            found = self.client.search_runs(
                [self.experiment_id],
                f"tags.`bench.sweep_id` = '{ref.sweep_id}' and tags.`bench.role` = '{PARENT}'",
                max_results=1,
            )
            if found:
                run_id = found[0].info.run_id
                self.client.update_run(run_id, status="RUNNING")
                return run_id
            run = self.client.create_run(self.experiment_id, start_time=start_ms, run_name=ref.name, tags=ref.tags)
            log.info("MLflow parent run %s for sweep %s", run.info.run_id, ref.sweep_id)
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

    def point_record(self, name: str, params: dict[str, str], tags: dict[str, str], result: PointResult,
                     config_yaml: str, sweep: SweepRef | None = None) -> PointRecord:
        """The point's complete result, ready for the server or the spool."""
        point_id = uuid.uuid4().hex
        artifacts = {"config.yaml": config_yaml}
        if result.latencies_ms:
            artifacts["latencies_ms.csv"] = _csv(result.latencies_ms)
        if result.raw_latencies_ms:
            artifacts["raw_latencies_ms.csv"] = _csv(result.raw_latencies_ms)
        if result.error:
            artifacts["error.txt"] = result.error
        run_tags = {
            **tags, **result.tags,
            MLFLOW_RUN_NAME: name, "bench.role": CHILD, "bench.kind": self.kind,
            "bench.status": result.status, "bench.reason": result.reason, "bench.point_id": point_id,
        }
        return PointRecord(
            point_id=point_id, name=name, uri=self.uri, experiment=self.experiment,
            run_status="FAILED" if result.status == FAILED else "FINISHED", time_ms=_now_ms(),
            params={k: str(v)[:6000] for k, v in {**params, **result.params}.items()},
            tags={k: str(v)[:5000] for k, v in run_tags.items()},
            metrics={k: float(v) for k, v in result.metrics.items()},
            artifacts=artifacts, sweep=sweep,
        )

    def record(self, name: str, params: dict[str, str], tags: dict[str, str], result: PointResult,
               config_yaml: str, parent_id: str | None) -> str:
        """One MLflow run for one grid point, whatever its status; its run id."""
        return self.upload(self.point_record(name, params, tags, result, config_yaml), parent_id)

    def save(self, name: str, params: dict[str, str], tags: dict[str, str], result: PointResult,
             config_yaml: str, sweep: Sweep | None) -> str:
        """Record the point, or spool it when the server cannot take it; says where it went."""
        point = self.point_record(name, params, tags, result, config_yaml, sweep.ref if sweep else None)
        try:
            with bounded_http(self.timeout_s, self.retries):
                parent_id = (sweep.parent_id or self.find_parent(sweep.ref, sweep.lock_dir)) if sweep else None
                run_id = self.upload(point, parent_id)
                if parent_id:
                    self.close_parent(parent_id)
        except (ConfigError, *SERVER_ERRORS) as exc:
            if self.spool is None:
                raise
            entry = self.spool.write(point)
            log.warning("%s: %s cannot take the result (%s); spooled to %s: upload it later with "
                        "`python -m bench.sync`", name, self.uri, error_line(exc), entry)
            return f"in the spool as {entry}"
        return f"as MLflow run {run_id} in {self.uri}"

    def upload(self, point: PointRecord, parent_id: str | None) -> str:
        """Create the point's run with everything in it; it is marked terminated last, so a run cut off
        half-way stays RUNNING and ``upload_once`` knows to replace it."""
        tags = {**point.tags, **({MLFLOW_PARENT_RUN_ID: parent_id} if parent_id else {})}
        run = self.client.create_run(self.experiment_id, start_time=point.time_ms, tags=tags, run_name=point.name)
        run_id = run.info.run_id
        self.client.log_batch(
            run_id,
            metrics=[Metric(k, v, point.time_ms, 0) for k, v in point.metrics.items()],
            params=[Param(k, v) for k, v in point.params.items()],
        )
        for file_name, text in point.artifacts.items():
            self.client.log_text(run_id, text, file_name)
        self.client.set_terminated(run_id, point.run_status, end_time=point.time_ms)
        return run_id

    def recorded_point(self, sweep: Sweep, key: str) -> Recorded | None:
        """The point's complete record in this sweep (tag ``bench.point_key``), so a re-run sweep skips it.

        Complete: a run terminated FINISHED/FAILED with a ``bench.status``, or a spool entry (written all
        or nothing). A run of the point cut off while it was recorded (kill -9) stays RUNNING: it is
        deleted here, never taken for finished, and the point is measured again. When a point is
        skipped, the sweep's parent run is closed again, as after a recorded point.
        """
        sweep_id = sweep.ref.sweep_id
        if self.spool is not None:
            for entry in self.spool.entries():
                point = self.spool.load(entry)
                if point.sweep and point.sweep.sweep_id == sweep_id and point.tags.get("bench.point_key") == key:
                    return Recorded(f"spool entry {entry}", point.tags.get("bench.status", ""))
        if not self.online:
            return None
        try:
            with bounded_http(self.timeout_s, self.retries):
                existing = self.client.search_runs(
                    [self.experiment_id], f"tags.`bench.sweep_id` = '{sweep_id}' and tags.`bench.point_key` = "
                                          f"'{key}' and tags.`bench.role` = '{CHILD}'")
                for run in existing:
                    status = run.data.tags.get("bench.status")
                    if run.info.status in COMPLETE and status in (OK, SKIPPED, FAILED):
                        if sweep.parent_id:
                            self.close_parent(sweep.parent_id)
                        return Recorded(f"MLflow run {run.info.run_id}", status)
                for partial in existing:
                    log.info("deleting run %s (%s): cut off while it was recorded; measuring the point again",
                             partial.info.run_id, partial.info.run_name)
                    self.client.delete_run(partial.info.run_id)
        except SERVER_ERRORS as exc:
            if self.spool is None:
                raise
            log.warning("cannot ask %s whether this point is already recorded (%s); measuring it", self.uri,
                        error_line(exc))
        return None

    def upload_once(self, point: PointRecord, parent_id: str | None) -> tuple[str, bool]:
        """The point's run, uploaded unless a complete run with its ``bench.point_id`` is already there;
        a run cut off half-way by an earlier attempt is deleted first. Returns (run id, uploaded now)."""
        existing = self.client.search_runs([self.experiment_id], f"tags.`bench.point_id` = '{point.point_id}'")
        complete = [run for run in existing if run.info.status in COMPLETE]
        if complete:
            return complete[0].info.run_id, False
        for partial in existing:
            log.info("%s: deleting run %s, cut off while it was uploaded", point.name, partial.info.run_id)
            self.client.delete_run(partial.info.run_id)
        return self.upload(point, parent_id), True


def _auth_message(uri: str, status: int) -> str:
    if status == 403:
        return (f"tracking server {uri} refused the user in MLFLOW_TRACKING_USERNAME (HTTP 403): "
                "it needs permission to use the experiment")
    if not os.environ.get("MLFLOW_TRACKING_USERNAME"):
        return (f"tracking server {uri} requires a login (HTTP 401): set MLFLOW_TRACKING_USERNAME and "
                "MLFLOW_TRACKING_PASSWORD")
    return (f"tracking server {uri} rejected the login (HTTP 401): check MLFLOW_TRACKING_USERNAME and "
            "MLFLOW_TRACKING_PASSWORD")


def error_line(exc: BaseException) -> str:
    """The first line of an error, short enough for a log line; its end (the cause) is kept."""
    line = (str(exc).splitlines() or [type(exc).__name__])[0]
    return line if len(line) <= 300 else f"{line[:140]} ... {line[-150:]}"


def _now_ms() -> int:
    return int(time.time() * 1000)


def _csv(values: list[float]) -> str:
    out = io.StringIO()
    out.write("latency_ms\n")
    out.writelines(f"{v:.6f}\n" for v in values)
    return out.getvalue()
