"""The convolutions of the notes' VAE as GEMMs, with hand-written gradients: where oneDNN is slow on CPU.

Measured on 2 AVX-512 cores (batch 64, torch 2.13):
- On a small map (the 2x2 bottom of the notes' 64x64 VAE) oneDNN's direct kernels ran at ~110
  GFLOP/s while the same arithmetic as one matrix product ran at ~250, so there the stride-2
  layers compute it as im2col + GEMM (encoder) and GEMM + adding each pixel's 3x3 footprint
  (decoder), with hand-written gradients: nine strided adds in place of F.fold and unfold's
  backward, which took 1-2 ms each there (step ~154 -> ~150 ms).
- The decoder's last 3x3 conv maps 32 channels to the image's 3, and oneDNN's kernels for so few
  output channels took 7 ms forward and 7 ms for the weight gradient at 64x64. The forward is one
  GEMM into nine tap planes plus eight shifted adds (3.8 ms); the weight gradient is oneDNN's
  weight gradient of the equivalent transposed convolution (flipped kernel, 1.7 ms), the same sum.
  The whole training step went from ~160 to ~152 ms.
- A transposed convolution's bias gradient, which oneDNN took 15 ms of a 25 ms layer to compute
  (64x32x64x64 output), as a matrix-vector product (~2 ms).
Outputs and gradients agree with the direct kernels to float rounding (tests/models/test_layers.py).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def _gather_taps(high: Tensor, low_h: int, low_w: int) -> Tensor:
    """(N, H, W, C) -> (N, low_h, low_w, 3, 3, C): tap (kh, kw) of low pixel (i, j) is high pixel
    (2i + kh - 1, 2j + kw - 1), zero outside. The im2col of a 3x3 stride-2 padding-1 window."""
    padded = F.pad(high, (0, 0, 1, 1, 1, 1))
    windows = padded.unfold(1, 3, 2).unfold(2, 3, 2)  # (N, ceil(H/2), ceil(W/2), C, 3, 3), a view
    assert windows.shape[1:3] == (low_h, low_w)  # both callers pass low = ceil(high / 2)
    return windows.permute(0, 1, 2, 4, 5, 3)


def _scatter_taps(taps: Tensor, height: int, width: int, init: Tensor | None = None) -> Tensor:
    """The adjoint of _gather_taps: (N, h, w, 3, 3, C) -> (N, height, width, C), each tap added at
    its high pixel; the sum starts from init (per channel) or zero. Nine strided adds, where
    F.fold / unfold's backward took 1-2 ms each on the VAE's 2x2 maps."""
    n, h, w, _, _, c = taps.shape
    if init is None:
        padded = taps.new_zeros(n, height + 2, width + 2, c)
    else:
        padded = init.to(taps.dtype).expand(n, height + 2, width + 2, c).clone()
    for kh in range(3):
        for kw in range(3):
            padded[:, kh : kh + 2 * h : 2, kw : kw + 2 * w : 2] += taps[:, :, :, kh, kw]
    return padded[:, 1 : height + 1, 1 : width + 1]


def _nhwc(x: Tensor) -> Tensor:
    """(N, C, H, W) -> its (N, H, W, C) view: free for channels-last memory."""
    return x.permute(0, 2, 3, 1)


def _nchw(x: Tensor) -> Tensor:
    """(N, H, W, C) -> NCHW shape with channels-last memory."""
    return x.contiguous().permute(0, 3, 1, 2)


class _Conv3x3S2Gemm(torch.autograd.Function):
    """conv2d(x, weight, bias, stride=2, padding=1), 3x3: im2col over NHWC + one GEMM."""

    @staticmethod
    @torch.amp.custom_fwd(device_type="cpu")
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        n, c, h, w = x.shape
        ho, wo = (h + 1) // 2, (w + 1) // 2
        cols = _gather_taps(_nhwc(x), ho, wo).reshape(n * ho * wo, 9 * c)  # rows: pixels; (kh, kw, c)
        wmat = _nhwc(weight).reshape(weight.shape[0], 9 * c)  # (out, kh, kw, in): free if channels-last
        y = cols @ wmat.t() if bias is None else torch.addmm(bias, cols, wmat.t())
        ctx.save_for_backward(cols, wmat)
        ctx.sizes, ctx.has_bias = (n, h, w, ho, wo), bias is not None
        return _nchw(y.view(n, ho, wo, -1))

    @staticmethod
    @torch.autograd.function.once_differentiable
    @torch.amp.custom_bwd(device_type="cpu")
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
        cols, wmat = ctx.saved_tensors
        n, h, w, ho, wo = ctx.sizes
        g = _nhwc(grad).reshape(n * ho * wo, -1)
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = _nchw(_scatter_taps((g @ wmat).view(n, ho, wo, 3, 3, -1), h, w))
        if ctx.needs_input_grad[1]:
            grad_w = (g.t() @ cols).view(g.shape[1], 3, 3, -1).permute(0, 3, 1, 2)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = g.sum(0)
        return grad_x, grad_w, grad_b


class _ConvTranspose3x3S2Gemm(torch.autograd.Function):
    """conv_transpose2d(x, weight, bias, stride=2, padding=1, output_padding=1), 3x3: one GEMM
    gives every input pixel's 3x3 footprint, and the footprints are added at their places."""

    @staticmethod
    @torch.amp.custom_fwd(device_type="cpu")
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        n, cin, h, w = x.shape
        rows = _nhwc(x).reshape(n * h * w, cin)
        wmat = _nhwc(weight).reshape(cin, 9 * weight.shape[1])  # (in, kh, kw, out): free if channels-last
        y = _scatter_taps((rows @ wmat).view(n, h, w, 3, 3, -1), 2 * h, 2 * w, bias)
        ctx.save_for_backward(rows, wmat)
        ctx.sizes, ctx.has_bias = (n, h, w), bias is not None
        return _nchw(y)

    @staticmethod
    @torch.autograd.function.once_differentiable
    @torch.amp.custom_bwd(device_type="cpu")
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
        rows, wmat = ctx.saved_tensors
        n, h, w = ctx.sizes
        g = _nhwc(grad)
        taps = _gather_taps(g, h, w).reshape(n * h * w, -1)
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = _nchw((taps @ wmat.t()).view(n, h, w, -1))
        if ctx.needs_input_grad[1]:
            grad_w = (rows.t() @ taps).view(rows.shape[1], 3, 3, -1).permute(0, 3, 1, 2)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = g.sum((0, 1, 2))
        return grad_x, grad_w, grad_b


