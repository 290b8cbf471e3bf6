"""Shared fixtures: a real MLflow store in a temp dir and Hydra's compose API over conf/."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from mlflow.tracking import MlflowClient

ROOT = Path(__file__).resolve().parent.parent
# Small and fast: resnet18 at 64x64 with a handful of timed iterations.
SMALL = ["model=resnet18", "input=64x64", "timing=quick", "accuracy.batches=2", "calibration.num_batches=4"]


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    """One conversion cache for the whole session, so ONNX exports are made once."""
    return tmp_path_factory.mktemp("bench-cache")


@pytest.fixture
def store(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


@pytest.fixture
def make_cfg(store, cache_dir):
    """Compose the real config with overrides, as run.py would."""
    from bench.runner import register

    register()

    def _make(*overrides: str):
        with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
            return compose("config", overrides=[*SMALL, f"tracking.uri={store}", f"cache_dir={cache_dir}",
                                                 *overrides])

    return _make


def run_cli(*args: str, cwd: Path, env: dict | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run run.py as a user would."""
    return subprocess.run([sys.executable, str(ROOT / "run.py"), *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


def runs(store: str, experiment: str = "trt-bench"):
    client = MlflowClient(store)
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None, f"experiment {experiment} not in {store}"
    return client.search_runs([exp.experiment_id], max_results=1000)
