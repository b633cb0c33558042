"""DCGAN (Radford et al. 2015): a generator of transposed convolutions and a strided-conv discriminator.

Faithful to the paper rather than to PyTorch-GAN's dcgan.py (which upsamples by interpolation and
breaks at 28x28): G projects z to a small map with one transposed convolution, then doubles it with
4x4 stride-2 transposed convolutions, BatchNorm and ReLU, Tanh at the end; D halves with 4x4
stride-2 convolutions and LeakyReLU(0.2), BatchNorm on every layer but the input one, and one
logit from a convolution over the last map. Weights start from N(0, 0.02) (BatchNorm scales
N(1, 0.02)). Sizes: 28 (7 -> 14 -> 28) and any 4 * 2^k (32, 64, ...).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn


@dataclass(frozen=True)
class DCGANConfig:
    """What a DCGAN run reads from its config and saves beside its weights."""

    latent_dim: int = 100
    img_shape: tuple[int, int, int] = (1, 28, 28)
    width: int = 64  # channels of D's first layer and G's last hidden one; doubled each level (32: a CPU-minutes model)

    def validate(self) -> None:
        from genlab.errors import ConfigError

        if self.latent_dim <= 0 or self.width <= 0:
            raise ConfigError(f"model.latent_dim and model.width must be >= 1, got {self.latent_dim} and {self.width}")
        if len(self.img_shape) != 3 or self.img_shape[1] != self.img_shape[2]:
            raise ConfigError(f"model.img_shape must be [channels, size, size], got {list(self.img_shape)}")
        levels(self.img_shape[-1])  # raises for sizes the architecture cannot make


def levels(size: int) -> tuple[int, int]:
    """(first map size, number of doublings) for an image size: 28 -> (7, 2), 32 -> (4, 3), 64 -> (4, 4)."""
    from genlab.errors import ConfigError

    for start in (4, 7):
        k, s = 0, start
        while s < size:
            s, k = s * 2, k + 1
        if s == size and k >= 1:
            return start, k
    raise ConfigError(f"a DCGAN makes 28x28 or 4*2^k (32, 64, 128) images, not {size}x{size}; set model.img_shape")


def init_weights(module: nn.Module) -> None:
    """The DCGAN paper's initialisation: N(0, 0.02) weights, BatchNorm scales N(1, 0.02), zero biases.

    A spectral-normed layer's `weight` is computed (W / sigma) on every access, so the draw goes into
    the parametrisation's `original`, as Miyato et al.'s code initialises the unnormalised W.
    """
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear, nn.Embedding)):
            parametrized = nn.utils.parametrize.is_parametrized(m, "weight")
            weight = m.parametrizations.weight.original if parametrized else m.weight
            with torch.no_grad():
                weight.normal_(0.0, 0.02)
            if getattr(m, "bias", None) is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d) and m.affine:
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


class DCGANGenerator(nn.Module):
    """z -> ConvT(k=start) to a start x start map -> [ConvT(4, 2, 1), BN, ReLU] x k -> C channels, Tanh."""

    def __init__(
        self,
        latent_dim: int = 100,
        img_shape: Sequence[int] = (1, 28, 28),
        width: int = 64,
        norm: Callable[[int], nn.Module] = nn.BatchNorm2d,
    ) -> None:
        super().__init__()
        self.latent_dim, self.img_shape = latent_dim, tuple(img_shape)
        start, k = levels(self.img_shape[-1])
        chans = [width * 2 ** (k - 1 - i) for i in range(k)]  # e.g. k=3: 4w, 2w, w
        layers: list[nn.Module] = [
            nn.ConvTranspose2d(latent_dim, chans[0], start, 1, 0, bias=False),
            norm(chans[0]),
            nn.ReLU(inplace=True),
        ]
        for a, b in zip(chans, chans[1:]):
            layers += [nn.ConvTranspose2d(a, b, 4, 2, 1, bias=False), norm(b), nn.ReLU(inplace=True)]
        layers += [nn.ConvTranspose2d(chans[-1], self.img_shape[0], 4, 2, 1), nn.Tanh()]
        self.model = nn.Sequential(*layers)
        init_weights(self)

    def stem(self, z: Tensor) -> Tensor:
        """The first block's activations, flattened (the explorer's principal directions)."""
        return self.model[:3](z.view(z.size(0), -1, 1, 1)).flatten(1)

    def forward(self, z: Tensor) -> Tensor:
        """(B, latent_dim) -> (B, C, H, W) in [-1, 1]."""
        return self.model(z.view(z.size(0), -1, 1, 1))


def conv_discriminator(img_shape: Sequence[int], width: int, norm: str) -> nn.Sequential:
    """Strided 4x4 convolutions down to the first map size, LeakyReLU(0.2), a logit from the last map.

    norm: "batch" (DCGAN: BatchNorm on all but the input layer) or "spectral" (SNGAN: spectral norm
    on every layer, no BatchNorm) or "none" (WGAN-GP's critic).
    """
    start, k = levels(img_shape[-1])
    sn = nn.utils.parametrizations.spectral_norm if norm == "spectral" else (lambda m: m)
    chans = [img_shape[0]] + [width * 2**i for i in range(k)]
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(chans, chans[1:])):
        layers.append(sn(nn.Conv2d(a, b, 4, 2, 1, bias=norm != "batch" or i == 0)))
        if norm == "batch" and i > 0:
            layers.append(nn.BatchNorm2d(b))
        layers.append(nn.LeakyReLU(0.2, inplace=True))
    layers += [sn(nn.Conv2d(chans[-1], 1, start, 1, 0)), nn.Flatten()]
    return nn.Sequential(*layers)


class DCGANDiscriminator(nn.Module):
    """(B, C, H, W) -> (B, 1): the probability that the image is real, or its logit (logits=True)."""

    def __init__(self, img_shape: Sequence[int] = (1, 28, 28), width: int = 64, norm: str = "batch") -> None:
        super().__init__()
        self.model = conv_discriminator(img_shape, width, norm)
        init_weights(self)

    def forward(self, img: Tensor, logits: bool = False) -> Tensor:
        out = self.model(img)
        return out if logits else torch.sigmoid(out)


class ConvGAN(nn.Module):
    """A generator and a discriminator (or critic) of one run, with the config that built them."""

    config: DCGANConfig
    generator: nn.Module

    def sample(self, n: int, generator: torch.Generator | None = None, *, temperature: float = 1.0) -> Tensor:
        """n images G(z), z ~ N(0, temperature^2 I), in [-1, 1]."""
        device = next(self.generator.parameters()).device
        return self.generator(temperature * torch.randn(n, self.config.latent_dim, device=device, generator=generator))


class DCGAN(ConvGAN):
    def __init__(self, latent_dim: int = 100, img_shape: Sequence[int] = (1, 28, 28), width: int = 64) -> None:
        super().__init__()
        self.config = DCGANConfig(latent_dim, tuple(img_shape), width)
        self.config.validate()
        self.generator = DCGANGenerator(latent_dim, img_shape, width)
        self.discriminator = DCGANDiscriminator(img_shape, width, "batch")
