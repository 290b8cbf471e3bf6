"""Where the store is, and what its failures mean: the URI's checks, a server's reachability, MLflow's
retry limits, and each failure as one line that never shows a password."""
from __future__ import annotations

import email.utils
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from mlflow.exceptions import MlflowException
from requests.exceptions import RequestException

from bench.contract.errors import ConfigError
from bench.contract.names import MAKER
from bench.contract.protocol import clock_offset


# What a server that is down, restarting or unreachable raises; a point's measurement then goes to the spool.
SERVER_ERRORS = (MlflowException, RequestException, OSError)


class Unreachable(ConfigError):
    """The tracking server does not answer (as opposed to answering with an error)."""


def tracking_uri(uri: str | None) -> str:
    """Config, then $MLFLOW_TRACKING_URI, then SQLite ``mlflow.db`` in the launch directory."""
    return uri or os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path.cwd() / 'mlflow.db'}"


def is_server(uri: str) -> bool:
    """A tracking server (http or https): reached over the network, its own UI; any other store is a file here."""
    return uri.startswith(("http://", "https://"))


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


def check_reachable(uri: str, timeout_s: float = 5.0) -> int:
    """An http(s) server that does not answer: Unreachable, before any work. Otherwise the milliseconds to add to
    this machine's clock to read the server's (its HTTP Date header; 0 within a minute, or with no server to ask):
    a device whose clock is hours off records in the server's time."""
    if not is_server(uri):
        return 0
    sent = time.time()
    try:
        with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=timeout_s) as answer:
            date = answer.headers.get("Date")
    except urllib.error.HTTPError as exc:
        date = exc.headers.get("Date")  # the server answered: reachable (the login is checked by the first real call)
    except (OSError, ValueError) as exc:
        raise Unreachable(f"tracking URI {redact(uri)} cannot be reached: {getattr(exc, 'reason', exc)}") from None
    received = time.time()
    try:
        server = email.utils.parsedate_to_datetime(date).timestamp() + 0.5  # the header truncates to the second
    except (TypeError, ValueError):
        return 0
    return clock_offset((server - (sent + received) / 2) * 1000)


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


def maker(uri: str) -> dict[str, str]:
    """The tag naming the account that makes a run on a server (the team server lets only it change the run)."""
    user = os.environ.get("MLFLOW_TRACKING_USERNAME")
    return {MAKER: user} if user and is_server(uri) else {}


def auth_message(uri: str, status: int) -> str:
    if status == 403:
        return (f"tracking server {redact(uri)} refused the user in MLFLOW_TRACKING_USERNAME (HTTP 403): "
                "it needs EDIT permission on the experiment")
    if not os.environ.get("MLFLOW_TRACKING_USERNAME"):
        return (f"tracking server {redact(uri)} requires a login (HTTP 401): set MLFLOW_TRACKING_USERNAME and "
                "MLFLOW_TRACKING_PASSWORD")
    return (f"tracking server {redact(uri)} rejected the login (HTTP 401): check MLFLOW_TRACKING_USERNAME and "
            "MLFLOW_TRACKING_PASSWORD")
