"""Model registry: name -> task, default input size, and a fresh fp32 eval model per point.

The blog's seven models have their own configs; any other torchvision classification or
segmentation model is accepted by name. Works with torchvision 0.11 (JetPack 4.6: builders take
``pretrained=`` / ``pretrained_backbone=``) and with 0.13+ (``weights=``, ``list_models``).
Random weights are the default; their BatchNorm statistics are re-estimated so that activations
stay in range (with the init statistics, deep models overflow fp16).
"""
import inspect
import logging
import os
import re
from typing import Dict, NamedTuple, Optional

import torch
from torch import nn

from bench.contract.records import Model
from bench.contract.errors import ConfigError
from bench.contract.protocol import BLOG_SIZES

log = logging.getLogger(__name__)

CLASSIFICATION = "classification"
SEGMENTATION = "segmentation"

# Other models than the blog's default to their usual training size.
DEFAULT_SIZE = {CLASSIFICATION: 224, SEGMENTATION: 512}
# Smallest input each model accepts: five stride-2 stages need at least 32 pixels.
MIN_SIZE = 32
MIN_SIZE_OVERRIDE = {"inception_v3": 75, "googlenet": 64}
# Vision transformers take exactly their patch grid's size.
FIXED_SIZE_PREFIX = {"vit_": 224}


class ModelSpec(NamedTuple):
    name: str
    task: str
    default_size: int
    min_size: int
    fixed_size: Optional[int]


def new_weights_api() -> bool:
    """torchvision >= 0.13: ``weights=`` and ``get_model``; older: ``pretrained=``."""
    import torchvision.models as tvm

    return hasattr(tvm, "get_model")


def _builders(module) -> Dict[str, object]:
    return {name: value for name, value in vars(module).items()
            if inspect.isfunction(value) and name.islower() and not name.startswith("_")
            and "model" not in name and "weights" not in name and "url" not in name}


def catalogue() -> Dict[str, str]:
    """Every classification and segmentation model this torchvision builds, name -> task."""
    import torchvision.models as tvm
    import torchvision.models.segmentation as seg

    if hasattr(tvm, "list_models"):
        tasks = {name: CLASSIFICATION for name in tvm.list_models(module=tvm)}
        tasks.update({name: SEGMENTATION for name in tvm.list_models(module=seg)})
        return tasks
    tasks = {name: CLASSIFICATION for name in _builders(tvm)}
    tasks.update({name: SEGMENTATION for name in _builders(seg)})
    return tasks


def model_spec(name: str) -> ModelSpec:
    """What the suite knows about a model; ConfigError for names this torchvision lacks."""
    tasks = catalogue()
    if name not in tasks:
        raise ConfigError("unknown model {!r}: use a torchvision classification or segmentation model, e.g. {}".format(
            name, ", ".join(BLOG_SIZES)))
    task = tasks[name]
    fixed = next((size for prefix, size in FIXED_SIZE_PREFIX.items() if name.startswith(prefix)), None)
    return ModelSpec(name=name, task=task, default_size=fixed or BLOG_SIZES.get(name, DEFAULT_SIZE[task]),
                     min_size=MIN_SIZE_OVERRIDE.get(name, MIN_SIZE), fixed_size=fixed)


def _builder(name: str):
    import torchvision.models as tvm
    import torchvision.models.segmentation as seg

    return getattr(seg, name, None) or getattr(tvm, name)


