"""The plan's fields, declared once: their JSON types, defaults, what they mean, and when they are run params.

Everything else is derived from this declaration: the plan's schema check (``bench.contract.protocol``), the
Hydra schema of the config groups (``bench.controller.config``), the step from a composed config to a plan
(``bench.controller.plan``) and the run's params (``bench.store.record``). Standard library only, Python 3.6.
"""
from typing import NamedTuple, Optional


class Field(NamedTuple):
    """One setting of a plan. ``kind``: the JSON types it takes (``type(None)`` among them: it may be null).
    ``param``: when it is one of the run's params (the settings a user compares runs on), None: never."""

    kind: tuple
    default: object
    doc: str
    param: Optional[str] = None


REQUIRED = "???"  # no default: the config must give a value (OmegaConf's mark for a missing value)
NUMBER = (int, float)
NULLABLE_INT, NULLABLE_STR = (int, type(None)), (str, type(None))
# When a field is a param: always, on CUDA points, on int8 points (with random or folder calibration), with random
# or folder accuracy inputs, or whenever it is set (not null).
ALWAYS, ON_CUDA, INT8, INT8_RANDOM, INT8_FOLDER, RANDOM, FOLDER, WHEN_SET = (
    "always", "cuda", "int8", "int8 random", "int8 folder", "random", "folder", "set")

GROUPS = {
    "model": {
        "name": Field((str,), REQUIRED, "a torchvision model, e.g. resnet18", ALWAYS),
        "weights": Field((str,), "random", "random (seeded init + BatchNorm re-estimation), pretrained "
                         "(torchvision's weights, downloaded into the torch cache on first use) or the path of a "
                         "state-dict file on the measured device"),
        "bn_recalibration_batches": Field((int,), 8, "random batches that re-estimate BatchNorm statistics of random "
                                          "weights; without them activations of deep models overflow fp16"),
    },
    "input": {
        "height": Field(NULLABLE_INT, None, "null: the model's default size"),
        "width": Field(NULLABLE_INT, None, "null: the model's default size"),
        "batch_size": Field((int,), 1, "images per call", ALWAYS),
    },
    "timing": {  # per process and per series (the converted model, and eager fp32 beside it): docs/methodology.md
        "warmup_iters": Field((int,), 10, "untimed calls first, at least this many", ALWAYS),
        "warmup_s": Field(NUMBER, 0.5, "and for at least this long", ALWAYS),
        "min_iters": Field((int,), 50, "timed calls, at least this many", ALWAYS),
        "min_s": Field(NUMBER, 1.0, "and for at least this long", ALWAYS),
        "include_copies": Field((bool,), False, "true: each timed call copies the input host->device and the output "
                                "back (host latency)", ON_CUDA),
        "repeats": Field((int,), 3, "fresh processes per point; the point's figure is the median of their medians",
                         ALWAYS),
        "interval": Field(NUMBER, 0.95, "level of the interval recorded with each figure"),
        "unstable_spread": Field(NUMBER, 0.05, "a point whose processes' medians disagree by more than this "
                                 "(1.4826 x MAD / median) is tagged unstable"),
        "lock_clocks": Field((bool,), False, "lock the GPU's clocks for the point (nvidia-smi -lgc as root, "
                             "jetson_clocks on a Jetson), restored after"),
        "pin_cpu": Field((bool,), True, "CUDA points: each process pinned to one CPU, so the thread launching the "
                         "GPU's work never migrates"),
    },
    "calibration": {
        "source": Field((str,), "random", "random | folder", INT8),
        "folder": Field(NULLABLE_STR, None, "images to calibrate on (source=folder)"),
        "num_batches": Field((int,), 8, "calibration batches", INT8),
        "seed": Field((int,), 1234, "random calibration batches' seed", INT8_RANDOM),
        "share_images": Field((bool,), False, "a folder that accuracy reads too is split (calibration never sees an "
                              "accuracy image); true: share it", INT8_FOLDER),
    },
    "accuracy": {
        "source": Field((str,), "random", "random (seeded noise batches) | folder (real images)", ALWAYS),
        "folder": Field(NULLABLE_STR, None, "images to check accuracy on (source=folder)"),
        "masks": Field(NULLABLE_STR, None, "segmentation: a folder of label masks named like the images"),
        "max_images": Field((int,), 500, "at most this many images of the folder", FOLDER),
        "batches": Field((int,), 4, "random: how many noise batches", RANDOM),
        "seed": Field((int,), 0, "random: the noise batches' seed", RANDOM),
    },
}
# Config groups that select one name (conf/precision/fp16.yaml holds ``name: fp16``): the plan holds the name.
NAMED = {
    "precision": Field((str,), REQUIRED, "fp32 | fp16 | bf16 | int8", ALWAYS),
    "scenario": Field((str,), "latency", "latency (sync per call) | throughput (back-to-back, sync per window)",
                      ALWAYS),
}
SETTINGS = {
    "device": Field((str,), "auto", "auto | cpu | cuda | cuda:N", ALWAYS),
    "threads": Field(NULLABLE_INT, None, "CPU threads for torch and ONNX Runtime; null: on a CPU point every CPU "
                     "but one (at least one), on CUDA the libraries' default", WHEN_SET),
    "cudnn_benchmark": Field((bool,), True, "let cuDNN pick its fastest algorithms for eager and compiled runs",
                             ON_CUDA),
    "raw_baseline": Field((bool,), True, "time eager fp32 in the same run, for a same-run speed-up", ALWAYS),
    "energy": Field((str,), "auto", "auto: measure where a sensor exists | require: error without one | off"),
    "cache_dir": Field((str,), "~/.cache/trt-bench", "converted models, on the measured device"),
    "seed": Field((int,), 0, "seeds the model's random weights and inputs"),
}


def param_applies(field: Field, value, plan, group: Optional[str] = None) -> bool:
    """Whether ``field`` (of ``group``, whose ``source`` some fields depend on) is a param of ``plan`` (a
    bench.contract.records.Plan)."""
    int8 = plan.precision == "int8"
    source = getattr(plan, group).source if group in ("calibration", "accuracy") else None
    return {ALWAYS: True, ON_CUDA: plan.device.startswith("cuda"), INT8: int8,
            INT8_RANDOM: int8 and source == "random", INT8_FOLDER: int8 and source == "folder",
            RANDOM: source == "random", FOLDER: source == "folder", WHEN_SET: value is not None}.get(field.param, False)


def declared_params(plan) -> dict:
    """The plan's params as declared above: ``group.field`` (a group's ``name``: ``group``) or ``field`` -> value."""
    found = {}
    for group, declared in GROUPS.items():
        values = getattr(plan, group)
        found.update({group if name == "name" else "{}.{}".format(group, name): getattr(values, name)
                      for name, field in declared.items() if param_applies(field, getattr(values, name), plan, group)})
    for name, field in list(NAMED.items()) + list(SETTINGS.items()):
        if param_applies(field, getattr(plan, name), plan):
            found[name] = getattr(plan, name)
    return found
