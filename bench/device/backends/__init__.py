"""Backend registry: a new backend is one module here plus one yaml in conf/backend/."""
from typing import Dict, List, Optional, Tuple

from bench.device.backends.base import Backend, Target
from bench.device.backends.inductor import InductorBackend
from bench.device.backends.onnxruntime import OnnxRuntimeBackend
from bench.device.backends.pytorch import PytorchBackend
from bench.device.backends.tensorrt import TensorrtBackend
from bench.device.backends.torch2trt import Torch2trtBackend
from bench.device.backends.torch_tensorrt import TorchTensorrtBackend
from bench.contract.errors import ConfigError

BACKENDS = {
    backend.name: backend
    for backend in (PytorchBackend, InductorBackend, OnnxRuntimeBackend, TensorrtBackend, Torch2trtBackend,
                    TorchTensorrtBackend)
}  # type: Dict[str, type]
AUTO = "auto"


def availability() -> Dict[str, Optional[str]]:
    """Backend name -> why it cannot run on this machine at all (None: it can)."""
    return {name: backend.unavailable_reason() for name, backend in BACKENDS.items()}


def create(options: dict) -> Backend:
    """A backend from the plan's ``backend`` block (its name and options)."""
    options = dict(options)
    name = options.pop("name")
    if name not in BACKENDS:
        raise ConfigError(f"unknown backend {name!r}: choose one of {AUTO}, {', '.join(BACKENDS)}")
    backend = BACKENDS[name](options)
    backend.check_options()
    return backend


def resolve(options: dict, target: Target, precision: str) -> Tuple[Optional[Backend], Optional[str], List[str]]:
    """(backend, why it cannot run or None, what ``auto`` tried) for this point.

    ``backend=auto`` takes the first backend of ``order`` that is installed and supports (device,
    precision) with its default options; when none does, the reason names the backends tried and ``tried``
    says why each one could not.
    """
    if options["name"] != AUTO:
        backend = create(options)
        return backend, backend.unavailable_reason() or backend.unsupported_reason(target, precision), []
    unknown = set(options) - {"name", "order"}
    if unknown:
        raise ConfigError(f"backend.{sorted(unknown)[0]}: backend=auto takes only backend.order; choose a backend to "
                          "set its options")
    tried = []
    for name in options.get("order") or ():
        if name not in BACKENDS:
            raise ConfigError(f"backend.order names unknown backend {name!r}: choose from {', '.join(BACKENDS)}")
        backend = BACKENDS[name]({})
        reason = backend.unavailable_reason() or backend.unsupported_reason(target, precision)
        if reason is None:
            return backend, None, tried
        tried.append(f"{name}: {reason}")
    # One short line for logs and table cells; what each backend said travels once, as ``tried``.
    names = ", ".join(entry.split(":", 1)[0] for entry in tried)
    return None, f"no installed backend runs {precision} on {target.device.type} (tried {names})", tried
