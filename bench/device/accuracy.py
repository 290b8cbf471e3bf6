"""Outputs of a converted model against the fp32 eager reference, and against labels where there are any.

Noise inputs (``accuracy=random``) catch a broken conversion; real images (``accuracy=folder``) say how
much accuracy a precision costs: top-1/top-5 against ImageNet labels for classification, mean IoU
against label masks for segmentation, each beside the same figure for eager fp32 on the same images.
"""
from typing import Dict, List, NamedTuple, Optional

import torch

from bench.contract.records import Accuracy, Plan
from bench.device import images
from bench.device.inputs import PointInputs
from bench.contract.errors import ConfigError
from bench.device.models import CLASSIFICATION
from bench.contract.names import (
    ACCURACY_INPUTS, ACCURACY_LABELLED, ACC_COSINE, ACC_IMAGES, ACC_MAX_ABS_ERR, ACC_MIOU, ACC_MIOU_VS_REF,
    ACC_NONFINITE, ACC_PIXEL_AGREEMENT, ACC_REL_L2_ERR, ACC_TOP1_AGREEMENT, REF_MIOU)

IGNORE_LABEL = 255  # segmentation masks: pixels that count for nothing (VOC's border)


class Inputs(NamedTuple):
    """The batches outputs are compared on, and what is known about them."""

    batches: List[torch.Tensor]  # fp32, CPU, the point's shape (the last one padded with repeats)
    count: int  # real samples (padding excluded)
    labels: Optional[List[int]]  # ImageNet class per sample (classification, labelled folder)
    masks: Optional[List[torch.Tensor]]  # HxW class per pixel (segmentation, masks folder)
    details: Dict[str, str]  # what they are, for the record
    files: List[str]  # the images, in order (empty for noise)


def random_inputs(accuracy: Accuracy, shape) -> Inputs:
    generator = torch.Generator().manual_seed(accuracy.seed)
    batches = [torch.randn(shape, generator=generator) for _ in range(accuracy.batches)]
    return Inputs(batches, len(batches) * shape[0], None, None,
                  {ACCURACY_INPUTS: "random normal, seed {}, {} batch(es): agreement with eager fp32 only, "
                                      "no accuracy".format(accuracy.seed, accuracy.batches),
                   ACCURACY_LABELLED: "false"}, [])


def check(plan: Plan, task: str, inputs: PointInputs) -> None:
    """A bad accuracy folder or masks folder: one ConfigError, before any work."""
    found = inputs.accuracy
    if found is None:
        return
    images.check_decodes(found, "accuracy.folder", 1)
    masks = plan.accuracy.masks
    if masks is not None:
        if task == CLASSIFICATION:
            raise ConfigError("accuracy.masks is for segmentation models; {} classifies".format(
                plan.model.name))
        if not any(images.mask_for(f, found, masks) for f in found.files):
            raise ConfigError("accuracy.masks {!r}: no mask named like the images of {!r} (same relative path, "
                              ".png)".format(masks, found.folder))


def folder_inputs(plan: Plan, shape, inputs: PointInputs, task: str) -> Inputs:
    batch, _, height, width = shape
    accuracy, found, recipe = plan.accuracy, inputs.accuracy, inputs.recipe
    tensors, labels, used, skipped = images.load(found, height, width, recipe, accuracy.max_images)
    if task != CLASSIFICATION:
        labels = None  # class folders name ImageNet classes; segmentation is judged against masks
    masks = None
    if accuracy.masks is not None:
        paths = [images.mask_for(f, found, accuracy.masks) for f in used]
        keep = [i for i, path in enumerate(paths) if path is not None]
        tensors = [tensors[i] for i in keep]
        masks = [images.load_mask(paths[i], height, width, recipe) for i in keep]
        used = [used[i] for i in keep]
    count = len(tensors)
    padded = tensors + [tensors[-1]] * (-count % batch)
    batches = [torch.stack(padded[i:i + batch]) for i in range(0, len(padded), batch)]
    details = {ACCURACY_INPUTS: "folder {}: {} image(s){}{}, {}".format(
        found.folder, count, ", {} skipped (did not decode)".format(skipped) if skipped else "",
        ", labels from {}".format(found.layout) if labels is not None else ", no labels",
        recipe.describe(height, width)), ACCURACY_LABELLED: "true" if labels or masks else "false",
        "accuracy.folder": found.folder}
    return Inputs(batches, count, labels, masks, details, used)


