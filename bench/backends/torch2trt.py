"""torch2trt: the blog's path, PyTorch straight to a TensorRT engine without ONNX.

``torch2trt_kwargs`` decides the call for a (TensorRT, torch2trt) version pair as plain data,
so it is tested without either installed: fp16 is ``fp16_mode``, int8 is ``int8_mode`` with
the suite's calibration batches and an explicit ``int8_calib_algorithm`` (torch2trt's own
default compares version strings, so on TensorRT 10 it silently picks the older entropy
calibrator), ``max_workspace_size`` is passed only below TensorRT 10 (ignored there), and a
DLA core runs the engine on Xavier/Orin with GPU fallback. torch2trt imports removed
TensorRT 11 classes at import time, so on TensorRT 11 the backend reports itself unavailable.

The converted module's state dict (engine included) is cached under
``<cache_dir>/torch2trt/<key>`` and loaded from there only.
"""
from __future__ import annotations

import importlib.metadata
import logging
from dataclasses import dataclass
from typing import Optional

import torch

from bench.backends import trt_rules
from bench.backends.base import Backend, ConversionRequest, Converted, Target, digest
from bench.backends.trt_rules import TrtName
from bench.config import PRECISIONS, BackendConfig
from bench.errors import ConfigError

log = logging.getLogger(__name__)

# 0.5.0 builds optimization profiles from the inputs, so calibration items are whole batches;
# 0.4.0 copied items one sample at a time into batches of ``int8_calib_batch_size``.
BATCHED_CALIBRATION = (0, 5)


@dataclass
class Torch2trtConfig(BackendConfig):
    name: str = "torch2trt"
    max_batch_size: Optional[int] = None  # None: the point's batch size (the blog passed 1)
    max_workspace_mb: int = 32  # TensorRT < 10 only (torch2trt's default, 1 << 25 bytes)
    calibration_algorithm: str = "entropy2"  # int8: entropy2 | entropy | minmax
    # int8 with fp16_mode=True as well, as the blog's call did: layers without int8 kernels run in fp16
    int8_fp16_fallback: bool = True
    dla_core: Optional[int] = None  # Jetson Xavier/Orin: run on this DLA core, falling back to the GPU


def torch2trt_kwargs(trt_version: str, torch2trt_version: str, precision: str, batch_size: int,
                     cfg: Torch2trtConfig) -> dict[str, object]:
    """Keyword arguments of ``torch2trt(model, [x], **kwargs)``, TensorRT enums as ``TrtName``.

    The calibration dataset itself is added at conversion time (see ``calibration_dataset``).
    """
    if precision not in PRECISIONS:
        raise ConfigError(f"precision {precision!r} is not one of: {', '.join(PRECISIONS)}")
    reason = precision_reason(precision)
    if reason:
        raise ValueError(reason)
    max_batch = cfg.max_batch_size or batch_size
    if max_batch < batch_size:
        raise ConfigError(f"backend.max_batch_size={cfg.max_batch_size} is smaller than input.batch_size={batch_size}")
    batched = trt_rules.parse_version(torch2trt_version) >= BATCHED_CALIBRATION
    kwargs: dict[str, object] = {}
    # 0.5.0 turns max_batch_size into a dynamic batch axis, which the DLA rejects; 0.4.0 needs it always
    if not (batched and cfg.dla_core is not None):
        kwargs["max_batch_size"] = max_batch
    if trt_rules.parse_version(trt_version) < (10, 0):
        kwargs["max_workspace_size"] = cfg.max_workspace_mb << 20
    if precision in ("fp16", "int8"):
        kwargs["fp16_mode"] = precision == "fp16" or cfg.int8_fp16_fallback
    if precision == "int8":
        algorithm = trt_rules.calibration_algorithm(cfg.calibration_algorithm)[0]
        kwargs.update(int8_mode=True, int8_calib_algorithm=TrtName(f"CalibrationAlgoType.{algorithm}"))
        if not batched:
            kwargs["int8_calib_batch_size"] = batch_size
    if cfg.dla_core is not None:
        kwargs.update(default_device_type=TrtName("DeviceType.DLA"), dla_core=cfg.dla_core, gpu_fallback=True)
    return kwargs


