"""TensorRT from ONNX: export (shared exporter), parse, build an engine, run it on its own stream.

Which builder and runtime calls a TensorRT version needs is decided by ``engine_plan``, a plain
function of the version string, so the dispatch is tested without TensorRT: 8.2 sets
``max_workspace_size`` and runs ``execute_async_v2`` with bindings, 8.4+ sets a memory-pool
limit, 8.5+ runs ``execute_async_v3`` on tensor addresses, 10.x drops the explicit-batch flag,
and 11.x is strongly typed: fp16 comes from a half-precision ONNX model and int8 from explicit
Q/DQ nodes (NVIDIA ModelOpt) instead of builder flags and calibrators.

The ONNX file is exported with an exporter and opset this TensorRT's parser reads
(``parser_max_opset``: 13 on 8.2/8.3, 17 on 8.4 to 9.x), both recorded. Engines are cache entries
under ``<cache_dir>/tensorrt/<key>`` (key: the point's cache key, which covers weights, shape,
precision, calibration and GPU name, plus the TensorRT and torch versions and this backend's
options); the timing cache is shared by every model built with one TensorRT version on one GPU.
"""
import importlib.util
import logging
import os
from typing import NamedTuple, Optional, Tuple

import torch

from bench.device import cache, onnx_export
from bench.device.backends import trt_rules
from bench.device.backends.base import NONE, Backend, ConversionRequest, Converted, Option, Target
from bench.contract.protocol import digest
from bench.contract.results import write_file_atomic
from bench.contract.errors import ConfigError
from bench.device.onnx_export import INPUT_NAME, OUTPUT_NAME
from bench.contract.protocol import PRECISIONS

log = logging.getLogger(__name__)


class EnginePlan(NamedTuple):
    """How one TensorRT version builds and runs one precision."""

    network: str  # "explicit_batch" (< 10: flag required) | "default" (10+: create_network(0))
    workspace: str  # "max_workspace_size" (< 8.4) | "memory_pool_limit"
    execute: str  # "v2" (bindings, < 8.5) | "v3" (tensor addresses)
    onnx_dtype: str  # precision of the exported model: "fp32" | "fp16" (strongly typed fp16)
    builder_flags: Tuple[str, ...]  # BuilderFlag members (empty on 11.x, where they are gone)
    int8: str  # "none" | "calibrator" (8.x-10.x) | "qdq" (11.x: explicit Q/DQ from ModelOpt)
    qdq_high_precision: str = "fp32"  # ModelOpt high_precision_dtype for layers left unquantized


def parser_max_opset(trt_version: str) -> Optional[int]:
    """The newest ONNX opset this TensorRT's parser reads (None: no limit the exporters reach)."""
    version = trt_rules.parse_version(trt_version)
    if version < (8, 4):
        return 13
    if version < (10, 0):
        return 17
    return None


def engine_plan(trt_version: str, precision: str, int8_fp16_fallback: bool) -> EnginePlan:
    """The builder/runtime calls for ``trt_version`` at ``precision``; raises for a precision it cannot build."""
    if precision not in PRECISIONS:
        raise ConfigError(f"precision {precision!r} is not one of: {', '.join(PRECISIONS)}")
    reason = precision_reason(trt_version, precision, modelopt_installed=True)
    if reason:
        raise ValueError(reason)
    version = trt_rules.parse_version(trt_version)
    common = {
        "network": "explicit_batch" if version < (10, 0) else "default",
        "workspace": "max_workspace_size" if version < (8, 4) else "memory_pool_limit",
        "execute": "v2" if version < (8, 5) else "v3",
    }
    if version >= (11, 0):
        if precision == "int8":
            return EnginePlan(onnx_dtype="fp32", builder_flags=(), int8="qdq",
                              qdq_high_precision="fp16" if int8_fp16_fallback else "fp32", **common)
        return EnginePlan(onnx_dtype="fp16" if precision == "fp16" else "fp32", builder_flags=(), int8="none",
                          **common)
    flags = {"fp32": (), "fp16": ("FP16",), "bf16": ("BF16",),
             "int8": ("INT8", "FP16") if int8_fp16_fallback else ("INT8",)}[precision]
    return EnginePlan(onnx_dtype="fp32", builder_flags=flags, int8="calibrator" if precision == "int8" else "none",
                      **common)


