"""ONNX Runtime: export to ONNX, then fp32, fp16 (CUDA execution provider) or static int8.

int8 is real static quantization through ``onnxruntime.quantization.quantize_static`` with
the suite's calibration batches; the number of quantized operators is recorded so that an
int8 point that is not int8 cannot pass unnoticed. Exported and quantized models are cached
under the suite's cache directory, keyed by weights, shape, precision, calibration and versions.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from bench.backends.base import Backend, ConversionRequest, Converted, Target, digest
from bench.config import BackendConfig
from bench.errors import ConfigError
from bench.onnx_export import INPUT_NAME, export_onnx

log = logging.getLogger(__name__)

CPU_EP = "CPUExecutionProvider"
CUDA_EP = "CUDAExecutionProvider"
OPTIMIZATION_LEVELS = ("disable", "basic", "extended", "all")
QUANT_FORMATS = ("QDQ", "QOperator")
CALIBRATE_METHODS = ("MinMax", "Entropy", "Percentile")
MIN_OPSET = 18


@dataclass
class OnnxRuntimeConfig(BackendConfig):
    name: str = "onnxruntime"
    opset: int = 18
    execution_provider: str = "auto"  # auto: CUDA EP on a CUDA device, CPU EP on the CPU
    graph_optimization: str = "all"  # disable | basic | extended | all
    # int8 static quantization (onnxruntime.quantization.quantize_static)
    quant_format: str = "QDQ"  # QDQ | QOperator
    per_channel: bool = True
    calibrate_method: str = "MinMax"  # MinMax | Entropy | Percentile


class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"
    config_class = OnnxRuntimeConfig
    requires = ("onnxruntime", "onnx", "onnxscript")

    def provider(self, target: Target) -> str:
        if self.cfg.execution_provider != "auto":
            return self.cfg.execution_provider
        return CUDA_EP if target.is_cuda else CPU_EP

    def unsupported_reason(self, target: Target, precision: str) -> str | None:
        import onnxruntime as ort

        provider = self.provider(target)
        available = ort.get_available_providers()
        if provider not in available:
            return f"onnxruntime here has no {provider} (it has {', '.join(available)}); run it with device=cpu"
        if (provider == CPU_EP) == target.is_cuda:
            return f"{provider} does not run on device {target.device}"
        if precision == "fp16" and provider != CUDA_EP:
            return "onnxruntime fp16 needs the CUDAExecutionProvider (the CPU provider has no fp16 convolutions)"
        if precision == "bf16":
            return "onnxruntime has no bf16 path for these models"
        if precision == "int8" and provider != CPU_EP:
            return f"onnxruntime int8 runs on the CPUExecutionProvider only here ({provider} has no int8 convolutions; use backend=tensorrt)"
        return None

    def check_options(self) -> None:
        if self.cfg.opset < MIN_OPSET:
            raise ConfigError(f"backend.opset={self.cfg.opset}: the dynamo ONNX exporter needs opset >= {MIN_OPSET}")
        for field_name, value, allowed in (
            ("graph_optimization", self.cfg.graph_optimization, OPTIMIZATION_LEVELS),
            ("quant_format", self.cfg.quant_format, QUANT_FORMATS),
            ("calibrate_method", self.cfg.calibrate_method, CALIBRATE_METHODS),
        ):
            if value not in allowed:
                raise ConfigError(f"backend.{field_name}={value!r} is not one of: {', '.join(allowed)}")

    def convert(self, request: ConversionRequest) -> Converted:
        import onnxruntime as ort

        float_precision = "fp16" if request.precision == "fp16" else "fp32"
        key = digest(request.cache_key, float_precision, self.cfg.opset, torch.__version__, ort.__version__)
        folder = request.cache_dir / "onnx" / key
        fp_path = folder / f"model_{float_precision}.onnx"
        cache_hit = fp_path.is_file()
        if not cache_hit:
            model = request.model.half() if float_precision == "fp16" else request.model
            export_onnx(model, request.example.to(next(model.parameters()).dtype), fp_path, self.cfg.opset)
        path = fp_path
        details: dict[str, str | float] = {"provider": self.provider(request.target), "onnx_path": str(fp_path)}
        if request.precision == "int8":
            qkey = digest(self.cfg.quant_format, self.cfg.per_channel, self.cfg.calibrate_method)
            path = folder / f"model_int8_{qkey}.onnx"
            if not path.is_file():
                cache_hit = False
                self.quantize(fp_path, path, request.calibration())
            details["onnx_path"] = str(path)
            details["quantized_ops"] = count_quantized_ops(path)
        session = self.session(path, request)
        runner = cuda_runner if details["provider"] == CUDA_EP else cpu_runner
        return Converted(
            run=runner(session, request),
            input_dtype=torch.float16 if float_precision == "fp16" else torch.float32,
            cache_hit=cache_hit,
            details=details,
        )

    def quantize(self, source: Path, destination: Path, batches: list[torch.Tensor]) -> None:
        from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
        from onnxruntime.quantization.shape_inference import quant_pre_process

        prepared = destination.with_suffix(".prep.onnx")
        quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
        log.info("quantizing to int8 (%s, per_channel=%s, %s, %d calibration batches)",
                 self.cfg.quant_format, self.cfg.per_channel, self.cfg.calibrate_method, len(batches))
        quantize_static(
            str(prepared), str(destination), BatchReader([b.cpu().numpy() for b in batches]),
            quant_format=QuantFormat[self.cfg.quant_format],
            per_channel=self.cfg.per_channel,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod[self.cfg.calibrate_method],
        )
        prepared.unlink(missing_ok=True)

    def session(self, path: Path, request: ConversionRequest):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = {
            "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
            "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
            "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        }[self.cfg.graph_optimization]
        if request.threads:
            options.intra_op_num_threads = request.threads
        provider = self.provider(request.target)
        if provider == CUDA_EP:
            providers = [(CUDA_EP, {"device_id": request.target.device.index or 0})]
        else:
            providers = [provider]
        return ort.InferenceSession(str(path), options, providers=providers)


class BatchReader:
    """onnxruntime.quantization.CalibrationDataReader over in-memory batches."""

    def __init__(self, batches: list) -> None:
        self._feeds = iter([{INPUT_NAME: batch} for batch in batches])

    def get_next(self) -> dict | None:
        return next(self._feeds, None)


def count_quantized_ops(path: Path) -> int:
    """Operators that compute in int8: QLinear*/Integer ops, or QDQ pairs around float ops."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    return sum(1 for node in graph.node if node.op_type.startswith("QLinear") or node.op_type.endswith("Integer")
               or node.op_type == "QuantizeLinear")


def cpu_runner(session, request: ConversionRequest):
    def run(x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(session.run(None, {INPUT_NAME: x.numpy()})[0])

    return run


def cuda_runner(session, request: ConversionRequest):
    """IO binding on torch's CUDA buffers, so no host copies enter the timed call."""
    import numpy as np

    device = request.target.device
    meta = session.get_outputs()[0]
    out_dtype = torch.float16 if meta.type == "tensor(float16)" else torch.float32
    output = torch.empty(tuple(meta.shape), dtype=out_dtype, device=device)
    binding = session.io_binding()
    np_dtype = {torch.float16: np.float16, torch.float32: np.float32}

    def run(x: torch.Tensor) -> torch.Tensor:
        binding.bind_input(INPUT_NAME, "cuda", device.index or 0, np_dtype[x.dtype], tuple(x.shape), x.data_ptr())
        binding.bind_output(meta.name, "cuda", device.index or 0, np_dtype[out_dtype], tuple(output.shape),
                            output.data_ptr())
        session.run_with_iobinding(binding)
        return output

    return run
