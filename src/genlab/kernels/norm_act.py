"""BatchNorm2d + LeakyReLU as one torch.compile'd kernel per direction (train.fuse_norm_act).

At 64x64 (the notes' VAE's last block: 33.5 MB per tensor) the pair is memory-bound: one kernel
per direction instead of ATen's BatchNorm passes plus the activation's took it from 32 ms
(forward + backward) to 19 in the profiled step.
"""

from __future__ import annotations

import functools
import warnings

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def _norm_act(x: Tensor, norm: nn.BatchNorm2d, act: nn.LeakyReLU) -> Tensor:
    # Out of place: compiled with the module's in-place LeakyReLU, the VAE step took 280 ms, not 146.
    return F.leaky_relu(norm(x), act.negative_slope)


# BatchNorm2d + LeakyReLU pairs are fused from this many activation elements up (8 MiB of fp32).
# Measured on the 2-core CPU, paired in one process: the notes' 64x64 VAE at batch 64 stepped in
# 164.5 ms eager, 152.2 with the pairs of >= 2**21 elements fused (its three 32-channel blocks),
# 152.3 with all ten fused (compiling 20 s cold against 13); the pair at 64x64 alone gave 156.8.
FUSE_MIN_ELEMENTS = 1 << 21


@functools.cache
def _fused_norm_act():
    # One kernel per direction instead of ATen's BatchNorm passes plus the activation's. At 64x64
    # (the VAE's last block: 33.5 MB per tensor) these are memory-bound: in the profiled step the
    # pair went from 32 ms (forward + backward) to 19.
    return torch.compile(_norm_act, dynamic=False)


_fusion = {"broken": False}


def fused_pair(x: Tensor, norm: nn.BatchNorm2d, act: nn.LeakyReLU, strict: bool) -> Tensor:
    # One graph per feature-map shape, shared by all blocks: the VAE has more than dynamo's default
    # limit of 8 (past it, calls would silently run uncompiled). The backward is compiled here too
    # (by default inductor waits for the first backward), so a compiler failure surfaces in this call.
    if _fusion["broken"] and not strict:
        return _norm_act(x, norm, act)
    patches = (
        torch._dynamo.config.patch(recompile_limit=64),
        torch._functorch.config.patch(force_non_lazy_backward_lowering=True),
    )
    try:
        with patches[0], patches[1]:
            return _fused_norm_act()(x, norm, act)
    except Exception as e:  # fusion was chosen automatically: fall back rather than stop the run
        if strict:
            raise
        _fusion["broken"] = True  # before running anything: the BatchNorm statistics are untouched
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        warnings.warn(
            f"genlab: could not compile the fused BatchNorm + LeakyReLU ({reason}); running them "
            "unfused. Set train.fuse_norm_act = false to skip the attempt.",
            stacklevel=2,
        )
        return _norm_act(x, norm, act)
