"""Torch-TensorRT: ``torch_tensorrt.compile(model, ir="dynamo")``, with each version's precision handling.

How to ask for fp16/bf16 changed across releases, so ``compile_plan`` (plain data, tested
without Torch-TensorRT) picks it by version: 2.9 takes ``enabled_precisions``; 2.10-2.12
type explicitly by default and assert on other precisions, so they get
``use_explicit_typing=False``; 2.13+ ignore ``enabled_precisions``, so they get autocast.
``half_model=true`` casts the model instead, the same on every version. int8 is explicit
Q/DQ from NVIDIA ModelOpt (``mtq.quantize`` with the suite's calibration batches, then
``torch.export`` and ``torch_tensorrt.dynamo.compile``); without ModelOpt it is skipped.

The compiled program is cached under ``<cache_dir>/torch_tensorrt/<key>`` with
``torch_tensorrt.save`` and loaded from there only; the TensorRT timing cache is shared per
TensorRT version and GPU model.
"""
import importlib.util
import logging
import os
from typing import Dict, NamedTuple, Optional

import torch

from bench.device import cache
from bench.device.backends import trt_rules
from bench.device.backends.base import FLOAT_DTYPES, Backend, ConversionRequest, Converted, Option, Target
from bench.contract.protocol import digest
from bench.contract.errors import ConfigError
from bench.contract.protocol import PRECISIONS

log = logging.getLogger(__name__)


class CompilePlan(NamedTuple):
    """What to compile for one Torch-TensorRT version and precision."""

    model_dtype: torch.dtype  # the model and its inputs are cast to this first
    kwargs: Dict[str, object] = {}  # extra compile() keyword arguments (never mutated)
    quantize: bool = False  # int8: ModelOpt Q/DQ, torch.export, torch_tensorrt.dynamo.compile


def compile_plan(torch_tensorrt_version: str, precision: str, half_model: bool,
                 int8_fp16_fallback: bool) -> CompilePlan:
    """The compile call Torch-TensorRT ``torch_tensorrt_version`` needs for ``precision``."""
    if precision not in PRECISIONS:
        raise ConfigError(f"precision {precision!r} is not one of: {', '.join(PRECISIONS)}")
    version = trt_rules.parse_version(torch_tensorrt_version)
    if precision == "fp32":
        return CompilePlan(torch.float32)
    if precision == "int8":
        low = {torch.int8, torch.float16} if int8_fp16_fallback else {torch.int8}
        if version < (2, 10):
            kwargs = {"enabled_precisions": low}  # type: Dict[str, object]
        elif not int8_fp16_fallback:
            kwargs = {}  # explicit typing: the Q/DQ nodes alone make layers int8
        elif version < (2, 13):
            kwargs = {"use_explicit_typing": False, "enabled_precisions": low}
        else:
            kwargs = {"enable_autocast": True, "autocast_low_precision_type": torch.float16}
        return CompilePlan(torch.float32, {**kwargs, "min_block_size": 1}, quantize=True)
    dtype = FLOAT_DTYPES[precision]
    if half_model:
        # 2.10+ type explicitly from the model's own dtype; 2.9 still needs the precision enabled
        return CompilePlan(dtype, {"enabled_precisions": {dtype}} if version < (2, 10) else {})
    if version < (2, 10):
        return CompilePlan(torch.float32, {"enabled_precisions": {dtype}})
    if version < (2, 13):
        return CompilePlan(torch.float32, {"use_explicit_typing": False, "enabled_precisions": {dtype}})
    return CompilePlan(torch.float32, {"enable_autocast": True, "autocast_low_precision_type": dtype})


def describe(plan: CompilePlan) -> str:
    """A stable text of a plan, for cache keys and the run's params."""
    def text(value: object) -> str:
        if isinstance(value, (set, frozenset)):
            return "{" + ",".join(sorted(map(str, value))) + "}"
        return str(value)

    parts = [f"{key}={text(value)}" for key, value in sorted(plan.kwargs.items())]
    return f"model={plan.model_dtype} quantize={plan.quantize} " + " ".join(parts)


