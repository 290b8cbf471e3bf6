"""The plan as a typed record: attribute access for the code, ``to_json``/``from_json`` for the wire.

Its groups and settings are made from their one declaration (bench/contract/fields.py); the controller
makes plans, the device resolves and measures them, the store reads them back from measurements. A plan
from JSON is checked once, here (``from_json``), wherever it comes from. Standard library only, Python 3.6.
"""
import json
import re
from collections import namedtuple

from bench.contract.fields import GROUPS, NAMED, REQUIRED, SETTINGS
from bench.contract.protocol import check_plan, digest



def _group_record(group: str) -> type:
    """A config group's record; its fields with a declared default may be left out (from the last one back)."""
    declared = GROUPS[group]
    record = namedtuple(group.title(), list(declared))
    defaults = []
    for field in reversed(list(declared.values())):
        if field.default == REQUIRED:
            break
        defaults.insert(0, field.default)
    record.__new__.__defaults__ = tuple(defaults)
    return record


GROUP_RECORDS = {group: _group_record(group) for group in ("model", "input", "timing", "calibration", "accuracy")}
Model, Input, Timing, Calibration, Accuracy = GROUP_RECORDS.values()


class Resolution(namedtuple("Resolution", ["backend_requested", "variant", "task", "device_label", "skip_reason",
                                           "auto_tried"])):
    """What the device settled when it resolved the plan (bench.device.resolve)."""

    __slots__ = ()


_PLAN_FIELDS = ["protocol", "sweep", "backend", *GROUPS, *NAMED, *SETTINGS, "resolution"]


class Plan(namedtuple("Plan", _PLAN_FIELDS)):
    """One grid point: the settings of bench/contract/fields.py, the backend's options (a dict: each backend
    checks its own), the sweep it belongs to (a dict, the controller's), and its resolution once resolved."""

    __slots__ = ()

    def to_json(self) -> dict:
        data = self._asdict()
        data.update({group: getattr(self, group)._asdict() for group in GROUPS})
        data = {key: (dict(value) if key in GROUPS else value) for key, value in data.items()}
        if self.resolution is None:
            del data["resolution"]
        else:
            data["resolution"] = dict(self.resolution._asdict())
        return data

    @classmethod
    def from_json(cls, data: dict) -> "Plan":
        """A plan from its JSON form; PlanError naming the first field that is unknown, missing or mistyped."""
        check_plan(data)
        values = dict(data, resolution=Resolution(**data["resolution"]) if "resolution" in data else None)
        values.update({group: record(**data[group]) for group, record in GROUP_RECORDS.items()})
        return cls(**values)

    @property
    def name(self) -> str:
        """``resnet18/int8/onnxruntime/256``: model/precision/variant/size, as runs are named.

        The variant names options that change what is measured (``inductor+cudagraphs``); non-square
        inputs read ``256x320``, batches add ``/b8``, the throughput scenario adds ``/throughput``.
        """
        size = self.input
        side = str(size.height) if size.height == size.width else "{}x{}".format(size.height, size.width)
        variant = self.resolution.variant if self.resolution else self.backend["name"]
        name = "{}/{}/{}/{}".format(self.model.name, self.precision, variant, side)
        if size.batch_size > 1:
            name += "/b{}".format(size.batch_size)
        if self.scenario != "latency":
            name += "/" + self.scenario
        return name

    @property
    def series(self) -> str:
        """The point's name without its batch size: the points of one batch-size curve share it."""
        return re.sub(r"/b\d+(?=/|$)", "", self.name)

    def key(self, host: str) -> str:
        """What the point is, wherever its result goes: the resolved plan (less where results and caches live)
        on this device of this host. The same point measured again has the same key."""
        measured = {k: v for k, v in self.to_json().items() if k not in ("sweep", "cache_dir", "resolution")}
        return digest(json.dumps(measured, sort_keys=True), self.resolution.device_label, host)
