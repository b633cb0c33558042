"""What both step functions share: the optimiser update and mixed precision."""

from __future__ import annotations

import os
import shutil
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from types import SimpleNamespace

import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.optim import Optimizer

from genlab.errors import ConfigError
from genlab.kernels.norm_act import FUSE_MIN_ELEMENTS
from genlab.models import layers

DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def own_gradients(network: nn.Module, other: nn.Module) -> list[Tensor] | None:
    """The parameters a loss's backward may stop at: network's, unless `other` is under DDP, whose reducer
    waits for the gradients of every forward it saw (there the full backward runs, its extra gradients
    zeroed by the other network's next update)."""
    return None if isinstance(other, DistributedDataParallel) else list(network.parameters())


def unwrap(module: nn.Module) -> nn.Module:
    """The model inside torch.compile and DistributedDataParallel wrappers."""
    module = getattr(module, "_orig_mod", module)
    return module.module if isinstance(module, DistributedDataParallel) else module


@dataclass
class Precision:
    """Autocast dtype for forward passes; fp16 adds a GradScaler per optimiser (loss scaling)."""

    device_type: str = "cpu"
    dtype: torch.dtype | None = None
    scalers: dict[str, torch.amp.GradScaler] = field(default_factory=dict)

    def autocast(self) -> AbstractContextManager:
        return torch.autocast(self.device_type, dtype=self.dtype) if self.dtype is not None else nullcontext()

    def scaler(self, name: str) -> torch.amp.GradScaler | None:
        return self.scalers.get(name)


FP32 = Precision()


def make_precision(name: str, device: torch.device, optimizers: dict[str, Optimizer]) -> Precision:
    dtype = DTYPES[name]
    scalers = {k: torch.amp.GradScaler(device.type) for k in optimizers} if dtype == torch.float16 else {}
    return Precision(device.type, dtype, scalers)


def update(
    opt: Optimizer,
    loss: Tensor,
    skip_nonfinite: bool = False,
    scaler: torch.amp.GradScaler | None = None,
    inputs: list[Tensor] | None = None,
) -> None:
    """zero_grad, backward, step; with skip_nonfinite, no step for a NaN/Inf loss (one host sync).

    inputs: the only tensors whose gradients are computed (the optimiser's own network), or all.
    """
    opt.zero_grad(set_to_none=True)
    if skip_nonfinite and not bool(loss.isfinite()):
        return
    if scaler is None:
        loss.backward(inputs=inputs)
        opt.step()
        return
    scaler.scale(loss).backward(inputs=inputs)  # fp16: scale up so small gradients do not flush to zero
    scaler.step(opt)  # skips the step when the unscaled gradients hold inf/NaN
    scaler.update()


def backward(
    loss: Tensor,
    params: list[Tensor],
    skip_nonfinite: bool = False,
    scaler: torch.amp.GradScaler | None = None,
    retain_graph: bool = False,
) -> bool:
    """Gradients of loss into params' .grad, and only theirs; False (nothing computed) for a skipped NaN/Inf loss."""
    if skip_nonfinite and not bool(loss.isfinite()):
        return False
    (loss if scaler is None else scaler.scale(loss)).backward(inputs=params, retain_graph=retain_graph)
    return True


def step(opt: Optimizer, scaler: torch.amp.GradScaler | None = None) -> None:
    if scaler is None:
        opt.step()
        return
    scaler.step(opt)  # skips the step when the unscaled gradients hold inf/NaN
    scaler.update()


def can_compile(device: torch.device) -> bool:
    """Whether torch.compile can build kernels here: inductor writes C++ for CPU."""
    return device.type != "cpu" or any(shutil.which(c) for c in (os.environ.get("CXX", ""), "g++", "clang++") if c)


def require_cpp_compiler(option: str, device: torch.device, fix: str) -> None:
    """A one-line error where torch.compile would fail deep inside the first step."""
    if not can_compile(device):
        raise ConfigError(f"{option} on CPU needs a C++ compiler (g++ or clang++ on PATH, or CXX); install one or {fix}")


def fuse_norm_act(model: nn.Module, setting: bool | str, device: torch.device, precision: str) -> bool:
    """Apply train.fuse_norm_act to model's ConvBlocks; whether any pair may run compiled.

    "auto" fuses where it was measured to pay (CPU, fp32, activations of FUSE_MIN_ELEMENTS and up)
    when a C++ compiler is at hand, and falls back to the unfused layers if compiling fails.
    """
    if setting == "auto":
        if device.type != "cpu" or precision != "fp32" or not can_compile(device):
            return False
        layers.set_fused_norm_act(model, True, FUSE_MIN_ELEMENTS, strict=False)
        return True
    if setting:
        require_cpp_compiler("train.fuse_norm_act=true", device, "set train.fuse_norm_act=false")
    layers.set_fused_norm_act(model, bool(setting))
    return bool(setting)


def first_step_compiles(config, record, fused: bool) -> str:
    """What the first training step compiles ("" for nothing), for a notice before the bar stalls."""
    if config.train.compile:
        return "the model (train.compile = true)"
    if fused and record.fuses_norm_act:
        m = config.model
        # The largest BatchNorm + LeakyReLU pair is the final block's: hidden_dims[0] maps at full size.
        if config.train.batch_size * m.hidden_dims[0] * m.image_size**2 >= FUSE_MIN_ELEMENTS:
            return "BatchNorm+LeakyReLU kernels (train.fuse_norm_act; false skips it)"
    return ""


def compile_engine(engine, device: torch.device):
    """torch.compile what the step drives: the VAE, or G and D separately (the GAN step calls each)."""
    require_cpp_compiler("train.compile=true", device, "set train.compile=false")
    if isinstance(engine, torch.nn.Module) and not hasattr(engine, "generator"):
        return torch.compile(engine)
    return SimpleNamespace(
        generator=torch.compile(engine.generator), discriminator=torch.compile(engine.discriminator), config=engine.config
    )