def precision_reason(trt_version: str, precision: str, modelopt_installed: bool) -> Optional[str]:
    """Why this backend cannot build ``precision`` with ``trt_version`` (device rules aside), or None."""
    version = trt_rules.parse_version(trt_version)
    if precision == "bf16" and version < (9, 0):
        return f"bf16 needs TensorRT >= 9.0 (BuilderFlag.BF16); this is TensorRT {trt_version}"
    if precision == "bf16" and version >= (11, 0):
        return (f"bf16 on TensorRT {trt_version} (strongly typed) needs a bf16-typed ONNX model, which this "
                "backend does not produce: use backend=torch_tensorrt")
    if precision == "int8" and version >= (11, 0) and not modelopt_installed:
        return (f"int8 on TensorRT {trt_version} needs explicit Q/DQ nodes (calibrators are gone): "
                "install NVIDIA ModelOpt (pip install 'nvidia-modelopt[onnx]')")
    return None


class TensorrtBackend(Backend):
    name = "tensorrt"
    OPTIONS = {
        "exporter": Option("auto", (str,)),  # auto | dynamo | torchscript, within what the parser reads
        "opset": Option(None, (int, NONE)),  # null: the newest the exporter and this TensorRT's parser share
        "workspace_mb": Option(1024, (int,)),  # max_workspace_size on 8.2, memory pool on 8.4+
        # int8: entropy2 | entropy | minmax (TensorRT calibrators on 8.x-10.x; ModelOpt entropy/max on 11.x)
        "calibration_algorithm": Option("entropy2", (str,)),
        # int8 also lets layers without an int8 kernel run in fp16, as the blog's torch2trt call did
        "int8_fp16_fallback": Option(True, (bool,)),
    }
    requires = ("tensorrt",)
    INT8_OPTIONS = ("calibration_algorithm", "int8_fp16_fallback")

    @classmethod
    def unavailable_reason(cls) -> Optional[str]:
        return super().unavailable_reason() or trt_rules.importable_version("tensorrt")[1]

    def export(self, trt_version: str) -> onnx_export.Export:
        return onnx_export.choose(self.options["exporter"], self.options["opset"], parser_max_opset(trt_version),
                                  f"TensorRT {trt_version}'s ONNX parser")

    def check_options(self) -> None:
        if self.options["workspace_mb"] < 1:
            raise ConfigError(f"backend.workspace_mb={self.options['workspace_mb']} must be >= 1")
        trt_rules.calibration_algorithm(self.options["calibration_algorithm"])

    def resolved(self, target: Target, precision: str) -> dict:
        options = super().resolved(target, precision)
        if self.unavailable_reason():
            return options
        export = self.export(trt_rules.installed_version("tensorrt"))
        return dict(options, exporter=export.exporter, opset=export.opset)

    def unsupported_reason(self, target: Target, precision: str) -> Optional[str]:
        version = trt_rules.installed_version("tensorrt")
        cc = target.compute_capability if target.is_cuda else None
        return trt_rules.device_reason(version, cc, precision) or precision_reason(
            version, precision, modelopt_installed=importlib.util.find_spec("modelopt") is not None)

    def convert(self, request: ConversionRequest) -> Converted:
        import tensorrt as trt

        plan = engine_plan(trt.__version__, request.precision, self.options["int8_fp16_fallback"])
        export = self.export(trt.__version__)
        device = request.target.device
        key = digest(request.cache_key, trt.__version__, torch.__version__, export, sorted(self.options.items()))
        events = []
        entry = cache.CacheEntry(os.path.join(request.cache_dir, self.name, key), events)
        timing_path = os.path.join(request.cache_dir, self.name, "timing",
                                   f"{digest(trt.__version__, torch.cuda.get_device_name(device))}.cache")
        logger = trt.Logger(trt.Logger.WARNING)
        runtime = trt.Runtime(logger)

        def load(folder: str):
            with open(os.path.join(folder, "engine.plan"), "rb") as handle:
                engine = runtime.deserialize_cuda_engine(handle.read())
            if engine is None:
                raise RuntimeError(f"TensorRT {trt.__version__} could not deserialize the engine")
            return engine

        def build(folder: str):
            onnx_path = self.onnx_model(request, plan, export, folder)
            data = self.build(trt, logger, plan, onnx_path, request, folder, timing_path)
            with open(os.path.join(folder, "engine.plan"), "wb") as handle:
                handle.write(data)
            return load(folder)

        engine, cache_hit = cache.load_or_build(entry, load, build)
        runner = EngineRunner(runtime, engine, plan.execute, device)
        return Converted(
            run=runner, input_dtype=runner.input_dtype, cache_hit=cache_hit, stream=runner.stream,
            cache_events=events,
            details={
                "tensorrt": trt.__version__, "network": plan.network, "workspace_api": plan.workspace,
                "execute": f"execute_async_{plan.execute}", "onnx_dtype": plan.onnx_dtype,
                "exporter": export.exporter, "opset": export.opset,
                "builder_flags": ",".join(plan.builder_flags) or "none", "int8": plan.int8,
                "engine_path": entry.path("engine.plan"), "timing_cache": timing_path,
            },
        )

    def onnx_model(self, request: ConversionRequest, plan: EnginePlan, export: onnx_export.Export,
                   folder: str) -> str:
        """The ONNX file to build from: exported at ``plan.onnx_dtype``, then Q/DQ-quantized for the qdq route."""
        path = os.path.join(folder, f"model_{plan.onnx_dtype}.onnx")
        model, example = request.model, request.example
        if plan.onnx_dtype == "fp16":
            model, example = model.half(), example.half()
        onnx_export.export_onnx(model, example, path, export)
        if plan.int8 != "qdq":
            return path
        import numpy as np
        from modelopt.onnx.quantization import quantize

        qdq_path = os.path.join(folder, "model_int8_qdq.onnx")
        batches = request.calibration()
        log.info("inserting int8 Q/DQ with ModelOpt (%d calibration batches, %s elsewhere)", len(batches),
                 plan.qdq_high_precision)
        quantize(path, quantize_mode="int8",
                 calibration_data={INPUT_NAME: np.concatenate([b.cpu().numpy() for b in batches])},
                 calibration_method=trt_rules.calibration_algorithm(self.options["calibration_algorithm"])[2],
                 high_precision_dtype=plan.qdq_high_precision, output_path=qdq_path)
        return qdq_path

    def build(self, trt, logger, plan: EnginePlan, onnx_path: str, request: ConversionRequest, folder: str,
              timing_path: str) -> bytes:
        builder = trt.Builder(logger)
        flags = 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH) if plan.network == "explicit_batch" else 0
        network = builder.create_network(flags)
        parser = trt.OnnxParser(network, logger)
        if not parser.parse_from_file(onnx_path):
            errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise RuntimeError(f"TensorRT {trt.__version__} could not parse {os.path.basename(onnx_path)}: {errors}")
        config = builder.create_builder_config()
        workspace = self.options["workspace_mb"] << 20
        if plan.workspace == "max_workspace_size":
            config.max_workspace_size = workspace
        else:
            config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace)
        for flag in plan.builder_flags:
            config.set_flag(getattr(trt.BuilderFlag, flag))
        if plan.int8 == "calibrator":
            batches = [batch.to(request.target.device) for batch in request.calibration()]
            torch.cuda.synchronize(request.target.device)  # the calibrator hands TensorRT raw device pointers
            config.int8_calibrator = make_calibrator(trt, self.options["calibration_algorithm"], batches,
                                                     os.path.join(folder, "calibration.cache"))
        timing_bytes = b""
        if os.path.isfile(timing_path):
            with open(timing_path, "rb") as handle:
                timing_bytes = handle.read()
        timing = config.create_timing_cache(timing_bytes)
        config.set_timing_cache(timing, False)
        log.info("building a TensorRT %s engine (%s)", trt.__version__,
                 ", ".join(plan.builder_flags) or f"{plan.onnx_dtype} ONNX")
        serialized = builder.build_serialized_network(network, config)
        if serialized is None:
            raise RuntimeError(f"TensorRT {trt.__version__} could not build the engine (its log above says why)")
        write_file_atomic(timing_path, bytes(memoryview(timing.serialize())))
        return bytes(memoryview(serialized))


