"""The VAE's layers: nn.Conv2d / nn.ConvTranspose2d with the reference's parameters and state_dict keys,
computed on CPU by genlab.kernels where oneDNN is slow (the kernels' docstring has the measurements).

`set_fast_paths(model, False)` gives back the direct kernels. `set_fused_norm_act` (`train.fuse_norm_act`,
"auto" by default on CPU): a ConvBlock's BatchNorm2d + LeakyReLU pair runs as one torch.compile'd kernel
per direction when its activation has at least FUSE_MIN_ELEMENTS elements; ~12 ms less per step of the
notes' 64x64 VAE at batch 64.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from genlab.kernels.conv_gemm import add_channel_bias, conv3x3_few_out, conv3x3s2_gemm, conv_transpose3x3s2_gemm
from genlab.kernels.norm_act import fused_pair

# The GEMM path is taken when the low-resolution side of the layer has at most this many pixels
# per image: measured faster at 2x2, slower from 4x4 up (see the module docstring).
GEMM_MAX_PIXELS = 4
# The few-output-channel path is taken up to this many output channels (the image's 1 or 3).
FEW_MAX_CHANNELS = 4


def _on_cpu(layer: nn.Module, x: Tensor) -> bool:
    return layer.fast_paths and x.device.type == "cpu" and x.dim() == 4


def _gemm_ok(x: Tensor, low_res_pixels: int) -> bool:
    # Not under torch.compile: it fuses around the direct kernels, and inductor (torch 2.13, CPU)
    # corrupted the heap on an earlier F.fold formulation ("malloc_consolidate(): invalid chunk size").
    return low_res_pixels <= GEMM_MAX_PIXELS and not torch.compiler.is_compiling()


class Downsample2x(nn.Conv2d):
    """Conv2d(k=3, s=2, p=1) of the encoder blocks: halves H and W (rounding up odd sizes)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(in_channels, out_channels, kernel_size=3, stride=2, padding=1)
        self.fast_paths = True

    def forward(self, x: Tensor) -> Tensor:
        if _on_cpu(self, x) and _gemm_ok(x, ((x.shape[-2] + 1) // 2) * ((x.shape[-1] + 1) // 2)):
            return conv3x3s2_gemm(x, self.weight, self.bias)
        return super().forward(x)


class Upsample2x(nn.ConvTranspose2d):
    """ConvTranspose2d(k=3, s=2, p=1, output_padding=1) of the decoder: exactly doubles H and W."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(in_channels, out_channels, kernel_size=3, stride=2, padding=1, output_padding=1)
        self.fast_paths = True

    def forward(self, x: Tensor, output_size: list[int] | None = None) -> Tensor:
        if output_size is not None or not _on_cpu(self, x):
            return super().forward(x, output_size)
        if _gemm_ok(x, x.shape[-2] * x.shape[-1]):
            return conv_transpose3x3s2_gemm(x, self.weight, self.bias)
        if self.bias is None:
            return super().forward(x)
        # The bias is added outside the kernel: oneDNN's transposed-conv backward spent 15 ms of a
        # 25 ms layer (64x32x64x64 output) on the bias gradient, which add_channel_bias computes in ~2.
        y = F.conv_transpose2d(x, self.weight, None, self.stride, self.padding, self.output_padding)
        return add_channel_bias(y, self.bias)


class ToImage2d(nn.Conv2d):
    """Conv2d(k=3, s=1, p=1) that ends the decoder: many feature channels to the image's few."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(in_channels, out_channels, kernel_size=3, padding=1)
        self.fast_paths = True

    def forward(self, x: Tensor) -> Tensor:
        # fp32 only: under autocast the direct kernel runs in bf16 (the measured opt-in), and
        # torch.compile fuses around the direct kernel itself.
        if (
            _on_cpu(self, x)
            and self.out_channels <= FEW_MAX_CHANNELS
            and x.dtype == torch.float32
            and not torch.is_autocast_enabled("cpu")
            and not torch.compiler.is_compiling()
        ):
            return conv3x3_few_out(x, self.weight, self.bias)
        return super().forward(x)


class ConvBlock(nn.Sequential):
    """nn.Sequential whose BatchNorm2d + LeakyReLU pairs can run as one compiled kernel each.

    Off unless `set_fused_norm_act` turns it on (compiling costs seconds on first use and needs a
    C++ compiler on CPU). The children, and so the state_dict, are the plain Sequential's.
    """

    fuse_min_elements: int | None = None  # None: never fused
    fuse_strict = True  # False: a compile failure warns once and runs the pairs unfused

    def forward(self, x: Tensor) -> Tensor:
        # Training steps only: evaluation passes are cheap and would only add compiled graphs.
        if self.fuse_min_elements is None or not (self.training and torch.is_grad_enabled()) or torch.compiler.is_compiling():
            return super().forward(x)
        layers = list(self)
        i = 0
        while i < len(layers):
            pair = layers[i : i + 2]
            if (
                len(pair) == 2
                and type(pair[0]) is nn.BatchNorm2d
                and isinstance(pair[1], nn.LeakyReLU)
                and x.numel() >= self.fuse_min_elements
            ):
                x = fused_pair(x, *pair, strict=self.fuse_strict)
                i += 2
            else:
                x, i = layers[i](x), i + 1
        return x


def set_fused_norm_act(model: nn.Module, enabled: bool, min_elements: int = 0, strict: bool = True) -> nn.Module:
    """Run model's ConvBlocks' BatchNorm2d + LeakyReLU pairs as one compiled kernel, or not.

    Only pairs whose activation has at least min_elements elements are fused. With strict=False a
    compile failure warns and falls back to the unfused layers instead of raising.
    """
    for m in model.modules():
        if isinstance(m, ConvBlock):
            m.fuse_min_elements = min_elements if enabled else None
            m.fuse_strict = strict
    return model


def set_fast_paths(model: nn.Module, enabled: bool) -> nn.Module:
    """Switch every layer of model between genlab's CPU formulations and the direct kernels."""
    for m in model.modules():
        if isinstance(m, (Downsample2x, Upsample2x, ToImage2d)):
            m.fast_paths = enabled
    return model
