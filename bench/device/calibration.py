"""INT8 calibration data: seeded random batches, or real images from a folder.

Batches have the point's input shape (backends quantize a static-shape model) and go through the
model's own preprocessing; which images, and how a folder shared with accuracy is split, is decided once per
point (bench.device.inputs).
"""
import itertools
from typing import List

import torch

from bench.contract.records import Plan
from bench.device import images
from bench.device.inputs import SAME, PointInputs


def check(plan: Plan, found: PointInputs) -> None:
    """A calibration folder without readable images: one ConfigError, before any work."""
    if found.calibration is not None:
        images.check_decodes(found.calibration, "calibration.folder",
                             plan.calibration.num_batches * plan.input.batch_size)


def describe(plan: Plan, found: PointInputs) -> str:
    """How the calibration data was obtained, for the record."""
    calibration = plan.calibration
    if found.calibration is None:
        return "random normal, seed {}".format(calibration.seed)
    text = "folder {} ({} images, {})".format(found.calibration.folder, len(found.calibration.files),
                                              found.recipe.describe(plan.input.height, plan.input.width))
    if found.sharing:
        text += "; shared with accuracy: " + ("the same images (calibration.share_images=true)"
                                              if found.sharing == SAME else
                                              "its calibration part, disjoint from the accuracy images")
    return text


def batches(plan: Plan, shape, found: PointInputs) -> List[torch.Tensor]:
    """``num_batches`` fp32 CPU batches of ``shape``; folder images repeat if there are too few."""
    batch, _, height, width = shape
    calibration = plan.calibration
    if found.calibration is None:
        generator = torch.Generator().manual_seed(calibration.seed)
        return [torch.randn(shape, generator=generator) for _ in range(calibration.num_batches)]
    needed = calibration.num_batches * batch
    loaded, _, _, _ = images.load(found.calibration, height, width, found.recipe, limit=needed)
    cycle = itertools.cycle(loaded)
    return [torch.stack([next(cycle) for _ in range(batch)]) for _ in range(calibration.num_batches)]
