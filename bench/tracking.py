"""Everything MLflow: which store, its sweeps' parent runs, one run per point, resume, and the spool.

It uses ``MlflowClient`` with explicit run ids rather than ``mlflow.start_run``, so no run is left
"active" in process-global state and parallel launchers cannot cross their runs. The store is
checked before any work: a missing folder, an unreadable database, a URI MLflow does not know, a
server that does not answer or refuses the login are one line each. When a server cannot take a
point, the measurement goes to the spool (``bench.spool``) and ``python -m bench.sync`` uploads it.
"""
from __future__ import annotations

import fcntl
import functools
import json
import logging
import os
import socket
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path

from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from requests.exceptions import RequestException

from bench import record
from bench.database import check_database
from bench.measure.errors import ConfigError
from bench.measure.protocol import digest, now_ms
from bench.record import CHILD, PARENT, PointRecord

log = logging.getLogger(__name__)

# What a server that is down, restarting or unreachable raises; a point's measurement then goes to the spool.
SERVER_ERRORS = (MlflowException, RequestException, OSError)
LOCK_DIR = Path("~/.cache/trt-bench/locks").expanduser()
# A RUNNING parent run of another host is taken as abandoned when it has had no news for this long.
ABANDONED_AFTER_S = 24 * 3600
# The MLflow UI opens an experiment of this kind in its model-training view (not the GenAI traces view).
EXPERIMENT_KIND = ("mlflow.experimentKind", "custom_model_development")


class Unreachable(ConfigError):
    """The tracking server does not answer (as opposed to answering with an error)."""


def tracking_uri(uri: str | None) -> str:
    """Config, then $MLFLOW_TRACKING_URI, then SQLite ``mlflow.db`` in the launch directory."""
    return uri or os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path.cwd() / 'mlflow.db'}"


def redact(uri: str) -> str:
    """The URI as it may be shown anywhere: any user:password replaced by ***."""
    parts = urllib.parse.urlsplit(uri)
    if not (parts.username or parts.password):
        return uri
    return urllib.parse.urlunsplit(parts._replace(netloc=f"***@{parts.netloc.rsplit('@', 1)[1]}"))


def sqlite_path(uri: str) -> Path | None:
    return Path(uri.removeprefix("sqlite:///").split("?")[0]) if uri.startswith("sqlite:///") else None


def check_uri(uri: str, server: bool = False) -> None:
    """Mistakes in the URI itself, one line each; a password in it is never echoed."""
    parts = urllib.parse.urlsplit(uri)
    if parts.scheme in ("http", "https") and (parts.username or parts.password):
        raise ConfigError(f"tracking URI {redact(uri)} has credentials in it: set MLFLOW_TRACKING_USERNAME and "
                          "MLFLOW_TRACKING_PASSWORD instead, so they never reach a config file, a run or a log")
    if server and parts.scheme not in ("http", "https"):
        raise ConfigError(f"tracking=server needs an http(s):// tracking server in tracking.uri or "
                          f"$MLFLOW_TRACKING_URI, got {redact(uri)}")
    known = ("http", "https", "sqlite", "file", "postgresql", "mysql", "mssql", "databricks")
    if parts.scheme and parts.scheme.split("+")[0] not in known:
        raise ConfigError(f"tracking URI {redact(uri)}: MLflow has no store for scheme {parts.scheme!r} "
                          f"(use sqlite:///path/mlflow.db, a folder, or an http(s):// server)")
    path = sqlite_path(uri)
    if path is not None and not path.parent.is_dir():
        raise ConfigError(f"tracking URI {uri}: folder {path.parent} does not exist (create it first)")
    if parts.scheme == "file" or (not parts.scheme and uri):
        folder = Path(uri.removeprefix("file://").removeprefix("file:")).parent
        if not folder.is_dir():
            raise ConfigError(f"tracking URI {uri}: folder {folder} does not exist (create it first)")


