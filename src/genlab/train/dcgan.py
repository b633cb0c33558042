"""One DCGAN update as pytorch/examples' dcgan/main.py writes it: D first, then G through the updated D.

(1) D: D(x) on a real batch and D(G(z).detach()) on a fake batch, in two calls: D has BatchNorm, and
each mini-batch must be all real or all generated (one batch over both would pool their statistics);
D's loss is the sum of the two BCEs, and D steps. (2) G: the same G(z) scored by the updated D,
BCE against "real", and G steps. BCE is taken on logits (the same loss as the Sigmoid + BCELoss of
the reference, finite where the Sigmoid saturates); `loss.adversarial = "hinge"` swaps both losses.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.optim import Optimizer

from genlab.config import GANLossConfig
from genlab.losses import gan_d_loss, hinge_d_loss
from genlab.train import Trainer
from genlab.train.common import FP32, Precision, own_gradients, update
from genlab.train.gan import CHARTS, LOG_KEYS, _outputs, g_objective, health, make_optimizers, pictures, prepare, validate


def d_first_loss(real_scores: Tensor, fake_scores: Tensor, loss: GANLossConfig) -> Tensor:
    """errD_real + errD_fake (pytorch/examples sums them; the notes average), or the hinge loss."""
    if loss.adversarial == "hinge":
        return hinge_d_loss(real_scores, fake_scores)
    return gan_d_loss(real_scores, fake_scores, loss.logits, average=False)


def dcgan_step(
    model,
    real: Tensor,
    optimizers: dict[str, Optimizer],
    loss: GANLossConfig,
    step: int,
    skip_nonfinite: bool = False,
    amp: Precision = FP32,
) -> dict[str, Tensor]:
    """D's step on a real and a fake batch apart, then G's step against the updated D (no host sync)."""
    g, d = model.generator, model.discriminator
    z = torch.randn(real.size(0), model.config.latent_dim, device=real.device)
    with amp.autocast():  # (1) D: maximise log D(x) + log(1 - D(G(z)))
        fake = g(z)
        real_scores = d(real, logits=loss.logits).float()
        fake_scores = d(fake.detach(), logits=loss.logits).float()
        d_loss = d_first_loss(real_scores, fake_scores, loss)
    update(optimizers["opt_d"], d_loss, skip_nonfinite, amp.scaler("opt_d"))
    with amp.autocast():  # (2) G: maximise log D(G(z)), through the D just updated
        g_loss = g_objective(d(fake, logits=loss.logits).float(), loss)
    # G's gradient only: D's .grad would be zeroed by its own next update, so it need not be computed.
    update(optimizers["opt_g"], g_loss, skip_nonfinite, amp.scaler("opt_g"), inputs=own_gradients(g, d))
    return _outputs(g_loss, d_loss, real_scores, fake_scores, loss.logits)


TRAINER = Trainer(dcgan_step, make_optimizers, prepare, validate, pictures, LOG_KEYS, CHARTS, health)
