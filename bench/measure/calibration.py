"""INT8 calibration data: seeded random batches, or real images from a folder.

Batches have the point's input shape (backends quantize a static-shape model). Images go through
the same preprocessing as accuracy images (bench.measure.images).
"""
import itertools
import os
from typing import List

import torch

from bench.measure import images


def check(calibration: dict, batch_size: int) -> None:
    """A missing calibration folder or one without readable images: one ConfigError, before any work."""
    if calibration["source"] == "folder":
        images.check_folder(calibration["folder"], "calibration.folder", calibration["num_batches"] * batch_size)


def describe(calibration: dict) -> str:
    """How the calibration data was obtained, for the record."""
    if calibration["source"] == "folder":
        folder = os.path.abspath(os.path.expanduser(calibration["folder"]))
        return "folder {} ({} images)".format(folder, len(images.image_files(folder)))
    return "random normal, seed {}".format(calibration["seed"])


def batches(calibration: dict, shape) -> List[torch.Tensor]:
    """``num_batches`` fp32 CPU batches of ``shape``; folder images repeat if there are too few."""
    batch, _, height, width = shape
    if calibration["source"] == "random":
        generator = torch.Generator().manual_seed(calibration["seed"])
        return [torch.randn(shape, generator=generator) for _ in range(calibration["num_batches"])]
    loaded = images.load_folder(calibration["folder"], height, width, "calibration.folder")
    cycle = itertools.cycle(loaded)
    return [torch.stack([next(cycle) for _ in range(batch)]) for _ in range(calibration["num_batches"])]
