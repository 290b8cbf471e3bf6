"""PyTorch -> ONNX export shared by the ONNX Runtime and TensorRT-from-ONNX backends.

Two exporters: ``dynamo`` (``torch.onnx.export(..., dynamo=True)``, torch >= 2.5 with onnxscript,
opset >= 18) and ``torchscript`` (every torch, the only one in torch 1.10). ``auto`` takes dynamo
where it exists and the consumer reads its opset, else TorchScript at the highest opset both torch
and the consumer support. The exporter and opset used are recorded with every measurement.
"""
import importlib.util
import logging
import os
from typing import NamedTuple, Optional

import torch
from torch import nn

from bench.device.fingerprint import torch_version
from bench.contract.errors import ConfigError

log = logging.getLogger(__name__)

INPUT_NAME = "input"
OUTPUT_NAME = "output"
EXPORTERS = ("auto", "dynamo", "torchscript")
DYNAMO_MIN_OPSET = 18


class Export(NamedTuple):
    exporter: str  # "dynamo" | "torchscript"
    opset: int


def dynamo_available() -> bool:
    return torch_version() >= (2, 5) and importlib.util.find_spec("onnxscript") is not None


def torchscript_max_opset() -> int:
    """The newest opset this torch's TorchScript exporter writes by default."""
    try:
        from torch.onnx import _constants

        return int(_constants.ONNX_DEFAULT_OPSET)
    except (ImportError, AttributeError):  # torch < 1.13
        from torch.onnx import symbolic_helper

        return int(symbolic_helper._onnx_main_opset)


def choose(exporter: str, opset: Optional[int], max_opset: Optional[int], consumer: str) -> Export:
    """Exporter and opset for a consumer that reads opsets up to ``max_opset`` (None: any)."""
    if exporter not in EXPORTERS:
        raise ConfigError("backend.exporter={!r} is not one of: {}".format(exporter, ", ".join(EXPORTERS)))
    if exporter == "dynamo" and not dynamo_available():
        raise ConfigError("backend.exporter=dynamo needs torch >= 2.5 with onnxscript (this is torch {})".format(
            torch.__version__))
    dynamo_fits = max_opset is None or max_opset >= max(DYNAMO_MIN_OPSET, opset or 0)
    if exporter == "dynamo" or (exporter == "auto" and dynamo_available() and dynamo_fits
                                 and (opset is None or opset >= DYNAMO_MIN_OPSET)):
        chosen = opset or DYNAMO_MIN_OPSET
        if chosen < DYNAMO_MIN_OPSET:
            raise ConfigError("backend.opset={}: the dynamo exporter writes opset >= {}".format(
                chosen, DYNAMO_MIN_OPSET))
        if max_opset is not None and chosen > max_opset:
            raise ConfigError("backend.opset={}: {} reads opsets up to {}".format(chosen, consumer, max_opset))
        return Export("dynamo", chosen)
    limit = torchscript_max_opset() if max_opset is None else min(torchscript_max_opset(), max_opset)
    chosen = opset or limit
    if chosen > limit:
        raise ConfigError("backend.opset={}: torch {}'s TorchScript exporter and {} go up to opset {}".format(
            chosen, torch.__version__, consumer, limit))
    return Export("torchscript", chosen)


def export_onnx(model: nn.Module, example: torch.Tensor, path: str, export: Export) -> str:
    """Export with a static input shape (the point's shape); weights may land in ``<path>.data`` beside it."""
    log.info("exporting ONNX with the %s exporter (opset %d, input %s %s)", export.exporter, export.opset,
             tuple(example.shape), example.dtype)
    if export.exporter == "dynamo":
        program = torch.onnx.export(model, (example,), input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                                    opset_version=export.opset, dynamo=True, verbose=False)
        program.save(path)
    else:
        extra = {"dynamo": False} if torch_version() >= (2, 5) else {}
        with torch.no_grad():
            torch.onnx.export(model, (example,), path, input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                              opset_version=export.opset, do_constant_folding=True, **extra)
    if not os.path.isfile(path):
        raise RuntimeError("the {} exporter wrote no file at {}".format(export.exporter, path))
    return path