def conv3x3s2_gemm(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """conv2d(x, weight, bias, stride=2, padding=1) for a 3x3 kernel, as im2col over NHWC + one GEMM."""
    return _Conv3x3S2Gemm.apply(x, weight, bias)


def conv_transpose3x3s2_gemm(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """conv_transpose2d(x, weight, bias, stride=2, padding=1, output_padding=1), as one GEMM + tap adds."""
    return _ConvTranspose3x3S2Gemm.apply(x, weight, bias)


TAPS_CHUNK_ELEMENTS = 1 << 20  # 4 MiB of fp32 tap planes at a time


def _taps(x: Tensor, weight: Tensor) -> Tensor:
    """Every tap's contribution x * weight[:, :, kh, kw] at every pixel: (3, 3, N, out, H, W), a view."""
    n, c, h, w = x.shape
    cout = weight.shape[0]
    w27 = weight.permute(2, 3, 0, 1).reshape(9 * cout, c).to(x.dtype)  # rows (kh, kw, out)
    if x.is_contiguous() or not x.is_contiguous(memory_format=torch.channels_last):
        y = torch.matmul(w27, x.reshape(n, c, h * w))  # (N, 9*out, H*W), one GEMM per image
        return y.view(n, 3, 3, cout, h, w).permute(1, 2, 0, 3, 4, 5)
    # Channels-last: the pixels form one (N*H*W, C) matrix, so a single GEMM gives the tap planes.
    y = w27 @ _nhwc(x).reshape(n * h * w, c).t()  # (9*out, N*H*W)
    return y.view(3, 3, cout, n, h, w).transpose(2, 3)


def _flipped(weight: Tensor, like: Tensor) -> Tensor:
    """The kernel of the transposed convolution computing the same map: flipped, in/out swapped."""
    memory_format = torch.channels_last if _channels_last(like) else torch.contiguous_format
    return weight.flip(2, 3).transpose(0, 1).contiguous(memory_format=memory_format)


def _channels_last(x: Tensor) -> bool:
    return not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)


def _shift_add(taps: Tensor, bias: Tensor | None, out: Tensor) -> None:
    """out = bias + the sum of the nine tap planes, each shifted by its kernel offset."""
    h, w = out.shape[-2:]
    if bias is None:
        out.copy_(taps[1, 1])
    else:
        torch.add(taps[1, 1], bias.to(out.dtype).view(1, -1, 1, 1), out=out)
    for kh in range(3):
        for kw in range(3):
            if (kh, kw) == (1, 1):
                continue
            dh, dw = kh - 1, kw - 1  # out[p] += tap[p + d] wherever p + d is inside the image
            out[:, :, max(0, -dh) : h - max(0, dh), max(0, -dw) : w - max(0, dw)] += taps[
                kh, kw, :, :, max(0, dh) : h + min(0, dh), max(0, dw) : w + min(0, dw)
            ]


class _Conv3x3FewOut(torch.autograd.Function):
    """conv2d(x, weight, bias, padding=1) for a 3x3 kernel with few output channels."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        n, _, h, w = x.shape
        out = torch.empty(n, weight.shape[0], h, w, dtype=x.dtype, device=x.device)
        # A few images at a time: the tap planes are 9x the output, and whole they would sit on top
        # of the step's peak memory (28 MB more at batch 64, 64x64); chunking did not change the time.
        chunk = max(1, TAPS_CHUNK_ELEMENTS // (9 * out[0].numel()))
        for start in range(0, n, chunk):
            _shift_add(_taps(x[start : start + chunk], weight), bias, out[start : start + chunk])
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
        x, weight = ctx.saved_tensors
        memory_format = torch.channels_last if _channels_last(x) else torch.contiguous_format
        grad = grad.contiguous(memory_format=memory_format)
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:  # oneDNN's own input gradient: fast from few channels
            grad_x = torch.ops.aten.convolution_backward(
                grad, x, weight.to(grad.dtype), None, [1, 1], [1, 1], [1, 1], False, [0, 0], 1, [True, False, False]
            )[0]
        if ctx.needs_input_grad[1]:
            # y = conv_transpose2d(x, flipped): that layer's weight gradient is ours, flipped back.
            flipped = _flipped(weight, x)
            grad_flipped = torch.ops.aten.convolution_backward(
                grad, x, flipped, None, [1, 1], [1, 1], [1, 1], True, [0, 0], 1, [False, True, False]
            )[1]
            grad_w = grad_flipped.flip(2, 3).transpose(0, 1).to(weight.dtype)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = grad.sum((0, 2, 3))
        return grad_x, grad_w, grad_b


def conv3x3_few_out(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """conv2d(x, weight, bias, padding=1) for a 3x3 kernel, computed for few output channels."""
    return _Conv3x3FewOut.apply(x, weight, bias)


class _AddChannelBias(torch.autograd.Function):
    """y += bias per channel, in place; the bias gradient as a matrix-vector product."""

    @staticmethod
    def forward(ctx, y: Tensor, bias: Tensor) -> Tensor:
        ctx.mark_dirty(y)
        ctx.bias_dtype = bias.dtype
        return y.add_(bias.to(y.dtype).view(1, -1, 1, 1))

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: Tensor) -> tuple[Tensor, Tensor | None]:
        grad_b = None
        if ctx.needs_input_grad[1]:
            if _channels_last(grad):  # pixels x channels: BLAS's gemv read it in 1.6 ms, sum() in 2.6 (64x32x64x64)
                g = _nhwc(grad).reshape(-1, grad.shape[1])
                grad_b = torch.mv(g.t(), g.new_ones(g.shape[0]))
            else:
                grad_b = grad.sum((0, 2, 3))
            grad_b = grad_b.to(ctx.bias_dtype)
        return grad, grad_b


def add_channel_bias(y: Tensor, bias: Tensor) -> Tensor:
    """y += bias per channel, in place, with the bias gradient as a matrix-vector product."""
    return _AddChannelBias.apply(y, bias)
