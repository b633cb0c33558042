"""A class-conditional GAN after Miyato & Koyama (2018): class-conditional BatchNorm in G, a projection D.

G is DCGAN's generator whose BatchNorm layers are categorical conditional BatchNorm: a BatchNorm
without its own affine, then a gain and a bias looked up per class (initialised 1 and 0), so the
class reaches every layer (their `CategoricalConditionalBatchNormalization`). Its first layer is a
Linear from the input to the first map with a bias per unit, as their generators begin (`l1 =
L.Linear(dim_z, bottom_width**2 * ch)`): that bias is the one part of the first map that does not
depend on z, a spatial template the per-class gains can select (`stem = "conv"`, DCGAN's transposed
convolution without bias, gives every channel a map linear in z). D is a projection discriminator:
with phi(x) its features, D(x, y) = w . phi(x) + embed(y) . phi(x), spectral norm on every layer and
on the class embedding, trained with the hinge loss.

What ships was measured, not assumed. One epoch of Fashion-MNIST (937 steps, seed 0, width 32), then
`genlab eval --n 2000`, conditional accuracy / FD:
- CBN G (conv stem), standard-CNN D: 0.10 / 322; CBN G (linear stem), standard-CNN D: 0.11 / 321;
  one-hot G, standard-CNN D: 0.11 / 304. Miyato et al.'s standard CNN (7 spectral-normed layers)
  learns the class term slowly at these step counts, and costs 4x the DCGAN body's time.
- CBN G, DCGAN-body D: conv stem 0.21 / 277, linear stem 0.32 / 238;
- one-hot G, DCGAN-body D (genlab's first cGAN): 0.69 / 160;
- both, the class at G's input and in every CBN, DCGAN-body D: **0.75 / 157**, the default
  (`generator = "both"`, `d_arch = "dcgan"`); `generator = "cbn"`, `d_arch = "standard"` is
  Miyato & Koyama's pairing for budgets of 100k steps and more.

`generator = "onehot"` with `d_arch = "dcgan"` and `stem = "conv"` is genlab's first cGAN, kept so
runs made with it load as they trained (LEGACY).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from genlab.models.dcgan import DCGANConfig, DCGANGenerator, conv_discriminator, init_weights, levels
from genlab.models.sngan import D_ARCHS, standard_cnn

GENERATORS = ("cbn", "onehot", "both")
STEMS = ("linear", "conv")


@dataclass(frozen=True)
class CGANConfig(DCGANConfig):
    latent_dim: int = 128
    num_classes: int = 10
    generator: str = "both"  # measured: see the module docstring
    d_arch: str = "dcgan"
    stem: str = "linear"  # G's first layer: "linear" (with a bias per unit, Miyato & Koyama) or "conv" (DCGAN's)
    LEGACY: ClassVar[dict[str, Any]] = {"generator": "onehot", "d_arch": "dcgan", "stem": "conv"}

    def validate(self) -> None:
        from genlab.errors import ConfigError

        super().validate()
        if self.num_classes < 2:
            raise ConfigError(f"model.num_classes must be >= 2, got {self.num_classes}")
        if self.generator not in GENERATORS:
            raise ConfigError(f"model.generator must be one of {', '.join(GENERATORS)}, got {self.generator!r}")
        if self.d_arch not in D_ARCHS:
            raise ConfigError(f"model.d_arch must be one of {', '.join(D_ARCHS)}, got {self.d_arch!r}")
        if self.stem not in STEMS:
            raise ConfigError(f"model.stem must be one of {', '.join(STEMS)}, got {self.stem!r}")


def balanced_labels(n: int, num_classes: int, device: torch.device | None = None) -> Tensor:
    """0, 1, ..., C-1, 0, 1, ...: the classes of n samples when none are asked for (every class alike)."""
    return torch.arange(n, device=device) % num_classes


class ClassBatchNorm2d(nn.Module):
    """BatchNorm2d without affine, then a per-class gain and bias: (B, C, H, W), (B,) -> (B, C, H, W)."""

    def __init__(self, channels: int, num_classes: int) -> None:
        super().__init__()
        self.norm = nn.BatchNorm2d(channels, affine=False)
        self.gain = nn.Embedding(num_classes, channels)
        self.bias = nn.Embedding(num_classes, channels)
        nn.init.ones_(self.gain.weight)
        nn.init.zeros_(self.bias.weight)

    def forward(self, x: Tensor, labels: Tensor) -> Tensor:
        shape = (x.size(0), -1, 1, 1)
        return self.norm(x) * self.gain(labels).view(shape) + self.bias(labels).view(shape)


class LinearStem(nn.Module):
    """z (B, Z, 1, 1) -> (B, C, S, S) by a Linear with a bias per unit: Miyato & Koyama's first layer."""

    def __init__(self, latent_dim: int, channels: int, side: int) -> None:
        super().__init__()
        self.shape = (channels, side, side)
        self.linear = nn.Linear(latent_dim, channels * side * side)

    def forward(self, z: Tensor) -> Tensor:
        return self.linear(z.flatten(1)).view(z.size(0), *self.shape)


