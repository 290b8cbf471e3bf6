"""What the three TensorRT backends share: version parsing and the device rules.

Everything here is a plain function of version strings and compute capabilities, so the
rules are tested directly on machines without TensorRT; only ``installed_version`` imports
anything, and only when called.
"""
import importlib
import re
from typing import Dict, NamedTuple, Optional, Tuple

from bench.contract.errors import ConfigError

Version = Tuple[int, int]
JETSON_NANO = (5, 3)
DLA_DEVICES = {(7, 2): "Jetson Xavier", (8, 7): "Jetson Orin"}
# backend option -> (TensorRT CalibrationAlgoType member, calibrator class, ModelOpt calibration_method)
CALIBRATION_ALGORITHMS = {
    "entropy2": ("ENTROPY_CALIBRATION_2", "IInt8EntropyCalibrator2", "entropy"),
    "entropy": ("ENTROPY_CALIBRATION", "IInt8EntropyCalibrator", "entropy"),
    "minmax": ("MINMAX_CALIBRATION", "IInt8MinMaxCalibrator", "max"),
}


def parse_version(text: str) -> Version:
    """(major, minor) of strings like "8.2.1.8", "10.13.3.9", "11.0.0.114" or "2.10.0+cu130"."""
    match = re.match(r"\s*(\d+)\.(\d+)", text)
    if not match:
        raise ValueError("cannot read a major.minor version from {!r}".format(text))
    return int(match.group(1)), int(match.group(2))


def cc_text(compute_capability: Tuple[int, int]) -> str:
    return "{}.{}".format(*compute_capability)


def installed_version(module: str) -> str:
    """``module.__version__``, importing it now (never at import time of a backend)."""
    return importlib.import_module(module).__version__


def importable_version(module: str) -> Tuple[Optional[str], Optional[str]]:
    """(version, None), or (None, why) when an installed ``module`` cannot be imported (a broken install is a skip)."""
    try:
        return installed_version(module), None
    except (ImportError, OSError) as exc:
        return None, "{} is installed but cannot be imported ({}: {})".format(module, type(exc).__name__, exc)


def device_reason(trt_version: str, compute_capability: Optional[Tuple[int, int]], precision: str) -> Optional[str]:
    """Why TensorRT ``trt_version`` cannot run ``precision`` on this GPU, or None when it can.

    ``compute_capability`` is None when the point does not run on a CUDA device.
    """
    if compute_capability is None:
        return "TensorRT needs a CUDA device (this point runs on the CPU)"
    trt = parse_version(trt_version)
    cc = cc_text(compute_capability)
    if trt >= (9, 0) and compute_capability[0] == 5:
        return (f"TensorRT {trt_version} does not support compute capability {cc} (Maxwell; TensorRT 9 dropped it): "
                "the Jetson Nano stays on JetPack 4.6 with TensorRT 8.2")
    if trt >= (10, 5) and compute_capability == (7, 0):
        return (f"TensorRT {trt_version} does not support compute capability 7.0 (Volta, e.g. V100; removed in "
                "TensorRT 10.5): use TensorRT 10.4 or older on this GPU")
    if precision == "int8" and compute_capability < (6, 1):
        nano = " (Jetson Nano)" if compute_capability == JETSON_NANO else ""
        return f"int8 needs compute capability >= 6.1 (DP4A); this GPU has {cc}{nano}"
    if precision == "bf16" and compute_capability < (8, 0):
        return f"bf16 needs compute capability >= 8.0; this GPU has {cc}"
    return None


def dla_reason(dla_core: Optional[int], compute_capability: Optional[Tuple[int, int]],
               precision: str) -> Optional[str]:
    """Why a DLA core cannot run this point, or None (also when no DLA core was asked for)."""
    if dla_core is None:
        return None
    if compute_capability not in DLA_DEVICES:
        where = cc_text(compute_capability) if compute_capability else "none (CPU)"
        return (f"backend.dla_core={dla_core}: DLA cores exist only on Jetson Xavier (7.2) and Orin (8.7); "
                f"this GPU's compute capability is {where}")
    if precision not in ("fp16", "int8"):
        return f"the DLA runs fp16 and int8 only, not {precision}"
    return None


def calibration_algorithm(name: str) -> Tuple[str, str, str]:
    """(CalibrationAlgoType member, calibrator class, ModelOpt method) for a backend option."""
    if name not in CALIBRATION_ALGORITHMS:
        raise ConfigError(f"backend.calibration_algorithm={name!r} is not one of: {', '.join(CALIBRATION_ALGORITHMS)}")
    return CALIBRATION_ALGORITHMS[name]


class TrtName(NamedTuple):
    """A TensorRT enum member by name (e.g. "CalibrationAlgoType.ENTROPY_CALIBRATION_2"), resolved late.

    Plans hold names rather than members so they can be built and tested without TensorRT.
    """

    path: str

    def resolve(self, trt) -> object:
        value = trt
        for part in self.path.split("."):
            value = getattr(value, part)
        return value


def resolve_names(trt, kwargs: Dict[str, object]) -> Dict[str, object]:
    return {key: value.resolve(trt) if isinstance(value, TrtName) else value for key, value in kwargs.items()}


def torch_dtype(trt_dtype_name: str):
    """The torch dtype of a TensorRT DataType member name (``DataType.HALF`` -> torch.float16)."""
    import torch

    dtypes = {"FLOAT": torch.float32, "HALF": torch.float16, "BF16": torch.bfloat16, "INT8": torch.int8,
              "INT32": torch.int32, "INT64": torch.int64, "BOOL": torch.bool, "UINT8": torch.uint8}
    name = trt_dtype_name.rsplit(".", 1)[-1]
    if name not in dtypes:
        raise TypeError(f"TensorRT data type {trt_dtype_name} has no torch equivalent here")
    return dtypes[name]
