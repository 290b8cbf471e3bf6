"""torch.compile with the Inductor backend; on CUDA with CUDA graphs unless told not to.

Compilation happens on the first call, and with CUDA graphs the graph is recorded on a later one
(CUDA graph trees warm up once, record once, then replay), so ``convert`` makes three calls and
conversion time includes compiling and recording. Its parts are recorded apart, so a slow warm start
can be told apart: the import of Inductor and Triton (paid once per process, cache or not), the
compiler's own share (Dynamo, AOTAutograd, Inductor: ``compilation_time_metrics``) and each first
call. Inductor's and Triton's on-disk caches live under the suite's cache directory, so a
repeat of the same point compiles from cache; the hit is read from Inductor's own counters.
Inductor writes its cache files through a temporary file itself; a compile that fails with a
cache is retried once with that cache emptied (recorded in ``cache_events``).
"""
import logging
import os
import shutil
import time
from typing import Optional

import torch

from bench.device.backends.base import FLOAT_DTYPES, NONE, Backend, ConversionRequest, Converted, Option, Target, \
    check_choice, float_model
from bench.device.backends.pytorch import bf16_reason
from bench.device.fingerprint import torch_version

log = logging.getLogger(__name__)

MODES = ("default", "max-autotune")
# (mode, cuda_graphs) -> torch.compile mode
COMPILE_MODES = {
    ("default", False): "default",
    ("default", True): "reduce-overhead",
    ("max-autotune", False): "max-autotune-no-cudagraphs",
    ("max-autotune", True): "max-autotune",
}


class InductorBackend(Backend):
    name = "inductor"
    OPTIONS = {
        "mode": Option("default", (str,)),
        "cuda_graphs": Option(None, (bool, NONE)),  # null: on for CUDA devices, off on the CPU
        "channels_last": Option(False, (bool,)),
    }
    requires = ("torch",)

    @classmethod
    def unavailable_reason(cls) -> Optional[str]:
        if torch_version() < (2, 0):
            return "torch.compile needs torch >= 2.0 (this is torch {})".format(torch.__version__)
        return super().unavailable_reason()

    def check_options(self) -> None:
        check_choice("mode", self.options["mode"], MODES)

    def cuda_graphs(self, target: Target) -> bool:
        wanted = self.options["cuda_graphs"]
        return target.is_cuda if wanted is None else bool(wanted)

    def resolved(self, target: Target, precision: str) -> dict:
        return dict(self.options, cuda_graphs=self.cuda_graphs(target))

    def variant(self, target: Target) -> str:
        mode = "" if self.options["mode"] == "default" else "/" + self.options["mode"]
        return "inductor{}{}{}".format(mode, "+cudagraphs" if self.cuda_graphs(target) else "",
                                       "+channels_last" if self.options["channels_last"] else "")

    def unsupported_reason(self, target: Target, precision: str) -> Optional[str]:
        if precision not in FLOAT_DTYPES:
            return "torch.compile has no {} inference path (use onnxruntime or a TensorRT backend)".format(precision)
        if self.cuda_graphs(target) and not target.is_cuda:
            return "backend.cuda_graphs=true needs a CUDA device"
        if precision == "bf16":
            return bf16_reason(target)
        return None

    def convert(self, request: ConversionRequest) -> Converted:
        cache = os.path.join(request.cache_dir, "inductor")
        # Set, not setdefault: importing torch already fills in a /tmp default. The point runs in its own
        # process, so this reaches nothing else.
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = cache
        os.environ["TRITON_CACHE_DIR"] = os.path.join(request.cache_dir, "triton")
        events = []
        try:
            return self._compile(request, cache, events)
        except Exception as exc:  # noqa: BLE001 - retried once without the cache, then it propagates
            if not os.path.isdir(cache):
                raise
            message = "compiling with the Inductor cache {} failed ({}: {}); emptied it and compiled again".format(
                cache, type(exc).__name__, str(exc).splitlines()[0][:200] if str(exc) else "")
            log.warning(message)
            events.append(message)
            shutil.rmtree(cache, ignore_errors=True)
            torch._dynamo.reset()
            return self._compile(request, cache, events)

    def _compile(self, request: ConversionRequest, cache: str, events: list) -> Converted:
        started = time.perf_counter()
        import torch._inductor.compile_fx  # noqa: F401 - Inductor and Triton load once per process: timed apart
        from torch._dynamo.utils import counters

        import_s = time.perf_counter() - started

        mode = COMPILE_MODES[(self.options["mode"], self.cuda_graphs(request.target))]
        channels_last = self.options["channels_last"]
        model, dtype = float_model(request.model, request.precision, channels_last)
        compiled = torch.compile(model, mode=mode)
        example = request.example.to(dtype)
        if channels_last:
            example = example.contiguous(memory_format=torch.channels_last)

        def run(x: torch.Tensor) -> torch.Tensor:
            with torch.inference_mode():
                return compiled(x)

        hits_before = counters["inductor"]["fxgraph_cache_hit"]
        compile_before = _compiler_seconds()
        calls_s = []
        for _ in range(3 if self.cuda_graphs(request.target) else 1):  # compile; warm up, record the graph
            start = time.perf_counter()
            run(example)
            if request.target.is_cuda:
                torch.cuda.synchronize(request.target.device)
            calls_s.append(time.perf_counter() - start)
        hit = counters["inductor"]["fxgraph_cache_hit"] > hits_before
        details = {"compile_mode": mode, "compile.import_s": "{:.2f}".format(import_s),
                   "compile.calls_s": ", ".join("{:.2f}".format(t) for t in calls_s)}
        compiler_s = _compiler_seconds()
        if compiler_s:
            details["compile.compiler_s"] = "{:.2f}".format(compiler_s - compile_before)
        return Converted(run=run, input_dtype=dtype, channels_last=channels_last, cache_hit=hit,
                         details=details, cache_events=events)


def _compiler_seconds() -> Optional[float]:
    """Seconds torch.compile has spent compiling in this process (Dynamo's ``compile_inner``, which contains
    AOTAutograd and Inductor), or None where this torch keeps no such record."""
    try:
        from torch._dynamo.utils import compilation_time_metrics
    except ImportError:
        return None
    return sum(sum(times) for name, times in compilation_time_metrics.items() if name.endswith("compile_inner"))
