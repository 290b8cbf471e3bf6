"""The one interface every backend implements.

A backend turns a fresh fp32 eval model into something callable at one precision on one
device. It knows nothing about timing or MLflow: the runner times ``Converted.run`` and the
tracker records what comes back.
"""
from __future__ import annotations

import hashlib
import importlib.util
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import torch
from torch import nn

from bench.config import BackendConfig

FLOAT_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


@dataclass(frozen=True)
class Target:
    """The device a point runs on, resolved once (no probing at import time)."""

    device: torch.device
    compute_capability: tuple[int, int] | None = None  # CUDA only

    @property
    def is_cuda(self) -> bool:
        return self.device.type == "cuda"


@dataclass
class ConversionRequest:
    """Everything a backend may need to convert one model for one grid point."""

    model: nn.Module  # fresh fp32 eval model on the target device; the backend may mutate it
    example: torch.Tensor  # fp32 input of the point's shape, on the target device
    precision: str
    target: Target
    cache_dir: Path
    cache_key: str  # identifies model weights, input shape, precision and calibration settings
    threads: int | None  # CPU threads the user asked for (None: library default)
    calibration: Callable[[], list[torch.Tensor]]  # fp32 batches shaped like ``example``; int8 only


@dataclass
class Converted:
    """A converted model: ``run`` takes one batch already in ``input_dtype`` on the device."""

    run: Callable[[torch.Tensor], torch.Tensor]
    input_dtype: torch.dtype = torch.float32
    channels_last: bool = False  # the runner hands inputs over in this memory format
    cache_hit: bool | None = None  # None: this backend keeps no cache
    # CUDA stream the backend queues its work on; the timer records its events there.
    stream: torch.cuda.Stream | None = None
    details: dict[str, str | float] = field(default_factory=dict)  # recorded as backend.* params


class Backend(ABC):
    """One way of running a model. Subclasses set ``name``, ``config_class`` and ``requires``."""

    name: ClassVar[str]
    config_class: ClassVar[type[BackendConfig]]
    requires: ClassVar[tuple[str, ...]] = ()  # importable modules the backend needs

    def __init__(self, cfg: BackendConfig) -> None:
        self.cfg = cfg

    @classmethod
    def unavailable_reason(cls) -> str | None:
        """Why this backend cannot run on this machine at all, or None when it can."""
        missing = [module for module in cls.requires if importlib.util.find_spec(module) is None]
        return f"{', '.join(missing)} not installed" if missing else None

    def variant(self) -> str:
        """The backend's name plus the options that change what is measured (e.g. CUDA graphs)."""
        return self.name

    def check_options(self) -> None:
        """Raise ConfigError for a bad backend option, before any work starts."""

    @abstractmethod
    def unsupported_reason(self, target: Target, precision: str) -> str | None:
        """Why this backend cannot run ``precision`` on ``target``, or None when it can."""

    @abstractmethod
    def convert(self, request: ConversionRequest) -> Converted:
        """Build the runnable model; called once per grid point, timed as conversion."""


def digest(*parts: object) -> str:
    """A short stable key for cache entries."""
    return hashlib.sha256("\x1f".join(map(str, parts)).encode()).hexdigest()[:16]


def float_model(model: nn.Module, precision: str, channels_last: bool) -> tuple[nn.Module, torch.dtype]:
    """Cast a model for an eager or compiled float precision (the model is the point's own copy)."""
    dtype = FLOAT_DTYPES[precision]
    model = model.to(dtype)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model, dtype
