"""One WGAN-GP update (Gulrajani et al. 2017, Algorithm 1): a critic step on every batch, a
generator step after every loss.n_critic critic steps. A training step is one critic iteration."""

from __future__ import annotations

import torch
from torch import Tensor
from torch.optim import Optimizer

from genlab.config import WGANLossConfig
from genlab.data import ImageData, to_float
from genlab.losses import gradient_penalty
from genlab.train import Trainer
from genlab.train.common import FP32, Precision, own_gradients, update
from genlab.train.gan import make_optimizers, pictures, prepare

LOG_KEYS = ("d_loss", "g_loss", "gp", "w_estimate")
CHARTS = {
    "Wasserstein estimate E[D(x)] - E[D(G(z))]": (("w_estimate", "val_w_estimate"), None),
    "losses": (("d_loss", "g_loss"), None),
}


def wgan_step(
    model,
    real: Tensor,
    optimizers: dict[str, Optimizer],
    loss: WGANLossConfig,
    step: int,
    skip_nonfinite: bool = False,
    amp: Precision = FP32,
) -> dict[str, Tensor]:
    """Critic: E[D(G(z))] - E[D(x)] + lambda * GP; then, every n_critic steps, G: -E[D(G(z))]."""
    g, d = model.generator, model.discriminator
    z = torch.randn(real.size(0), model.config.latent_dim, device=real.device)
    with amp.autocast():
        fake = g(z).detach()
        real_scores, fake_scores = d(real).float(), d(fake).float()
        w = real_scores.mean() - fake_scores.mean()
    gp = gradient_penalty(d, real, fake.to(real.dtype))  # fp32: the penalty's second derivative wants it
    d_loss = -w + loss.gp_weight * gp
    update(optimizers["opt_d"], d_loss, skip_nonfinite, amp.scaler("opt_d"))
    g_loss = -fake_scores.detach().mean()  # before D's update: the generator loss this batch would have had
    if (step + 1) % loss.n_critic == 0:
        with amp.autocast():
            g_loss = -d(g(z)).float().mean()
        # Into G's parameters only (Algorithm 1 updates theta with the gradient of -D(G(z)) in theta).
        update(optimizers["opt_g"], g_loss, skip_nonfinite, amp.scaler("opt_g"), inputs=own_gradients(g, d))
    return {"d_loss": d_loss.detach(), "g_loss": g_loss.detach(), "gp": gp.detach(), "w_estimate": w.detach()}


@torch.no_grad()
def validate(model, test: ImageData, config, step: int, device: torch.device) -> dict[str, float]:
    """The critic's Wasserstein estimate on test images against fakes from a fixed generator, eval mode."""
    model.eval()
    gen = torch.Generator(device).manual_seed(config.train.seed)
    bs = config.train.batch_size
    total, n = 0.0, 0
    for i in range(min(config.train.val_batches, -(-len(test) // bs))):
        real = to_float(test.images[i * bs : (i + 1) * bs].to(device))
        fake = model.sample(len(real), generator=gen)
        total += (model.discriminator(real).sum() - model.discriminator(fake).sum()).item()
        n += len(real)
    model.train()
    return {"val_w_estimate": total / max(n, 1)}


TRAINER = Trainer(wgan_step, make_optimizers, prepare, validate, pictures, LOG_KEYS, CHARTS)
