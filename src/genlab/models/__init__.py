"""The model registry: one record per family, holding everything that follows from the family.

Code asks the record (`family(name).kind`, `.conditional`, `.loss`, ...), never compares family
names. A new model is its own `models/<name>.py`, one `register(Family(...))` line below and a
shipped config; `train/<name>.py` only when it brings a new training algorithm (`trainer`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from torch import nn

from genlab.config import FactorVAELossConfig, GANLossConfig, SNGANLossConfig, VAELossConfig, WGANLossConfig
from genlab.errors import ConfigError
from genlab.models.cgan import CGAN, CGANConfig
from genlab.models.cvae import CVAE, CVAEConfig
from genlab.models.dcgan import DCGAN, DCGANConfig
from genlab.models.factorvae import FactorVAE, FactorVAEConfig
from genlab.models.gan import GAN, Discriminator, GANConfig, Generator
from genlab.models.sngan import SNGAN, SNGANConfig
from genlab.models.vae import VAEConfig, VanillaVAE
from genlab.models.wgan_gp import WGANGP, WGANGPConfig

KINDS = ("vae", "gan")  # "vae": encode/decode/to_image; "gan": a generator and a discriminator(x, logits=...)


@dataclass(frozen=True)
class Family:
    """What a model family is: its config and model classes, its kind, its loss and training defaults."""

    name: str
    config: type  # the frozen dataclass of [model]; `model(**asdict(config))` builds it
    model: type[nn.Module]
    kind: str  # one of KINDS
    loss: type  # the frozen dataclass of [loss]
    trainer: str  # the module of genlab.train whose TRAINER trains it: "vae", "gan", "sngan", "wgan", "cgan", "cvae"
    lr: float
    betas: tuple[float, float]
    loss_defaults: dict[str, Any] = field(default_factory=dict)  # where the family's paper differs from the loss config
    conditional: bool = False  # a model of p(x | class): batches carry labels, sample() takes them
    fuses_norm_act: bool = False  # its ConvBlocks hold BatchNorm2d + LeakyReLU pairs (train.fuse_norm_act)
    summary: str = ""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"family {self.name}: kind must be one of {KINDS}, got {self.kind!r}")

    def defaults(self) -> dict[str, dict[str, Any]]:
        """The config sections this family starts from, before a config file and overrides."""
        return {"model": {}, "loss": dict(self.loss_defaults), "train": {"lr": self.lr, "betas": self.betas}}

    def build(self, config: Any) -> nn.Module:
        """The model built from its config dataclass."""
        return self.model(**asdict(config))


FAMILIES: dict[str, Family] = {}


def register(record: Family) -> Family:
    """Add a family to the registry (at import for genlab's own, at run time for a user's)."""
    FAMILIES[record.name] = record
    return record


def family(name: str) -> Family:
    """The record of a family, or a one-line error naming the known ones."""
    try:
        return FAMILIES[name]
    except KeyError:
        raise ConfigError(f"unknown model family {name!r}; choose one of {', '.join(FAMILIES)}") from None


def build_model(name: str, config: Any) -> nn.Module:
    """The model of family `name` built from its config dataclass."""
    return family(name).build(config)


# The notes' two models (PyTorch-VAE's and PyTorch-GAN's settings), then the families beyond them.
NOTES = dict(lr=0.005, betas=(0.9, 0.999))
RADFORD = dict(lr=0.0002, betas=(0.5, 0.999))  # DCGAN's Adam, also SNGAN's setting C
# fmt: off
register(Family("vae", VAEConfig, VanillaVAE, "vae", VAELossConfig, "vae", **NOTES, fuses_norm_act=True,
                summary="the notes' VanillaVAE / β-VAE"))
register(Family("gan", GANConfig, GAN, "gan", GANLossConfig, "gan", **RADFORD, summary="the notes' MLP GAN"))
register(Family("dcgan", DCGANConfig, DCGAN, "gan", GANLossConfig, "dcgan", **RADFORD, summary="DCGAN (Radford et al. 2015)"))
register(Family("sngan", SNGANConfig, SNGAN, "gan", SNGANLossConfig, "sngan", **RADFORD, loss_defaults={"adversarial": "hinge"},
                summary="SNGAN: spectral norm, hinge loss (Miyato et al. 2018)"))
register(Family("wgan-gp", WGANGPConfig, WGANGP, "gan", WGANLossConfig, "wgan", lr=0.0001, betas=(0.0, 0.9),
                summary="WGAN-GP (Gulrajani et al. 2017)"))
register(Family("cgan", CGANConfig, CGAN, "gan", GANLossConfig, "cgan", **RADFORD, loss_defaults={"adversarial": "hinge"},
                conditional=True, summary="class-conditional GAN, projection D (Miyato & Koyama 2018)"))
register(Family("cvae", CVAEConfig, CVAE, "vae", VAELossConfig, "cvae", **NOTES, conditional=True, fuses_norm_act=True,
                summary="class-conditional VAE (Sohn et al. 2015)"))
register(Family("factorvae", FactorVAEConfig, FactorVAE, "vae", FactorVAELossConfig, "factorvae", lr=0.0001, betas=(0.9, 0.999),
                summary="FactorVAE: a TC discriminator on permuted codes (Kim & Mnih 2018)"))
# fmt: on

__all__ = [
    "CGAN",
    "CVAE",
    "DCGAN",
    "FAMILIES",
    "GAN",
    "KINDS",
    "SNGAN",
    "WGANGP",
    "DCGANConfig",
    "Discriminator",
    "Family",
    "GANConfig",
    "Generator",
    "VAEConfig",
    "VanillaVAE",
    "build_model",
    "family",
    "register",
]
