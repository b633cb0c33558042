"""Vanilla GAN of the course notes (section 2), after PyTorch-GAN's gan.py."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

DEFAULT_G_HIDDEN = (128, 256, 512, 1024)
DEFAULT_D_HIDDEN = (512, 256)


@dataclass(frozen=True)
class GANConfig:
    """What a GAN run reads from its config and saves beside its weights."""

    latent_dim: int = 100
    img_shape: tuple[int, int, int] = (1, 28, 28)
    g_hidden_dims: tuple[int, ...] = DEFAULT_G_HIDDEN
    d_hidden_dims: tuple[int, ...] = DEFAULT_D_HIDDEN
    # The notes write BatchNorm1d(out_feat, 0.8): the second positional argument is eps, not momentum.
    bn_eps: float = 0.8

    def validate(self) -> None:
        from genlab.errors import ConfigError

        if self.latent_dim <= 0:
            raise ConfigError(f"model.latent_dim must be >= 1, got {self.latent_dim}")
        if len(self.img_shape) != 3 or any(s <= 0 for s in self.img_shape):
            raise ConfigError(f"model.img_shape must be [channels, height, width] > 0, got {list(self.img_shape)}")
        if not self.g_hidden_dims or not self.d_hidden_dims:
            raise ConfigError("model.g_hidden_dims and model.d_hidden_dims must not be empty")
        if any(h <= 0 for h in (*self.g_hidden_dims, *self.d_hidden_dims)):
            raise ConfigError("model.g_hidden_dims and model.d_hidden_dims must be positive integers")
        if self.bn_eps <= 0:
            raise ConfigError(f"model.bn_eps must be > 0, got {self.bn_eps}")

    @property
    def image_size(self) -> int:
        return self.img_shape[-1]


class Generator(nn.Module):
    """Listing 6: MLP latent -> 128 -> 256 -> 512 -> 1024 -> prod(img_shape), Tanh output."""

    def __init__(
        self,
        latent_dim: int = 100,
        img_shape: Sequence[int] = (1, 28, 28),
        hidden_dims: Sequence[int] = DEFAULT_G_HIDDEN,
        bn_eps: float = 0.8,
    ) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.img_shape = tuple(img_shape)

        def block(in_feat: int, out_feat: int, normalize: bool = True) -> list[nn.Module]:
            layers: list[nn.Module] = [nn.Linear(in_feat, out_feat)]
            if normalize:
                layers.append(nn.BatchNorm1d(out_feat, bn_eps))
            layers.append(nn.LeakyReLU(0.2, inplace=True))
            return layers

        dims = (latent_dim, *hidden_dims)
        blocks = [block(a, b, normalize=i > 0) for i, (a, b) in enumerate(zip(dims, dims[1:]))]
        self.model = nn.Sequential(
            *(layer for b in blocks for layer in b),
            nn.Linear(dims[-1], math.prod(self.img_shape)),
            nn.Tanh(),
        )

    def stem(self, z: Tensor) -> Tensor:
        """The first block's activations (Linear + LeakyReLU): the explorer's principal directions."""
        return self.model[:2](z)

    def forward(self, z: Tensor) -> Tensor:
        """(B, latent_dim) -> (B, C, H, W) in [-1, 1]."""
        return self.model(z).view(z.size(0), *self.img_shape)


class Discriminator(nn.Module):
    """Listing 7: MLP prod(img_shape) -> 512 -> 256 -> 1 with a Sigmoid, as the notes write it.

    ``logits`` skips the final Sigmoid: training takes BCE on logits, which is the same model and
    loss but stays finite where sigmoid saturates to 0 or 1 in float32.
    """

    def __init__(self, img_shape: Sequence[int] = (1, 28, 28), hidden_dims: Sequence[int] = DEFAULT_D_HIDDEN) -> None:
        super().__init__()
        dims = (math.prod(img_shape), *hidden_dims)
        layers: list[nn.Module] = []
        for a, b in zip(dims, dims[1:]):
            layers += [nn.Linear(a, b), nn.LeakyReLU(0.2, inplace=True)]
        self.model = nn.Sequential(*layers, nn.Linear(dims[-1], 1), nn.Sigmoid())

    def logits(self, img: Tensor) -> Tensor:
        """(B, C, H, W) -> (B, 1) pre-sigmoid scores."""
        return self.model[:-1](img.reshape(img.size(0), -1))

    def forward(self, img: Tensor, logits: bool = False) -> Tensor:
        """(B, C, H, W) -> (B, 1) probability that img is real (pre-sigmoid scores if logits)."""
        return self.logits(img) if logits else self.model(img.reshape(img.size(0), -1))


class GAN(nn.Module):
    """Generator and Discriminator of one run, with the config that built them."""

    def __init__(
        self,
        latent_dim: int = 100,
        img_shape: Sequence[int] = (1, 28, 28),
        g_hidden_dims: Sequence[int] = DEFAULT_G_HIDDEN,
        d_hidden_dims: Sequence[int] = DEFAULT_D_HIDDEN,
        bn_eps: float = 0.8,
    ) -> None:
        super().__init__()
        self.config = GANConfig(latent_dim, tuple(img_shape), tuple(g_hidden_dims), tuple(d_hidden_dims), bn_eps)
        self.config.validate()
        self.generator = Generator(latent_dim, img_shape, g_hidden_dims, bn_eps)
        self.discriminator = Discriminator(img_shape, d_hidden_dims)

    def sample(self, n: int, generator: torch.Generator | None = None, *, temperature: float = 1.0) -> Tensor:
        """n images G(z), z ~ N(0, temperature^2 I), in [-1, 1]."""
        device = self.generator.model[0].weight.device
        z = torch.randn(n, self.config.latent_dim, device=device, generator=generator)
        return self.generator(temperature * z)
