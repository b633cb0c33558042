"""Figures drawn from evaluation results: pure functions onto a matplotlib Axes the caller owns and saves."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def draw_mi_heatmap(ax, matrix: Sequence[Sequence[float]], factor_names: Sequence[str], dims: Sequence[int]) -> None:
    """The (latent x factor) normalised mutual information as a heat map: a row per latent dimension, a column
    per factor, each cell written out; 0 to 1, so maps of different runs read on one scale.

    matrix: the eval JSON's disentanglement.mutual_information.normalised (or mig_chen_detail.normalised),
    rows in the order of dims.
    """
    values = np.asarray(matrix, dtype=np.float64)
    if values.shape != (len(dims), len(factor_names)):
        raise ValueError(f"matrix is {values.shape}, expected ({len(dims)} dims, {len(factor_names)} factors)")
    image = ax.imshow(values, cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto")
    ax.set_xticks(range(len(factor_names)), list(factor_names), fontsize=8)
    ax.set_yticks(range(len(dims)), [f"z{d}" for d in dims], fontsize=8)
    ax.set_xlabel("factor")
    ax.set_ylabel("latent dimension")
    for (row, col), v in np.ndenumerate(values):
        ax.text(col, row, f"{v:.2f}", ha="center", va="center", fontsize=7, color="white" if v < 0.5 else "black")
    ax.figure.colorbar(image, ax=ax, label="I(z; v) / H(v)", fraction=0.05)
