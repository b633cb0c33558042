"""Layers shared by the models."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def _phase_mixer() -> Tensor:
    """(9, 16) 0/1 matrix taking the 3x3 transposed kernel to the 2x2 kernels of the 4 output phases.

    Along one axis, y[2m] = x[m] w[1] and y[2m+1] = x[m] w[2] + x[m+1] w[0]: phase a reads input
    offset d through tap TAP[a][d] (None: no tap). Column order is (a, b, dh, dw).
    """
    tap = ((1, None), (2, 0))
    mix = torch.zeros(9, 16)
    for a in range(2):
        for b in range(2):
            for dh in range(2):
                for dw in range(2):
                    if tap[a][dh] is not None and tap[b][dw] is not None:
                        mix[tap[a][dh] * 3 + tap[b][dw], a * 8 + b * 4 + dh * 2 + dw] = 1.0
    return mix


class Upsample2x(nn.ConvTranspose2d):
    """ConvTranspose2d(k=3, s=2, p=1, output_padding=1): doubles H and W, as the reference decoder.

    Same parameters and state_dict keys as nn.ConvTranspose2d. With ``subpixel=True`` it computes
    the identical function as one stride-1 2x2 convolution into 4x the channels followed by
    pixel_shuffle (Shi et al. 2016); outputs and gradients agree to float rounding (tested). It is
    off by default: on torch 2.13's oneDNN CPU kernels it measured 1.4-2.3x slower per layer
    (forward + backward, batch 64) than the transposed kernel; `genlab bench` re-measures it.
    """

    def __init__(self, in_channels: int, out_channels: int, subpixel: bool = False) -> None:
        super().__init__(in_channels, out_channels, kernel_size=3, stride=2, padding=1, output_padding=1)
        self.subpixel = subpixel
        self.register_buffer("phase_mixer", _phase_mixer(), persistent=False)

    def subpixel_weight(self) -> tuple[Tensor, Tensor | None]:
        """The (4*out, in, 2, 2) kernel and bias of the equivalent sub-pixel convolution."""
        cin, cout = self.in_channels, self.out_channels
        # A matmul with a fixed 0/1 matrix, not fancy indexing: its backward is a matmul too.
        k = self.weight.reshape(cin, cout, 9) @ self.phase_mixer.to(self.weight.dtype)  # (in, out, 16)
        k = k.view(cin, cout, 2, 2, 2, 2).permute(1, 2, 3, 0, 4, 5).reshape(cout * 4, cin, 2, 2)
        bias = None if self.bias is None else self.bias.repeat_interleave(4)
        return k, bias

    def forward(self, x: Tensor, output_size: list[int] | None = None) -> Tensor:
        if not self.subpixel or output_size is not None:
            return super().forward(x, output_size)
        k, bias = self.subpixel_weight()
        # Pad right/bottom by one: the odd output phase reads x[m+1], zero past the edge.
        y = F.conv2d(F.pad(x, (0, 1, 0, 1)), k, bias)  # (B, 4*out, H, W), channel = c*4 + a*2 + b
        return F.pixel_shuffle(y, 2)  # (B, out, 2H, 2W)


def upsample2x(in_channels: int, out_channels: int) -> Upsample2x:
    return Upsample2x(in_channels, out_channels)


def set_subpixel(model: nn.Module, enabled: bool) -> nn.Module:
    """Switch every Upsample2x in model between the sub-pixel and the plain transposed kernel."""
    for m in model.modules():
        if isinstance(m, Upsample2x):
            m.subpixel = enabled
    return model
