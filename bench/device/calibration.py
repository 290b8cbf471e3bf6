"""INT8 calibration data: seeded random batches, or real images from a folder.

Batches have the point's input shape (backends quantize a static-shape model) and go through the
model's own preprocessing (bench.device.images). A folder that accuracy reads too is split, so
calibration never sees an image accuracy is measured on, unless ``calibration.share_images``.
"""
import itertools
import os
from typing import List

import torch

from bench.device import images


def shares_folder(plan: dict) -> bool:
    """Whether calibration and accuracy read the same image folder."""
    calibration, accuracy = plan["calibration"], plan["accuracy"]
    return (calibration["source"] == "folder" and accuracy["source"] == "folder"
            and os.path.abspath(os.path.expanduser(calibration["folder"]))
            == os.path.abspath(os.path.expanduser(accuracy["folder"])))


def image_set(plan: dict) -> images.ImageSet:
    """The calibration images of an int8 point: the folder, or its calibration part when accuracy reads it too."""
    found = images.scan(plan["calibration"]["folder"], "calibration.folder")
    if shares_folder(plan) and not plan["calibration"]["share_images"]:
        return images.split(found, "calibration")
    return found


def check(plan: dict) -> None:
    """A missing calibration folder or one without readable images: one ConfigError, before any work."""
    if plan["calibration"]["source"] == "folder":
        calibration = plan["calibration"]
        images.check_decodes(image_set(plan), "calibration.folder",
                             calibration["num_batches"] * plan["input"]["batch_size"])


def describe(plan: dict, recipe: images.Preset) -> str:
    """How the calibration data was obtained, for the record."""
    calibration = plan["calibration"]
    if calibration["source"] != "folder":
        return "random normal, seed {}".format(calibration["seed"])
    found = image_set(plan)
    text = "folder {} ({} images, {})".format(found.folder, len(found.files),
                                              recipe.describe(plan["input"]["height"], plan["input"]["width"]))
    if shares_folder(plan):
        text += "; shared with accuracy: " + ("the same images (calibration.share_images=true)"
                                              if calibration["share_images"] else
                                              "its calibration part, disjoint from the accuracy images")
    return text


def batches(plan: dict, shape, recipe: images.Preset) -> List[torch.Tensor]:
    """``num_batches`` fp32 CPU batches of ``shape``; folder images repeat if there are too few."""
    batch, _, height, width = shape
    calibration = plan["calibration"]
    if calibration["source"] == "random":
        generator = torch.Generator().manual_seed(calibration["seed"])
        return [torch.randn(shape, generator=generator) for _ in range(calibration["num_batches"])]
    needed = calibration["num_batches"] * batch
    loaded, _, _, _ = images.load(image_set(plan), height, width, recipe, limit=needed)
    cycle = itertools.cycle(loaded)
    return [torch.stack([next(cycle) for _ in range(batch)]) for _ in range(calibration["num_batches"])]
