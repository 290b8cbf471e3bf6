"""The MLflow stores committed under docs/results/ show what a user of this version sees: no sweep left RUNNING,
one name per point and variant, a saved view per sweep, and artifacts that resolve from the repository's root."""
from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from conftest import ROOT

STORES = sorted((ROOT / "docs" / "results").glob("*.db"))


@pytest.mark.parametrize("path", STORES, ids=[p.name for p in STORES])
def test_a_committed_store_reads_as_this_version_records(path, tmp_path):
    copy = tmp_path / path.name  # MLflow may migrate a store it opens: never the committed file
    copy.write_bytes(path.read_bytes())
    client = MlflowClient(f"sqlite:///{copy}")
    experiments = [e for e in client.search_experiments() if e.name != "Default"]
    assert experiments
    for experiment in experiments:
        runs = client.search_runs([experiment.experiment_id], max_results=1000)
        assert not [r.info.run_name for r in runs if r.info.status == "RUNNING"]
        parents = [r for r in runs if r.data.tags.get("bench.role") == "parent"]
        children = [r for r in runs if r.data.tags.get("bench.role") == "point"]
        assert parents and children
        # one name per point and variant within a sweep (a store of repeated sweeps holds each name once per sweep)
        names = Counter((r.data.tags.get("bench.sweep_id"), r.info.run_name) for r in children)
        assert not [name for name, n in names.items() if n > 1]
        for parent in parents:
            assert f"mlflow.sharedViewState.{parent.info.run_id}" in experiment.tags
        # A store that carries its artifacts keeps them beside it, at paths relative to the repository's root
        # (the older stores have none: docs/results/h100.md says so).
        if all(r.info.artifact_uri.startswith("docs/results/") for r in runs):
            old = os.getcwd()
            os.chdir(ROOT)
            try:
                child = children[0]
                assert "config.yaml" in {a.path for a in client.list_artifacts(child.info.run_id)}
                assert Path(client.download_artifacts(child.info.run_id, "config.yaml")).read_text().strip()
            finally:
                os.chdir(old)