def check_reachable(uri: str, timeout_s: float = 5.0) -> None:
    """An http(s) server that does not answer: Unreachable, before any work."""
    if uri.startswith(("http://", "https://")):
        try:
            urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=timeout_s).close()
        except urllib.error.HTTPError:
            return  # the server answered: reachable (the login is checked by the first real call)
        except (OSError, ValueError) as exc:
            raise Unreachable(f"tracking URI {redact(uri)} cannot be reached: {getattr(exc, 'reason', exc)}") from None


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


@contextmanager
def bounded_http(timeout_s: int, retries: int) -> Iterator[None]:
    """Bound MLflow's HTTP retries for this block, so an unreachable server costs seconds, not minutes.

    MLflow reads its retry policy only from the environment (by default about 4 minutes of retries per
    request). A user's own MLFLOW_HTTP_REQUEST_* settings win; what is set here is undone after.
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


def error_line(exc: BaseException) -> str:
    """The first line of an error, short enough for a log line; its end (the cause) is kept."""
    text = str(exc).strip()
    line = text.splitlines()[0] if text else type(exc).__name__
    return line if len(line) <= 300 else f"{line[:140]} ... {line[-150:]}"


def store_error(uri: str, exc: BaseException) -> ConfigError:
    """A store MLflow cannot use (a corrupt database, a read-only one, an unknown scheme) as one line."""
    cause = error_line(exc)
    if "file is not a database" in cause or "malformed" in cause:
        return ConfigError(f"tracking URI {redact(uri)}: not a readable MLflow database ({cause})")
    if "readonly" in cause or "read-only" in cause or "Permission denied" in cause:
        return ConfigError(f"tracking URI {redact(uri)} cannot be written ({cause}); nothing was measured")
    return ConfigError(f"tracking URI {redact(uri)} cannot be used: {cause}")


def auth_message(uri: str, status: int) -> str:
    if status == 403:
        return (f"tracking server {redact(uri)} refused the user in MLFLOW_TRACKING_USERNAME (HTTP 403): "
                "it needs EDIT permission on the experiment")
    if not os.environ.get("MLFLOW_TRACKING_USERNAME"):
        return (f"tracking server {redact(uri)} requires a login (HTTP 401): set MLFLOW_TRACKING_USERNAME and "
                "MLFLOW_TRACKING_PASSWORD")
    return (f"tracking server {redact(uri)} rejected the login (HTTP 401): check MLFLOW_TRACKING_USERNAME and "
            "MLFLOW_TRACKING_PASSWORD")


def maker(uri: str) -> dict[str, str]:
    """The tag naming the account that makes a run on a server (the team server lets only it change the run)."""
    user = os.environ.get("MLFLOW_TRACKING_USERNAME")
    return {"mlflow.user": user} if user and uri.startswith(("http://", "https://")) else {}


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


def bounded(method):
    """A Store method whose HTTP calls give up after the store's timeout and retries (see ``bounded_http``)."""
    @functools.wraps(method)
    def call(self, *args, **kwargs):
        with bounded_http(self.timeout_s, self.retries):
            return method(self, *args, **kwargs)

    return call


@dataclass
class Recorded:
    """A point already recorded in its sweep, which a resumed sweep skips."""

    where: str  # "MLflow run <id>"
    status: str  # its bench.status: ok, skipped or failed


