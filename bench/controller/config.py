"""Typed schema for every config group, registered in Hydra's ConfigStore.

The plan's groups and settings are made from their one declaration (bench/contract/fields.py, which says what
each means); the controller's own groups (tracking, executor) are written here. Each group node is a dataclass, so an override with a typo (``timing.min_iter=5``) or a wrong type
is rejected by Hydra before any work starts, and the Python API and the CLI share one schema.
Backend options are declared by each backend of the measuring core (``OPTIONS``) and listed in
``conf/backend/<name>.yaml``; the device checks them when it resolves the plan.
"""
from __future__ import annotations

from dataclasses import dataclass, field, make_dataclass
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from bench.contract.fields import GROUPS, NAMED, SETTINGS, Field


def _annotation(kind: tuple) -> Any:
    """The Python type Hydra checks a field against, from its JSON types."""
    nullable = type(None) in kind
    base = float if float in kind else next(k for k in kind if k is not type(None))
    return Optional[base] if nullable else base


def _group_schema(name: str, declared: dict[str, Field]) -> type:
    """A config group's dataclass, from the plan's declaration of its fields."""
    return make_dataclass(name, [(key, _annotation(f.kind), field(default=f.default, metadata={"doc": f.doc}))
                                 for key, f in declared.items()])


ModelConfig, InputConfig, TimingConfig, CalibrationConfig, AccuracyConfig = (
    _group_schema(f"{group.title()}Config", GROUPS[group]) for group in ("model", "input", "timing", "calibration",
                                                                          "accuracy"))
PrecisionConfig, ScenarioConfig = (_group_schema(f"{name.title()}Config", {"name": NAMED[name]}) for name in NAMED)


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


def _group(schema: type):
    return field(default_factory=schema)


# The root: the plan's groups and settings (declared in bench/contract/fields.py), and the controller's own.
Config = make_dataclass("Config", [
    ("model", ModelConfig, _group(ModelConfig)),
    ("backend", Any, field(default=MISSING)),
    ("precision", PrecisionConfig, _group(PrecisionConfig)),
    ("scenario", ScenarioConfig, _group(ScenarioConfig)),
    ("input", InputConfig, _group(InputConfig)),
    ("timing", TimingConfig, _group(TimingConfig)),
    ("calibration", CalibrationConfig, _group(CalibrationConfig)),
    ("accuracy", AccuracyConfig, _group(AccuracyConfig)),
    ("tracking", TrackingConfig, _group(TrackingConfig)),
    ("executor", ExecutorConfig, _group(ExecutorConfig)),
    *((name, _annotation(f.kind), field(default=f.default, metadata={"doc": f.doc})) for name, f in SETTINGS.items()),
    # auto: re-running a grid whose sweep was interrupted finishes that sweep | last: continue its newest sweep,
    # finished or not | new | <parent run id>
    ("resume", str, field(default="auto")),
    ("label", Optional[str], field(default=None)),  # names the sweep; part of what makes two runs "the same sweep"
])


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
