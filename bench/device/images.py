"""Image folders for calibration and accuracy: find the images and their labels, split, decode, preprocess.

A folder is either an ImageFolder tree (one subfolder per class, named by ImageNet class index such
as ``281``, or by wnid such as ``n02123045``: class order from a synset file in the folder if there is
one, else ILSVRC-2012's: the 1000 wnids sorted, which the suite carries) or a flat folder of unlabelled
images. When calibration and accuracy read the same folder, they get disjoint parts of it (a stable split
by path), unless ``calibration.share_images`` says otherwise; the split is part of the record.

Preprocessing is torchvision's ImageNet recipe on PIL images, which every torchvision version has:
resize the short side, centre-crop to the point's input size, scale to [0, 1], normalise. With
torchvision's pretrained weights (0.13+) the resize margin, interpolation and normalisation come
from the weights' own transforms, scaled to the point's input size.
"""
import hashlib
import logging
import os
import re
from typing import List, NamedTuple, Optional, Tuple

import torch

from bench.contract.errors import ConfigError
from bench.device.imagenet_wnids import WNIDS

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".ppm", ".tif", ".tiff")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGENET_CROP = 0.875  # torchvision's classification presets: resize to 256, crop 224
WNID = re.compile(r"^n\d{8}$")
# A file in an ImageFolder of wnids that gives the class order (one wnid per line, in class-index order); without
# one, the order is ILSVRC-2012's (WNIDS).
SYNSET_FILES = ("LOC_synset_mapping.txt", "synsets.txt", "imagenet_synsets.txt")
IMAGENET_CLASSES = 1000
CALIBRATION_SHARE = 0.2  # the part of a shared folder that calibrates when calibration and accuracy read it


class ImageSet(NamedTuple):
    """The images of a folder, their labels (None where there are none), and how they were found."""

    folder: str
    files: List[str]
    labels: Optional[List[int]]  # ImageNet class indices, or None for a flat (unlabelled) folder
    layout: str  # "flat" | "imagefolder (class index)" | "imagefolder (wnid, order from <file or ILSVRC-2012>)"


class Preset(NamedTuple):
    """How images become the model's input."""

    resize: int  # the short side is resized to this
    mean: Tuple[float, float, float]
    std: Tuple[float, float, float]
    interpolation: str  # "bilinear" | "bicubic"
    source: str  # where these numbers come from, for the record

    def describe(self, height: int, width: int) -> str:
        return "resize {} ({}), centre crop {}x{}, normalise {} ({})".format(
            self.resize, self.interpolation, height, width,
            "ImageNet mean/std" if (self.mean, self.std) == (IMAGENET_MEAN, IMAGENET_STD) else
            "mean {} std {}".format(self.mean, self.std), self.source)


def image_files(folder: str) -> List[str]:
    """Every image file below ``folder``, sorted (so every run sees the same order)."""
    found = []
    for root, _, names in os.walk(folder):
        found.extend(os.path.join(root, name) for name in names if name.lower().endswith(IMAGE_SUFFIXES))
    return sorted(found)


def _class_order(folder: str) -> Tuple[dict, str]:
    """wnid -> ImageNet class index, from a synset file in the folder, else ILSVRC-2012's order (sorted wnids)."""
    for name in SYNSET_FILES:
        path = os.path.join(folder, name)
        if os.path.isfile(path):
            with open(path) as handle:
                order = [line.split()[0] for line in handle if line.strip()]
            return {wnid: index for index, wnid in enumerate(order)}, name
    return {wnid: index for index, wnid in enumerate(WNIDS)}, "ILSVRC-2012's 1000 wnids"


def scan(folder: str, what: str) -> ImageSet:
    """The folder's images and labels; ConfigError for a missing folder, no images, or an unknown class name."""
    path = os.path.abspath(os.path.expanduser(folder))
    if not os.path.isdir(path):
        raise ConfigError("{} {!r} does not exist or is not a directory".format(what, path))
    files = image_files(path)
    if not files:
        raise ConfigError("{} {!r} has no images ({})".format(what, path, ", ".join(IMAGE_SUFFIXES)))
    classes = sorted({os.path.relpath(f, path).split(os.sep)[0] for f in files if os.sep in os.path.relpath(f, path)})
    if not classes:
        return ImageSet(path, files, None, "flat")
    if any(os.sep not in os.path.relpath(f, path) for f in files):
        raise ConfigError("{} {!r} mixes images at its top with class folders: use one layout".format(what, path))
    if all(name.isdigit() for name in classes):
        index, known = {name: int(name) for name in classes}, ""
        layout = "imagefolder (class index)"
    elif all(WNID.match(name) for name in classes):
        index, order = _class_order(path)
        layout = "imagefolder (wnid, order from {})".format(order)
        known = " (it looks like a wnid, but is not in {})".format(order)
    else:
        bad = next(name for name in classes if not (name.isdigit() or WNID.match(name)))
        raise ConfigError("{} {!r}: class folder {!r} is not a known label (name class folders by ImageNet class "
                          "index, e.g. 281, or wnid, e.g. n02123045)".format(what, path, bad))
    unknown = [name for name in classes if name not in index or not 0 <= index[name] < IMAGENET_CLASSES]
    if unknown:
        raise ConfigError("{} {!r}: class folder {!r} is not one of ImageNet's {} classes{}".format(
            what, path, unknown[0], IMAGENET_CLASSES, known))
    labels = [index[os.path.relpath(f, path).split(os.sep)[0]] for f in files]
    return ImageSet(path, files, labels, layout)