def make_calibrator(trt, algorithm: str, batches, cache_path: str):
    """A TensorRT int8 calibrator (8.x-10.x) over the suite's calibration batches, already on the device."""
    base = getattr(trt, trt_rules.calibration_algorithm(algorithm)[1])

    class Calibrator(base):
        def __init__(self) -> None:
            base.__init__(self)
            self.batches = [batch.contiguous() for batch in batches]
            self.position = 0

        def get_batch_size(self) -> int:
            return 1  # explicit batch: every batch carries its own batch dimension

        def get_batch(self, names):
            if self.position == len(self.batches):
                return None
            self.position += 1
            return [int(self.batches[self.position - 1].data_ptr())]

        def read_calibration_cache(self):
            if not os.path.isfile(cache_path):
                return None
            with open(cache_path, "rb") as handle:
                return handle.read()

        def write_calibration_cache(self, data) -> None:
            write_file_atomic(cache_path, bytes(memoryview(data)))

    return Calibrator()


class EngineRunner:
    """Runs one engine on a dedicated CUDA stream; output buffers are allocated once.

    A call orders itself after the caller's current stream and the caller after it, so it is safe
    outside the timer too; under the timer the current stream is this one and both waits drop out.
    """

    def __init__(self, runtime, engine, execute: str, device: torch.device) -> None:
        self.runtime, self.engine = runtime, engine  # both must outlive the execution context
        self.context = engine.create_execution_context()
        self.execute = execute
        self.device = device
        self.stream = torch.cuda.Stream(device)
        if execute == "v3":
            names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
            shapes = [tuple(engine.get_tensor_shape(name)) for name in names]
            dtypes = [trt_rules.torch_dtype(str(engine.get_tensor_dtype(name))) for name in names]
        else:
            names = [engine.get_binding_name(i) for i in range(engine.num_bindings)]
            shapes = [tuple(engine.get_binding_shape(i)) for i in range(len(names))]
            dtypes = [trt_rules.torch_dtype(str(engine.get_binding_dtype(i))) for i in range(len(names))]
        self.slot = names.index(INPUT_NAME)
        self.input_dtype = dtypes[self.slot]
        buffers = [None if i == self.slot else torch.empty(shape, dtype=dtype, device=device)
                   for i, (shape, dtype) in enumerate(zip(shapes, dtypes))]
        outputs = [i for i, buffer in enumerate(buffers) if buffer is not None]
        self.output = buffers[names.index(OUTPUT_NAME) if OUTPUT_NAME in names else outputs[0]]
        self.buffers = buffers  # every output needs an address, even those the suite does not read
        self.bindings = [0 if buffer is None else buffer.data_ptr() for buffer in buffers]
        if execute == "v3":
            for name, buffer in zip(names, buffers):
                if buffer is not None:
                    self.context.set_tensor_address(name, buffer.data_ptr())

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype != self.input_dtype or not x.is_contiguous() or x.device != self.device:
            raise ValueError(f"the engine takes a contiguous {self.input_dtype} tensor on {self.device}, "
                             f"got {x.dtype} on {x.device}")
        caller = torch.cuda.current_stream(self.device)
        if caller != self.stream:
            self.stream.wait_stream(caller)
        if self.execute == "v3":
            self.context.set_tensor_address(INPUT_NAME, x.data_ptr())
            queued = self.context.execute_async_v3(self.stream.cuda_stream)
        else:
            self.bindings[self.slot] = x.data_ptr()
            queued = self.context.execute_async_v2(self.bindings, self.stream.cuda_stream)
        if not queued:
            raise RuntimeError(f"TensorRT could not enqueue the engine (execute_async_{self.execute})")
        if caller != self.stream:
            caller.wait_stream(self.stream)
        return self.output
