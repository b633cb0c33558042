"""Latent traversals: one row per latent dimension, a seed's code moved along it, decoded.

For a VAE the seed is a test image's posterior mean and rows are sorted by the dimension's KL (the
dimensions the model uses first; inactive ones, KL < 0.01 nats, are dimmed). For a GAN the seed is
a draw of z and rows are z's coordinates.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from genlab.data import vae_input
from genlab.losses import gaussian_kl

INACTIVE_KL = 0.01  # nats: below this a dimension carries (almost) no information about x
MAX_ROWS = 16  # default rows of a VAE traversal: the 16 highest-KL dimensions (the notes' VAE has 128)


@dataclass
class Traversal:
    images: Tensor  # (rows * steps, C, H, W) in [-1, 1], row-major
    dims: list[int]  # latent dimension of each row
    kl: list[float | None]  # its mean KL over the reference images (VAE), None for GANs
    steps: int

    @property
    def active(self) -> list[bool]:
        return [k is None or k >= INACTIVE_KL for k in self.kl]


@torch.no_grad()
def kl_per_dim(model: nn.Module, images: Tensor, binarize: bool) -> Tensor:
    """Mean KL(q(z_d|x) || N(0, 1)) of each latent dimension over uint8 images, nats."""
    device = next(model.parameters()).device
    mu, logvar = model.encode(vae_input(images.to(device), model.config.decoder, binarize))
    return torch.stack([gaussian_kl(mu[:, d : d + 1], logvar[:, d : d + 1]).mean() for d in range(mu.shape[1])]).cpu()


@torch.no_grad()
def traverse(
    model: nn.Module,
    family: str,
    reference: Tensor | None = None,
    binarize: bool = False,
    seed_index: int = 0,
    dims: int | None = None,
    span: float = 2.0,
    steps: int = 9,
    seed: int = 0,
) -> Traversal:
    """The traversal of model around one seed code; reference: uint8 test images (VAE: the seed and the KL)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    values = torch.linspace(-span, span, steps, device=device)
    if family == "vae":
        if reference is None or len(reference) == 0:
            raise ValueError("a VAE traversal needs reference images")
        kl = kl_per_dim(model, reference[:500], binarize)
        order = torch.argsort(kl, descending=True).tolist()[: dims or min(len(kl), MAX_ROWS)]
        seed_image = vae_input(reference[seed_index : seed_index + 1].to(device), model.config.decoder, binarize)
        base = model.encode(seed_image)[0][0]
        kls: list[float | None] = [float(kl[d]) for d in order]
    else:
        base = torch.randn(model.config.latent_dim, generator=torch.Generator().manual_seed(seed)).to(device)
        order = list(range(dims or min(10, base.numel())))
        kls = [None] * len(order)
    z = base.repeat(len(order), steps, 1)  # (rows, steps, latent)
    for row, d in enumerate(order):
        z[row, :, d] = values
    flat = z.flatten(0, 1)
    if family == "vae":
        images = model.to_image(model.decode(flat))
    else:
        images = model.generator(flat)
    model.train(was_training)
    return Traversal(images.float().cpu(), order, kls, steps)


def dim_inactive(traversal: Traversal, brightness: float = 0.3) -> Tensor:
    """The traversal's images with inactive rows darkened, so a grid shows which dimensions carry nothing."""
    images = traversal.images.clone().view(len(traversal.dims), traversal.steps, *traversal.images.shape[1:])
    for row, active in enumerate(traversal.active):
        if not active:
            images[row] = (images[row] + 1) * brightness - 1
    return images.flatten(0, 1)
