"""The MLflow store: its sweeps' parent runs, one run per point, resume, and the spool.

It uses ``MlflowClient`` with explicit run ids rather than ``mlflow.start_run``, so no run is left
"active" in process-global state and parallel launchers cannot cross their runs. The store is
checked before any work: a missing folder, an unreadable database, a URI MLflow does not know, a
server that does not answer or refuses the login are one line each. When a server cannot take a
point, the measurement goes to the spool (``bench.store.spool``) and ``python -m bench.store.sync`` uploads it.
"""
from __future__ import annotations

import functools
import logging
import os
import socket
import tempfile
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from bench.contract import names
from bench.contract.errors import ConfigError
from bench.contract.names import CHILD, CLOCK_OFFSET_S, CONTROLLER, CONTROLLER_PROCESS, HEARTBEAT_MS, LAST_WRITE_MS, \
    PARENT, POINTS_PLANNED
from bench.contract.protocol import EXECUTOR_FAILURE, FAILED, STATUSES, now_ms
from bench.store import record
from bench.store.database import check_database
from bench.store.address import SERVER_ERRORS, Unreachable, auth_message, bounded_http, check_reachable, check_uri, \
    error_line, is_server, maker, redact, sqlite_path, store_error, tracking_uri
from bench.store.locks import file_lock, process_gone, process_token, store_lock
from bench.store.record import PointRecord
from bench.store.views import SAVED_VIEW, sweep_view

log = logging.getLogger(__name__)

# A RUNNING parent run of another host is taken as abandoned when it has had no news for this long.
ABANDONED_AFTER_S = 24 * 3600
# What the MLflow UI's home page shows of the experiment. The kind opens it in the model-training view in UIs
# that honour it (3.17 does not: the view is the browser's choice), so the description, shown on the home page,
# says how to get there.
EXPERIMENT_TAGS = {
    "mlflow.experimentKind": "custom_model_development",
    names.DESCRIPTION: "trt-bench: one parent run per sweep, one child run per point. Open a sweep with the link "
                       "it printed (python -m bench.store.ui prints it again), or switch the sidebar to "
                       "\"Model training\".",
}


