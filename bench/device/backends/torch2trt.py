"""torch2trt: the blog's path, PyTorch straight to a TensorRT engine without ONNX.

``torch2trt_kwargs`` decides the call for a (TensorRT, torch2trt) version pair as plain data, so
it is tested without either installed: fp16 is ``fp16_mode``, int8 is ``int8_mode`` with the
suite's calibration batches and an explicit ``int8_calib_algorithm`` (torch2trt's own default
compares version strings, so on TensorRT 10 it silently picks the older entropy calibrator),
``max_workspace_size`` is passed only below TensorRT 10 (ignored there), and a DLA core runs the
engine on Xavier/Orin with GPU fallback. torch2trt 0.4.0 (JetPack 4.6, TensorRT 8.2) copies
calibration items one sample at a time; 0.5.0 takes whole batches. torch2trt imports removed
TensorRT 11 classes at import time, so on TensorRT 11 the backend reports itself unavailable.

The converted module's state dict (engine included) is a cache entry under
``<cache_dir>/torch2trt/<key>`` and is loaded from there only.
"""
import logging
import os
from typing import Dict, List, Optional

import torch

from bench.device import cache
from bench.device.backends import trt_rules
from bench.device.backends.base import NONE, Backend, ConversionRequest, Converted, Option, Target
from bench.contract.protocol import digest
from bench.device.backends.trt_rules import TrtName
from bench.contract.errors import ConfigError
from bench.device.fingerprint import distribution_version
from bench.contract.protocol import PRECISIONS

log = logging.getLogger(__name__)

# 0.5.0 builds optimization profiles from the inputs, so calibration items are whole batches;
# 0.4.0 copied items one sample at a time into batches of ``int8_calib_batch_size``.
BATCHED_CALIBRATION = (0, 5)
OPTIONS = {
    "max_batch_size": Option(None, (int, NONE)),  # null: the point's batch size (the blog passed 1)
    "max_workspace_mb": Option(32, (int,)),  # TensorRT < 10 only (torch2trt's default, 1 << 25 bytes)
    "calibration_algorithm": Option("entropy2", (str,)),  # int8: entropy2 | entropy | minmax
    # int8 with fp16_mode=True as well, as the blog's call did: layers without int8 kernels run in fp16
    "int8_fp16_fallback": Option(True, (bool,)),
    "dla_core": Option(None, (int, NONE)),  # Jetson Xavier/Orin: run on this DLA core, falling back to the GPU
}


def torch2trt_kwargs(trt_version: str, torch2trt_version: str, precision: str, batch_size: int,
                     options: Dict[str, object]) -> Dict[str, object]:
    """Keyword arguments of ``torch2trt(model, [x], **kwargs)``, TensorRT enums as ``TrtName``.

    The calibration dataset itself is added at conversion time (see ``calibration_dataset``).
    """
    if precision not in PRECISIONS:
        raise ConfigError(f"precision {precision!r} is not one of: {', '.join(PRECISIONS)}")
    reason = precision_reason(precision)
    if reason:
        raise ValueError(reason)
    max_batch = options["max_batch_size"] or batch_size
    if max_batch < batch_size:
        raise ConfigError(f"backend.max_batch_size={options['max_batch_size']} is smaller than "
                          f"input.batch_size={batch_size}")
    batched = trt_rules.parse_version(torch2trt_version) >= BATCHED_CALIBRATION
    kwargs = {}  # type: Dict[str, object]
    # 0.5.0 turns max_batch_size into a dynamic batch axis, which the DLA rejects; 0.4.0 needs it always
    if not (batched and options["dla_core"] is not None):
        kwargs["max_batch_size"] = max_batch
    if trt_rules.parse_version(trt_version) < (10, 0):
        kwargs["max_workspace_size"] = options["max_workspace_mb"] << 20
    if precision in ("fp16", "int8"):
        kwargs["fp16_mode"] = precision == "fp16" or options["int8_fp16_fallback"]
    if precision == "int8":
        algorithm = trt_rules.calibration_algorithm(options["calibration_algorithm"])[0]
        kwargs.update(int8_mode=True, int8_calib_algorithm=TrtName(f"CalibrationAlgoType.{algorithm}"))
        if not batched:
            kwargs["int8_calib_batch_size"] = batch_size
    if options["dla_core"] is not None:
        kwargs.update(default_device_type=TrtName("DeviceType.DLA"), dla_core=options["dla_core"], gpu_fallback=True)
    return kwargs


def calibration_dataset(batches: List[torch.Tensor], torch2trt_version: str) -> List[List[torch.Tensor]]:
    """``int8_calib_dataset`` in the layout this torch2trt version indexes: batches (0.5+) or samples (0.4)."""
    if trt_rules.parse_version(torch2trt_version) >= BATCHED_CALIBRATION:
        return [[batch] for batch in batches]
    return [[sample] for batch in batches for sample in batch]


