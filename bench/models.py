"""Model registry: name -> task, default input size, and a fresh fp32 eval model per point.

The blog's seven models have their own configs; any other torchvision classification or
segmentation model is accepted by name. Random weights are the default because nothing can
be downloaded offline; their BatchNorm statistics are re-estimated so that activations stay
in range (with the init statistics, deep models overflow fp16).
"""
from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from bench.config import ModelConfig
from bench.errors import ConfigError

log = logging.getLogger(__name__)

CLASSIFICATION = "classification"
SEGMENTATION = "segmentation"

# The blog's sizes; other models default to their usual training size.
DEFAULT_SIZE = {CLASSIFICATION: 224, SEGMENTATION: 512}
BLOG_SIZE = {
    "resnet18": 256, "resnet34": 256, "resnet50": 256,
    "fcn_resnet50": 512, "fcn_resnet101": 512, "deeplabv3_resnet50": 512, "deeplabv3_resnet101": 512,
}
# Smallest input each model accepts: five stride-2 stages need at least 32 pixels.
MIN_SIZE = 32
MIN_SIZE_OVERRIDE = {"inception_v3": 75, "googlenet": 64}
# Vision transformers take exactly their patch grid's size.
FIXED_SIZE_PREFIX = {"vit_": 224}


@dataclass(frozen=True)
class ModelSpec:
    name: str
    task: str
    default_size: int
    min_size: int
    fixed_size: int | None = None


def _catalogue() -> dict[str, str]:
    import torchvision.models as tvm

    tasks = {name: CLASSIFICATION for name in tvm.list_models(module=tvm)}
    tasks.update({name: SEGMENTATION for name in tvm.list_models(module=tvm.segmentation)})
    return tasks


def model_spec(name: str) -> ModelSpec:
    """What the suite knows about a model; raises ConfigError for names torchvision lacks."""
    tasks = _catalogue()
    if name not in tasks:
        raise ConfigError(
            f"unknown model {name!r}: use a torchvision classification or segmentation model, "
            f"e.g. {', '.join(BLOG_SIZE)}"
        )
    task = tasks[name]
    fixed = next((size for prefix, size in FIXED_SIZE_PREFIX.items() if name.startswith(prefix)), None)
    return ModelSpec(
        name=name,
        task=task,
        default_size=fixed or BLOG_SIZE.get(name, DEFAULT_SIZE[task]),
        min_size=MIN_SIZE_OVERRIDE.get(name, MIN_SIZE),
        fixed_size=fixed,
    )


class SegmentationLogits(nn.Module):
    """torchvision segmentation models return a dict; exporters and TensorRT want one tensor."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)["out"]


def pretrained_weights_path(name: str) -> Path:
    """Where torchvision keeps the default pretrained weights of ``name`` once downloaded."""
    import torchvision.models as tvm

    url = tvm.get_model_weights(name).DEFAULT.url
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(url).name


def load_state_dict_file(path: str) -> dict[str, torch.Tensor]:
    """Load a local state dict safely (``weights_only=True``); ConfigError if it is not one."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise ConfigError(f"model.weights: file {str(file)!r} does not exist (use 'random', 'pretrained' or a state-dict path)")
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the same user mistake
        raise ConfigError(f"model.weights: {str(file)!r} is not a loadable state dict ({type(exc).__name__})") from exc
    if isinstance(state, Mapping) and isinstance(state.get("state_dict"), Mapping):
        state = state["state_dict"]
    if not (isinstance(state, Mapping) and state and all(isinstance(v, torch.Tensor) for v in state.values())):
        raise ConfigError(f"model.weights: {str(file)!r} holds a {type(state).__name__}, not a state dict of tensors")
    return dict(state)


def check_weights(cfg: ModelConfig) -> None:
    """Fail before any work if the requested weights cannot be had."""
    if cfg.weights == "random":
        return
    if cfg.weights == "pretrained":
        path = pretrained_weights_path(cfg.name)
        if not path.is_file():
            raise ConfigError(
                f"model.weights=pretrained: {path} is not in the local torch cache and cannot be downloaded here; "
                "copy it there or use model.weights=random"
            )
        return
    load_state_dict_file(cfg.weights)


def recalibrate_batchnorm(model: nn.Module, shape: tuple[int, ...], batches: int, generator: torch.Generator) -> None:
    """Re-estimate BatchNorm running statistics from random batches (cumulative average)."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms or batches <= 0:
        return
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    device = next(model.parameters()).device
    model.train()
    with torch.no_grad():
        for _ in range(batches):
            model(torch.randn(shape, generator=generator).to(device))
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
    model.eval()


def build_model(cfg: ModelConfig, height: int, width: int, device: torch.device, seed: int) -> nn.Module:
    """A fresh fp32 eval-mode model on ``device``; never shared between grid points."""
    import torchvision.models as tvm

    spec = model_spec(cfg.name)
    torch.manual_seed(seed)
    if cfg.weights == "pretrained":
        check_weights(cfg)
        model = tvm.get_model(cfg.name, weights="DEFAULT")
    else:
        # Segmentation builders default to an ImageNet backbone download: ask for none.
        backbone = {"weights_backbone": None} if spec.task == SEGMENTATION else {}
        model = tvm.get_model(cfg.name, weights=None, **backbone)
        if cfg.weights != "random":
            model.load_state_dict(load_state_dict_file(cfg.weights))
    if spec.task == SEGMENTATION:
        model = SegmentationLogits(model)
    model = model.to(device).eval()
    if cfg.weights == "random":
        # Batch of 2: BatchNorm on 1x1 pooled features (deeplabv3's ASPP) needs >1 value per channel.
        recalibrate_batchnorm(model, (2, 3, height, width), cfg.bn_recalibration_batches,
                              torch.Generator().manual_seed(seed + 1))
    return model