def calibration_dataset(batches: list[torch.Tensor], torch2trt_version: str) -> list[list[torch.Tensor]]:
    """``int8_calib_dataset`` in the layout this torch2trt version indexes: batches (0.5+) or samples (0.4)."""
    if trt_rules.parse_version(torch2trt_version) >= BATCHED_CALIBRATION:
        return [[batch] for batch in batches]
    return [[sample] for batch in batches for sample in batch]


def precision_reason(precision: str) -> str | None:
    if precision == "bf16":
        return "torch2trt has no bf16 mode (fp16_mode and int8_mode only): use backend=tensorrt or torch_tensorrt"
    return None


def unavailable_with(trt_version: str) -> str | None:
    """Why torch2trt cannot run with TensorRT ``trt_version`` at all, or None."""
    if trt_rules.parse_version(trt_version) >= (11, 0):
        return (f"torch2trt does not support TensorRT {trt_version} (it subclasses trt.IInt8Calibrator and uses "
                "builder flags that TensorRT 11 removed): use backend=tensorrt or torch_tensorrt")
    return None


def torch2trt_version() -> str:
    """The installed torch2trt's version (``python setup.py install`` records it as package metadata)."""
    try:
        return importlib.metadata.version("torch2trt")
    except importlib.metadata.PackageNotFoundError:
        log.warning("torch2trt has no package metadata; assuming the 0.5 calibration layout")
        return "0.5.0"


class Torch2trtBackend(Backend):
    name = "torch2trt"
    config_class = Torch2trtConfig
    requires = ("tensorrt", "torch2trt")

    @classmethod
    def unavailable_reason(cls) -> str | None:
        reason = super().unavailable_reason()
        if reason:
            return reason
        version, reason = trt_rules.importable_version("tensorrt")
        return reason or unavailable_with(version)

    def check_options(self) -> None:
        trt_rules.calibration_algorithm(self.cfg.calibration_algorithm)
        if self.cfg.max_batch_size is not None and self.cfg.max_batch_size < 1:
            raise ConfigError(f"backend.max_batch_size={self.cfg.max_batch_size} must be >= 1 (or null)")
        if self.cfg.max_workspace_mb < 1:
            raise ConfigError(f"backend.max_workspace_mb={self.cfg.max_workspace_mb} must be >= 1")
        if self.cfg.dla_core is not None and self.cfg.dla_core < 0:
            raise ConfigError(f"backend.dla_core={self.cfg.dla_core} must be >= 0 (or null for the GPU)")

    def unsupported_reason(self, target: Target, precision: str) -> str | None:
        cc = target.compute_capability if target.is_cuda else None
        return (trt_rules.device_reason(trt_rules.installed_version("tensorrt"), cc, precision)
                or trt_rules.dla_reason(self.cfg.dla_core, cc, precision) or precision_reason(precision))

    def convert(self, request: ConversionRequest) -> Converted:
        import tensorrt as trt
        from torch2trt import TRTModule, torch2trt

        version = torch2trt_version()
        kwargs = torch2trt_kwargs(trt.__version__, version, request.precision, request.example.shape[0], self.cfg)
        key = digest(request.cache_key, trt.__version__, version, torch.__version__, sorted(kwargs.items()))
        path = request.cache_dir / self.name / key / "module_trt.pth"
        cache_hit = path.is_file()
        if cache_hit:
            module = TRTModule()
            # a pickled bytearray engine, written by this suite into its own cache directory
            module.load_state_dict(torch.load(path, weights_only=False))
        else:
            call = trt_rules.resolve_names(trt, kwargs)
            if request.precision == "int8":
                call["int8_calib_dataset"] = calibration_dataset(request.calibration(), version)
            log.info("converting with torch2trt %s on TensorRT %s: %s", version, trt.__version__, kwargs)
            module = torch2trt(request.model, [request.example], **call)
            path.parent.mkdir(parents=True, exist_ok=True)
            partial = path.with_suffix(".partial")  # an interrupted save never leaves a truncated entry
            torch.save(module.state_dict(), partial)
            partial.replace(path)

        @torch.inference_mode()
        def run(x: torch.Tensor) -> torch.Tensor:
            return module(x)

        # TRTModule enqueues on the current stream, so the timer's default-stream events bracket it
        return Converted(run=run, cache_hit=cache_hit, details={
            "tensorrt": trt.__version__, "torch2trt": version, "module_path": str(path),
            **{k: str(v.path if isinstance(v, TrtName) else v) for k, v in kwargs.items()},
        })