class Store:
    """One MLflow experiment in one store, checked and reachable (or, with a spool, allowed to be away)."""

    def __init__(self, tracking: dict, spool_allowed: bool = True) -> None:
        self.uri = tracking_uri(tracking["uri"])
        check_uri(self.uri, tracking.get("server", False))
        if tracking["timeout_s"] < 1 or tracking["retries"] < 0:
            raise ConfigError(f"tracking.timeout_s={tracking['timeout_s']} must be >= 1 and "
                              f"tracking.retries={tracking['retries']} >= 0")
        self.experiment = tracking["experiment"]
        self.timeout_s, self.retries = tracking["timeout_s"], tracking["retries"]
        self.spool_dir = Path(tracking["spool_dir"]).expanduser() if tracking.get("spool_dir") and spool_allowed \
            else None
        self._experiment_id: str | None = None
        unusable = check_database(self.uri, redact(self.uri))
        if unusable:
            raise ConfigError(unusable)
        try:
            with store_lock(self.uri):
                self.client = MlflowClient(self.uri)
        except Exception as exc:  # noqa: BLE001 - MLflow and SQLAlchemy raise many types for a bad store
            raise store_error(self.uri, exc) from None
        try:
            check_reachable(self.uri)
            self._experiment_id = self._connect()
        except (Unreachable, *SERVER_ERRORS) as exc:
            if self.spool_dir is None or not self.uri.startswith(("http://", "https://")):
                if isinstance(exc, ConfigError):
                    raise
                raise store_error(self.uri, exc) from None
            log.warning("%s; measurements go to the spool %s while it cannot be reached", error_line(exc),
                        self.spool_dir)

    @property
    def online(self) -> bool:
        return self._experiment_id is not None

    @property
    def experiment_id(self) -> str:
        if self._experiment_id is None:
            with bounded_http(self.timeout_s, self.retries):
                self._experiment_id = self._connect()
        return self._experiment_id

    def _connect(self) -> str:
        """The experiment's id: the first authenticated call, so bad credentials stop the sweep here."""
        with bounded_http(self.timeout_s, self.retries), store_lock(self.uri):
            try:
                return self._experiment(self.experiment)
            except MlflowException as exc:
                if exc.get_http_status_code() in (401, 403):
                    raise ConfigError(auth_message(self.uri, exc.get_http_status_code())) from None
                raise

    def _experiment(self, name: str) -> str:
        experiment = self.client.get_experiment_by_name(name)
        if experiment is not None:
            if experiment.tags.get(EXPERIMENT_KIND[0]) != EXPERIMENT_KIND[1]:
                self.client.set_experiment_tag(experiment.experiment_id, *EXPERIMENT_KIND)
            return experiment.experiment_id
        path = sqlite_path(self.uri)
        # Artifacts beside the database, not in ./mlruns of wherever the first sweep happened to start.
        location = (path.resolve().parent / "mlartifacts").as_uri() if path else None
        try:
            return self.client.create_experiment(name, artifact_location=location, tags=dict([EXPERIMENT_KIND]))
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
            # Another device created it since the lookup (a team's nightlies start at the same minute).
            return self.client.get_experiment_by_name(name).experiment_id

    @bounded
    def check_writable(self) -> None:
        """A store that cannot be written is found now, before anything is measured."""
        path = sqlite_path(self.uri)
        if path is not None and path.exists() and not os.access(path, os.W_OK):
            raise ConfigError(f"tracking URI {self.uri} cannot be written (the file is read-only); nothing was "
                              "measured")
        if self.online:
            try:
                self.client.set_experiment_tag(self.experiment_id, "bench.last_write_ms", str(now_ms()))
            except SERVER_ERRORS as exc:
                status = exc.get_http_status_code() if isinstance(exc, MlflowException) else None
                if status in (401, 403):  # an account that may read the experiment but not write to it
                    raise ConfigError(auth_message(self.uri, status)) from None
                if self.spool_dir is None or not self.uri.startswith(("http://", "https://")):
                    raise store_error(self.uri, exc) from None

    # --- sweeps -----------------------------------------------------------------------------

    @bounded
    def settle_abandoned(self) -> list[str]:
        """Parent runs left RUNNING by a sweep whose process has gone: KILLED and incomplete, so they resume."""
        settled = []
        running = self.client.search_runs([self.experiment_id], f"tags.`{record.ROLE}` = '{PARENT}' and "
                                                                 "attributes.status = 'RUNNING'", max_results=1000)
        for run in running:
            token = run.data.tags.get("bench.controller_process", "")
            gone = process_gone(token)
            quiet_s = (now_ms() - int(run.data.tags.get("bench.heartbeat_ms", run.info.start_time))) / 1000
            if gone or (gone is None and quiet_s > ABANDONED_AFTER_S):
                try:
                    self.client.set_tag(run.info.run_id, record.STATE, record.INCOMPLETE)
                except MlflowException as exc:
                    if exc.get_http_status_code() != 403:
                        raise
                    continue  # another account's sweep on a team server (bench.server_auth): its device settles it
                self.client.set_terminated(run.info.run_id, record.KILLED_RUN)
                log.info("sweep %s (run %s) was abandoned by %s; marked KILLED, incomplete (its grid resumes it)",
                         run.data.tags.get(record.SWEEP_ID), run.info.run_id, token or "an unknown process")
                settled.append(run.info.run_id)
        return settled

    @bounded
    def latest_sweep(self, grid_key: str) -> tuple[str, str] | None:
        """(sweep id, state) of the newest sweep of this grid that no process is running now, or None.

        A RUNNING parent belongs to a live sweep (``settle_abandoned`` has closed the others): the same command
        started beside it, by a second cron line say, runs a sweep of its own rather than merge into that one.
        """
        found = self.client.search_runs(
            [self.experiment_id], f"tags.`{record.ROLE}` = '{PARENT}' and tags.`{record.GRID_KEY}` = '{grid_key}' "
                                  f"and attributes.status != '{record.RUNNING_RUN}'",
            max_results=1, order_by=["attributes.start_time DESC"])
        if not found:
            return None
        return found[0].data.tags[record.SWEEP_ID], found[0].data.tags.get(record.STATE, record.INCOMPLETE)

    @bounded
    def sweep_of_parent(self, run_id: str) -> dict:
        """The sweep id and grid key of a parent run given by id (``resume=<run id>``)."""
        try:
            run = self.client.get_run(run_id)
        except MlflowException:
            raise ConfigError(f"resume={run_id}: no such run in {redact(self.uri)}") from None
        if run.data.tags.get(record.ROLE) != PARENT:
            raise ConfigError(f"resume={run_id}: not a sweep's parent run")
        return {"id": run.data.tags[record.SWEEP_ID], "grid_key": run.data.tags.get(record.GRID_KEY)}

    @bounded
    def parent_for(self, sweep: dict, lock: Path | None = None) -> str:
        """The sweep's parent run, found by ``bench.sweep_id`` or created (RUNNING, owned by this process)."""
        with file_lock(lock) if lock else nullcontext():
            found = self.client.search_runs(
                [self.experiment_id],
                f"tags.`{record.SWEEP_ID}` = '{sweep['id']}' and tags.`{record.ROLE}` = '{PARENT}'", max_results=1)
            owner = {"bench.controller_process": process_token(), "bench.heartbeat_ms": str(now_ms())}
            if found:
                run_id = found[0].info.run_id
                self.client.update_run(run_id, status=record.RUNNING_RUN)
                self.client.log_batch(run_id, tags=[RunTag(k, v) for k, v in owner.items()])
                return run_id
            tags = {record.ROLE: PARENT, record.SWEEP_ID: sweep["id"], record.GRID_KEY: sweep["grid_key"],
                    record.KIND: sweep["kind"], record.COMMIT: sweep["commit"], record.STATE: record.INCOMPLETE,
                    "bench.controller": sweep["controller"], "bench.points_planned": str(sweep["total"]), **owner}
            if sweep.get("label"):
                tags[record.LABEL] = sweep["label"]
            run = self.client.create_run(self.experiment_id, start_time=sweep["started_ms"], run_name=sweep["name"],
                                         tags={**tags, **maker(self.uri)})
            params = [Param(key[:250], str(value)[:6000]) for key, value in sweep["params"].items()]
            if params:
                self.client.log_batch(run.info.run_id, params=params)
            self.client.set_experiment_tag(self.experiment_id, SAVED_VIEW + run.info.run_id,
                                           sweep_view(sweep, now_ms()))
            log.info("MLflow parent run %s for sweep %s", run.info.run_id, sweep["id"])
            return run.info.run_id

    @bounded
    def heartbeat(self, parent_id: str) -> None:
        self.client.set_tag(parent_id, "bench.heartbeat_ms", str(now_ms()))

    @bounded
    def children(self, parent_id: str) -> list:
        return self.client.search_runs([self.experiment_id], f"tags.`{record.PARENT_RUN}` = '{parent_id}' and "
                                                              f"tags.`{record.ROLE}` = '{CHILD}'", max_results=50000)

    @bounded
    def close_parent(self, parent_id: str, interrupted: bool = False) -> dict[str, int]:
        """Count the sweep's points into the parent and end it: FINISHED, FAILED (points failed) or KILLED."""
        run = self.client.get_run(parent_id)
        counts = {status: 0 for status in record.STATUSES}
        lost = 0
        for child in self.children(parent_id):
            status = child.data.tags.get(record.STATUS)
            if status in counts:
                counts[status] += 1
            lost += child.data.tags.get(record.FAILURE) == record.EXECUTOR_FAILURE
        planned = int(run.data.tags.get("bench.points_planned", "0"))
        complete = not interrupted and not lost and sum(counts.values()) >= planned
        metrics = [Metric(f"points_{k}", v, now_ms(), 0) for k, v in counts.items()]
        self.client.log_batch(parent_id, metrics=metrics, tags=[
            RunTag(record.STATE, record.COMPLETE if complete else record.INCOMPLETE)])
        status = record.KILLED_RUN if interrupted else record.FAILED_RUN if counts[record.FAILED] \
            else record.FINISHED_RUN if complete else record.KILLED_RUN
        self.client.set_terminated(parent_id, status)
        return counts

    # --- points -----------------------------------------------------------------------------

    @bounded
    def recorded(self, sweep_id: str, key: str) -> Recorded | None:
        """The point's complete record in this sweep (tag ``bench.point_key``), which a resumed sweep keeps.

        Complete: a run terminated with a ``bench.status``. A run cut off while it was recorded (kill -9)
        stays RUNNING, and a point lost on the way to the device failed for the executor, not for itself:
        both are deleted here and the point is measured again.
        """
        existing = self.client.search_runs(
            [self.experiment_id], f"tags.`{record.SWEEP_ID}` = '{sweep_id}' and tags.`{record.POINT_KEY}` = "
                                  f"'{key}' and tags.`{record.ROLE}` = '{CHILD}'")
        for run in existing:
            status = run.data.tags.get(record.STATUS)
            if run.info.status in record.TERMINATED and status in record.STATUSES and \
                    run.data.tags.get(record.FAILURE) != record.EXECUTOR_FAILURE:
                return Recorded(f"MLflow run {run.info.run_id}", status)
        for stale in existing:
            why = "lost on the way to the device" if stale.data.tags.get(record.FAILURE) else "cut off while recorded"
            log.info("deleting run %s (%s): %s; measuring the point again", stale.info.run_id, stale.info.run_name, why)
            self._discard(stale.info.run_id)
        return None

    def _discard(self, run_id: str) -> None:
        """Delete a run cut off half-way. A team server's device account (EDIT) may not delete: it ends the run
        KILLED and takes it out of its sweep instead (``bench.role=discarded``), so no count or table sees it."""
        try:
            self.client.delete_run(run_id)
        except MlflowException as exc:
            if exc.get_http_status_code() != 403:
                raise
            self.client.set_tag(run_id, record.ROLE, record.DISCARDED)
            self.client.set_terminated(run_id, record.KILLED_RUN)

    @bounded
    def upload(self, point: PointRecord, parent_id: str | None) -> str:
        """Create the point's run with everything in it, terminated last, so a run cut off half-way stays
        RUNNING and is replaced by the next attempt."""
        tags = {**point.tags, **({record.PARENT_RUN: parent_id} if parent_id else {}), **maker(self.uri)}
        run = self.client.create_run(self.experiment_id, start_time=point.start_ms, tags=tags, run_name=point.name)
        run_id = run.info.run_id
        self.client.log_batch(run_id, metrics=[Metric(k, v, point.end_ms, 0) for k, v in point.metrics.items()],
                              params=[Param(k, v[:6000]) for k, v in point.params.items()])
        if point.artifacts:
            with tempfile.TemporaryDirectory() as folder:
                for name, content in point.artifacts.items():
                    (Path(folder) / name).write_bytes(content if isinstance(content, bytes) else content.encode())
                self.client.log_artifacts(run_id, folder)
        self.client.set_terminated(run_id, point.run_status, end_time=point.end_ms)
        return run_id

    @bounded
    def upload_once(self, point: PointRecord, parent_id: str | None) -> tuple[str, bool]:
        """The point's run, uploaded unless a complete run with its ``bench.point_id`` is there already; a run
        cut off half-way by an earlier attempt is discarded first (``_discard``). (run id, uploaded now)."""
        existing = self.client.search_runs([self.experiment_id], f"tags.`{record.POINT_ID}` = '{point.point_id}' "
                                                                  f"and tags.`{record.ROLE}` = '{CHILD}'")
        complete = [run for run in existing if run.info.status in record.TERMINATED]
        if complete:
            return complete[0].info.run_id, False
        for partial in existing:
            log.info("%s: deleting run %s, cut off while it was uploaded", point.name, partial.info.run_id)
            self._discard(partial.info.run_id)
        return self.upload(point, parent_id), True