def precision_reason(precision: str) -> Optional[str]:
    if precision == "bf16":
        return "torch2trt has no bf16 mode (fp16_mode and int8_mode only): use backend=tensorrt or torch_tensorrt"
    return None


def unavailable_with(trt_version: str) -> Optional[str]:
    """Why torch2trt cannot run with TensorRT ``trt_version`` at all, or None."""
    if trt_rules.parse_version(trt_version) >= (11, 0):
        return (f"torch2trt does not support TensorRT {trt_version} (it subclasses trt.IInt8Calibrator and uses "
                "builder flags that TensorRT 11 removed): use backend=tensorrt or torch_tensorrt")
    return None


def torch2trt_version() -> str:
    """The installed torch2trt's version (``python setup.py install`` records it as package metadata)."""
    version = distribution_version("torch2trt")
    if version is None:
        log.warning("torch2trt has no package metadata; assuming the 0.5 calibration layout")
        return "0.5.0"
    return version


class Torch2trtBackend(Backend):
    name = "torch2trt"
    OPTIONS = OPTIONS
    requires = ("tensorrt", "torch2trt")
    INT8_OPTIONS = ("calibration_algorithm", "int8_fp16_fallback")

    @classmethod
    def unavailable_reason(cls) -> Optional[str]:
        reason = super().unavailable_reason()
        if reason:
            return reason
        version, reason = trt_rules.importable_version("tensorrt")
        return reason or unavailable_with(version)

    def check_options(self) -> None:
        trt_rules.calibration_algorithm(self.options["calibration_algorithm"])
        if self.options["max_batch_size"] is not None and self.options["max_batch_size"] < 1:
            raise ConfigError(f"backend.max_batch_size={self.options['max_batch_size']} must be >= 1 (or null)")
        if self.options["max_workspace_mb"] < 1:
            raise ConfigError(f"backend.max_workspace_mb={self.options['max_workspace_mb']} must be >= 1")
        if self.options["dla_core"] is not None and self.options["dla_core"] < 0:
            raise ConfigError(f"backend.dla_core={self.options['dla_core']} must be >= 0 (or null for the GPU)")

    def variant(self, target: Target) -> str:
        return "torch2trt" if self.options["dla_core"] is None else f"torch2trt+dla{self.options['dla_core']}"

    def unsupported_reason(self, target: Target, precision: str) -> Optional[str]:
        cc = target.compute_capability if target.is_cuda else None
        return (trt_rules.device_reason(trt_rules.installed_version("tensorrt"), cc, precision)
                or trt_rules.dla_reason(self.options["dla_core"], cc, precision) or precision_reason(precision))

    def convert(self, request: ConversionRequest) -> Converted:
        import tensorrt as trt
        from torch2trt import TRTModule, torch2trt

        version = torch2trt_version()
        kwargs = torch2trt_kwargs(trt.__version__, version, request.precision, request.example.shape[0], self.options)
        key = digest(request.cache_key, trt.__version__, version, torch.__version__, sorted(kwargs.items()))
        events = []  # type: List[str]
        entry = cache.CacheEntry(os.path.join(request.cache_dir, self.name, key), events)

        def load(folder: str):
            module = TRTModule()
            # a pickled bytearray engine, written by this suite into its own cache directory
            extra = {"weights_only": False} if "weights_only" in torch.load.__code__.co_varnames else {}
            module.load_state_dict(torch.load(os.path.join(folder, "module_trt.pth"), **extra))
            return module

        def build(folder: str):
            call = trt_rules.resolve_names(trt, kwargs)
            if request.precision == "int8":
                call["int8_calib_dataset"] = calibration_dataset(request.calibration(), version)
            log.info("converting with torch2trt %s on TensorRT %s: %s", version, trt.__version__, kwargs)
            converted = torch2trt(request.model, [request.example], **call)
            torch.save(converted.state_dict(), os.path.join(folder, "module_trt.pth"))
            return converted

        module, cache_hit = cache.load_or_build(entry, load, build)

        def run(x: torch.Tensor) -> torch.Tensor:
            with torch.no_grad():
                return module(x)

        # TRTModule enqueues on the current stream, so the timer's default-stream events bracket it
        return Converted(run=run, cache_hit=cache_hit, cache_events=events, details=dict(
            {"tensorrt": trt.__version__, "torch2trt": version, "module_path": entry.path("module_trt.pth")},
            **{k: str(v.path if isinstance(v, TrtName) else v) for k, v in kwargs.items()}))
