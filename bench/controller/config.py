"""Typed schema for every config group, registered in Hydra's ConfigStore.

Each group node is a dataclass, so an override with a typo (``timing.min_iter=5``) or a wrong type
is rejected by Hydra before any work starts, and the Python API and the CLI share one schema.
Backend options are declared by each backend of the measuring core (``OPTIONS``) and listed in
``conf/backend/<name>.yaml``; the device checks them when it resolves the plan.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING


@dataclass
class ModelConfig:
    name: str = MISSING
    # "random" (seeded init + BatchNorm re-estimation), "pretrained" (torchvision's weights, downloaded into
    # the torch cache on first use) or the path of a state-dict file on the measured device.
    weights: str = "random"
    # Random batches used to re-estimate BatchNorm statistics of random weights; without it activations of
    # deep models overflow fp16.
    bn_recalibration_batches: int = 8


@dataclass
class PrecisionConfig:
    name: str = MISSING


@dataclass
class ScenarioConfig:
    name: str = "latency"  # latency (sync per call) | throughput (back-to-back, sync per window)


@dataclass
class InputConfig:
    height: Optional[int] = None  # None: the model's default size
    width: Optional[int] = None
    batch_size: int = 1


@dataclass
class TimingConfig:
    """Per process and per series (the converted model, and eager fp32 beside it); docs/methodology.md."""

    warmup_iters: int = 10
    warmup_s: float = 0.5
    min_iters: int = 50
    min_s: float = 1.0
    # True: each timed call copies the input host->device and the output back (host latency).
    include_copies: bool = False
    # Fresh processes per point; the point's figure is the median of their medians.
    repeats: int = 3
    interval: float = 0.95  # level of the interval recorded with each figure
    # A point whose processes' medians disagree by more than this (1.4826 x MAD / median) is tagged unstable.
    unstable_spread: float = 0.05
    # Lock the GPU's clocks for the point (nvidia-smi -lgc as root, jetson_clocks on a Jetson), restored after.
    lock_clocks: bool = False
    # CUDA points: each process pinned to one CPU, so the thread launching the GPU's work never migrates.
    pin_cpu: bool = True


@dataclass
class CalibrationConfig:
    source: str = "random"  # "random" or "folder"
    folder: Optional[str] = None
    num_batches: int = 8
    seed: int = 1234
    # A folder that accuracy reads too is split (calibration never sees an accuracy image); true: share it.
    share_images: bool = False


@dataclass
class AccuracyConfig:
    source: str = "random"  # "random" (seeded noise batches) or "folder" (real images)
    folder: Optional[str] = None
    masks: Optional[str] = None  # segmentation: a folder of label masks named like the images
    max_images: int = 500
    batches: int = 4  # random: how many noise batches
    seed: int = 0


@dataclass
class TrackingConfig:
    uri: Optional[str] = None  # None: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db in the launch dir
    experiment: str = "trt-bench"
    kind: str = "sweep"  # tag bench.kind, e.g. "nightly"
    server: bool = False  # true (tracking=server): the URI must be an http(s) MLflow tracking server
    # Where a point's measurement goes when the store cannot take it (python -m bench.store.sync uploads it
    # later); None: never spool, a failure to record is an error.
    spool_dir: Optional[str] = None
    timeout_s: int = 10  # per HTTP request to a tracking server
    retries: int = 2  # per HTTP request, before the server counts as unreachable
    attach_report: bool = True  # attach the sweep's report (tables, plots) to its parent run when it ends


@dataclass
class ExecutorConfig:
    kind: str = "local"  # local | ssh | plan
    # local: null = this interpreter, or another one on this machine (a Jetson's system python3);
    # ssh: the device's interpreter (default python3).
    python: Optional[str] = None
    host: Optional[str] = None  # ssh: [user@]host, as ~/.ssh/config knows it
    ssh_config: Optional[str] = None  # ssh: a config file instead of ~/.ssh/config (ssh -F)
    connect_timeout_s: int = 15  # ssh: ConnectTimeout
    out: Optional[str] = None  # plan: the plans file to write


@dataclass
class AutoBackendConfig:
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
    scenario: ScenarioConfig = field(default_factory=ScenarioConfig)
    input: InputConfig = field(default_factory=InputConfig)
    timing: TimingConfig = field(default_factory=TimingConfig)
    calibration: CalibrationConfig = field(default_factory=CalibrationConfig)
    accuracy: AccuracyConfig = field(default_factory=AccuracyConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    executor: ExecutorConfig = field(default_factory=ExecutorConfig)
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    # CPU threads for torch and ONNX Runtime; None: on a CPU point every CPU but one (at least one), on CUDA the
    # libraries' default (bench.device.point.threads_for says why)
    threads: Optional[int] = None
    cudnn_benchmark: bool = True  # let cuDNN pick its fastest algorithms for eager and compiled runs
    raw_baseline: bool = True  # time eager fp32 in the same run, for a same-run speed-up
    energy: str = "auto"  # auto: measure where a sensor exists | require: error without one | off
    cache_dir: str = "~/.cache/trt-bench"  # on the measured device
    seed: int = 0
    # auto: re-running a grid whose sweep was interrupted finishes that sweep | last: continue its newest sweep,
    # finished or not | new | <parent run id>
    resume: str = "auto"
    label: Optional[str] = None  # names the sweep; part of what makes two runs "the same sweep"


def hydra_argv(argv: list[str]) -> list[str]:
    """The command line as Hydra's parser takes it: ``-m`` first, ``backend.K=V`` as ``++backend.K=V`` in a sweep
    of the backend group.

    Hydra's parser refuses a flag after the overrides (``run.py model=resnet18 -m ...``), so ``-m`` moves to the
    front. Hydra composes a multirun once with its sweeps left out, so with the default backend (auto), whose
    schema has none of the swept backends' options: ``backend=pytorch,inductor backend.channels_last=true`` would
    be refused there. ``++`` sets or adds the key; each point's backend then checks its options on the device,
    so a misspelt option is still an error.
    """
    flags = [arg for arg in argv[1:] if arg in ("-m", "--multirun")]
    argv = [argv[0], *flags, *(arg for arg in argv[1:] if arg not in flags)]
    swept = any(arg.startswith("backend=") and ("," in arg or "(" in arg) for arg in argv)
    if not (flags and swept):
        return argv
    return [f"++{arg}" if arg.startswith("backend.") and "=" in arg else arg for arg in argv]


def register_configs() -> None:
    """Register the root schema and the auto backend's (other backends are plain yaml, checked by the core)."""
    store = ConfigStore.instance()
    store.store(name="base_config", node=Config)
    store.store(group="backend", name="base_auto", node=AutoBackendConfig)
