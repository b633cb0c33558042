"""One class-conditional GAN update: the notes' order (G step, then D step), each image with its class."""

from __future__ import annotations

import torch
from torch import Tensor
from torch.optim import Optimizer

from genlab.config import GANLossConfig
from genlab.data import ImageData, to_float
from genlab.models.cgan import balanced_labels
from genlab.train import Trainer
from genlab.train.common import FP32, Precision, update
from genlab.train.gan import CHARTS, LOG_KEYS, _outputs, d_objective, g_objective, health, make_optimizers, validate


def prepare(model, batch: tuple[Tensor, Tensor], binarize: bool) -> tuple[Tensor, Tensor]:
    images, labels = batch
    return to_float(images), labels


def cgan_step(
    model,
    batch: tuple[Tensor, Tensor],
    optimizers: dict[str, Optimizer],
    loss: GANLossConfig,
    step: int,
    skip_nonfinite: bool = False,
    amp: Precision = FP32,
) -> dict[str, Tensor]:
    """G: make D call G(z, y) a real image of class y; D: real (x, y) against the detached fakes of the same classes."""
    real, labels = batch
    g, d = model.generator, model.discriminator
    z = torch.randn(real.size(0), model.config.latent_dim, device=real.device)
    with amp.autocast():
        fake = g(z, labels)
        g_loss = g_objective(d(fake, labels, logits=loss.logits).float(), loss)
    update(optimizers["opt_g"], g_loss, skip_nonfinite, amp.scaler("opt_g"))
    with amp.autocast():
        # D has no batch statistics (spectral norm): one call over both halves equals two.
        scores = d(torch.cat([real, fake.detach()]), torch.cat([labels, labels]), logits=loss.logits)
        real_scores, fake_scores = scores.float().split(real.size(0))
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
