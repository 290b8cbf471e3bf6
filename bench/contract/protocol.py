"""The JSON that crosses between the controller and the measuring side, whatever carries it.

Every executor (a local worker, another interpreter, SSH, a plans file) moves the same three
things: a *plan* (one grid point, as the controller resolved it from the config), the *facts*
(what the device is and has) and a *measurement* (what came of one plan). A worker reads one
request per line on its input and writes one reply per line on its output:

    {"op": "facts"}                       -> {"op": "facts", "facts": {...}}
    {"op": "resolve", "plans": [...]}     -> {"op": "resolved", "points": [{"plan": ...} | {"error": ...}]}
    {"op": "measure", "plan": {...}}      -> {"op": "measured", "measurement": {...}}
    {"op": "bye"}                         -> the worker exits
    any request it cannot serve           -> {"op": "error", "error": "one line", "user_error": true|false}

This module needs nothing but the standard library of Python 3.6, so a device without torch can
still say so.
"""
import hashlib
import json
import time

from bench.contract.errors import ConfigError
from bench.contract.fields import GROUPS, NAMED, NULLABLE_STR, SETTINGS

PROTOCOL = 1

OK, SKIPPED, FAILED = "ok", "skipped", "failed"
STATUSES = (OK, SKIPPED, FAILED)
# Why a point failed: the measurement itself ("point": an exception, a crash), or the way to the
# device ("executor": unreachable, connection lost). A resumed sweep measures executor failures again.
POINT_FAILURE, EXECUTOR_FAILURE = "point", "executor"
# How the reason of a point the device had no memory for begins (recorded as skipped, like any fact about the
# device; the controller then skips the larger batches of the same series).
OUT_OF_MEMORY = "out of memory"

# How spread is judged on both sides (a point's processes on the device, a series' nights in analysis): MAD times
# this estimates the standard deviation of normally distributed values.
MAD_SCALE = 1.4826

PRECISIONS = ("fp32", "fp16", "bf16", "int8")
# The blog's seven models at the sizes it measured them (tables list models in this order).
BLOG_SIZES = {
    "resnet18": 256, "resnet34": 256, "resnet50": 256,
    "fcn_resnet50": 512, "fcn_resnet101": 512, "deeplabv3_resnet50": 512, "deeplabv3_resnet101": 512,
}
SCENARIOS = ("latency", "throughput")
ENERGY = ("auto", "require", "off")
CALIBRATION_SOURCES = ("random", "folder")
ACCURACY_SOURCES = ("random", "folder")

# A plan's fields and their JSON types, from their one declaration (bench/contract/fields.py). The backend's
# options are checked by the backend itself; ``sweep`` is the controller's and is only passed through.
PLAN_SCHEMA = {"protocol": int, "sweep": (dict, type(None)), "backend": dict,
               **{group: {name: field.kind for name, field in declared.items()} for group, declared in GROUPS.items()},
               **{name: field.kind for name, field in list(NAMED.items()) + list(SETTINGS.items())}}
# Filled in on the device when the plan is resolved (bench.device.resolve).
RESOLUTION_SCHEMA = {"backend_requested": str, "variant": str, "task": str, "device_label": str,
                     "skip_reason": NULLABLE_STR, "auto_tried": (list, type(None))}


class PlanError(ValueError):
    """A plan that is not well-formed: not JSON, an unknown field, a value of the wrong type."""


def _type_name(expected) -> str:
    kinds = expected if isinstance(expected, tuple) else (expected,)
    return " or ".join("null" if kind is type(None) else kind.__name__ for kind in kinds)


def _check_value(path: str, value, expected) -> None:
    if isinstance(expected, dict):
        if not isinstance(value, dict):
            raise PlanError("field {!r} must be an object, got {}".format(path, type(value).__name__))
        unknown = sorted(set(value) - set(expected))
        if unknown:
            raise PlanError("unknown field {!r} (fields of {!r}: {})".format(
                "{}.{}".format(path, unknown[0]), path, ", ".join(sorted(expected))))
        missing = sorted(set(expected) - set(value))
        if missing:
            raise PlanError("field {!r} is missing".format("{}.{}".format(path, missing[0])))
        for key, kind in expected.items():
            _check_value("{}.{}".format(path, key), value[key], kind)
        return
    kinds = expected if isinstance(expected, tuple) else (expected,)
    # JSON has no int/bool distinction problem but Python does: True is an int.
    if isinstance(value, bool) and bool not in kinds:
        raise PlanError("field {!r} must be {}, got {!r}".format(path, _type_name(expected), value))
    if not isinstance(value, kinds):
        raise PlanError("field {!r} must be {}, got {!r}".format(path, _type_name(expected), value))


