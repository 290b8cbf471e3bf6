"""The one interface every backend implements.

A backend turns a fresh fp32 eval model into something callable at one precision on one device.
It knows nothing about timing or tracking: the point times ``Converted.run`` and the controller
records what comes back. Its options are declared in ``OPTIONS`` (name -> default and allowed
types); ``conf/backend/<name>.yaml`` lists the same names and defaults for Hydra.
"""
import importlib.util
from typing import Callable, Dict, List, NamedTuple, Optional, Tuple

import torch
from torch import nn

from bench.contract.errors import ConfigError

FLOAT_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
NONE = type(None)


class Option(NamedTuple):
    default: object
    types: Tuple[type, ...]


class Target(NamedTuple):
    """The device a point runs on, resolved once (no probing at import time)."""

    device: torch.device
    compute_capability: Optional[Tuple[int, int]] = None  # CUDA only

    @property
    def is_cuda(self) -> bool:
        return self.device.type == "cuda"


class ConversionRequest(NamedTuple):
    """Everything a backend may need to convert one model for one grid point."""

    model: nn.Module  # fresh fp32 eval model on the target device; the backend may mutate it
    example: torch.Tensor  # fp32 input of the point's shape, on the target device
    precision: str
    target: Target
    cache_dir: str
    cache_key: str  # identifies model weights, input shape, precision and calibration settings
    threads: Optional[int]  # CPU threads the user asked for (None: library default)
    calibration: Callable[[], List[torch.Tensor]]  # fp32 batches shaped like ``example``; int8 only


class Converted:
    """A converted model: ``run`` takes one batch already in ``input_dtype`` on the device."""

    def __init__(self, run: Callable[[torch.Tensor], torch.Tensor], input_dtype: torch.dtype = torch.float32,
                 channels_last: bool = False, cache_hit: Optional[bool] = None, stream=None,
                 details: Optional[Dict[str, object]] = None, cache_events: Optional[List[str]] = None,
                 gpu_unavailable: Optional[str] = None) -> None:
        self.run = run
        self.input_dtype = input_dtype
        self.channels_last = channels_last  # the point hands inputs over in this memory format
        self.cache_hit = cache_hit  # None: this backend keeps no cache
        self.stream = stream  # CUDA stream the backend queues its work on; the timer records its events there
        self.details = details or {}  # what the conversion did, recorded with the measurement
        self.cache_events = cache_events or []  # e.g. "discarded a cache entry that did not load: ..."
        # Why the call's GPU compute time cannot be timed by holding ``stream`` (work queued elsewhere), or None.
        self.gpu_unavailable = gpu_unavailable


class Backend:
    """One way of running a model. Subclasses set ``name``, ``OPTIONS`` and ``requires``."""

    name = ""
    OPTIONS = {}  # type: Dict[str, Option]
    requires = ()  # type: Tuple[str, ...]  # importable modules the backend needs
    INT8_OPTIONS = ()  # type: Tuple[str, ...]  # options that only int8 conversion reads

    def __init__(self, options: Dict[str, object]) -> None:
        unknown = sorted(set(options) - set(self.OPTIONS))
        if unknown:
            raise ConfigError("backend.{} is not an option of backend {} (options: {})".format(
                unknown[0], self.name, ", ".join(sorted(self.OPTIONS)) or "none"))
        self.options = {name: option.default for name, option in self.OPTIONS.items()}
        for name, value in options.items():
            types = self.OPTIONS[name].types
            if (isinstance(value, bool) and bool not in types) or not isinstance(value, types):
                raise ConfigError("backend.{}={!r} must be {}".format(
                    name, value, " or ".join("null" if t is NONE else t.__name__ for t in types)))
            self.options[name] = value

    @classmethod
    def unavailable_reason(cls) -> Optional[str]:
        """Why this backend cannot run on this machine at all, or None when it can."""
        missing = [module for module in cls.requires if importlib.util.find_spec(module) is None]
        return "{} not installed".format(", ".join(missing)) if missing else None

    def resolved(self, target: Target, precision: str) -> Dict[str, object]:
        """The options this point uses, defaults that depend on the device filled in (int8's only at int8)."""
        return {name: value for name, value in self.options.items()
                if precision == "int8" or name not in self.INT8_OPTIONS}

    def variant(self, target: Target) -> str:
        """The backend's name plus the options that change what is measured (e.g. CUDA graphs)."""
        return self.name

    def check_options(self) -> None:
        """Raise ConfigError for a bad option value, before any work starts."""

    def unsupported_reason(self, target: Target, precision: str) -> Optional[str]:
        """Why this backend cannot run ``precision`` on ``target``, or None when it can."""
        raise NotImplementedError

    def convert(self, request: ConversionRequest) -> Converted:
        """Build the runnable model; called once per grid point, timed as conversion."""
        raise NotImplementedError


def check_choice(name: str, value: object, allowed) -> None:
    if value not in allowed:
        raise ConfigError("backend.{}={!r} is not one of: {}".format(name, value, ", ".join(map(str, allowed))))


def float_model(model: nn.Module, precision: str, channels_last: bool):
    """Cast a model for an eager or compiled float precision (the model is the point's own copy)."""
    dtype = FLOAT_DTYPES[precision]
    model = model.to(dtype)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model, dtype
