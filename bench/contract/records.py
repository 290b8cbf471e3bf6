"""The plan and the measurement as typed records: attribute access for the code, ``to_json``/``from_json``
for the wire and the results folder.

The plan's groups and settings are made from their one declaration (bench/contract/fields.py); the controller
makes plans, the device resolves and measures them into measurements, the store records those. A plan from
JSON is checked once, here (``Plan.from_json``), wherever it comes from. Standard library only, Python 3.6.
"""
import json
import re
import uuid
from collections import namedtuple

from bench.contract.fields import GROUPS, NAMED, REQUIRED, SETTINGS
from bench.contract.protocol import FAILED, SKIPPED, check_plan, digest, now_ms


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


GROUP_RECORDS = {group: _group_record(group) for group in GROUPS}
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
        data = dict(self._asdict(), **{group: dict(getattr(self, group)._asdict()) for group in GROUPS})
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


class Measurement(object):
    """What came of one plan, whatever happened: what the measuring side reports for every point.

    ``point_id`` is its identity (uploads check it, so each measurement reaches a store exactly once);
    ``started_ms``/``ended_ms`` bracket the point's work on the device; ``metrics`` are numbers (names in
    bench/contract/names.py), ``details`` what the conversion did (paths, versions, counts), ``tags`` the device's
    fingerprint, ``events`` things worth knowing (a discarded cache entry), ``artifacts`` text files the point
    made (predictions, the calibration images), ``error`` a failure's traceback. Per-call figures of every
    process: ``latencies_ms`` (end-to-end), ``gpu_ms`` (GPU compute, CUDA only), the ``raw_`` ones of eager fp32
    timed beside them, ``calls_per_process`` how many calls of each of those each process contributed;
    ``repeats`` one row of figures per process.
    """

    __slots__ = ("point_id", "plan", "status", "reason", "failure", "started_ms", "ended_ms", "metrics", "details",
                 "tags", "latencies_ms", "raw_latencies_ms", "gpu_ms", "raw_gpu_ms", "calls_per_process", "repeats",
                 "events", "artifacts", "error")

    def __init__(self, plan: Plan, tags: dict) -> None:
        """An empty measurement of ``plan``, started now."""
        self.update(point_id=uuid.uuid4().hex, plan=plan, status=None, reason="", failure=None, started_ms=now_ms(),
                    ended_ms=None, metrics={}, details={}, tags=tags, latencies_ms=[], raw_latencies_ms=[], gpu_ms=[],
                    raw_gpu_ms=[], calls_per_process={}, repeats=[], events=[], artifacts={}, error="")

    def update(self, **values) -> None:
        for key, value in values.items():
            setattr(self, key, value)

    def to_json(self) -> dict:
        data = {key: getattr(self, key) for key in self.__slots__}
        data["plan"] = self.plan.to_json()
        return data

    @classmethod
    def from_json(cls, data: dict) -> "Measurement":
        """A measurement from its JSON form; ValueError (PlanError among them) when it is not one."""
        if not isinstance(data, dict) or set(cls.__slots__) - set(data):
            missing = sorted(set(cls.__slots__) - set(data)) if isinstance(data, dict) else ["everything"]
            raise ValueError("not a measurement: {} missing".format(", ".join(missing)))
        measurement = cls.__new__(cls)
        measurement.update(**{key: data[key] for key in cls.__slots__})
        measurement.plan = Plan.from_json(data["plan"])
        return measurement


def failed_measurement(plan: Plan, reason: str, failure: str, tags: dict, error: str = "") -> Measurement:
    """A measurement that failed before or outside the point's own code (a crash, a lost connection)."""
    measurement = Measurement(plan, tags)
    measurement.update(status=FAILED, reason=reason, failure=failure, error=error, ended_ms=now_ms())
    return measurement


def skipped_measurement(plan: Plan, reason: str, tags: dict) -> Measurement:
    """A point the controller knows the device cannot run without asking it (a larger batch after one that
    ran out of memory)."""
    measurement = Measurement(plan, tags)
    measurement.update(status=SKIPPED, reason=reason, ended_ms=now_ms())
    return measurement
