"""FactorVAE (Kim & Mnih 2018): a VAE whose aggregate posterior q(z) is pushed towards the product of its
marginals by a discriminator that tells codes from codes permuted dimension by dimension.

The VAE is genlab's (any `model.arch`); the total-correlation discriminator is the paper's and
disentanglement_lib's fc_discriminator: 6 layers of 1000 units, LeakyReLU(0.2), 2 logits (the code came
from q(z), or from the product of marginals). TC(z) ~ E[logit_0 - logit_1], the density-ratio trick.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from genlab.models.vae import VAEConfig, VanillaVAE


@dataclass(frozen=True)
class FactorVAEConfig(VAEConfig):
    # Kim & Mnih's and disentanglement_lib's setting: 10 latents, a Bernoulli decoder on binary 64x64 images.
    in_channels: int = 1
    latent_dim: int = 10
    decoder: str = "bernoulli"
    arch: str = "standard"
    d_hidden: int = 1000
    d_layers: int = 6

    def validate(self) -> None:
        from genlab.errors import ConfigError

        super().validate()
        if self.d_hidden < 1 or self.d_layers < 1:
            raise ConfigError(f"model.d_hidden and model.d_layers must be >= 1, got {self.d_hidden} and {self.d_layers}")


def permute_dims(z: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Each column of z (B, D) shuffled on its own: samples of prod_d q(z_d) from samples of q(z)."""
    order = torch.argsort(torch.rand(z.shape, device=z.device, generator=generator), dim=0)
    return torch.gather(z, 0, order)


class TCDiscriminator(nn.Module):
    """(B, latent_dim) -> (B, 2) logits: [from q(z), from the product of its marginals]."""

    def __init__(self, latent_dim: int, hidden: int = 1000, layers: int = 6) -> None:
        super().__init__()
        dims = (latent_dim, *([hidden] * layers))
        blocks: list[nn.Module] = []
        for a, b in zip(dims, dims[1:]):
            blocks += [nn.Linear(a, b), nn.LeakyReLU(0.2, inplace=True)]
        self.net = nn.Sequential(*blocks, nn.Linear(dims[-1], 2))

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z)


class FactorVAE(VanillaVAE):
    """A VanillaVAE (the notes' network or the literature's) with a total-correlation discriminator."""

    def __init__(
        self,
        in_channels: int = 1,
        latent_dim: int = 10,
        hidden_dims: Sequence[int] | None = None,
        image_size: int = 64,
        decoder: str = "bernoulli",
        arch: str = "standard",
        d_hidden: int = 1000,
        d_layers: int = 6,
    ) -> None:
        super().__init__(in_channels, latent_dim, hidden_dims, image_size, decoder, arch)
        self.config = FactorVAEConfig(**{**self.config.__dict__, "d_hidden": d_hidden, "d_layers": d_layers})
        self.config.validate()
        self.discriminator = TCDiscriminator(latent_dim, d_hidden, d_layers)

    def vae_parameters(self) -> list[nn.Parameter]:
        """Everything but the discriminator: what the VAE's optimiser moves."""
        return [p for name, p in self.named_parameters() if not name.startswith("discriminator.")]
