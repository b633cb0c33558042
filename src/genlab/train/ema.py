"""An exponential moving average of a GAN generator's weights (and BatchNorm statistics), kept beside it.

torch.optim.swa_utils.AveragedModel with an EMA: theta_ema <- decay * theta_ema + (1 - decay) * theta
after every step (Karras et al. 2018; Yazici et al. 2019 on the usual GANs). It is saved as
ema.safetensors in each checkpoint, and `genlab sample/eval --weights ema` samples from it.
"""

from __future__ import annotations

from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from genlab.checkpoint import EMA_FILE as FILE

__all__ = ["FILE", "make_ema"]


def make_ema(model: nn.Module, decay: float) -> AveragedModel | None:
    """An EMA of model.generator (None when decay is 0)."""
    if not decay:
        return None
    return AveragedModel(model.generator, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)
