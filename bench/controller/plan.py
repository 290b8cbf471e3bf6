"""Config -> plans: every grid point resolved once into a typed plan (bench/contract/records.py).

Hydra composes one config per point. ``make_grid`` checks them all before anything runs (unknown
keys, values no device could measure, settings that must be the same for the whole sweep) and
turns each into a plan (``bench.contract.protocol``). What only the device can settle (``device=auto``,
``backend=auto``, default sizes, paths on the device) is settled there, when the plans are resolved.
"""
from __future__ import annotations

import difflib
import json
from dataclasses import dataclass, fields, is_dataclass
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import MissingMandatoryValue

from bench.controller.config import Config
from bench.contract.errors import ConfigError
from bench.contract.fields import GROUPS, NAMED, SETTINGS
from bench.contract.protocol import PROTOCOL, PlanError, check_values, digest
from bench.contract.records import Plan

# Settings of the whole sweep: one store, one executor, one resume policy.
SWEEP_KEYS = ("tracking", "executor", "resume", "label")


@dataclass(frozen=True)
class Grid:
    """A sweep's points as plans, and what the whole sweep shares."""

    plans: list[Plan]
    overrides: list[list[str]]  # each point's overrides, as Hydra gave them
    tracking: dict
    executor: dict
    resume: str
    label: str | None
    key: str  # the grid's identity: the same command on the same executor has the same key

    @property
    def params(self) -> dict[str, str]:
        """The sweep's overrides as the parent run's params: each axis with its values, each fixed setting."""
        values: dict[str, list[str]] = {}
        for point in self.overrides:
            for override in point:
                key, _, value = override.lstrip("+~").partition("=")
                if key.startswith("hydra"):
                    continue
                values.setdefault(key, [])
                if value not in values[key]:
                    values[key].append(value)
        return {key: ",".join(found) for key, found in values.items()}


def _unknown_keys(node: Any, schema: Any, path: str = "") -> list[str]:
    """Keys of a composed config that the schema does not have (``+key=value`` adds them unchecked)."""
    if not (isinstance(node, dict) and is_dataclass(schema)):
        return []
    known = {f.name: f for f in fields(schema)}
    unknown = []
    for key, value in node.items():
        where = f"{path}{key}"
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            unknown.append(where + (f" (did you mean {path}{close[0]}?)" if close else ""))
        elif key != "backend":
            default = known[key].default_factory() if callable(known[key].default_factory) else None
            unknown += _unknown_keys(value, default, where + ".")
    return unknown


def plan_from_config(config: dict) -> dict:
    """The plan of one composed config (a plain dict, interpolations resolved): the fields bench/contract/fields.py
    declares, a named group (precision, scenario) by its name."""
    return {"protocol": PROTOCOL, "sweep": None, "backend": config["backend"],
            **{group: config[group] for group in GROUPS}, **{name: config[name]["name"] for name in NAMED},
            **{name: config[name] for name in SETTINGS}}


def _container(cfg: DictConfig, where: str) -> dict:
    """The point's config as plain data, Hydra's own node left out; a value still missing is a ConfigError."""
    cfg = cfg.copy()
    with open_dict(cfg):
        cfg.pop("hydra", None)
    try:
        return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    except MissingMandatoryValue as exc:
        key = exc.full_key
        hint = " (model=torchvision needs model.name=<a torchvision model>)" if key == "model.name" else ""
        raise ConfigError(f"{where}{key} needs a value{hint}") from None


def _point(index: int, total: int, overrides: list[str]) -> str:
    """How an error names the point it is about (a single run needs no name); ends with ": "."""
    shown = " ".join(o for o in overrides if not o.startswith("hydra")) or "defaults"
    return f"point {index} of {total} ({shown}): " if total > 1 else ""


def make_grid(configs: list[DictConfig], overrides: list[list[str]]) -> Grid:
    """Plans for every composed config; the first mistake anywhere in the grid is one ConfigError."""
    plans, shared = [], None
    for index, (cfg, point_overrides) in enumerate(zip(configs, overrides), 1):
        where = _point(index, len(configs), point_overrides)
        config = _container(cfg, where)
        unknown = _unknown_keys(config, Config())
        if unknown:
            raise ConfigError(f"{where}unknown setting {unknown[0]}")
        data = plan_from_config(config)
        try:
            plan = Plan.from_json(data)
            check_values(data)
        except (PlanError, ConfigError) as exc:
            raise ConfigError(f"{where}{exc}") from None
        sweep = {key: config[key] for key in SWEEP_KEYS}
        if shared is None:
            shared = sweep
        elif sweep != shared:
            key = next(k for k in SWEEP_KEYS if sweep[k] != shared[k])
            raise ConfigError(f"{where}{key} differs from the first point's; a sweep records into one store "
                              "through one executor (run one sweep per store or device)")
        plans.append(plan)
    executor = shared["executor"]
    identity = {"plans": [plan.to_json() for plan in plans], "executor": {k: executor[k] for k in ("kind", "python", "host")},
                "label": shared["label"], "kind": shared["tracking"]["kind"]}
    return Grid(plans, [list(o) for o in overrides], shared["tracking"], executor, shared["resume"], shared["label"],
                digest(json.dumps(identity, sort_keys=True)))