def holds_its_point(run) -> bool:
    """A point's run that holds its result: ended, with a status, and not lost on the way to the device. Any other
    (cut off while recorded, lost) is measured again by its sweep."""
    return run.info.status in record.TERMINATED and run.data.tags.get(names.STATUS) in STATUSES and \
        run.data.tags.get(names.FAILURE) != EXECUTOR_FAILURE


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
        self.clock_offset_ms = 0  # added to this machine's times to record them in the server's clock
        unusable = check_database(self.uri, redact(self.uri))
        if unusable:
            raise ConfigError(unusable)
        try:
            with store_lock(self.uri):
                self.client = MlflowClient(self.uri)
        except Exception as exc:  # noqa: BLE001 - MLflow and SQLAlchemy raise many types for a bad store
            raise store_error(self.uri, exc) from None
        try:
            offset_ms = check_reachable(self.uri)
            self._experiment_id = self._connect()
            self.clock_offset_ms = offset_ms
            if self.clock_offset_ms:
                log.warning("this machine's clock is %.0f s %s the tracking server's; runs are recorded in the "
                            "server's time (tag %s)", abs(self.clock_offset_ms) / 1000,
                            "behind" if self.clock_offset_ms > 0 else "ahead of", CLOCK_OFFSET_S)
        except (Unreachable, *SERVER_ERRORS) as exc:
            if self.spool_dir is None or not is_server(self.uri):
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
            missing = {key: value for key, value in EXPERIMENT_TAGS.items() if key not in experiment.tags}
            try:  # a description the team wrote stays theirs; an account that may not tag it goes without
                for key, value in missing.items():
                    self.client.set_experiment_tag(experiment.experiment_id, key, value)
            except MlflowException:
                pass
            return experiment.experiment_id
        path = sqlite_path(self.uri)
        # Artifacts beside the database, not in ./mlruns of wherever the first sweep happened to start.
        location = (path.resolve().parent / "mlartifacts").as_uri() if path else None
        try:
            return self.client.create_experiment(name, artifact_location=location, tags=EXPERIMENT_TAGS)
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
                self.client.set_experiment_tag(self.experiment_id, LAST_WRITE_MS, str(now_ms()))
            except SERVER_ERRORS as exc:
                status = exc.get_http_status_code() if isinstance(exc, MlflowException) else None
                if status in (401, 403):  # an account that may read the experiment but not write to it
                    raise ConfigError(auth_message(self.uri, status)) from None
                if self.spool_dir is None or not is_server(self.uri):
                    raise store_error(self.uri, exc) from None

    # --- sweeps -----------------------------------------------------------------------------

    @bounded
    def settle_abandoned(self) -> list[str]:
        """Parent runs left RUNNING by a sweep whose process has gone: KILLED and incomplete, so they resume."""
        settled = []
        running = self.client.search_runs([self.experiment_id], f"tags.`{names.ROLE}` = '{PARENT}' and "
                                                                 "attributes.status = 'RUNNING'", max_results=1000)
        for run in running:
            token = run.data.tags.get(CONTROLLER_PROCESS, "")
            gone = process_gone(token)
            quiet_s = (now_ms() - int(run.data.tags.get(HEARTBEAT_MS, run.info.start_time))) / 1000
            if gone or (gone is None and quiet_s > ABANDONED_AFTER_S):
                try:
                    self.client.set_tag(run.info.run_id, names.STATE, names.INCOMPLETE)
                except MlflowException as exc:
                    if exc.get_http_status_code() != 403:
                        raise
                    continue  # another account's sweep on a team server (bench.store.server_auth): its device settles it
                self.client.set_terminated(run.info.run_id, record.KILLED_RUN)
                log.info("sweep %s (run %s) was abandoned by %s; marked KILLED, incomplete (its grid resumes it)",
                         run.data.tags.get(names.SWEEP_ID), run.info.run_id, token or "an unknown process")
                settled.append(run.info.run_id)
        return settled

    @bounded
    def latest_sweep(self, grid_key: str) -> tuple[str, str] | None:
        """(sweep id, state) of the newest sweep of this grid that no process is running now, or None.

        A RUNNING parent belongs to a live sweep (``settle_abandoned`` has closed the others): the same command
        started beside it, by a second cron line say, runs a sweep of its own rather than merge into that one.
        """
        found = self.client.search_runs(
            [self.experiment_id], f"tags.`{names.ROLE}` = '{PARENT}' and tags.`{names.GRID_KEY}` = '{grid_key}' "
                                  f"and attributes.status != '{record.RUNNING_RUN}'",
            max_results=1, order_by=["attributes.start_time DESC"])
        if not found:
            return None
        return found[0].data.tags[names.SWEEP_ID], found[0].data.tags.get(names.STATE, names.INCOMPLETE)

    @bounded
    def sweep_of_parent(self, run_id: str) -> dict:
        """The sweep id and grid key of a parent run given by id (``resume=<run id>``)."""
        try:
            run = self.client.get_run(run_id)
        except MlflowException:
            raise ConfigError(f"resume={run_id}: no such run in {redact(self.uri)}") from None
        if run.data.tags.get(names.ROLE) != PARENT:
            raise ConfigError(f"resume={run_id}: not a sweep's parent run")
        return {"id": run.data.tags[names.SWEEP_ID], "grid_key": run.data.tags.get(names.GRID_KEY)}

    @bounded
    def parent_for(self, sweep: dict, lock: Path | None = None) -> str:
        """The sweep's parent run, found by ``bench.sweep_id`` or created (RUNNING, owned by this process)."""
        with file_lock(lock) if lock else nullcontext():
            found = self.client.search_runs(
                [self.experiment_id],
                f"tags.`{names.SWEEP_ID}` = '{sweep['id']}' and tags.`{names.ROLE}` = '{PARENT}'", max_results=1)
            owner = {CONTROLLER_PROCESS: process_token(), HEARTBEAT_MS: str(now_ms())}
            if found:
                run_id = found[0].info.run_id
                self.client.update_run(run_id, status=record.RUNNING_RUN)
                self.client.log_batch(run_id, tags=[RunTag(k, v) for k, v in owner.items()])
                return run_id
            tags = {names.ROLE: PARENT, names.SWEEP_ID: sweep["id"], names.GRID_KEY: sweep["grid_key"],
                    names.KIND: sweep["kind"], names.COMMIT: sweep["commit"], names.STATE: names.INCOMPLETE,
                    CONTROLLER: sweep["controller"], POINTS_PLANNED: str(sweep["total"]), **owner}
            if sweep.get("label"):
                tags[names.LABEL] = sweep["label"]
            # A sweep this machine started is recorded in the server's clock (another machine's: as it came).
            shift = self.clock_offset_ms if sweep.get("controller") == socket.gethostname() else 0
            if shift:
                tags[CLOCK_OFFSET_S] = f"{shift / 1000:.0f}"
            run = self.client.create_run(self.experiment_id, start_time=sweep["started_ms"] + shift,
                                         run_name=sweep["name"], tags={**tags, **maker(self.uri)})
            params = [Param(key[:250], str(value)[:6000]) for key, value in sweep["params"].items()]
            if params:
                self.client.log_batch(run.info.run_id, params=params)
            self.client.set_experiment_tag(self.experiment_id, SAVED_VIEW + run.info.run_id,
                                           sweep_view(sweep, now_ms()))
            log.info("%s: its runs go under MLflow parent run %s", sweep["name"], run.info.run_id)
            return run.info.run_id

    @bounded
    def heartbeat(self, parent_id: str) -> None:
        self.client.set_tag(parent_id, HEARTBEAT_MS, str(now_ms()))

    @bounded
    def children(self, parent_id: str) -> list:
        return self.client.search_runs([self.experiment_id], f"tags.`{names.PARENT_RUN}` = '{parent_id}' and "
                                                              f"tags.`{names.ROLE}` = '{CHILD}'", max_results=50000)

    @bounded
    def close_parent(self, parent_id: str, interrupted: bool = False) -> dict[str, int]:
        """Count the sweep's points into the parent and end it: FINISHED, FAILED (points failed) or KILLED."""
        run = self.client.get_run(parent_id)
        counts = {status: 0 for status in STATUSES}
        lost = 0
        for child in self.children(parent_id):
            status = child.data.tags.get(names.STATUS)
            if status in counts:
                counts[status] += 1
            lost += child.data.tags.get(names.FAILURE) == EXECUTOR_FAILURE
        planned = int(run.data.tags.get(POINTS_PLANNED, "0"))
        complete = not interrupted and not lost and sum(counts.values()) >= planned
        metrics = [Metric(f"points_{k}", v, now_ms(), 0) for k, v in counts.items()]
        self.client.log_batch(parent_id, metrics=metrics, tags=[
            RunTag(names.STATE, names.COMPLETE if complete else names.INCOMPLETE)])
        status = record.KILLED_RUN if interrupted else record.FAILED_RUN if counts[FAILED] \
            else record.FINISHED_RUN if complete else record.KILLED_RUN
        self.client.set_terminated(parent_id, status)
        return counts

    # --- points -----------------------------------------------------------------------------

    @bounded
    def recorded(self, sweep_id: str) -> dict[str, Recorded]:
        """Point key -> complete record of the points this sweep holds (one query), which a resumed sweep keeps.

        Complete: a run terminated with a ``bench.status``. A run cut off while it was recorded (kill -9)
        stays RUNNING, and a point lost on the way to the device failed for the executor, not for itself:
        both are deleted here and their points are measured again.
        """
        found: dict[str, Recorded] = {}
        stale = []
        for run in self.client.search_runs([self.experiment_id], f"tags.`{names.SWEEP_ID}` = '{sweep_id}' and "
                                                                 f"tags.`{names.ROLE}` = '{CHILD}'", max_results=50000):
            if holds_its_point(run):
                found[run.data.tags.get(names.POINT_KEY, "")] = Recorded(f"MLflow run {run.info.run_id}",
                                                                         run.data.tags[names.STATUS])
            else:
                stale.append(run)
        for run in stale:
            if run.data.tags.get(names.POINT_KEY, "") in found:
                continue
            why = "lost on the way to the device" if run.data.tags.get(names.FAILURE) else "cut off while recorded"
            log.info("deleting run %s (%s): %s; measuring the point again", run.info.run_id, run.info.run_name, why)
            self._discard(run.info.run_id)
        return found

    def _discard(self, run_id: str) -> None:
        """Delete a run cut off half-way. A team server's device account (EDIT) may not delete: it ends the run
        KILLED and takes it out of its sweep instead (``bench.role=discarded``), so no count or table sees it."""
        try:
            self.client.delete_run(run_id)
        except MlflowException as exc:
            if exc.get_http_status_code() != 403:
                raise
            self.client.set_tag(run_id, names.ROLE, names.DISCARDED)
            self.client.set_terminated(run_id, record.KILLED_RUN)

    @bounded
    def upload(self, point: PointRecord, parent_id: str | None) -> str:
        """Create the point's run with everything in it, terminated last, so a run cut off half-way stays
        RUNNING and is replaced by the next attempt."""
        tags = {**point.tags, **({names.PARENT_RUN: parent_id} if parent_id else {}), **maker(self.uri)}
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
        existing = self.client.search_runs([self.experiment_id], f"tags.`{names.POINT_ID}` = '{point.point_id}' "
                                                                  f"and tags.`{names.ROLE}` = '{CHILD}'")
        complete = [run for run in existing if run.info.status in record.TERMINATED]
        if complete:
            return complete[0].info.run_id, False
        for partial in existing:
            log.info("%s: deleting run %s, cut off while it was uploaded", point.name, partial.info.run_id)
            self._discard(partial.info.run_id)
        return self.upload(point, parent_id), True


