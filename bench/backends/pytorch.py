"""Eager PyTorch. At fp32 this is the blog's "Raw" row and every point's baseline."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from bench.backends.base import FLOAT_DTYPES, Backend, ConversionRequest, Converted, Target, float_model
from bench.config import BackendConfig


@dataclass
class PytorchConfig(BackendConfig):
    name: str = "pytorch"
    channels_last: bool = False


class PytorchBackend(Backend):
    name = "pytorch"
    config_class = PytorchConfig
    requires = ("torch",)

    def unsupported_reason(self, target: Target, precision: str) -> str | None:
        if precision not in FLOAT_DTYPES:
            return f"eager PyTorch has no {precision} inference path (use onnxruntime or a TensorRT backend)"
        if precision == "bf16" and target.is_cuda and not torch.cuda.is_bf16_supported():
            return f"bf16 needs compute capability >= 8.0 (this GPU: {target.compute_capability})"
        return None

    def variant(self) -> str:
        return "pytorch+channels_last" if self.cfg.channels_last else "pytorch"

    def convert(self, request: ConversionRequest) -> Converted:
        model, dtype = float_model(request.model, request.precision, self.cfg.channels_last)

        @torch.inference_mode()
        def run(x: torch.Tensor) -> torch.Tensor:
            return model(x)

        return Converted(run=run, input_dtype=dtype, channels_last=self.cfg.channels_last)
