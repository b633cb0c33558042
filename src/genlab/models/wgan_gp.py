"""WGAN-GP (Gulrajani et al. 2017): a critic without BatchNorm, trained with a gradient penalty.

The critic scores images on an unbounded scale (no Sigmoid); E[D(x)] - E[D(G(z))] estimates the
Wasserstein-1 distance once D is near 1-Lipschitz, which the penalty on ||grad D|| at points
between real and fake images asks for. BatchNorm would make that gradient depend on the rest of the
batch, so the critic has no normalisation. The generator is DCGAN's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from torch import Tensor, nn

from genlab.models.dcgan import ConvGAN, DCGANConfig, DCGANGenerator, conv_discriminator, init_weights


@dataclass(frozen=True)
class WGANGPConfig(DCGANConfig):
    latent_dim: int = 128


class Critic(nn.Module):
    """(B, C, H, W) -> (B, 1) unbounded scores; logits is accepted and ignored (there is no Sigmoid)."""

    def __init__(self, img_shape: Sequence[int] = (1, 28, 28), width: int = 64) -> None:
        super().__init__()
        self.model = conv_discriminator(img_shape, width, "none")
        init_weights(self)

    def forward(self, img: Tensor, logits: bool = True) -> Tensor:
        return self.model(img)


class WGANGP(ConvGAN):
    critic = True  # the discriminator is a critic: scores, not probabilities

    def __init__(self, latent_dim: int = 128, img_shape: Sequence[int] = (1, 28, 28), width: int = 64) -> None:
        super().__init__()
        self.config = WGANGPConfig(latent_dim, tuple(img_shape), width)
        self.config.validate()
        self.generator = DCGANGenerator(latent_dim, img_shape, width)
        self.discriminator = Critic(img_shape, width)
