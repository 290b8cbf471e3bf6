"""Backend registry: a new backend is one module here plus one yaml in conf/backend/."""
from __future__ import annotations

from bench.backends.base import Backend, Target
from bench.backends.inductor import InductorBackend
from bench.backends.onnxruntime import OnnxRuntimeBackend
from bench.backends.pytorch import PytorchBackend
from bench.backends.tensorrt import TensorrtBackend
from bench.backends.torch2trt import Torch2trtBackend
from bench.backends.torch_tensorrt import TorchTensorrtBackend
from bench.config import BackendConfig
from bench.errors import ConfigError

BACKENDS: dict[str, type[Backend]] = {
    backend.name: backend
    for backend in (PytorchBackend, InductorBackend, OnnxRuntimeBackend, TensorrtBackend, Torch2trtBackend,
                    TorchTensorrtBackend)
}


def backend_schemas() -> dict[str, type[BackendConfig]]:
    return {name: backend.config_class for name, backend in BACKENDS.items()}


def create(cfg: BackendConfig) -> Backend:
    if cfg.name not in BACKENDS:
        raise ConfigError(f"unknown backend {cfg.name!r}: choose one of auto, {', '.join(BACKENDS)}")
    return BACKENDS[cfg.name](cfg)


def reason_not_runnable(backend: Backend, target: Target, precision: str) -> str | None:
    return backend.unavailable_reason() or backend.unsupported_reason(target, precision)


def resolve(cfg: BackendConfig, target: Target, precision: str) -> tuple[Backend | None, str | None]:
    """The backend for this point and, when it cannot run, why.

    ``backend=auto`` takes the first backend of ``cfg.order`` that is installed and supports
    (device, precision); when none does, the reason lists what each one said.
    """
    if cfg.name != "auto":
        backend = create(cfg)
        return backend, reason_not_runnable(backend, target, precision)
    reasons = []
    for name in cfg.order:
        if name not in BACKENDS:
            raise ConfigError(f"backend.order names unknown backend {name!r}: choose from {', '.join(BACKENDS)}")
        backend = BACKENDS[name](BACKENDS[name].config_class())
        reason = reason_not_runnable(backend, target, precision)
        if reason is None:
            return backend, None
        reasons.append(f"{name}: {reason}")
    return None, f"no installed backend runs {precision} on {target.device.type} ({'; '.join(reasons)})"