def _in_calibration_part(path: str) -> bool:
    digest = hashlib.sha256(path.encode()).digest()
    return digest[0] < 256 * CALIBRATION_SHARE


def split(images: ImageSet, part: str) -> ImageSet:
    """The calibration or the accuracy part of a folder both read: disjoint, stable, about 20 % / 80 %."""
    keep = [i for i, f in enumerate(images.files)
            if _in_calibration_part(os.path.relpath(f, images.folder)) == (part == "calibration")]
    if not keep:  # a tiny folder: at least one image each way
        keep = [0] if part == "calibration" else list(range(1, len(images.files))) or [0]
    labels = [images.labels[i] for i in keep] if images.labels is not None else None
    return ImageSet(images.folder, [images.files[i] for i in keep], labels, images.layout)


def decode(path: str):
    """The image at ``path`` as RGB, or None when it does not decode."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            image.load()
            return image.convert("RGB")
    except (OSError, ValueError, SyntaxError) as exc:  # PIL raises these for broken or foreign files
        log.warning("skipping %s: it does not decode as an image (%s)", path, exc)
        return None


def check_decodes(images: ImageSet, what: str, needed: int) -> None:
    """ConfigError before any work when none of the first ``needed`` images decodes."""
    decoded = 0
    for file in images.files:
        decoded += decode(file) is not None
        if decoded >= needed:
            return
    if not decoded:
        raise ConfigError("{} {!r}: none of its {} image file(s) decodes".format(what, images.folder,
                                                                                  len(images.files)))


def preset(model_name: str, pretrained: bool, classification: bool, height: int, width: int) -> Preset:
    """The preprocessing for this model and input size (the weights' own where torchvision says)."""
    size = max(height, width)
    if pretrained:
        try:
            import torchvision.models as tvm

            transforms = tvm.get_model_weights(model_name).DEFAULT.transforms()
        except (AttributeError, ValueError):  # torchvision < 0.13 has no weight enums
            transforms = None
        if transforms is not None:
            crop = getattr(transforms, "crop_size", None)
            ratio = transforms.resize_size[0] / crop[0] if crop else 1.0
            interpolation = str(getattr(transforms, "interpolation", "bilinear")).split(".")[-1].lower()
            return Preset(int(round(size * ratio)), tuple(transforms.mean), tuple(transforms.std), interpolation,
                          "the pretrained weights' transforms, scaled to the input size")
    ratio = 1 / IMAGENET_CROP if classification else 1.0
    return Preset(int(round(size * ratio)), IMAGENET_MEAN, IMAGENET_STD, "bilinear",
                  "torchvision's ImageNet recipe" if classification else "resized to the input size")


def preprocess(image, height: int, width: int, recipe: Preset) -> torch.Tensor:
    """A PIL image as a normalised fp32 CHW tensor of ``height`` x ``width``."""
    from PIL import Image
    from torchvision.transforms import functional as F

    resample = Image.BICUBIC if recipe.interpolation == "bicubic" else Image.BILINEAR
    image = F.center_crop(resize_short_side(image, recipe.resize, resample), [height, width])
    return F.normalize(F.to_tensor(image), recipe.mean, recipe.std)


def resize_short_side(image, size: int, resample):
    scale = size / min(image.size)
    return image.resize((int(round(image.size[0] * scale)), int(round(image.size[1] * scale))), resample)


def load_mask(path: str, height: int, width: int, recipe: Preset) -> torch.Tensor:
    """A label mask (class index per pixel, 255 = ignore) cropped exactly like its image: HxW int64."""
    import numpy as np
    from PIL import Image
    from torchvision.transforms import functional as F

    with Image.open(path) as mask:
        mask = resize_short_side(mask.copy(), recipe.resize, Image.NEAREST)
    return torch.from_numpy(np.array(F.center_crop(mask, [height, width]), dtype=np.int64))


def mask_for(image_file: str, images: ImageSet, masks_folder: str) -> Optional[str]:
    """The mask of an image: the same relative path and stem, any image suffix."""
    stem = os.path.splitext(os.path.relpath(image_file, images.folder))[0]
    for suffix in (".png",) + IMAGE_SUFFIXES:
        candidate = os.path.join(masks_folder, stem + suffix)
        if os.path.isfile(candidate):
            return candidate
    return None


def load(images: ImageSet, height: int, width: int, recipe: Preset, limit: Optional[int] = None):
    """(tensors, labels or None, files used, skipped count) of the first ``limit`` images that decode."""
    tensors, labels, used, skipped = [], [], [], 0
    for index, file in enumerate(images.files):
        if limit is not None and len(tensors) >= limit:
            break
        image = decode(file)
        if image is None:
            skipped += 1
            continue
        tensors.append(preprocess(image, height, width, recipe))
        used.append(file)
        if images.labels is not None:
            labels.append(images.labels[index])
    if not tensors:
        raise ConfigError("{!r}: none of its {} image file(s) decodes".format(images.folder, len(images.files)))
    if skipped:
        log.warning("%s: %d image file(s) did not decode and were skipped", images.folder, skipped)
    return tensors, (labels if images.labels is not None else None), used, skipped
