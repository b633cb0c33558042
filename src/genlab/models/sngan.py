"""SNGAN (Miyato et al. 2018): the DCGAN backbone with spectral norm on every discriminator layer.

Spectral normalisation divides each weight by its largest singular value (one power iteration a
step), which bounds D's Lipschitz constant layer by layer; D has no BatchNorm. The loss is the
hinge loss by default (loss.adversarial = "hinge"), or the non-saturating BCE ("bce").
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from genlab.models.dcgan import ConvGAN, DCGANConfig, DCGANDiscriminator, DCGANGenerator


@dataclass(frozen=True)
class SNGANConfig(DCGANConfig):
    latent_dim: int = 128  # Miyato et al.'s standard CNN


class SNGAN(ConvGAN):
    """DCGAN generator; discriminator with spectral norm on every layer and no BatchNorm."""

    def __init__(self, latent_dim: int = 128, img_shape: Sequence[int] = (1, 28, 28), width: int = 64) -> None:
        super().__init__()
        self.config = SNGANConfig(latent_dim, tuple(img_shape), width)
        self.config.validate()
        self.generator = DCGANGenerator(latent_dim, img_shape, width)
        self.discriminator = DCGANDiscriminator(img_shape, width, "spectral")
