"""A class-conditional VAE: the notes' VAE with a learned class prior p(z|y) and the label in every decoder block.

q(z|x, y) and p(x|z, y) (Sohn et al. 2015). The encoder sees the image with one more channel, a learned
map of the class (as PyTorch-VAE's ConditionalVAE). Two things make the label matter, where [z, one-hot]
into the decoder's first layer alone let a prior draw of z decide the class:
- a learned prior p(z|y) = N(mu_y, diag(sigma_y^2)) per class (prior = "learned");
- every decoder block gets a per-class gain and bias on its output (label = "every_block").

The prior is kept as an affine map of N(0, I): `encode` returns q(z|x, y) in the standardised
coordinates u = (z - mu_y) / sigma_y, and `decode` maps u back (z = mu_y + sigma_y u). KL is invariant
under that map, so KL(q(u|x,y) || N(0, I)) = KL(q(z|x,y) || p(z|y)): the notes' loss, sampling from
N(0, I), traversals and the metrics all apply unchanged. prior = "standard", label = "input" is
genlab's first cVAE, kept so runs made with it load as they trained.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from genlab.models.cgan import balanced_labels
from genlab.models.layers import Downsample2x
from genlab.models.vae import DEFAULT_HIDDEN_DIMS, VAEConfig, VanillaVAE

PRIORS = ("learned", "standard")
LABELS = ("every_block", "input")


@dataclass(frozen=True)
class CVAEConfig(VAEConfig):
    num_classes: int = 10
    prior: str = "learned"
    label: str = "every_block"
    LEGACY: ClassVar[dict[str, Any]] = {"prior": "standard", "label": "input"}

    def validate(self) -> None:
        from genlab.errors import ConfigError

        super().validate()
        if self.arch != "notes":
            raise ConfigError(f"the conditional VAE is built on the notes' network, not model.arch = {self.arch!r}: drop it")
        if self.num_classes < 2:
            raise ConfigError(f"model.num_classes must be >= 2, got {self.num_classes}")
        if self.prior not in PRIORS:
            raise ConfigError(f"model.prior must be one of {', '.join(PRIORS)}, got {self.prior!r}")
        if self.label not in LABELS:
            raise ConfigError(f"model.label must be one of {', '.join(LABELS)}, got {self.label!r}")


class ClassShift(nn.Module):
    """h * (1 + gain_y) + bias_y per channel: the class in a decoder block (starts as the identity)."""

    def __init__(self, channels: int, num_classes: int) -> None:
        super().__init__()
        self.gain, self.bias = nn.Embedding(num_classes, channels), nn.Embedding(num_classes, channels)
        nn.init.zeros_(self.gain.weight)
        nn.init.zeros_(self.bias.weight)

    def forward(self, h: Tensor, labels: Tensor) -> Tensor:
        shape = (h.size(0), -1, 1, 1)
        return h * (1 + self.gain(labels).view(shape)) + self.bias(labels).view(shape)


class CVAE(nn.Module):
    def __init__(
        self,
        in_channels: int = 3,
        latent_dim: int = 128,
        hidden_dims: Sequence[int] | None = None,
        image_size: int = 64,
        decoder: str = "gaussian",
        arch: str = "notes",
        num_classes: int = 10,
        prior: str = "learned",
        label: str = "every_block",
    ) -> None:
        super().__init__()
        hidden = tuple(DEFAULT_HIDDEN_DIMS if hidden_dims is None else hidden_dims)
        self.config = CVAEConfig(in_channels, latent_dim, hidden, image_size, decoder, arch, num_classes, prior, label)
        self.config.validate()
        self.latent_dim, self.num_classes = latent_dim, num_classes
        self.vae = VanillaVAE(in_channels, latent_dim, hidden, image_size, decoder)
        # The layers that see the label: the first convolution (one more input channel) and the decoder's input.
        self.vae.encoder[0][0] = Downsample2x(in_channels + 1, hidden[0])
        self.vae.decoder_input = nn.Linear(latent_dim + num_classes, self.vae.decoder_input.out_features)
        self.embed_class = nn.Linear(num_classes, image_size * image_size)
        if prior == "learned":  # (mu_y, log sigma_y^2) per class, starting at N(0, I)
            self.prior = nn.Embedding(num_classes, 2 * latent_dim)
            nn.init.zeros_(self.prior.weight)
        if label == "every_block":  # after each transposed-conv block, and after the last one's twin in final_layer
            rev = hidden[::-1]
            self.shifts = nn.ModuleList(ClassShift(c, num_classes) for c in (*rev[1:], rev[-1]))

    @property
    def log_sigma(self) -> Tensor:
        """The σ-VAE decoder's calibrated log sigma (decoder = "sigma"), held by the inner VAE."""
        return self.vae.log_sigma

    def _one_hot(self, labels: Tensor, like: Tensor) -> Tensor:
        return F.one_hot(labels, self.num_classes).to(like.dtype)

    def _prior(self, labels: Tensor) -> tuple[Tensor, Tensor]:
        mu_y, logvar_y = self.prior(labels).chunk(2, dim=1)
        return mu_y, logvar_y

    def encode(self, x: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        """q(z|x, y) as (mu, log_var), in the prior's standardised coordinates when the prior is learned."""
        plane = self.embed_class(self._one_hot(labels, x)).view(-1, 1, *x.shape[-2:])
        mu, logvar = self.vae.encode(torch.cat([x, plane.to(memory_format=torch.contiguous_format)], dim=1))
        if self.config.prior == "standard":
            return mu, logvar
        mu_y, logvar_y = self._prior(labels)
        return (mu - mu_y) * torch.exp(-0.5 * logvar_y), logvar - logvar_y

    def decode(self, u: Tensor, labels: Tensor) -> Tensor:
        """Standardised codes u (B, latent_dim) -> decoder output, for classes labels (B,)."""
        z = u
        if self.config.prior == "learned":
            mu_y, logvar_y = self._prior(labels)
            z = mu_y + torch.exp(0.5 * logvar_y) * u
        vae = self.vae
        h = vae.decoder_input(torch.cat([z, self._one_hot(labels, z)], dim=1))
        h = h.view(-1, *vae.bottom)
        if self.config.label == "input":
            return vae.final_layer(vae.decoder(h))
        for block, shift in zip(vae.decoder, self.shifts):
            h = shift(block(h), labels)
        # final_layer: ConvT, BN, LeakyReLU (a block like the others), then the to-image conv (and Tanh).
        h = self.shifts[-1](vae.final_layer[:3](h), labels)
        return vae.final_layer[3:](h)

    def reparameterize(self, mu: Tensor, logvar: Tensor, generator: torch.Generator | None = None) -> Tensor:
        return self.vae.reparameterize(mu, logvar, generator)

    def forward(self, x: Tensor, labels: Tensor, return_z: bool = False) -> tuple[Tensor, ...]:
        mu, log_var = self.encode(x, labels)
        z = self.reparameterize(mu, log_var)
        return (self.decode(z, labels), x, mu, log_var, z) if return_z else (self.decode(z, labels), x, mu, log_var)

    def sample(
        self, n: int, generator: torch.Generator | None = None, labels: Tensor | None = None, *, temperature: float = 1.0
    ) -> Tensor:
        """n decoded prior draws of the given classes (default: every class in turn), in [-1, 1]; temperature
        scales the prior's spread about its class mean, mu_y + temperature * sigma_y * eps."""
        device = self.vae.fc_mu.weight.device
        labels = balanced_labels(n, self.num_classes, device) if labels is None else labels.to(device)
        z = torch.randn(n, self.latent_dim, device=device, generator=generator)
        return self.to_image(self.decode(temperature * z, labels))

    def reconstruct(self, x: Tensor, labels: Tensor) -> Tensor:
        return self.to_image(self.decode(self.encode(x, labels)[0], labels))

    def to_image(self, out: Tensor) -> Tensor:
        return self.vae.to_image(out)
