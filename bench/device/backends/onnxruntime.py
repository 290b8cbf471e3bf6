"""ONNX Runtime: export to ONNX, then fp32, fp16 (CUDA execution provider) or static int8.

int8 is real static quantization through ``onnxruntime.quantization.quantize_static`` with the
suite's calibration batches (onnxruntime 1.10's API is the same); the number of quantized
operators is recorded so that an int8 point that is not int8 cannot pass unnoticed. Exported and
quantized models are cache entries (bench.device.cache) keyed by weights, shape, precision,
calibration, exporter, opset and versions.
"""
import importlib.util
import logging
import os
from typing import List, Optional

import torch

from bench.device import cache, onnx_export
from bench.device.backends.base import NONE, Backend, ConversionRequest, Converted, Option, Target, \
    check_choice
from bench.contract.protocol import digest
from bench.device.onnx_export import INPUT_NAME

log = logging.getLogger(__name__)

CPU_EP = "CPUExecutionProvider"
CUDA_EP = "CUDAExecutionProvider"
OPTIMIZATION_LEVELS = ("disable", "basic", "extended", "all")
QUANT_FORMATS = ("QDQ", "QOperator")
CALIBRATE_METHODS = ("MinMax", "Entropy", "Percentile")


class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"
    OPTIONS = {
        "exporter": Option("auto", (str,)),  # auto | dynamo | torchscript (onnx_export.choose)
        "opset": Option(None, (int, NONE)),  # null: the exporter's choice
        "execution_provider": Option("auto", (str,)),  # auto: CUDA EP on a CUDA device, CPU EP on the CPU
        "graph_optimization": Option("all", (str,)),  # disable | basic | extended | all
        # int8 static quantization (onnxruntime.quantization.quantize_static)
        "quant_format": Option("QDQ", (str,)),  # QDQ | QOperator
        "per_channel": Option(True, (bool,)),
        "calibrate_method": Option("MinMax", (str,)),  # MinMax | Entropy | Percentile
    }
    requires = ("onnxruntime", "onnx")
    INT8_OPTIONS = ("quant_format", "per_channel", "calibrate_method")

    def provider(self, target: Target) -> str:
        if self.options["execution_provider"] != "auto":
            return self.options["execution_provider"]
        return CUDA_EP if target.is_cuda else CPU_EP

    def export(self) -> onnx_export.Export:
        return onnx_export.choose(self.options["exporter"], self.options["opset"], None, "ONNX Runtime")

    def resolved(self, target: Target, precision: str) -> dict:
        export = self.export()
        return dict(super().resolved(target, precision), exporter=export.exporter, opset=export.opset,
                    execution_provider=self.provider(target))

    def check_options(self) -> None:
        check_choice("graph_optimization", self.options["graph_optimization"], OPTIMIZATION_LEVELS)
        check_choice("quant_format", self.options["quant_format"], QUANT_FORMATS)
        check_choice("calibrate_method", self.options["calibrate_method"], CALIBRATE_METHODS)
        self.export()

    def unsupported_reason(self, target: Target, precision: str) -> Optional[str]:
        import onnxruntime as ort

        provider = self.provider(target)
        available = ort.get_available_providers()
        if provider not in available:
            return "onnxruntime here has no {} (it has {}); run it with device=cpu".format(
                provider, ", ".join(available))
        if (provider == CPU_EP) == target.is_cuda:
            return "{} does not run on device {}".format(provider, target.device)
        if precision == "fp16" and provider != CUDA_EP:
            return "onnxruntime fp16 needs the CUDAExecutionProvider (the CPU provider has no fp16 convolutions)"
        if precision == "bf16":
            return "onnxruntime has no bf16 path for these models"
        if precision == "int8":
            if provider != CPU_EP:
                return ("onnxruntime int8 runs on the CPUExecutionProvider only here ({} has no int8 convolutions; "
                        "use backend=tensorrt)".format(provider))
            if importlib.util.find_spec("six") is None and ort.__version__.startswith("1.10."):
                return ("onnxruntime {}'s quantization tool imports the six package, which is not installed "
                        "(pip install six, or JetPack's python3-six)".format(ort.__version__))
        return None

    def convert(self, request: ConversionRequest) -> Converted:
        import onnxruntime as ort

        export = self.export()
        float_precision = "fp16" if request.precision == "fp16" else "fp32"
        key = digest(request.cache_key, float_precision, export, torch.__version__, ort.__version__)
        events = []  # type: List[str]
        root = os.path.join(request.cache_dir, "onnx")
        float_entry = cache.CacheEntry(os.path.join(root, key), events)
        entry, name = float_entry, "model.onnx"
        if request.precision == "int8":
            qkey = digest(self.options["quant_format"], self.options["per_channel"], self.options["calibrate_method"])
            entry = cache.CacheEntry(os.path.join(root, "{}-int8-{}".format(key, qkey)), events)
        def open_session(folder: str):
            return self.session(os.path.join(folder, name), request)

        def export_float(folder: str) -> None:
            model = request.model.half() if float_precision == "fp16" else request.model
            example = request.example.to(next(model.parameters()).dtype)
            onnx_export.export_onnx(model, example, os.path.join(folder, name), export)

        session = entry.load(open_session)
        cache_hit = session is not None
        if session is None:
            if entry is float_entry or float_entry.load(lambda folder: check_model(os.path.join(folder, name))) is None:
                float_entry.build(export_float)
            if entry is not float_entry:
                entry.build(lambda folder: self.quantize(float_entry.path(name), os.path.join(folder, name),
                                                         request.calibration()))
            session = open_session(entry.folder)
        details = {"provider": self.provider(request.target), "onnx_path": entry.path(name),
                   "exporter": export.exporter, "opset": export.opset, "onnxruntime": ort.__version__}
        if request.precision == "int8":
            details["quantized_ops"] = count_quantized_ops(entry.path(name))
        runner = cuda_runner if details["provider"] == CUDA_EP else cpu_runner
        return Converted(run=runner(session, request),
                         input_dtype=torch.float16 if float_precision == "fp16" else torch.float32,
                         cache_hit=cache_hit, details=details, cache_events=events,
                         gpu_unavailable="ONNX Runtime's CUDA provider queues its work on a stream of its own"
                         if details["provider"] == CUDA_EP else None)

    def quantize(self, source: str, destination: str, batches: List[torch.Tensor]) -> None:
        from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

        prepared = source
        try:
            from onnxruntime.quantization.shape_inference import quant_pre_process
        except ImportError:  # onnxruntime < 1.13 has no pre-processing step; quantize_static optimizes itself
            quant_pre_process = None
        if quant_pre_process is not None:
            prepared = destination + ".prep.onnx"
            quant_pre_process(source, prepared, skip_symbolic_shape=True)
        log.info("quantizing to int8 (%s, per_channel=%s, %s, %d calibration batches)", self.options["quant_format"],
                 self.options["per_channel"], self.options["calibrate_method"], len(batches))
        # onnxruntime < 1.11 writes its calibration model to ./augmented_model.onnx: quantize inside the cache
        # entry's own (temporary) folder, never in the folder the user started from.
        folder, here = os.path.dirname(os.path.abspath(destination)), os.getcwd()
        os.chdir(folder)
        try:
            quantize_static(
                os.path.abspath(prepared), os.path.abspath(destination),
                BatchReader([b.cpu().numpy() for b in batches]),
                quant_format=QuantFormat[self.options["quant_format"]],
                per_channel=self.options["per_channel"],
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                calibrate_method=CalibrationMethod[self.options["calibrate_method"]],
            )
        finally:
            os.chdir(here)
        for leftover in ([prepared] if prepared != source else []) + [os.path.join(folder, "augmented_model.onnx")]:
            if os.path.exists(leftover):
                os.remove(leftover)

    def session(self, path: str, request: ConversionRequest):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = {
            "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
            "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
            "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        }[self.options["graph_optimization"]]
        if request.threads:
            options.intra_op_num_threads = request.threads
        provider = self.provider(request.target)
        if provider == CUDA_EP:
            providers = [(CUDA_EP, {"device_id": request.target.device.index or 0})]
        else:
            providers = [provider]
        return ort.InferenceSession(path, options, providers=providers)


class BatchReader:
    """onnxruntime.quantization.CalibrationDataReader over in-memory batches."""

    def __init__(self, batches: list) -> None:
        self._feeds = iter([{INPUT_NAME: batch} for batch in batches])

    def get_next(self) -> Optional[dict]:
        return next(self._feeds, None)


def check_model(path: str) -> bool:
    """True for a whole ONNX model; raises for a truncated or foreign file."""
    import onnx

    onnx.checker.check_model(path)
    return True


def count_quantized_ops(path: str) -> int:
    """Operators that compute in int8: QLinear*/Integer ops, or QuantizeLinear nodes of a QDQ graph."""
    import onnx

    graph = onnx.load(path, load_external_data=False).graph
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
