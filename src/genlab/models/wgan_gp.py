"""WGAN-GP (Gulrajani et al. 2017): a critic without BatchNorm, trained with a gradient penalty.

The critic scores images on an unbounded scale (no Sigmoid); E[D(x)] - E[D(G(z))] estimates the
Wasserstein-1 distance once D is near 1-Lipschitz, which the penalty on ||grad D|| at points
between real and fake images asks for. BatchNorm would make that gradient depend on the rest of the
batch, so the critic has no normalisation. The generator is DCGAN's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from genlab.models.dcgan import DCGANGenerator, conv_discriminator, init_weights, levels


@dataclass(frozen=True)
class WGANGPConfig:
    latent_dim: int = 128
    img_shape: tuple[int, int, int] = (1, 28, 28)
    width: int = 64

    def validate(self) -> None:
        from genlab.errors import ConfigError

        if self.latent_dim <= 0 or self.width <= 0:
            raise ConfigError(f"model.latent_dim and model.width must be >= 1, got {self.latent_dim} and {self.width}")
        levels(self.img_shape[-1])


class Critic(nn.Module):
    """(B, C, H, W) -> (B, 1) unbounded scores; logits is accepted and ignored (there is no Sigmoid)."""

    def __init__(self, img_shape: Sequence[int] = (1, 28, 28), width: int = 64) -> None:
        super().__init__()
        self.model = conv_discriminator(img_shape, width, "none")
        init_weights(self)

    def forward(self, img: Tensor, logits: bool = True) -> Tensor:
        return self.model(img)


class WGANGP(nn.Module):
    critic = True  # the discriminator is a critic: scores, not probabilities

    def __init__(self, latent_dim: int = 128, img_shape: Sequence[int] = (1, 28, 28), width: int = 64) -> None:
        super().__init__()
        self.config = WGANGPConfig(latent_dim, tuple(img_shape), width)
        self.config.validate()
        self.generator = DCGANGenerator(latent_dim, img_shape, width)
        self.discriminator = Critic(img_shape, width)

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        device = next(self.generator.parameters()).device
        return self.generator(torch.randn(n, self.config.latent_dim, device=device, generator=generator))