class SegmentationLogits(nn.Module):
    """torchvision segmentation models return a dict; exporters and TensorRT want one tensor."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)["out"]


def pretrained_url(name: str) -> str:
    """Where torchvision downloads the default pretrained weights of ``name`` from."""
    import torchvision.models as tvm

    if new_weights_api():
        return tvm.get_model_weights(name).DEFAULT.url
    import importlib

    module = importlib.import_module(_builder(name).__module__)
    urls = getattr(module, "model_urls", {})
    key = name if name in urls else name + "_coco"
    if key not in urls:
        raise ConfigError("model.weights=pretrained: torchvision {} has no pretrained weights for {}".format(
            __import__("torchvision").__version__, name))
    return urls[key]


def pretrained_weights_path(name: str) -> str:
    """The file torchvision keeps the default pretrained weights of ``name`` in, once downloaded."""
    return os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(pretrained_url(name)))


def ensure_pretrained(name: str) -> str:
    """The pretrained weights file in the torch cache, downloaded now if it is not there yet.

    Offline, a ConfigError names the URL, the file and the cache folder to copy it into.
    """
    path = pretrained_weights_path(name)
    if os.path.isfile(path):
        return path
    url = pretrained_url(name)
    hash_prefix = re.search(r"-([0-9a-f]{6,})\.", os.path.basename(url))
    log.info("downloading the pretrained weights of %s from %s to %s", name, url, path)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    try:
        torch.hub.download_url_to_file(url, path, hash_prefix.group(1) if hash_prefix else None, progress=True)
    except (OSError, RuntimeError) as exc:  # URLError is an OSError; a hash mismatch is a RuntimeError
        raise ConfigError(f"model.weights=pretrained: {name}'s weights are not in the torch cache and could not be "
                          f"downloaded ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__}): fetch {url} "
                          f"elsewhere and copy it to {path} (the cache folder is {os.path.dirname(path)})")
    return path


def load_state_dict_file(path: str) -> Dict[str, torch.Tensor]:
    """A local state dict; ConfigError if the file is not one. Safe loading where torch has it (1.13+)."""
    file = os.path.expanduser(path)
    if not os.path.isfile(file):
        raise ConfigError("model.weights: file {!r} does not exist (use 'random', 'pretrained' or a state-dict "
                          "path)".format(file))
    safe = "weights_only" in inspect.signature(torch.load).parameters
    try:
        state = torch.load(file, map_location="cpu", **({"weights_only": True} if safe else {}))
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the same user mistake
        raise ConfigError("model.weights: {!r} is not a loadable state dict ({})".format(file, type(exc).__name__))
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not (isinstance(state, dict) and state and all(isinstance(v, torch.Tensor) for v in state.values())):
        raise ConfigError("model.weights: {!r} holds a {}, not a state dict of tensors".format(
            file, type(state).__name__))
    return dict(state)


def _architecture(name: str, task: str) -> nn.Module:
    """The bare architecture with untouched init weights; never downloads (no backbone weights either)."""
    if new_weights_api():
        backbone = {"weights_backbone": None} if task == SEGMENTATION else {}
        return _builder(name)(weights=None, **backbone)
    backbone = {"pretrained_backbone": False} if task == SEGMENTATION else {}
    return _builder(name)(pretrained=False, **backbone)


def check_state_dict(name: str, task: str, state: Dict[str, torch.Tensor], path: str) -> None:
    """A state dict for another architecture is one line naming what does not fit, before any work."""
    expected = _architecture(name, task).state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(expected) & set(state) if tuple(expected[k].shape) != tuple(state[k].shape))
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append("{} missing key(s), e.g. {}".format(len(missing), missing[0]))
        if unexpected:
            parts.append("{} unexpected key(s), e.g. {}".format(len(unexpected), unexpected[0]))
        if wrong:
            key = wrong[0]
            parts.append("{} of another shape, e.g. {} {} instead of {}".format(
                len(wrong), key, tuple(state[key].shape), tuple(expected[key].shape)))
        raise ConfigError("model.weights: {!r} is not a state dict for {} ({})".format(path, name, "; ".join(parts)))


def recalibrate_batchnorm(model: nn.Module, shape, batches: int, generator: torch.Generator) -> None:
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


def build_model(model: Model, height: int, width: int, device: torch.device, seed: int) -> nn.Module:
    """A fresh fp32 eval-mode model on ``device`` from the plan's ``model`` block; never shared between points."""
    name, weights = model.name, model.weights
    spec = model_spec(name)
    torch.manual_seed(seed)
    if weights == "pretrained":
        if new_weights_api():
            net = _builder(name)(weights="DEFAULT")
        else:
            net = _builder(name)(pretrained=True)
    else:
        net = _architecture(name, spec.task)
        if weights != "random":
            net.load_state_dict(load_state_dict_file(weights))
    if spec.task == SEGMENTATION:
        net = SegmentationLogits(net)
    net = net.to(device).eval()
    if weights == "random":
        # Batch of 2: BatchNorm on 1x1 pooled features (deeplabv3's ASPP) needs >1 value per channel.
        recalibrate_batchnorm(net, (2, 3, height, width), model.bn_recalibration_batches,
                              torch.Generator().manual_seed(seed + 1))
    return net