class ConditionalGenerator(nn.Module):
    """(z, y) -> images: DCGAN's generator with class-conditional BatchNorm ("cbn"), fed [z, one_hot(y)]
    ("onehot"), or both: the class at the input and in every BatchNorm ("both")."""

    def __init__(
        self, latent_dim: int, img_shape: Sequence[int], width: int, num_classes: int, kind: str = "cbn", stem: str = "linear"
    ) -> None:
        super().__init__()
        self.num_classes, self.kind = num_classes, kind
        if kind in ("cbn", "both"):
            inputs = latent_dim + (num_classes if kind == "both" else 0)
            self.net = DCGANGenerator(inputs, img_shape, width, norm=lambda c: ClassBatchNorm2d(c, num_classes))
            if stem == "linear":
                first = self.net.model[0]
                self.net.model[0] = LinearStem(inputs, first.out_channels, first.kernel_size[0])
                init_weights(self.net.model[0])  # N(0, 0.02) weights, a zero bias (chainer's)
            # init_weights drew N(0, 0.02) into the class embeddings too: the gains start at 1, the biases at 0.
            for m in self.net.modules():
                if isinstance(m, ClassBatchNorm2d):
                    nn.init.ones_(m.gain.weight)
                    nn.init.zeros_(m.bias.weight)
        else:
            self.net = DCGANGenerator(latent_dim + num_classes, img_shape, width)

    def _input(self, z: Tensor, labels: Tensor) -> Tensor:
        z = z.view(z.size(0), -1, 1, 1)
        if self.kind == "cbn":
            return z
        return torch.cat([z, F.one_hot(labels, self.num_classes).to(z.dtype).view(z.size(0), -1, 1, 1)], dim=1)

    def _run(self, layers, x: Tensor, labels: Tensor) -> Tensor:
        for layer in layers:
            x = layer(x, labels) if isinstance(layer, ClassBatchNorm2d) else layer(x)
        return x

    def stem(self, z: Tensor, labels: Tensor | None = None) -> Tensor:
        """The first block's activations, flattened (the explorer's principal directions); class 0 unless given."""
        labels = torch.zeros(len(z), dtype=torch.long, device=z.device) if labels is None else labels
        return self._run(self.net.model[:3], self._input(z, labels), labels).flatten(1)

    def forward(self, z: Tensor, labels: Tensor) -> Tensor:
        return self._run(self.net.model, self._input(z, labels), labels)


class ProjectionDiscriminator(nn.Module):
    """(x, y) -> (B, 1): w . phi(x) + embed(y) . phi(x); a probability unless logits (hinge uses logits)."""

    def __init__(self, img_shape: Sequence[int], width: int, num_classes: int, arch: str = "standard") -> None:
        super().__init__()
        if arch == "standard":
            self.body, features = standard_cnn(img_shape, width)
        else:
            self.body = conv_discriminator(img_shape, width, "spectral")[:-2]  # phi(x): the last map, flattened below
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
        self,
        latent_dim: int = 128,
        img_shape: Sequence[int] = (1, 28, 28),
        width: int = 64,
        num_classes: int = 10,
        generator: str = "both",
        d_arch: str = "dcgan",
        stem: str = "linear",
    ) -> None:
        super().__init__()
        self.config = CGANConfig(latent_dim, tuple(img_shape), width, num_classes, generator, d_arch, stem)
        self.config.validate()
        self.generator = ConditionalGenerator(latent_dim, img_shape, width, num_classes, generator, stem)
        self.discriminator = ProjectionDiscriminator(img_shape, width, num_classes, d_arch)

    def sample(
        self, n: int, generator: torch.Generator | None = None, labels: Tensor | None = None, *, temperature: float = 1.0
    ) -> Tensor:
        """n images G(z, y), z ~ N(0, temperature^2 I), of the given classes (default: every class in turn), in [-1, 1]."""
        device = next(self.generator.parameters()).device
        labels = balanced_labels(n, self.config.num_classes, device) if labels is None else labels.to(device)
        z = torch.randn(n, self.config.latent_dim, device=device, generator=generator)
        return self.generator(temperature * z, labels)
