"""An Inception-Score-style score (Salimans et al. 2016) and the predicted-class histogram, from a classifier."""

from __future__ import annotations

import math

import torch
from torch import Tensor


def classifier_score(probs: Tensor, splits: int = 10) -> tuple[float, float]:
    """exp(E_x KL(p(y|x) || p(y))) over `splits` equal parts: (mean, std). Range 1 .. num_classes."""
    scores = []
    for part in probs.double().chunk(splits):
        py = part.mean(0, keepdim=True)
        kl = (part * (torch.log(part.clamp_min(1e-12)) - torch.log(py.clamp_min(1e-12)))).sum(1).mean()
        scores.append(math.exp(kl.item()))
    t = torch.tensor(scores)
    return t.mean().item(), (t.std().item() if len(scores) > 1 else 0.0)


def class_histogram(probs: Tensor, num_classes: int) -> list[float]:
    """Share of samples predicted as each class (argmax)."""
    counts = torch.bincount(probs.argmax(1), minlength=num_classes).double()
    return (counts / counts.sum()).tolist()


def collapse_warning(hist: list[float], reference: list[float], factor: float = 0.25) -> str | None:
    """A warning when some class gets under `factor` of its share in the reference set."""
    rare = [i for i, (h, r) in enumerate(zip(hist, reference)) if r > 0 and h < factor * r]
    if rare:
        return f"classes {rare} get under {factor:.0%} of their share in the reference set: the samples may have collapsed"
    return None
