"""INT8 calibration data: seeded random batches, or real images from a folder.

Batches have the point's input shape (backends quantize a static-shape model). Images are
resized on the short side, centre-cropped and ImageNet-normalised, like torchvision's
classification presets.
"""
from __future__ import annotations

import itertools
from pathlib import Path

import torch

from bench.config import CalibrationConfig
from bench.errors import ConfigError

SOURCES = ("random", "folder")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".ppm")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def check(cfg: CalibrationConfig) -> None:
    """Fail before any work for a bad source, a missing folder or one without images."""
    if cfg.source not in SOURCES:
        raise ConfigError(f"calibration.source={cfg.source!r} is not one of: {', '.join(SOURCES)}")
    if cfg.num_batches < 1:
        raise ConfigError(f"calibration.num_batches={cfg.num_batches} must be >= 1")
    if cfg.source == "folder":
        if not cfg.folder:
            raise ConfigError("calibration.source=folder needs calibration.folder=/path/to/images")
        folder = Path(cfg.folder).expanduser()
        if not folder.is_dir():
            raise ConfigError(f"calibration.folder {str(folder)!r} does not exist or is not a directory")
        if not image_files(folder):
            raise ConfigError(f"calibration.folder {str(folder)!r} has no images ({', '.join(IMAGE_SUFFIXES)})")


def describe(cfg: CalibrationConfig) -> str:
    """How the calibration data was obtained, for the run's params."""
    if cfg.source == "folder":
        return f"folder:{Path(cfg.folder).expanduser().resolve()} ({len(image_files(Path(cfg.folder).expanduser()))} images)"
    return f"random normal, seed {cfg.seed}"


def load_image(path: Path, height: int, width: int) -> torch.Tensor:
    from PIL import Image
    from torchvision.transforms.v2 import functional as F

    with Image.open(path) as image:
        tensor = F.pil_to_tensor(image.convert("RGB"))
    tensor = F.resize(tensor, [max(height, width)], antialias=True)
    tensor = F.center_crop(tensor, [height, width])
    return F.normalize(F.to_dtype(tensor, torch.float32, scale=True), IMAGENET_MEAN, IMAGENET_STD)


def batches(cfg: CalibrationConfig, shape: tuple[int, int, int, int]) -> list[torch.Tensor]:
    """``cfg.num_batches`` fp32 CPU batches of ``shape``; folder images repeat if there are too few."""
    batch, _, height, width = shape
    if cfg.source == "random":
        generator = torch.Generator().manual_seed(cfg.seed)
        return [torch.randn(shape, generator=generator) for _ in range(cfg.num_batches)]
    files = itertools.cycle(image_files(Path(cfg.folder).expanduser()))
    return [torch.stack([load_image(next(files), height, width) for _ in range(batch)])
            for _ in range(cfg.num_batches)]
