"""One SNGAN update as Miyato et al.'s code trains its SN-DCGAN (chainer-gan-lib stdgan/updater.py).

A training step is one of the updater's n_dis iterations, each on its own real batch. On the first of
each n_dis (every step at n_dis = 1), G: fresh z, the loss of D(G(z)), G steps. Then D: the real batch
and a fresh fake batch from the (updated) G, each in its own call (spectral norm runs a power iteration
per call), D's loss, D steps. chainer-gan-lib trains the spectral-norm D under this updater only: its
train.py builds `SNDCGANDiscriminator` for `--algorithm stdgan` (example.sh: n_dis 1, Adam 2e-4 (0.5,
0.999), setting C) and refuses it under the dcgan updater, whose G and D both step from one state (what
genlab's SNGAN did before).
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.optim import Optimizer

from genlab.config import SNGANLossConfig
from genlab.train import Trainer
from genlab.train.common import FP32, Precision, own_gradients, update
from genlab.train.gan import (
    CHARTS,
    LOG_KEYS,
    _outputs,
    d_objective,
    g_objective,
    health,
    make_optimizers,
    pictures,
    prepare,
    validate,
)


def sngan_step(
    model,
    real: Tensor,
    optimizers: dict[str, Optimizer],
    loss: SNGANLossConfig,
    step: int,
    skip_nonfinite: bool = False,
    amp: Precision = FP32,
) -> dict[str, Tensor]:
    """G (every n_dis steps): make D call G(z) real; then D: the real batch against fresh fakes of G (no host sync)."""
    g, d = model.generator, model.discriminator
    n, latent = real.size(0), model.config.latent_dim
    g_steps = step % loss.n_dis == 0
    if g_steps:
        with amp.autocast():
            g_loss = g_objective(d(g(torch.randn(n, latent, device=real.device)), logits=loss.logits).float(), loss)
        update(optimizers["opt_g"], g_loss, skip_nonfinite, amp.scaler("opt_g"), inputs=own_gradients(g, d))
    with amp.autocast():
        with torch.no_grad():  # the fakes take no gradient (their unchain_backward)
            fake = g(torch.randn(n, latent, device=real.device))
        real_scores = d(real, logits=loss.logits).float()
        fake_scores = d(fake, logits=loss.logits).float()
        d_loss = d_objective(real_scores, fake_scores, loss)
    if not g_steps:  # what G's loss is on these fakes, before D's update, for the log
        g_loss = g_objective(fake_scores.detach(), loss)
    update(optimizers["opt_d"], d_loss, skip_nonfinite, amp.scaler("opt_d"))
    return _outputs(g_loss, d_loss, real_scores, fake_scores, loss.logits)


TRAINER = Trainer(sngan_step, make_optimizers, prepare, validate, pictures, LOG_KEYS, CHARTS, health)
