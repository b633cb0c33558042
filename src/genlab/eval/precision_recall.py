"""Improved precision and recall (Kynkaanniemi et al. 2019) and density and coverage (Naeem et al. 2020),
all from k-NN balls around feature vectors."""

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


def density_coverage(real: Tensor, fake: Tensor, k: int = 5, chunk: int = 1024) -> tuple[float, float]:
    """Density: mean count of real k-NN balls holding each fake, over k (about 1 when the sets match;
    outliers in the real set cannot inflate it as they do precision). Coverage: share of real balls
    that hold at least one fake."""
    real, fake = real.double(), fake.double()
    radii = knn_radii(real, k)
    counts = torch.zeros(len(fake), dtype=torch.float64)
    covered = torch.zeros(len(real), dtype=torch.bool)
    for i in range(0, len(fake), chunk):
        inside = torch.cdist(fake[i : i + chunk], real) <= radii[None, :]  # (fakes, reals)
        counts[i : i + chunk] = inside.sum(1).double()
        covered |= inside.any(0)
    return (counts.mean() / k).item(), covered.double().mean().item()
