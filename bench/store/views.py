"""What a user opens: the sweep's saved view in the MLflow UI (its columns, its filter) and the link to it."""
from __future__ import annotations

import json
import shlex
import urllib.parse

from bench.contract import names
from bench.store.address import is_server, redact, tracking_uri


SAVED_VIEW = "mlflow.sharedViewState."  # experiment tag prefix of the UI's saved views ("Views" menu)


LOCAL_UI = "http://127.0.0.1:5000"  # where ``python -m bench.store.ui`` (and ``mlflow ui``) serve by default

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
    state = {"searchFilter": f"tags.`{names.SWEEP_ID}` = '{sweep['id']}'",
             "orderByKey": "metrics.`latency_ms_median`", "orderByAsc": True, "selectedColumns": VIEW_COLUMNS}
    return json.dumps({"name": sweep["name"], "createdAt": created_ms, "updatedAt": created_ms,
                       "state": json.dumps(state)})


def link(uri: str, experiment_id: str, parent_id: str | None = None, ui: str = LOCAL_UI) -> str:
    """The address that opens a sweep's runs (its saved view) in the MLflow UI's model-training view.

    For a server it is the server's own address; for a local store, that of the UI ``python -m bench.store.ui``
    starts (``ui``). ``workflowType`` is in the link because MLflow 3.17 opens every experiment in its GenAI view
    otherwise (it ignores ``mlflow.experimentKind``); a search parameter would make the UI ignore the view.
    """
    base = uri.rstrip("/") if is_server(uri) else ui
    query = "workflowType=machine_learning"
    if parent_id:
        query += "&" + urllib.parse.urlencode({"viewStateShareKey": parent_id})
    return f"{redact(base)}/#/experiments/{experiment_id}/runs?{query}"


def how_to_open(name: str, uri: str, address: str, sweep_id: str) -> list[str]:
    """The lines that end a sweep: where to see it in the MLflow UI, and its tables, each under the sweep's name."""
    if is_server(uri):
        where = f"{name} in the MLflow UI: {address}"
    else:
        here = uri == tracking_uri(None)  # the store the command opens without --tracking-uri
        command = "python -m bench.store.ui" + ("" if here else f" --tracking-uri {shlex.quote(redact(uri))}")
        where = f"{name} in the MLflow UI: {address}  (start the UI first: {command})"
    return [where, f"{name} as tables: python -m analysis.report --sweep {sweep_id[:8]}"]
