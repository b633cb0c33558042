"""Improved precision and recall (Kynkaanniemi et al. 2019): k-NN balls as the support of each set."""

from __future__ import annotations

import torch
from torch import Tensor


def knn_radii(features: Tensor, k: int, chunk: int = 1024) -> Tensor:
    """Distance from each point to its k-th nearest other point in the same set."""
    radii = []
    for i in range(0, len(features), chunk):
        d = torch.cdist(features[i : i + chunk], features)
        radii.append(d.kthvalue(k + 1, dim=1).values)  # +1: the point itself is at distance 0
    return torch.cat(radii)


def coverage_of(points: Tensor, support: Tensor, radii: Tensor, chunk: int = 1024) -> float:
    """Share of points inside at least one ball (support[j], radii[j])."""
    inside = []
    for i in range(0, len(points), chunk):
        d = torch.cdist(points[i : i + chunk], support)
        inside.append((d <= radii[None, :]).any(dim=1))
    return torch.cat(inside).float().mean().item()


def precision_recall(real: Tensor, fake: Tensor, k: int = 3) -> tuple[float, float]:
    """(precision: fakes inside the real manifold, recall: reals inside the fake manifold)."""
    real, fake = real.double(), fake.double()
    precision = coverage_of(fake, real, knn_radii(real, k))
    recall = coverage_of(real, fake, knn_radii(fake, k))
    return precision, recall
