"""Opening a store to read it: a client that never creates an empty database by mistake, an experiment by name,
and a sweep by whatever a person has of it (``latest``, the name it was printed with, its parent run id)."""
from __future__ import annotations

import re
from collections.abc import Iterator

from mlflow.entities import Run
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from bench.contract.errors import ConfigError
from bench.contract.names import PARENT, ROLE, SWEEP_ID
from bench.store.address import check_reachable, check_uri, redact, sqlite_path, store_error, tracking_uri


def connect(uri: str | None = None) -> tuple[MlflowClient, str]:
    """A client for an existing, readable store (``uri`` as run.py resolves it); never creates an empty SQLite
    database by mistake."""
    uri = tracking_uri(uri)
    check_uri(uri)
    check_reachable(uri)
    path = sqlite_path(uri)
    if path is not None and not path.is_file():
        raise ConfigError(f"tracking URI {uri}: no MLflow database at {path} (a sweep makes one: python run.py -m ...)")
    try:
        client = MlflowClient(uri)
        client.search_experiments(max_results=1)
    except Exception as exc:  # noqa: BLE001 - a corrupt database, a foreign file, a store MLflow cannot open
        raise store_error(uri, exc) from None
    return client, uri


def runs_newest_first(client: MlflowClient, experiment_id: str, query: str, page: int = 10000) -> Iterator[Run]:
    """Every run the query finds, newest first, a page at a time: a caller that has enough stops early."""
    token = None
    while True:
        found = client.search_runs([experiment_id], query, max_results=page, page_token=token,
                                   order_by=["attributes.start_time DESC"])
        yield from found
        token = found.token
        if not token:
            return


def experiment_id(client: MlflowClient, name: str, uri: str) -> str:
    try:
        experiment = client.get_experiment_by_name(name)
    except MlflowException as exc:
        raise ConfigError(f"tracking URI {redact(uri)} cannot be read: {str(exc).splitlines()[0]}") from None
    if experiment is None:
        known = sorted(e.name for e in client.search_experiments())
        raise ConfigError(f"experiment {name!r} not found in {redact(uri)} "
                          f"(experiments there: {', '.join(known) or 'none'})")
    return experiment.experiment_id


def find_sweep(client: MlflowClient, exp_id: str, sweep: str, experiment: str) -> Run:
    """A sweep's parent run: ``latest`` (the newest), the name the sweep printed and the UI shows (``sweep
    e7b4f844``, its label), the start of its sweep id (``e7b4f844``), or its parent run id. Of several sweeps
    with one name (a label used twice), the newest."""
    parents = f"tags.`{ROLE}` = '{PARENT}'"
    newest = ["attributes.start_time DESC"]
    if sweep == "latest":
        found = client.search_runs([exp_id], parents, max_results=1, order_by=newest)
        if not found:
            raise ConfigError(f"experiment {experiment!r} has no sweep yet; run python run.py -m ...")
        return found[0]
    quoted = sweep.replace("'", "\\'")
    found = client.search_runs([exp_id], f"{parents} and attributes.run_name = '{quoted}'", max_results=1,
                               order_by=newest)
    prefix = sweep.split()[-1] if sweep.strip() else ""
    if not found and re.fullmatch(r"[0-9a-f]{4,32}", prefix):
        found = client.search_runs([exp_id], f"{parents} and tags.`{SWEEP_ID}` LIKE '{prefix}%'", max_results=1,
                                   order_by=newest)
        if not found and len(prefix) == 32:
            found = _parent_by_run_id(client, prefix)
    if not found:
        raise ConfigError(f"sweep {sweep!r}: no such sweep in experiment {experiment!r} (give the name it printed, "
                          "e.g. 'sweep e7b4f844', its parent run id, or latest)")
    return found[0]


def _parent_by_run_id(client: MlflowClient, run_id: str) -> list[Run]:
    try:
        run = client.get_run(run_id)
    except MlflowException:
        return []
    if run.data.tags.get(ROLE) != PARENT:
        raise ConfigError(f"run {run_id} is not a sweep's parent run (tag {ROLE}={run.data.tags.get(ROLE)})")
    return [run]
