"""Model registry: one plain dict from family name to (config class, model class)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from torch import nn

from genlab.models.gan import GAN, Discriminator, GANConfig, Generator
from genlab.models.vae import VAEConfig, VanillaVAE

MODELS: dict[str, tuple[type, type[nn.Module]]] = {
    "vae": (VAEConfig, VanillaVAE),
    "gan": (GANConfig, GAN),
}


def build_model(family: str, config: Any) -> nn.Module:
    """The model of family built from its config dataclass."""
    _, cls = MODELS[family]
    return cls(**asdict(config))


__all__ = ["GAN", "MODELS", "Discriminator", "GANConfig", "Generator", "VAEConfig", "VanillaVAE", "build_model"]
