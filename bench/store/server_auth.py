"""The team server's login check (``authorization_function`` in basic_auth.ini): MLflow's basic auth, plus
the one rule its per-experiment permissions cannot express: a run is changed only by the account that made it.

MLflow's EDIT on an experiment lets an account end, rename or tag every run in it. Here every run is made
with ``mlflow.user`` naming the account that creates it, a tag no one but the admin may change afterwards,
and a write to a run made by another account is refused (HTTP 403); the admin may do anything. Runs
whose ``mlflow.user`` names no account (made before this rule) stay under MLflow's permissions alone.
Imported by the MLflow server's workers only, never on a device.
"""
from __future__ import annotations

from flask import Response, g, request
from mlflow.exceptions import MlflowException
from mlflow.server.auth import authenticate_request_basic_auth, store
from mlflow.server.handlers import _get_tracking_store

from bench.contract.names import MAKER

RUN_WRITES = ("update", "delete", "restore", "set-tag", "delete-tag", "log-batch", "log-metric", "log-parameter",
              "log-inputs", "outputs", "log-model")


def authenticate_request_owner_only():
    """Basic auth; then a run's writes by its maker only, and a new run made in the caller's own name."""
    if "trt_bench_auth" not in g:  # MLflow asks again in its permission checks: decide once per request
        g.trt_bench_auth = _decide()
    return g.trt_bench_auth


def _decide():
    authorization = authenticate_request_basic_auth()
    if isinstance(authorization, Response) or request.method != "POST" or "/mlflow/runs/" not in request.path:
        return authorization
    operation = request.path.rsplit("/", 1)[-1]
    body = request.get_json(silent=True) or {}
    user = authorization.username
    if store.get_user(user).is_admin:
        return authorization
    if operation == "create":
        named = [tag.get("value") for tag in body.get("tags", []) if tag.get("key") == MAKER]
        return authorization if named == [user] else _refused(f"a run is made with the tag {MAKER} = {user}")
    if operation not in RUN_WRITES:
        return authorization
    if MAKER in {body.get("key"), *(tag.get("key") for tag in body.get("tags", []))}:
        return _refused(f"only the admin changes a run's {MAKER}")
    try:
        run = _get_tracking_store().get_run(body.get("run_id") or body.get("run_uuid") or "")
    except MlflowException:
        return authorization  # no such run: MLflow answers that itself
    maker = run.data.tags.get(MAKER)
    if maker and maker != user and store.has_user(maker):
        return _refused(f"run {run.info.run_id} belongs to {maker}")
    return authorization


def _refused(why: str) -> Response:
    return Response(f"Permission denied: {why}", status=403)
