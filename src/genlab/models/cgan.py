"""A class-conditional GAN: DCGAN's generator fed [z, one-hot(y)], and a projection discriminator.

The discriminator is Miyato & Koyama's (2018) projection form on an SNGAN body: with phi(x) the
features of its last map, D(x, y) = w . phi(x) + embed(y) . phi(x), spectral norm on every layer
and on the class embedding, trained with the hinge loss. The generator takes the class as a one-hot
code beside z (Mirza & Osindero 2014). Images come out at 28x28 or 4 * 2^k.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from genlab.models.dcgan import DCGANConfig, DCGANGenerator, conv_discriminator, init_weights, levels


@dataclass(frozen=True)
class CGANConfig(DCGANConfig):
    latent_dim: int = 128
    num_classes: int = 10

    def validate(self) -> None:
        from genlab.errors import ConfigError

        super().validate()
        if self.num_classes < 2:
            raise ConfigError(f"model.num_classes must be >= 2, got {self.num_classes}")


def balanced_labels(n: int, num_classes: int, device: torch.device | None = None) -> Tensor:
    """0, 1, ..., C-1, 0, 1, ...: the classes of n samples when none are asked for (every class alike)."""
    return torch.arange(n, device=device) % num_classes


class ConditionalGenerator(nn.Module):
    """(z, y) -> DCGAN generator of [z, one_hot(y)]."""

    def __init__(self, latent_dim: int, img_shape: Sequence[int], width: int, num_classes: int) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.net = DCGANGenerator(latent_dim + num_classes, img_shape, width)

    def _input(self, z: Tensor, labels: Tensor) -> Tensor:
        return torch.cat([z, F.one_hot(labels, self.num_classes).to(z.dtype)], dim=1)

    def stem(self, z: Tensor, labels: Tensor | None = None) -> Tensor:
        labels = torch.zeros(len(z), dtype=torch.long, device=z.device) if labels is None else labels
        return self.net.stem(self._input(z, labels))

    def forward(self, z: Tensor, labels: Tensor) -> Tensor:
        return self.net(self._input(z, labels))


class ProjectionDiscriminator(nn.Module):
    """(x, y) -> (B, 1): w . phi(x) + embed(y) . phi(x); a probability unless logits (hinge uses logits)."""

    def __init__(self, img_shape: Sequence[int], width: int, num_classes: int) -> None:
        super().__init__()
        body = conv_discriminator(img_shape, width, "spectral")
        self.body = body[:-2]  # all but the final convolution and the flatten: phi(x) is the last map
        start, k = levels(img_shape[-1])
        features = width * 2 ** (k - 1) * start * start
        sn = nn.utils.parametrizations.spectral_norm
        self.linear = sn(nn.Linear(features, 1))
        self.embed = sn(nn.Embedding(num_classes, features))
        init_weights(self)

    def forward(self, img: Tensor, labels: Tensor, logits: bool = False) -> Tensor:
        phi = self.body(img).flatten(1)
        out = self.linear(phi) + (self.embed(labels) * phi).sum(1, keepdim=True)
        return out if logits else torch.sigmoid(out)


class CGAN(nn.Module):
    def __init__(
        self, latent_dim: int = 128, img_shape: Sequence[int] = (1, 28, 28), width: int = 64, num_classes: int = 10
    ) -> None:
        super().__init__()
        self.config = CGANConfig(latent_dim, tuple(img_shape), width, num_classes)
        self.config.validate()
        self.generator = ConditionalGenerator(latent_dim, img_shape, width, num_classes)
        self.discriminator = ProjectionDiscriminator(img_shape, width, num_classes)

    def sample(self, n: int, generator: torch.Generator | None = None, labels: Tensor | None = None) -> Tensor:
        """n images of the given classes (default: every class in turn), in [-1, 1]."""
        device = next(self.generator.parameters()).device
        labels = balanced_labels(n, self.config.num_classes, device) if labels is None else labels.to(device)
        return self.generator(torch.randn(n, self.config.latent_dim, device=device, generator=generator), labels)