class TorchTensorrtBackend(Backend):
    name = "torch_tensorrt"
    OPTIONS = {
        # fp16/bf16: true casts the model (explicitly typed on every version); false uses the
        # version's mixed-precision route (enabled_precisions, use_explicit_typing=False or autocast)
        "half_model": Option(False, (bool,)),
        # int8: layers ModelOpt leaves unquantized may run in fp16 (the blog's int8 also allowed fp16)
        "int8_fp16_fallback": Option(True, (bool,)),
    }
    requires = ("tensorrt", "torch_tensorrt")
    INT8_OPTIONS = ("int8_fp16_fallback",)

    @classmethod
    def unavailable_reason(cls) -> Optional[str]:
        return (super().unavailable_reason() or trt_rules.importable_version("tensorrt")[1]
                or trt_rules.importable_version("torch_tensorrt")[1])

    def unsupported_reason(self, target: Target, precision: str) -> Optional[str]:
        cc = target.compute_capability if target.is_cuda else None
        reason = trt_rules.device_reason(trt_rules.installed_version("tensorrt"), cc, precision)
        if reason is None and precision == "int8" and importlib.util.find_spec("modelopt") is None:
            reason = "int8 with Torch-TensorRT needs NVIDIA ModelOpt for Q/DQ (pip install 'nvidia-modelopt[torch]')"
        return reason

    def convert(self, request: ConversionRequest) -> Converted:
        import tensorrt as trt
        import torch_tensorrt

        version = torch_tensorrt.__version__
        plan = compile_plan(version, request.precision, self.options["half_model"], self.options["int8_fp16_fallback"])
        root = os.path.join(request.cache_dir, self.name)
        events = []
        entry = cache.CacheEntry(
            os.path.join(root, digest(request.cache_key, trt.__version__, version, torch.__version__, describe(plan))),
            events)
        timing = os.path.join(root, "timing",
                              f"{digest(trt.__version__, torch.cuda.get_device_name(request.target.device))}.bin")
        example = request.example.to(plan.model_dtype)

        def build(folder: str):
            os.makedirs(os.path.dirname(timing), exist_ok=True)
            model = request.model.to(plan.model_dtype)
            log.info("compiling with Torch-TensorRT %s on TensorRT %s: %s", version, trt.__version__, describe(plan))
            if plan.quantize:
                compiled = self.quantized(torch_tensorrt, model, example, request, plan, timing)
            else:
                compiled = torch_tensorrt.compile(model, ir="dynamo", inputs=[example], timing_cache_path=timing,
                                                  **plan.kwargs)
            torch_tensorrt.save(compiled, os.path.join(folder, "module.ep"), output_format="exported_program",
                                inputs=[example])
            return compiled

        # a module this suite wrote into its own cache
        module, cache_hit = cache.load_or_build(
            entry, lambda folder: torch_tensorrt.load(os.path.join(folder, "module.ep")).module(), build)

        def run(x: torch.Tensor) -> torch.Tensor:
            with torch.inference_mode():
                return module(x)

        # the Torch-TensorRT runtime enqueues on (or synchronises with) the caller's current stream
        return Converted(run=run, input_dtype=plan.model_dtype, cache_hit=cache_hit, cache_events=events, details={
            "tensorrt": trt.__version__, "torch_tensorrt": version, "plan": describe(plan),
            "module_path": entry.path("module.ep"), "timing_cache": timing,
        })

    @staticmethod
    def quantized(torch_tensorrt, model: torch.nn.Module, example: torch.Tensor, request: ConversionRequest,
                  plan: CompilePlan, timing_cache: str):
        """int8: ModelOpt fake-quantizes with the calibration batches; TensorRT builds the Q/DQ graph."""
        import modelopt.torch.quantization as mtq
        from modelopt.torch.quantization.utils import export_torch_mode

        batches = request.calibration()

        def forward_loop(quantizing: torch.nn.Module) -> None:
            for batch in batches:
                quantizing(batch)

        with torch.no_grad():
            mtq.quantize(model, mtq.INT8_DEFAULT_CFG, forward_loop=forward_loop)
            with export_torch_mode():
                program = torch.export.export(model, (example,), strict=False)
                return torch_tensorrt.dynamo.compile(program, inputs=[example], timing_cache_path=timing_cache,
                                                     **plan.kwargs)
