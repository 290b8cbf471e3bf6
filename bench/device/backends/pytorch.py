"""Eager PyTorch. At fp32 this is the blog's "Raw" row and every point's baseline."""
import functools
from typing import Optional

import torch

from bench.device.backends.base import FLOAT_DTYPES, Backend, ConversionRequest, Converted, Option, Target, \
    float_model


def bf16_reason(target: Target) -> Optional[str]:
    """Why bf16 cannot run on this CUDA device, or None."""
    if target.is_cuda and target.compute_capability < (8, 0):
        return "bf16 needs compute capability >= 8.0 (this GPU: {}.{})".format(*target.compute_capability)
    return None


@functools.lru_cache(maxsize=None)
def cpu_half_conv_reason() -> Optional[str]:
    """Why this torch cannot run fp16 convolutions on the CPU (torch < 2.2 has none), or None; probed once."""
    try:
        torch.nn.Conv2d(1, 1, 3, padding=1).half()(torch.zeros(1, 1, 4, 4, dtype=torch.float16))
    except RuntimeError as exc:
        return "torch {} has no fp16 convolution on the CPU ({})".format(torch.__version__, str(exc).splitlines()[0])
    return None


class PytorchBackend(Backend):
    name = "pytorch"
    OPTIONS = {"channels_last": Option(False, (bool,))}
    requires = ("torch",)

    def unsupported_reason(self, target: Target, precision: str) -> Optional[str]:
        if precision not in FLOAT_DTYPES:
            return "eager PyTorch has no {} inference path (use onnxruntime or a TensorRT backend)".format(precision)
        if precision == "fp16" and not target.is_cuda:
            return cpu_half_conv_reason()
        if precision == "bf16":
            return bf16_reason(target)
        return None

    def variant(self, target: Target) -> str:
        return "pytorch+channels_last" if self.options["channels_last"] else "pytorch"

    def convert(self, request: ConversionRequest) -> Converted:
        model, dtype = float_model(request.model, request.precision, self.options["channels_last"])

        def run(x: torch.Tensor) -> torch.Tensor:
            with torch.no_grad():
                return model(x)

        return Converted(run=run, input_dtype=dtype, channels_last=self.options["channels_last"])
