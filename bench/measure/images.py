"""Image folders for calibration and accuracy: find, decode and preprocess real images.

Preprocessing is torchvision's ImageNet recipe on PIL images, which every torchvision version
has: resize the short side, centre-crop to the point's input size, scale to [0, 1], normalise
with the ImageNet mean and standard deviation.
"""
import logging
import os
from typing import List

import torch

from bench.measure.errors import ConfigError

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".ppm", ".tif", ".tiff")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def image_files(folder: str) -> List[str]:
    """Every image file below ``folder``, sorted (so every run sees the same order)."""
    found = []
    for root, _, names in os.walk(folder):
        found.extend(os.path.join(root, name) for name in names if name.lower().endswith(IMAGE_SUFFIXES))
    return sorted(found)


def check_folder(folder: str, what: str, needed: int) -> None:
    """A missing folder, one without images, or one whose first ``needed`` images do not decode: ConfigError."""
    path = os.path.expanduser(folder)
    if not os.path.isdir(path):
        raise ConfigError("{} {!r} does not exist or is not a directory".format(what, path))
    files = image_files(path)
    if not files:
        raise ConfigError("{} {!r} has no images ({})".format(what, path, ", ".join(IMAGE_SUFFIXES)))
    decoded = 0
    for file in files:
        decoded += decode(file) is not None
        if decoded >= needed:
            return
    if not decoded:
        raise ConfigError("{} {!r}: none of its {} image file(s) decodes".format(what, path, len(files)))


def preprocess(image, height: int, width: int) -> torch.Tensor:
    """A PIL image as a normalised fp32 CHW tensor of ``height`` x ``width``."""
    from torchvision.transforms import functional as F

    image = F.resize(image.convert("RGB"), max(height, width))
    image = F.center_crop(image, [height, width])
    return F.normalize(F.to_tensor(image), IMAGENET_MEAN, IMAGENET_STD)


def decode(path: str):
    """The image at ``path``, or None when it does not decode."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            image.load()
            return image.convert("RGB")
    except (OSError, ValueError, SyntaxError) as exc:  # PIL raises these for broken or foreign files
        log.warning("skipping %s: it does not decode as an image (%s)", path, exc)
        return None


def load_folder(folder: str, height: int, width: int, what: str) -> List[torch.Tensor]:
    """Every decodable image of ``folder``, preprocessed; ConfigError when none decodes."""
    path = os.path.expanduser(folder)
    files = image_files(path)
    tensors = []
    for file in files:
        image = decode(file)
        if image is not None:
            tensors.append(preprocess(image, height, width))
    if not tensors:
        raise ConfigError("{} {!r}: none of its {} image file(s) decodes".format(what, path, len(files)))
    if len(tensors) < len(files):
        log.warning("%s: %d of %d image file(s) did not decode and were skipped", what, len(files) - len(tensors),
                    len(files))
    return tensors
