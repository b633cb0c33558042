"""What both step functions share."""

from __future__ import annotations

from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.optim import Optimizer


def unwrap(module: nn.Module) -> nn.Module:
    """The model inside a DistributedDataParallel wrapper (or the model itself)."""
    return module.module if isinstance(module, DistributedDataParallel) else module


def update(opt: Optimizer, loss: Tensor, skip_nonfinite: bool = False) -> None:
    """zero_grad, backward, step; with skip_nonfinite, no step for a NaN/Inf loss (one host sync)."""
    opt.zero_grad(set_to_none=True)
    if skip_nonfinite and not bool(loss.isfinite()):
        return
    loss.backward()
    opt.step()
