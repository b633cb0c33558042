"""genlab.kernels behind the VAE's layers compute what the direct kernels do: outputs and gradients."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from genlab.kernels import conv_gemm
from genlab.losses import vae_loss
from genlab.models import VanillaVAE
from genlab.models.layers import Downsample2x, ToImage2d, Upsample2x, set_fast_paths


def _outputs_and_grads(layer: nn.Module, x: torch.Tensor, params: list | None = None) -> list[torch.Tensor]:
    x = x.detach().requires_grad_(True)
    y = layer(x)
    # A loss whose gradient varies per pixel and channel, so that no term can cancel by symmetry.
    loss = (y * torch.linspace(-1, 1, y.numel()).view_as(y)).sum() + y.square().sum()
    return [y, *torch.autograd.grad(loss, [x, *(params or [layer.weight, layer.bias])])]


# 2x2 and 1x1 maps take the GEMM formulations, larger ones the direct kernel (+ bias outside it).
@pytest.mark.parametrize("cin,cout,size", [(64, 48, 2), (16, 8, 1), (16, 8, 4), (3, 5, 7), (8, 4, 3)])
@pytest.mark.parametrize("channels_last", [False, True])
def test_stride2_fast_paths_equal_direct_kernels(cin: int, cout: int, size: int, channels_last: bool) -> None:
    torch.manual_seed(0)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    for layer, ref in (
        (Downsample2x(cin, cout), nn.Conv2d(cin, cout, 3, stride=2, padding=1)),
        (Upsample2x(cin, cout), nn.ConvTranspose2d(cin, cout, 3, stride=2, padding=1, output_padding=1)),
    ):
        ref.load_state_dict(layer.state_dict())
        layer, ref = layer.to(memory_format=fmt), ref.to(memory_format=fmt)
        x = torch.randn(3, cin, size, size).contiguous(memory_format=fmt)
        got, want = _outputs_and_grads(layer, x), _outputs_and_grads(ref, x)
        assert got[0].shape == want[0].shape
        for a, b in zip(got, want):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_stride2_gemm_paths_under_bf16_autocast_match_the_direct_kernels() -> None:
    # The GEMM formulations run their products in bf16 like the direct kernels do under autocast,
    # and hand back float32 gradients for the float32 parameters.
    torch.manual_seed(0)
    fmt = torch.channels_last
    for layer, ref in (
        (Downsample2x(64, 48), nn.Conv2d(64, 48, 3, stride=2, padding=1)),
        (Upsample2x(64, 48), nn.ConvTranspose2d(64, 48, 3, stride=2, padding=1, output_padding=1)),
    ):
        ref.load_state_dict(layer.state_dict())
        layer, ref = layer.to(memory_format=fmt), ref.to(memory_format=fmt)
        x = torch.randn(3, 64, 2, 2).contiguous(memory_format=fmt)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            got, want = _outputs_and_grads(layer, x), _outputs_and_grads(ref, x)
        assert got[0].dtype == want[0].dtype == torch.bfloat16
        assert [g.dtype for g in got[1:]] == [torch.float32] * 3
        for a, b in zip(got, want):
            torch.testing.assert_close(a.float(), b.float(), rtol=0.05, atol=0.05 * b.detach().abs().max().item())


# Up to 4 output channels the GEMM + shifted-adds forward and the transposed weight gradient; 5 the direct kernel.
@pytest.mark.parametrize("cin,cout,height,width", [(32, 3, 16, 16), (8, 1, 7, 9), (5, 2, 1, 1), (6, 4, 2, 3), (4, 5, 6, 6)])
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("bias", [True, False])
def test_to_image_conv_equals_the_direct_kernel(
    cin: int, cout: int, height: int, width: int, channels_last: bool, bias: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(conv_gemm, "TAPS_CHUNK_ELEMENTS", 2 * 9 * cout * height * width)  # chunks of 2 and 1 images
    torch.manual_seed(0)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    layer, ref = ToImage2d(cin, cout), nn.Conv2d(cin, cout, 3, padding=1)
    if not bias:
        layer.bias = ref.bias = None
    ref.load_state_dict(layer.state_dict())
    layer, ref = layer.to(memory_format=fmt), ref.to(memory_format=fmt)
    x = torch.randn(3, cin, height, width).contiguous(memory_format=fmt)
    params = lambda m: [m.weight] + ([m.bias] if bias else [])  # noqa: E731
    for a, b in zip(_outputs_and_grads(layer, x, params(layer)), _outputs_and_grads(ref, x, params(ref))):
        # Sums of hundreds of products in another order: float rounding relative to their scale.
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5 * b.detach().abs().max().item())


def test_vae_fast_paths_train_like_the_direct_kernels() -> None:
    torch.manual_seed(0)
    fast = VanillaVAE(3, 16, image_size=64)
    ref = set_fast_paths(VanillaVAE(3, 16, image_size=64), False)
    ref.load_state_dict(fast.state_dict())
    for m in ref.modules():
        if isinstance(m, nn.LeakyReLU):
            m.inplace = False  # the reference's activations
    # Both channels-last, so that only the layer formulations differ (NHWC vs NCHW is tested apart).
    fast, ref = fast.to(memory_format=torch.channels_last), ref.to(memory_format=torch.channels_last)
    x = (torch.rand(4, 3, 64, 64) * 2 - 1).contiguous(memory_format=torch.channels_last)
    losses = []
    for model in (fast, ref):
        torch.manual_seed(1)
        recons, _, mu, logvar = model(x)
        loss = vae_loss(recons, x, mu, logvar, 0.00025)["loss"]
        loss.backward()
        losses.append(loss.detach())
    torch.testing.assert_close(losses[0], losses[1], rtol=1e-6, atol=1e-7)
    for (name, a), b in zip(fast.named_parameters(), ref.parameters()):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-4, atol=1e-7, msg=name)
