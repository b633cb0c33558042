"""Model registry: one plain dict from family name to (config class, model class)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from torch import nn

from genlab.models.cgan import CGAN, CGANConfig
from genlab.models.cvae import CVAE, CVAEConfig
from genlab.models.dcgan import DCGAN, DCGANConfig
from genlab.models.gan import GAN, Discriminator, GANConfig, Generator
from genlab.models.sngan import SNGAN, SNGANConfig
from genlab.models.vae import VAEConfig, VanillaVAE
from genlab.models.wgan_gp import WGANGP, WGANGPConfig

MODELS: dict[str, tuple[type, type[nn.Module]]] = {
    "vae": (VAEConfig, VanillaVAE),
    "gan": (GANConfig, GAN),
    "dcgan": (DCGANConfig, DCGAN),
    "sngan": (SNGANConfig, SNGAN),
    "wgan-gp": (WGANGPConfig, WGANGP),
    "cgan": (CGANConfig, CGAN),
    "cvae": (CVAEConfig, CVAE),
}
# What each model is, for what follows from it (its training step, pictures, metrics): "vae" models
# have encode/decode/to_image, "gan" models a generator and a discriminator(x, logits=...).
KINDS = {"vae": "vae", "gan": "gan", "dcgan": "gan", "sngan": "gan", "wgan-gp": "gan", "cgan": "gan", "cvae": "vae"}
CONDITIONAL = {"cgan", "cvae"}  # models of p(x | class): their sample() takes labels


def kind(family: str) -> str:
    return KINDS[family]


def is_conditional(family: str) -> bool:
    return family in CONDITIONAL


def build_model(family: str, config: Any) -> nn.Module:
    """The model of family built from its config dataclass."""
    _, cls = MODELS[family]
    return cls(**asdict(config))


__all__ = [
    "CGAN",
    "CONDITIONAL",
    "CVAE",
    "is_conditional",
    "DCGAN",
    "GAN",
    "KINDS",
    "MODELS",
    "DCGANConfig",
    "kind",
    "Discriminator",
    "GANConfig",
    "Generator",
    "VAEConfig",
    "VanillaVAE",
    "build_model",
]
