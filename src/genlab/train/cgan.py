"""One class-conditional GAN update as Miyato & Koyama's updater writes it (sngan_projection, n_dis = 1).

G: fresh z with classes drawn uniformly, the hinge loss of D(G(z, y), y), G steps. D: the real batch
with its own classes, and a fresh fake batch with freshly drawn classes, each in its own call (spectral
norm runs a power iteration per call), the hinge loss, D steps.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.optim import Optimizer

from genlab.config import GANLossConfig
from genlab.data import ImageData, to_float
from genlab.models.cgan import balanced_labels
from genlab.train import Trainer
from genlab.train.common import FP32, Precision, own_gradients, update
from genlab.train.gan import CHARTS, LOG_KEYS, _outputs, d_objective, g_objective, health, make_optimizers, validate


def prepare(model, batch: tuple[Tensor, Tensor], binarize: bool) -> tuple[Tensor, Tensor]:
    images, labels = batch
    return to_float(images), labels


def fake_batch(model, n: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """(G(z, y), y) for fresh z ~ N(0, I) and classes y drawn uniformly (their sample_categorical)."""
    z = torch.randn(n, model.config.latent_dim, device=device)
    labels = torch.randint(model.config.num_classes, (n,), device=device)
    return model.generator(z, labels), labels


def cgan_step(
    model,
    batch: tuple[Tensor, Tensor],
    optimizers: dict[str, Optimizer],
    loss: GANLossConfig,
    step: int,
    skip_nonfinite: bool = False,
    amp: Precision = FP32,
) -> dict[str, Tensor]:
    """G: make D call G(z, y) a real image of class y; then D: real (x, y) against fresh fakes (no host sync)."""
    real, labels = batch
    g, d = model.generator, model.discriminator
    with amp.autocast():
        fake, fake_labels = fake_batch(model, real.size(0), real.device)
        g_loss = g_objective(d(fake, fake_labels, logits=loss.logits).float(), loss)
    update(optimizers["opt_g"], g_loss, skip_nonfinite, amp.scaler("opt_g"), inputs=own_gradients(g, d))
    with amp.autocast():
        with torch.no_grad():  # the fakes take no gradient (their unchain_backward)
            fake, fake_labels = fake_batch(model, real.size(0), real.device)
        real_scores = d(real, labels, logits=loss.logits).float()
        fake_scores = d(fake, fake_labels, logits=loss.logits).float()
        d_loss = d_objective(real_scores, fake_scores, loss)
    update(optimizers["opt_d"], d_loss, skip_nonfinite, amp.scaler("opt_d"))
    return _outputs(g_loss, d_loss, real_scores, fake_scores, loss.logits)


@torch.no_grad()
def pictures(model, test: ImageData, noise: Tensor, device: torch.device, binarize: bool) -> list[Tensor]:
    """G(z, y) for the same fixed noise every epoch, the classes in turn."""
    model.eval()
    out = model.generator(noise.to(device), balanced_labels(len(noise), model.config.num_classes, device))
    model.train()
    return [out]


TRAINER = Trainer(cgan_step, make_optimizers, prepare, validate, pictures, LOG_KEYS, CHARTS, health)
