"""An exponential moving average of a GAN generator's weights (and BatchNorm statistics), kept beside it.

torch.optim.swa_utils.AveragedModel with an EMA: theta_ema <- d * theta_ema + (1 - d) * theta after every
step (Karras et al. 2018; Yazici et al. 2019 on the usual GANs), with d = min(decay, (1 + n) / (10 + n))
after n updates (TensorFlow's ExponentialMovingAverage with num_updates): without the warm-up a decay of
0.999 still weighs the untrained G by 0.999^937 = 0.39 after an epoch of Fashion-MNIST. It is saved as
ema.safetensors in each checkpoint, and `genlab sample/eval --weights ema` samples from it.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.optim.swa_utils import AveragedModel

from genlab.checkpoint import EMA_FILE as FILE

__all__ = ["FILE", "make_ema"]


def warmed_up_ema(decay: float):
    """AveragedModel's multi_avg_fn for an EMA whose decay grows to `decay` over the first updates."""

    @torch.no_grad()
    def update(averaged: list[Tensor], current: list[Tensor], num_averaged: Tensor) -> None:
        n = float(num_averaged)
        d = min(decay, (1 + n) / (10 + n))
        if torch.is_floating_point(averaged[0]):
            torch._foreach_lerp_(averaged, current, 1 - d)
        else:  # integer buffers (BatchNorm's num_batches_tracked): the current count
            for a, c in zip(averaged, current):
                a.copy_(c)

    return update


def make_ema(model: nn.Module, decay: float) -> AveragedModel | None:
    """An EMA of model.generator (None when decay is 0)."""
    if not decay:
        return None
    return AveragedModel(model.generator, multi_avg_fn=warmed_up_ema(decay), use_buffers=True)
