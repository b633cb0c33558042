"""The stride-2 convolutions of the VAE, with a GEMM formulation for small feature maps.

Both layers are nn.Conv2d / nn.ConvTranspose2d with the reference's parameters and state_dict
keys. On a small map (the 2x2 bottom of the notes' 64x64 VAE) oneDNN's direct kernels ran at
~110 GFLOP/s on 2 AVX-512 cores while the same arithmetic as one matrix product ran at ~250
(forward + backward, batch 64, torch 2.13), so there they compute the identical function as
im2col + GEMM (encoder) and GEMM + col2im (decoder). Outputs and gradients agree with the direct
kernels to float rounding (tested); `set_fast_paths(model, False)` gives back the direct kernels.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# The GEMM path is taken when the low-resolution side of the layer has at most this many pixels
# per image: measured faster at 2x2, slower from 4x4 up (see the module docstring).
GEMM_MAX_PIXELS = 4


def conv3x3s2_gemm(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """conv2d(x, weight, bias, stride=2, padding=1) for a 3x3 kernel, as im2col over NHWC + one GEMM."""
    n, c, h, w = x.shape
    ho, wo = (h + 1) // 2, (w + 1) // 2
    padded = F.pad(x.permute(0, 2, 3, 1), (0, 0, 1, 1, 1, 1))  # (N, H+2, W+2, C)
    windows = padded.unfold(1, 3, 2).unfold(2, 3, 2)  # (N, Ho, Wo, C, 3, 3), a view
    cols = windows.permute(0, 1, 2, 4, 5, 3).reshape(n * ho * wo, 9 * c)  # rows: pixels; (kh, kw, c)
    # (out, kh, kw, in): a free view of a channels-last weight.
    wmat = weight.permute(0, 2, 3, 1).reshape(weight.shape[0], 9 * c)
    y = cols @ wmat.t() if bias is None else torch.addmm(bias.to(cols.dtype), cols, wmat.t().to(cols.dtype))
    return y.view(n, ho, wo, -1).permute(0, 3, 1, 2)  # NCHW shape, channels-last memory


def conv_transpose3x3s2_gemm(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """conv_transpose2d(x, weight, bias, stride=2, padding=1, output_padding=1), as one GEMM + col2im."""
    n, cin, h, w = x.shape
    cout = weight.shape[1]
    rows = x.permute(0, 2, 3, 1).reshape(n * h * w, cin)
    # (in, kh, kw, out): a free view of a channels-last weight, unlike fold's (in, out, kh, kw).
    wmat = weight.permute(0, 2, 3, 1).reshape(cin, 9 * cout).to(rows.dtype)
    cols = rows @ wmat  # each input pixel's 3x3 footprint
    # Reordered here (the smaller tensor at the 2x2 bottom) to fold's (N, out*kh*kw, L).
    cols = cols.view(n, h * w, 9, cout).permute(0, 3, 2, 1).reshape(n, cout * 9, h * w)
    y = F.fold(cols, (2 * h, 2 * w), kernel_size=3, padding=1, stride=2)
    if bias is not None:
        y = y.add_(bias.to(y.dtype).view(1, -1, 1, 1))
    return y.contiguous(memory_format=torch.channels_last)


def _on_cpu(layer: Downsample2x | Upsample2x, x: Tensor) -> bool:
    return layer.fast_paths and x.device.type == "cpu" and x.dim() == 4


def _gemm_ok(x: Tensor, low_res_pixels: int) -> bool:
    # Not under torch.compile: inductor (torch 2.13, CPU) corrupted the heap on the fold path
    # ("malloc_consolidate(): invalid chunk size"), and it fuses around the direct kernels anyway.
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
        # 25 ms layer (64x32x64x64 output) on the bias gradient, a sum that autograd's add does in 1.
        y = F.conv_transpose2d(x, self.weight, None, self.stride, self.padding, self.output_padding)
        return y.add_(self.bias.to(y.dtype).view(1, -1, 1, 1))


def set_fast_paths(model: nn.Module, enabled: bool) -> nn.Module:
    """Switch every stride-2 layer of model between genlab's CPU formulations and the direct kernels."""
    for m in model.modules():
        if isinstance(m, (Downsample2x, Upsample2x)):
            m.fast_paths = enabled
    return model
