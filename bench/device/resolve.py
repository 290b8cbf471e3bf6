"""A plan, resolved against this device: every user mistake found before anything is measured.

``resolve`` fills in what only the device can know (``device=auto``, ``backend=auto``, the model's
default input size, backend defaults that depend on the device) and checks what only the device
can check (the calibration folder and weights file are paths *there*). It returns the plan with
those values filled in and a ``resolution`` block; a point that cannot run here is resolved with
a ``skip_reason``, a point that is wrong is a ConfigError naming the bad value.
"""
import logging
import os

import torch

from bench.device import accuracy, backends, calibration, models, sensors
from bench.device.backends.base import Target
from bench.device.inputs import resolve_inputs
from bench.contract.errors import ConfigError
from bench.contract.protocol import check_values
from bench.contract.records import Input, Model, Plan, Resolution

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


def _sizes(plan: Plan, spec: models.ModelSpec) -> Input:
    """The input size the point is measured at: the model's default where the plan leaves it open."""
    sizes = {}
    for side in ("height", "width"):
        value = getattr(plan.input, side)
        sizes[side] = spec.default_size if value is None else value
        if value is None:
            continue
        if value < 1:
            raise ConfigError(f"input.{side}={value} must be a positive integer")
        if value < spec.min_size:
            raise ConfigError(f"input.{side}={value} is too small for {spec.name}: it needs at least {spec.min_size}")
        if spec.fixed_size and value != spec.fixed_size:
            raise ConfigError(f"input.{side}={value}: {spec.name} takes exactly {spec.fixed_size}")
    return plan.input._replace(**sizes)


def check_weights(model: Model, task: str) -> None:
    """The requested weights can be had: a local state dict for this architecture, or pretrained ones."""
    if model.weights == "random":
        return
    if model.weights == "pretrained":
        models.ensure_pretrained(model.name)
        return
    models.check_state_dict(model.name, task, models.load_state_dict_file(model.weights), model.weights)


def resolve(data: dict, labels: dict) -> Plan:
    """The plan (JSON, as it came) as this device measures it; PlanError for a plan that is not well-formed,
    ConfigError for a value that cannot be measured as asked.

    ``labels`` names this machine's devices (``{"cpu": ..., "cuda:0": ...}``, fingerprint.device_label).
    """
    plan = Plan.from_json(data)
    check_values(data)
    target = resolve_target(plan.device)
    spec = models.model_spec(plan.model.name)
    resolved = plan._replace(input=_sizes(plan, spec))
    check_weights(plan.model, spec.task)
    found = resolve_inputs(resolved, spec.task == models.CLASSIFICATION)
    calibration.check(resolved, found)
    accuracy.check(resolved, spec.task, found)
    if plan.energy == "require":
        meter, source = sensors.energy_meter(str(target.device))
        if meter is None:
            raise ConfigError(f"energy=require, but {target.device} has no energy source here ({source}); "
                              "energy=auto records the reason and measures the rest")
    backend, reason, tried = backends.resolve(plan.backend, target, plan.precision)
    return resolved._replace(
        device=str(target.device),
        backend=dict(backend.resolved(target, plan.precision), name=backend.name) if backend else plan.backend,
        resolution=Resolution(backend_requested=plan.backend["name"],
                              variant=backend.variant(target) if backend is not None else plan.backend["name"],
                              task=spec.task, device_label=labels[str(target.device)], skip_reason=reason,
                              auto_tried=tried or None))


def input_shape(resolved: Plan):
    """(batch, 3, height, width) of a resolved plan."""
    size = resolved.input
    return size.batch_size, 3, size.height, size.width


def cache_dir(resolved: Plan) -> str:
    path = os.path.expanduser(resolved.cache_dir)
    os.makedirs(path, exist_ok=True)
    return path
