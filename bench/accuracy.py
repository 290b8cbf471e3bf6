"""Outputs of a converted model against the fp32 eager reference on the same inputs."""
from __future__ import annotations

import torch

from bench.models import CLASSIFICATION


def compare(reference: list[torch.Tensor], outputs: list[torch.Tensor], task: str) -> dict[str, float]:
    """Max abs error, relative L2 error, cosine similarity, and top-1 / per-pixel argmax agreement.

    Outputs are compared in fp64 on the CPU. ``acc_nonfinite`` counts NaN/Inf values in the
    outputs: with any, the other figures are computed on the finite part only and are suspect.
    """
    ref = torch.cat([r.detach().double().cpu() for r in reference])
    out = torch.cat([o.detach().double().cpu() for o in outputs])
    if ref.shape != out.shape:
        raise ValueError(f"output shape {tuple(out.shape)} differs from the reference {tuple(ref.shape)}")
    finite = torch.isfinite(out)
    nonfinite = int((~finite).sum())
    diff = torch.where(finite, out - ref, torch.zeros_like(ref))
    cosine = torch.nn.functional.cosine_similarity(
        torch.where(finite, out, torch.zeros_like(out)).flatten(), ref.flatten(), dim=0
    )
    agreement = (out.argmax(dim=1) == ref.argmax(dim=1)).double().mean()
    return {
        "acc_max_abs_err": float(diff.abs().max()),
        "acc_rel_l2_err": float(diff.norm() / ref.norm().clamp_min(1e-30)),
        "acc_cosine": float(cosine),
        ("acc_top1_agreement" if task == CLASSIFICATION else "acc_pixel_agreement"): float(agreement),
        "acc_nonfinite": float(nonfinite),
    }
