"""torch.compile with the Inductor backend, optionally with CUDA graphs.

Compilation happens on the first call, so ``convert`` makes that call and conversion time
includes it. Inductor's on-disk caches live under the suite's cache directory
(TORCHINDUCTOR_CACHE_DIR), so a repeat of the same point compiles from cache; the hit is
read from Inductor's own counters.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from bench.backends.base import FLOAT_DTYPES, Backend, ConversionRequest, Converted, Target, float_model
from bench.config import BackendConfig
from bench.errors import ConfigError

MODES = ("default", "max-autotune")
# (mode, cuda_graphs) -> torch.compile mode
COMPILE_MODES = {
    ("default", False): "default",
    ("default", True): "reduce-overhead",
    ("max-autotune", False): "max-autotune-no-cudagraphs",
    ("max-autotune", True): "max-autotune",
}


@dataclass
class InductorConfig(BackendConfig):
    name: str = "inductor"
    mode: str = "default"  # default | max-autotune
    cuda_graphs: bool = False  # CUDA only
    channels_last: bool = False


class InductorBackend(Backend):
    name = "inductor"
    config_class = InductorConfig
    requires = ("torch",)

    def check_options(self) -> None:
        if self.cfg.mode not in MODES:
            raise ConfigError(f"backend.mode={self.cfg.mode!r} is not one of: {', '.join(MODES)}")

    def variant(self) -> str:
        mode = "" if self.cfg.mode == "default" else f"/{self.cfg.mode}"
        return f"inductor{mode}{'+cudagraphs' if self.cfg.cuda_graphs else ''}{'+channels_last' if self.cfg.channels_last else ''}"

    def compile_mode(self, target: Target) -> str:
        return COMPILE_MODES[(self.cfg.mode, bool(self.cfg.cuda_graphs and target.is_cuda))]

    def unsupported_reason(self, target: Target, precision: str) -> str | None:
        if precision not in FLOAT_DTYPES:
            return f"torch.compile has no {precision} inference path (use onnxruntime or a TensorRT backend)"
        if self.cfg.cuda_graphs and not target.is_cuda:
            return "backend.cuda_graphs=true needs a CUDA device"
        if precision == "bf16" and target.is_cuda and not torch.cuda.is_bf16_supported():
            return f"bf16 needs compute capability >= 8.0 (this GPU: {target.compute_capability})"
        return None

    def convert(self, request: ConversionRequest) -> Converted:
        # Set, not setdefault: importing torch already fills in a /tmp default. The point runs in
        # its own process, so this reaches nothing else; cache_dir is the user's knob.
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(request.cache_dir / "inductor")
        from torch._dynamo.utils import counters

        mode = self.compile_mode(request.target)
        model, dtype = float_model(request.model, request.precision, self.cfg.channels_last)
        compiled = torch.compile(model, mode=mode)
        example = request.example.to(dtype)
        if self.cfg.channels_last:
            example = example.contiguous(memory_format=torch.channels_last)

        @torch.inference_mode()
        def run(x: torch.Tensor) -> torch.Tensor:
            return compiled(x)

        hits_before = counters["inductor"]["fxgraph_cache_hit"]
        run(example)  # compiles
        if request.target.is_cuda:
            torch.cuda.synchronize(request.target.device)
        hit = counters["inductor"]["fxgraph_cache_hit"] > hits_before
        return Converted(
            run=run,
            input_dtype=dtype,
            channels_last=self.cfg.channels_last,
            cache_hit=hit,
            details={"compile_mode": mode, "cache_dir": os.environ["TORCHINDUCTOR_CACHE_DIR"]},
        )