def check_plan(plan) -> None:
    """Raise PlanError naming the first field that is unknown, missing or of the wrong type."""
    if not isinstance(plan, dict):
        raise PlanError("a plan must be a JSON object, got {}".format(type(plan).__name__))
    extra = sorted(set(plan) - set(PLAN_SCHEMA) - {"resolution"})
    if extra:
        raise PlanError("unknown field {!r} (plan fields: {})".format(extra[0], ", ".join(sorted(PLAN_SCHEMA))))
    missing = sorted(set(PLAN_SCHEMA) - set(plan))
    if missing:
        raise PlanError("field {!r} is missing".format(missing[0]))
    if plan["protocol"] != PROTOCOL:
        raise PlanError("plan protocol {} is not this core's protocol {} (make the plans with the same suite "
                        "version)".format(plan["protocol"], PROTOCOL))
    for key, kind in PLAN_SCHEMA.items():
        _check_value(key, plan[key], kind)
    if "name" not in plan["backend"] or not isinstance(plan["backend"]["name"], str):
        raise PlanError("field 'backend.name' is missing")
    if "resolution" in plan:
        _check_value("resolution", plan["resolution"], RESOLUTION_SCHEMA)


def _choice(name: str, value: str, allowed) -> None:
    if value not in allowed:
        raise ConfigError("{}={!r} is not one of: {}".format(name, value, ", ".join(allowed)))


def check_values(plan: dict) -> None:
    """The values of a well-formed plan that no device could measure, as one ConfigError naming the value."""
    _choice("precision", plan["precision"], PRECISIONS)
    _choice("scenario", plan["scenario"], SCENARIOS)
    _choice("energy", plan["energy"], ENERGY)
    _choice("calibration.source", plan["calibration"]["source"], CALIBRATION_SOURCES)
    _choice("accuracy.source", plan["accuracy"]["source"], ACCURACY_SOURCES)
    timing = plan["timing"]
    if timing["min_iters"] < 1 or timing["warmup_iters"] < 0 or timing["min_s"] < 0 or timing["warmup_s"] < 0:
        raise ConfigError("timing: min_iters must be >= 1 and warmup_iters, min_s, warmup_s >= 0")
    if timing["repeats"] < 1:
        raise ConfigError("timing.repeats={} must be >= 1 (processes per point)".format(timing["repeats"]))
    if not 0 < timing["interval"] < 1:
        raise ConfigError("timing.interval={} must be a level between 0 and 1, e.g. 0.95".format(timing["interval"]))
    if timing["unstable_spread"] < 0:
        raise ConfigError("timing.unstable_spread={} must be >= 0 (0: never unstable)".format(
            timing["unstable_spread"]))
    size = plan["input"]
    if size["batch_size"] < 1:
        raise ConfigError("input.batch_size={} must be >= 1".format(size["batch_size"]))
    for side in ("height", "width"):
        if size[side] is not None and size[side] < 1:
            raise ConfigError("input.{}={} must be a positive integer".format(side, size[side]))
    for group, key in (("accuracy", "batches"), ("accuracy", "max_images"), ("calibration", "num_batches"),
                       ("model", "bn_recalibration_batches")):
        low = 0 if key == "bn_recalibration_batches" else 1
        if plan[group][key] < low:
            raise ConfigError("{}.{}={} must be >= {}".format(group, key, plan[group][key], low))
    if plan["threads"] is not None and plan["threads"] < 1:
        raise ConfigError("threads={} must be >= 1 (or null for the library default)".format(plan["threads"]))
    for group in ("calibration", "accuracy"):
        if plan[group]["source"] == "folder" and not plan[group]["folder"]:
            raise ConfigError("{0}.source=folder needs {0}.folder=/path/to/images".format(group))


def read_plans(text: str, source: str) -> list:
    """Plans from JSON lines (blank lines ignored); PlanError names the line of the first bad one."""
    plans = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            plan = json.loads(line)
        except ValueError as exc:
            raise PlanError("{} line {}: not JSON ({})".format(source, number, exc))
        try:
            check_plan(plan)
        except PlanError as exc:
            raise PlanError("{} line {}: {}".format(source, number, exc))
        plans.append(plan)
    if not plans:
        raise PlanError("{} holds no plans".format(source))
    return plans


def digest(*parts) -> str:
    """A short stable key (cache entries, point keys, sweep ids)."""
    return hashlib.sha256("\x1f".join(map(str, parts)).encode()).hexdigest()[:16]


def now_ms() -> int:
    return int(time.time() * 1000)


# Clocks that disagree by less than this are taken to agree (a server's Date header has 1-second steps).
CLOCK_TOLERANCE_MS = 60 * 1000


def clock_offset(offset_ms: float) -> int:
    """What to add to one clock's times to read them in the other's: 0 within the tolerance."""
    return int(round(offset_ms)) if abs(offset_ms) > CLOCK_TOLERANCE_MS else 0


def encode(message: dict) -> bytes:
    """One message as one line (NaN stays NaN: both ends are Python)."""
    return (json.dumps(message, sort_keys=True) + "\n").encode("utf-8")


def decode(line: bytes) -> dict:
    message = json.loads(line.decode("utf-8"))
    if not isinstance(message, dict) or "op" not in message:
        raise ValueError("not a protocol message: {!r}".format(line[:200]))
    return message


def error_reply(text: str, user_error: bool) -> dict:
    return {"op": "error", "error": text, "user_error": user_error}
