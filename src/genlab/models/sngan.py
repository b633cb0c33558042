"""SNGAN (Miyato et al. 2018): the DCGAN backbone with spectral norm on every discriminator layer.

Spectral normalisation divides each weight by its largest singular value (one power iteration a
step), which bounds D's Lipschitz constant layer by layer; D has no BatchNorm. The loss is the
hinge loss by default (loss.adversarial = "hinge"), or the non-saturating BCE ("bce").
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from genlab.models.dcgan import DCGANDiscriminator, DCGANGenerator, levels


@dataclass(frozen=True)
class SNGANConfig:
    latent_dim: int = 128  # Miyato et al.'s standard CNN
    img_shape: tuple[int, int, int] = (1, 28, 28)
    width: int = 64

    def validate(self) -> None:
        from genlab.errors import ConfigError

        if self.latent_dim <= 0 or self.width <= 0:
            raise ConfigError(f"model.latent_dim and model.width must be >= 1, got {self.latent_dim} and {self.width}")
        levels(self.img_shape[-1])


class SNGAN(nn.Module):
    """DCGAN generator; discriminator with spectral norm on every layer and no BatchNorm."""

    def __init__(self, latent_dim: int = 128, img_shape: Sequence[int] = (1, 28, 28), width: int = 64) -> None:
        super().__init__()
        self.config = SNGANConfig(latent_dim, tuple(img_shape), width)
        self.config.validate()
        self.generator = DCGANGenerator(latent_dim, img_shape, width)
        self.discriminator = DCGANDiscriminator(img_shape, width, "spectral")

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        device = next(self.generator.parameters()).device
        return self.generator(torch.randn(n, self.config.latent_dim, device=device, generator=generator))
