"""What a point's calibration and accuracy read, decided once per point: each image folder scanned once, a folder
both read split between them (calibration never sees an accuracy image, unless ``calibration.share_images``),
and the model's preprocessing. The result is passed on to ``calibration`` and ``accuracy`` as one object."""
import os
from typing import NamedTuple, Optional

from bench.contract.records import Plan
from bench.device import images

SPLIT, SAME = "split", "same"  # how calibration and accuracy share one folder


class PointInputs(NamedTuple):
    calibration: Optional[images.ImageSet]  # None: seeded random batches (or not an int8 point)
    accuracy: Optional[images.ImageSet]  # None: seeded noise batches
    sharing: str  # "" (separate folders or none), SPLIT or SAME
    recipe: images.Preset  # the model's preprocessing at the point's size


def _same_folder(plan: Plan) -> bool:
    calibration, accuracy = plan.calibration, plan.accuracy
    return (calibration.source == "folder" and accuracy.source == "folder"
            and os.path.abspath(os.path.expanduser(calibration.folder))
            == os.path.abspath(os.path.expanduser(accuracy.folder)))


def resolve_inputs(plan: Plan, task_is_classification: bool) -> PointInputs:
    """The point's image sets and preprocessing (a plan whose input size is resolved); ConfigError for a folder
    that does not exist or holds no images."""
    recipe = images.preset(plan.model.name, plan.model.weights == "pretrained", task_is_classification,
                           plan.input.height, plan.input.width)
    int8_folder = plan.precision == "int8" and plan.calibration.source == "folder"
    calibration = images.scan(plan.calibration.folder, "calibration.folder") if int8_folder else None
    if not _same_folder(plan):
        accuracy = images.scan(plan.accuracy.folder, "accuracy.folder") \
            if plan.accuracy.source == "folder" else None
        return PointInputs(calibration, accuracy, "", recipe)
    folder = calibration or images.scan(plan.accuracy.folder, "accuracy.folder")  # scanned once
    if plan.calibration.share_images:
        return PointInputs(calibration, folder, SAME, recipe)
    # every precision measures accuracy on the same part, whether or not it calibrates
    return PointInputs(images.split(folder, "calibration") if int8_folder else None, images.split(folder, "accuracy"),
                       SPLIT, recipe)
