"""Typed schema for every config group, registered in Hydra's ConfigStore.

Each group node is a dataclass, so an override with a typo (``timing.min_iter=5``) or a
wrong type is rejected by Hydra before any work starts, and the Python API and the CLI
share one schema.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

PRECISIONS = ("fp32", "fp16", "bf16", "int8")


@dataclass
class ModelConfig:
    name: str = MISSING
    # "random" (seeded init + BatchNorm re-estimation), "pretrained" (torchvision weights that
    # are already in the local torch hub cache) or a path to a local state-dict file.
    weights: str = "random"
    # Random batches used to re-estimate BatchNorm statistics of random weights; without it
    # activations of deep models overflow fp16.
    bn_recalibration_batches: int = 8


@dataclass
class PrecisionConfig:
    name: str = MISSING


@dataclass
class InputConfig:
    height: Optional[int] = None  # None: the model's default size
    width: Optional[int] = None
    batch_size: int = 1


@dataclass
class TimingConfig:
    warmup_iters: int = 10
    warmup_s: float = 1.0
    min_iters: int = 50
    min_s: float = 3.0
    # True: each timed call copies the input host->device and the output back (host latency).
    include_copies: bool = False


@dataclass
class CalibrationConfig:
    source: str = "random"  # "random" or "folder"
    folder: Optional[str] = None
    num_batches: int = 8
    seed: int = 1234


@dataclass
class AccuracyConfig:
    batches: int = 4
    seed: int = 0


@dataclass
class TrackingConfig:
    uri: Optional[str] = None  # None: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db in the launch dir
    experiment: str = "trt-bench"
    kind: str = "sweep"  # tag bench.kind, e.g. "nightly"
    server: bool = False  # true (tracking=server): the URI must be an http(s) MLflow tracking server
    # Where a point's complete result goes when the server cannot take it (python -m bench.sync uploads
    # it later); None: never spool, a failure to record is an error.
    spool_dir: Optional[str] = None
    timeout_s: int = 10  # per HTTP request to a tracking server
    retries: int = 2  # per HTTP request, before the server counts as unreachable


@dataclass
class BackendConfig:
    name: str = MISSING


@dataclass
class AutoBackendConfig(BackendConfig):
    name: str = "auto"
    # The first installed backend that supports (device, precision) wins; documented in README.
    order: list[str] = field(
        default_factory=lambda: ["tensorrt", "torch2trt", "torch_tensorrt", "onnxruntime", "inductor", "pytorch"]
    )


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    backend: Any = MISSING
    precision: PrecisionConfig = field(default_factory=PrecisionConfig)
    input: InputConfig = field(default_factory=InputConfig)
    timing: TimingConfig = field(default_factory=TimingConfig)
    calibration: CalibrationConfig = field(default_factory=CalibrationConfig)
    accuracy: AccuracyConfig = field(default_factory=AccuracyConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    threads: Optional[int] = None  # CPU threads for torch and ONNX Runtime; None: library default
    cudnn_benchmark: bool = True  # let cuDNN pick its fastest algorithms for eager and compiled runs
    raw_baseline: bool = True  # time eager fp32 in the same run, for a same-run speed-up
    isolate: bool = True  # run each point in a child process, so a crash is recorded, not fatal
    cache_dir: str = "${oc.env:HOME}/.cache/trt-bench"
    seed: int = 0


def register_configs(backend_schemas: dict[str, type[BackendConfig]]) -> None:
    """Register the root schema and one schema per backend (``backend/<name>.yaml`` extends ``base_<name>``)."""
    cs = ConfigStore.instance()
    cs.store(name="base_config", node=Config)
    cs.store(group="backend", name="base_auto", node=AutoBackendConfig)
    for name, schema in backend_schemas.items():
        cs.store(group="backend", name=f"base_{name}", node=schema)
