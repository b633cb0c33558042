"""A class-conditional VAE: the notes' VAE with the label given to the encoder and the decoder.

q(z|x, y) and p(x|z, y) (Sohn et al. 2015): the encoder sees the image with one more channel, a
learned map of the class (as PyTorch-VAE's ConditionalVAE), and the decoder's first layer takes
[z, one-hot(y)]. Everything else is the notes' VanillaVAE, layer for layer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from genlab.models.cgan import balanced_labels
from genlab.models.layers import Downsample2x
from genlab.models.vae import DEFAULT_HIDDEN_DIMS, VAEConfig, VanillaVAE


@dataclass(frozen=True)
class CVAEConfig(VAEConfig):
    num_classes: int = 10

    def validate(self) -> None:
        from genlab.errors import ConfigError

        super().validate()
        if self.num_classes < 2:
            raise ConfigError(f"model.num_classes must be >= 2, got {self.num_classes}")


class CVAE(nn.Module):
    def __init__(
        self,
        in_channels: int = 3,
        latent_dim: int = 128,
        hidden_dims: Sequence[int] | None = None,
        image_size: int = 64,
        decoder: str = "gaussian",
        num_classes: int = 10,
    ) -> None:
        super().__init__()
        hidden = tuple(DEFAULT_HIDDEN_DIMS if hidden_dims is None else hidden_dims)
        self.config = CVAEConfig(in_channels, latent_dim, hidden, image_size, decoder, num_classes)
        self.config.validate()
        self.latent_dim, self.num_classes = latent_dim, num_classes
        self.vae = VanillaVAE(in_channels, latent_dim, hidden, image_size, decoder)
        # The two layers that see the label: the first convolution (one more input channel) and the decoder's input.
        self.vae.encoder[0][0] = Downsample2x(in_channels + 1, hidden[0])
        self.vae.decoder_input = nn.Linear(latent_dim + num_classes, self.vae.decoder_input.out_features)
        self.embed_class = nn.Linear(num_classes, image_size * image_size)

    @property
    def log_sigma(self) -> Tensor:
        """The σ-VAE decoder's calibrated log sigma (decoder = "sigma"), held by the inner VAE."""
        return self.vae.log_sigma

    def _one_hot(self, labels: Tensor, like: Tensor) -> Tensor:
        return F.one_hot(labels, self.num_classes).to(like.dtype)

    def encode(self, x: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        plane = self.embed_class(self._one_hot(labels, x)).view(-1, 1, *x.shape[-2:])
        return self.vae.encode(torch.cat([x, plane.to(memory_format=torch.contiguous_format)], dim=1))

    def decode(self, z: Tensor, labels: Tensor) -> Tensor:
        return self.vae.decode(torch.cat([z, self._one_hot(labels, z)], dim=1))

    def reparameterize(self, mu: Tensor, logvar: Tensor, generator: torch.Generator | None = None) -> Tensor:
        return self.vae.reparameterize(mu, logvar, generator)

    def forward(self, x: Tensor, labels: Tensor, return_z: bool = False) -> tuple[Tensor, ...]:
        mu, log_var = self.encode(x, labels)
        z = self.reparameterize(mu, log_var)
        return (self.decode(z, labels), x, mu, log_var, z) if return_z else (self.decode(z, labels), x, mu, log_var)

    def sample(self, n: int, generator: torch.Generator | None = None, labels: Tensor | None = None) -> Tensor:
        """n decoded prior draws of the given classes (default: every class in turn), in [-1, 1]."""
        device = self.vae.fc_mu.weight.device
        labels = balanced_labels(n, self.num_classes, device) if labels is None else labels.to(device)
        z = torch.randn(n, self.latent_dim, device=device, generator=generator)
        return self.to_image(self.decode(z, labels))

    def reconstruct(self, x: Tensor, labels: Tensor) -> Tensor:
        return self.to_image(self.decode(self.encode(x, labels)[0], labels))

    def to_image(self, out: Tensor) -> Tensor:
        return self.vae.to_image(out)