def compare(reference: List[torch.Tensor], outputs: List[torch.Tensor], task: str, count: int) -> Dict[str, float]:
    """Max abs error, relative L2 error, cosine similarity, and top-1 / per-pixel argmax agreement.

    Outputs are compared in fp64 on the CPU, on the first ``count`` samples (the rest is padding).
    ``acc_nonfinite`` counts NaN/Inf values in the outputs: with any, the other figures are computed on
    the finite part only and are suspect.
    """
    ref = torch.cat([r.detach().double().cpu() for r in reference])[:count]
    out = torch.cat([o.detach().double().cpu() for o in outputs])[:count]
    if ref.shape != out.shape:
        raise ValueError("output shape {} differs from the reference {}".format(tuple(out.shape), tuple(ref.shape)))
    finite = torch.isfinite(out)
    nonfinite = int((~finite).sum())
    zeros = torch.zeros_like(ref)
    diff = torch.where(finite, out - ref, zeros)
    cosine = torch.nn.functional.cosine_similarity(torch.where(finite, out, zeros).flatten(), ref.flatten(), dim=0)
    agreement = (out.argmax(dim=1) == ref.argmax(dim=1)).double().mean()
    found = {
        ACC_MAX_ABS_ERR: float(diff.abs().max()),
        ACC_REL_L2_ERR: float(diff.norm() / ref.norm().clamp_min(1e-30)),
        ACC_COSINE: float(cosine),
        (ACC_TOP1_AGREEMENT if task == CLASSIFICATION else ACC_PIXEL_AGREEMENT): float(agreement),
        ACC_NONFINITE: float(nonfinite),
        ACC_IMAGES: float(count),
    }
    if task != CLASSIFICATION:
        found[ACC_MIOU_VS_REF] = mean_iou(out.argmax(dim=1), ref.argmax(dim=1), ref.shape[1])
    return found


def top(logits: torch.Tensor, k: int) -> torch.Tensor:
    """The k best classes per sample, the argmax first: the tie-break every agreement figure uses (topk may
    order tied classes, which quantized logits often have, differently)."""
    best = logits.argmax(dim=1)
    ranked = logits.topk(k, dim=1).indices
    return torch.stack([torch.cat([first.view(1), row[row != first][:k - 1]]) for first, row in zip(best, ranked)])


def topk(logits: torch.Tensor, labels: torch.Tensor, k: int) -> float:
    return float((top(logits, k) == labels[:, None]).any(dim=1).double().mean())


def labelled(reference: List[torch.Tensor], outputs: List[torch.Tensor], inputs: Inputs) -> Dict[str, float]:
    """Accuracy against the labels, the converted model's (acc_*) beside eager fp32's (ref_*)."""
    ref = torch.cat([r.float().cpu() for r in reference])[:inputs.count]
    out = torch.cat([o.float().cpu() for o in outputs])[:inputs.count]
    found = {}
    if inputs.labels is not None:
        labels = torch.tensor(inputs.labels)
        for k in (1, 5):
            found["acc_top{}".format(k)] = topk(out, labels, k)
            found["ref_top{}".format(k)] = topk(ref, labels, k)
    if inputs.masks is not None:
        masks = torch.stack(inputs.masks)
        found[ACC_MIOU] = mean_iou(out.argmax(dim=1), masks, out.shape[1])
        found[REF_MIOU] = mean_iou(ref.argmax(dim=1), masks, ref.shape[1])
    return found


def mean_iou(predicted: torch.Tensor, truth: torch.Tensor, classes: int) -> float:
    """Mean intersection over union over the classes present in either (pixels labelled 255 ignored)."""
    valid = truth != IGNORE_LABEL
    ious = []
    for label in range(classes):
        pred, true = (predicted == label) & valid, (truth == label) & valid
        union = int((pred | true).sum())
        if union:
            ious.append(int((pred & true).sum()) / union)
    return float(sum(ious) / len(ious)) if ious else float("nan")


def predictions_csv(reference: List[torch.Tensor], outputs: List[torch.Tensor], inputs: Inputs, task: str) -> str:
    """One row per image: what eager fp32 and the converted model predicted (and the label), so every accuracy
    figure can be recomputed from the record."""
    ref = torch.cat([r.float().cpu() for r in reference])[:inputs.count]
    out = torch.cat([o.float().cpu() for o in outputs])[:inputs.count]
    if task == CLASSIFICATION:
        rows = ["image,label,reference_top1,converted_top1,reference_top5,converted_top5"]
        ref5, out5 = top(ref, 5), top(out, 5)
        for i, file in enumerate(inputs.files):
            label = inputs.labels[i] if inputs.labels is not None else ""
            rows.append("{},{},{},{},{},{}".format(file, label, int(ref5[i, 0]), int(out5[i, 0]),
                                                   " ".join(map(str, ref5[i].tolist())),
                                                   " ".join(map(str, out5[i].tolist()))))
    else:
        rows = ["image,pixel_agreement,iou_vs_reference"]
        for i, file in enumerate(inputs.files):
            pred, truth = out[i].argmax(dim=0), ref[i].argmax(dim=0)
            rows.append("{},{:.6f},{:.6f}".format(file, float((pred == truth).double().mean()),
                                                  mean_iou(pred, truth, out.shape[1])))
    return "\n".join(rows) + "\n"
