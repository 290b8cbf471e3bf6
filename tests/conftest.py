"""Shared fixtures: a real MLflow store in a temp dir and Hydra's compose API over conf/."""
from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
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


@dataclass(frozen=True)
class Sweep:
    store: str
    proc: subprocess.CompletedProcess


@pytest.fixture(scope="session")
def small_sweep(tmp_path_factory, cache_dir) -> Sweep:
    """One real ``run.py -m`` sweep that several tests read (they must not add runs to its store).

    resnet18 at 64x64: pytorch and onnxruntime x fp32 and int8, so three measured points and
    one skipped (pytorch int8).
    """
    folder = tmp_path_factory.mktemp("small-sweep")
    store = f"sqlite:///{folder / 'mlflow.db'}"
    proc = run_cli("-m", *SMALL, "backend=pytorch,onnxruntime", "precision=fp32,int8", f"tracking.uri={store}",
                   f"cache_dir={cache_dir}", f"hydra.sweep.dir={folder / 'sweep'}", cwd=folder)
    return Sweep(store, proc)


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