SAVED_VIEW = "mlflow.sharedViewState."  # experiment tag prefix of the UI's saved views ("Views" menu)
# End-to-end and (CUDA) GPU compute figures side by side, then how far the point's processes agreed.
VIEW_COLUMNS = ["metrics.`latency_ms_median`", "metrics.`speedup`", "metrics.`gpu_ms_median`", "metrics.`gpu_speedup`",
                "metrics.`latency_ms_spread`", "metrics.`throughput_ips`",
                "attributes.`Description`", "params.`model`", "params.`backend`", "params.`precision`",
                "params.`input.shape`"]


def sweep_view(sweep: dict, created_ms: int) -> str:
    """The MLflow UI's saved view of one sweep: its runs, fastest first, with the numbers as columns.

    The UI keeps its table layout (columns, sort) in the browser; a saved view is the one layout a client can
    hand it, and the link opens it. Sorted, the rows are flat: parent and children side by side.
    """
    state = {"searchFilter": f"tags.`{record.SWEEP_ID}` = '{sweep['id']}'",
             "orderByKey": "metrics.`latency_ms_median`", "orderByAsc": True, "selectedColumns": VIEW_COLUMNS}
    return json.dumps({"name": sweep["name"], "createdAt": created_ms, "updatedAt": created_ms,
                       "state": json.dumps(state)})


def link(uri: str, experiment_id: str, parent_id: str | None = None) -> str:
    """The address that opens a sweep's runs (its saved view) in the MLflow UI's model-training view.

    For a local store it is the address of ``mlflow ui`` on its default port; for a server, the server's.
    ``workflowType`` is in the link because MLflow 3.17 opens every experiment in its GenAI view otherwise
    (it ignores ``mlflow.experimentKind``); a search parameter would make the UI ignore the view.
    """
    base = uri.rstrip("/") if uri.startswith(("http://", "https://")) else "http://127.0.0.1:5000"
    query = "workflowType=machine_learning"
    if parent_id:
        query += "&" + urllib.parse.urlencode({"viewStateShareKey": parent_id})
    return f"{redact(base)}/#/experiments/{experiment_id}/runs?{query}"
