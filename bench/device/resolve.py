"""A plan, resolved against this device: every user mistake found before anything is measured.

``resolve`` fills in what only the device can know (``device=auto``, ``backend=auto``, the model's
default input size, backend defaults that depend on the device) and checks what only the device
can check (the calibration folder and weights file are paths *there*). It returns the plan with
those values filled in and a ``resolution`` block; a point that cannot run here is resolved with
a ``skip_reason``, a point that is wrong is a ConfigError naming the bad value.
"""
import copy
import logging
import os
from typing import Optional

import torch

from bench.device import accuracy, backends, calibration, models, sensors
from bench.device.backends.base import Target
from bench.device.inputs import resolve_inputs
from bench.contract.errors import ConfigError
from bench.contract.protocol import check_plan, check_values

log = logging.getLogger(__name__)


def resolve_target(device: str) -> Target:
    """``auto`` -> the first CUDA device if torch sees one, else the CPU."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise ConfigError(f"device={device!r} is not a device: use auto, cpu, cuda or cuda:N")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device={device} but torch sees no CUDA device here (use device=auto or cpu)")
        dev = torch.device("cuda", dev.index or 0)
        if dev.index >= torch.cuda.device_count():
            raise ConfigError(f"device={device}: only {torch.cuda.device_count()} CUDA device(s) here")
        return Target(dev, torch.cuda.get_device_capability(dev))
    if dev.type != "cpu":
        raise ConfigError(f"device={device!r} is not supported: use auto, cpu, cuda or cuda:N")
    return Target(dev)


def _sizes(plan: dict, spec: models.ModelSpec) -> None:
    for side in ("height", "width"):
        value = plan["input"][side]
        if value is None:
            plan["input"][side] = spec.default_size
            continue
        if value < 1:
            raise ConfigError(f"input.{side}={value} must be a positive integer")
        if value < spec.min_size:
            raise ConfigError(f"input.{side}={value} is too small for {spec.name}: it needs at least {spec.min_size}")
        if spec.fixed_size and value != spec.fixed_size:
            raise ConfigError(f"input.{side}={value}: {spec.name} takes exactly {spec.fixed_size}")


def check_weights(model: dict, task: str) -> None:
    """The requested weights can be had: a local state dict for this architecture, or pretrained ones."""
    weights = model["weights"]
    if weights == "random":
        return
    if weights == "pretrained":
        models.ensure_pretrained(model["name"])
        return
    models.check_state_dict(model["name"], task, models.load_state_dict_file(weights), weights)


def resolve(plan: dict, labels: dict) -> dict:
    """The plan as this device measures it (a copy); ConfigError for a value that cannot be measured as asked.

    ``labels`` names this machine's devices (``{"cpu": ..., "cuda:0": ...}``, fingerprint.device_label).
    """
    check_plan(plan)
    check_values(plan)
    resolved = copy.deepcopy(plan)
    target = resolve_target(plan["device"])
    spec = models.model_spec(plan["model"]["name"])
    _sizes(resolved, spec)
    check_weights(plan["model"], spec.task)
    found = resolve_inputs(resolved, spec.task == models.CLASSIFICATION)
    calibration.check(resolved, found)
    accuracy.check(resolved, spec.task, found)
    if plan["energy"] == "require":
        meter, source = sensors.energy_meter(str(target.device))
        if meter is None:
            raise ConfigError(f"energy=require, but {target.device} has no energy source here ({source}); "
                              "energy=auto records the reason and measures the rest")
    backend, reason, tried = backends.resolve(plan["backend"], target, plan["precision"])
    resolved["device"] = str(target.device)
    if backend is not None:
        resolved["backend"] = dict(backend.resolved(target, plan["precision"]), name=backend.name)
    resolved["resolution"] = {
        "backend_requested": plan["backend"]["name"],
        "variant": backend.variant(target) if backend is not None else plan["backend"]["name"],
        "task": spec.task,
        "device_label": labels[str(target.device)],
        "skip_reason": reason,
        "auto_tried": tried or None,
    }
    return resolved


def skip_reason(resolved: dict) -> Optional[str]:
    return resolved["resolution"]["skip_reason"]


def input_shape(resolved: dict):
    """(batch, 3, height, width) of a resolved plan."""
    size = resolved["input"]
    return size["batch_size"], 3, size["height"], size["width"]


def cache_dir(resolved: dict) -> str:
    path = os.path.expanduser(resolved["cache_dir"])
    os.makedirs(path, exist_ok=True)
    return path
