"""Outputs of a converted model against the fp32 eager reference on the same inputs."""
from typing import Dict, List

import torch

from bench.measure.models import CLASSIFICATION


def compare(reference: List[torch.Tensor], outputs: List[torch.Tensor], task: str) -> Dict[str, float]:
    """Max abs error, relative L2 error, cosine similarity, and top-1 / per-pixel argmax agreement.

    Outputs are compared in fp64 on the CPU. ``acc_nonfinite`` counts NaN/Inf values in the
    outputs: with any, the other figures are computed on the finite part only and are suspect.
    """
    ref = torch.cat([r.detach().double().cpu() for r in reference])
    out = torch.cat([o.detach().double().cpu() for o in outputs])
    if ref.shape != out.shape:
        raise ValueError("output shape {} differs from the reference {}".format(tuple(out.shape), tuple(ref.shape)))
    finite = torch.isfinite(out)
    nonfinite = int((~finite).sum())
    zeros = torch.zeros_like(ref)
    diff = torch.where(finite, out - ref, zeros)
    cosine = torch.nn.functional.cosine_similarity(torch.where(finite, out, zeros).flatten(), ref.flatten(), dim=0)
    agreement = (out.argmax(dim=1) == ref.argmax(dim=1)).double().mean()
    return {
        "acc_max_abs_err": float(diff.abs().max()),
        "acc_rel_l2_err": float(diff.norm() / ref.norm().clamp_min(1e-30)),
        "acc_cosine": float(cosine),
        ("acc_top1_agreement" if task == CLASSIFICATION else "acc_pixel_agreement"): float(agreement),
        "acc_nonfinite": float(nonfinite),
    }
