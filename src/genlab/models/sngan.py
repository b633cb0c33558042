"""SNGAN (Miyato et al. 2018): DCGAN's generator against the paper's "standard CNN" discriminator with
spectral norm on every layer.

The standard CNN (the paper's Table 3; Miyato's SNDCGANDiscriminator in chainer-gan-lib) alternates
3x3 stride-1 and 4x4 stride-2 convolutions, 64-64-128-128-256-256-512 channels at width 64, with
LeakyReLU(0.1), then one linear logit over the last map (4x4 at 32x32, 3x3 at 28x28). Spectral
normalisation divides each weight by its largest singular value (one power iteration per forward
in training), bounding D's Lipschitz constant layer by layer; D has no BatchNorm. Weights start
from N(0, 0.02) before normalisation. The loss is the hinge loss by default.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from genlab.models.dcgan import ConvGAN, DCGANConfig, DCGANDiscriminator, DCGANGenerator, init_weights

D_ARCHS = ("standard", "dcgan")  # "dcgan": genlab's first SNGAN, DCGAN's D with spectral norm (runs made before)


@dataclass(frozen=True)
class SNGANConfig(DCGANConfig):
    latent_dim: int = 128  # Miyato et al.'s standard CNN
    d_arch: str = "standard"
    # What a run saved before d_arch existed was: it loads as it trained.
    LEGACY: ClassVar[dict[str, Any]] = {"d_arch": "dcgan"}

    def validate(self) -> None:
        from genlab.errors import ConfigError

        super().validate()
        if self.d_arch not in D_ARCHS:
            raise ConfigError(f"model.d_arch must be one of {', '.join(D_ARCHS)}, got {self.d_arch!r}")


def standard_cnn(img_shape: Sequence[int], width: int) -> tuple[nn.Sequential, int]:
    """Miyato et al.'s standard CNN body with spectral norm, (B, C, H, W) -> (B, features); and features."""
    sn = nn.utils.parametrizations.spectral_norm
    chans = [img_shape[0], width, width, 2 * width, 2 * width, 4 * width, 4 * width, 8 * width]
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(chans, chans[1:])):
        # Even layers keep the size (3x3, stride 1), odd ones halve it (4x4, stride 2): 3 halvings in all.
        conv = nn.Conv2d(a, b, 3, 1, 1) if i % 2 == 0 else nn.Conv2d(a, b, 4, 2, 1)
        layers += [sn(conv), nn.LeakyReLU(0.1, inplace=True)]
    side = img_shape[-1]
    for _ in range(3):
        side //= 2  # (s + 2 - 4) // 2 + 1
    return nn.Sequential(*layers, nn.Flatten()), 8 * width * side * side


class StandardCNNDiscriminator(nn.Module):
    """(B, C, H, W) -> (B, 1): the probability that the image is real, or its logit (logits=True)."""

    def __init__(self, img_shape: Sequence[int] = (1, 28, 28), width: int = 64) -> None:
        super().__init__()
        self.body, features = standard_cnn(img_shape, width)
        self.linear = nn.utils.parametrizations.spectral_norm(nn.Linear(features, 1))
        init_weights(self)

    def forward(self, img: Tensor, logits: bool = False) -> Tensor:
        out = self.linear(self.body(img))
        return out if logits else torch.sigmoid(out)


class SNGAN(ConvGAN):
    """DCGAN generator; the standard CNN discriminator with spectral norm on every layer and no BatchNorm."""

    def __init__(
        self, latent_dim: int = 128, img_shape: Sequence[int] = (1, 28, 28), width: int = 64, d_arch: str = "standard"
    ) -> None:
        super().__init__()
        self.config = SNGANConfig(latent_dim, tuple(img_shape), width, d_arch)
        self.config.validate()
        self.generator = DCGANGenerator(latent_dim, img_shape, width)
        if d_arch == "standard":
            self.discriminator = StandardCNNDiscriminator(img_shape, width)
        else:
            self.discriminator = DCGANDiscriminator(img_shape, width, "spectral")
