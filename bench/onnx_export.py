"""PyTorch -> ONNX export shared by the ONNX Runtime and TensorRT-from-ONNX backends."""
from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn

log = logging.getLogger(__name__)

INPUT_NAME = "input"
OUTPUT_NAME = "output"


def export_onnx(model: nn.Module, example: torch.Tensor, path: Path, opset: int) -> Path:
    """Export with a static input shape (the point's shape) through the dynamo exporter.

    Weights may land in ``<path>.data`` beside the graph; keep the two together.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    log.info("exporting ONNX (opset %d, input %s %s) to %s", opset, tuple(example.shape), example.dtype, path)
    program = torch.onnx.export(
        model, (example,), input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
        opset_version=opset, dynamo=True, verbose=False,
    )
    program.save(str(path))
    return path
