"""One GAN update (the notes' training loop: G step, then D step) and what a GAN run shows."""

from __future__ import annotations

import sys

import torch
from torch import Tensor, nn
from torch.optim import Adam, Optimizer

from genlab.config import GANLossConfig, RunConfig
from genlab.data import ImageData, to_float
from genlab.losses import gan_d_loss, gan_g_loss
from genlab.models.gan import GAN

LOG_KEYS = ("g_loss", "d_loss", "d_real", "d_fake")


def make_optimizers(model: GAN, config: RunConfig) -> dict[str, Optimizer]:
    t = config.train
    kw = {"lr": t.lr, "betas": t.betas, "weight_decay": t.weight_decay, "foreach": True}
    return {"opt_g": Adam(model.generator.parameters(), **kw), "opt_d": Adam(model.discriminator.parameters(), **kw)}


def prepare(model: GAN, batch: Tensor, binarize: bool) -> Tensor:
    return to_float(batch)


def scores(d: nn.Module, images: Tensor, logits: bool) -> Tensor:
    return d.logits(images) if logits else d(images)


def gan_step(model: GAN, real: Tensor, optimizers: dict[str, Optimizer], loss: GANLossConfig, step: int) -> dict[str, Tensor]:
    """The notes' alternating update; returns detached losses and mean D outputs (no host sync)."""
    opt_g, opt_d = optimizers["opt_g"], optimizers["opt_d"]
    d = model.discriminator
    z = torch.randn(real.size(0), model.config.latent_dim, device=real.device)

    # 1. Generator: make D call the fakes real. D's weights need no gradient here (opt_d
    #    would zero it anyway), so skip computing it; G's gradient is unchanged.
    fake = model.generator(z)
    d.requires_grad_(False)
    fake_scores = scores(d, fake, loss.logits)
    g_loss = gan_g_loss(fake_scores, loss.logits)
    opt_g.zero_grad(set_to_none=True)
    g_loss.backward()
    opt_g.step()
    d.requires_grad_(True)

    # 2. Discriminator: real -> 1, detached fakes -> 0, (real_loss + fake_loss) / 2.
    real_scores = scores(d, real, loss.logits)
    fake_scores_d = scores(d, fake.detach(), loss.logits)  # detach: no gradient into G
    d_loss = gan_d_loss(real_scores, fake_scores_d, loss.logits)
    opt_d.zero_grad(set_to_none=True)
    d_loss.backward()
    opt_d.step()

    prob = torch.sigmoid if loss.logits else (lambda t: t)
    return {
        "g_loss": g_loss.detach(),
        "d_loss": d_loss.detach(),
        "d_real": prob(real_scores.detach()).mean(),
        "d_fake": prob(fake_scores_d.detach()).mean(),
    }


step = gan_step


@torch.no_grad()
def validate(model: GAN, test: ImageData, config: RunConfig, step: int, device: torch.device) -> dict[str, float]:
    """D's accuracy and mean outputs on test images and on fakes from a fixed generator, eval mode."""
    model.eval()
    gen = torch.Generator(device).manual_seed(config.train.seed)
    bs = config.train.batch_size
    n_batches = min(config.train.val_batches, -(-len(test) // bs))
    d_real = d_fake = correct = n = 0.0
    for i in range(n_batches):
        real = to_float(test.images[i * bs : (i + 1) * bs].to(device))
        fake = model.sample(len(real), generator=gen)
        p_real, p_fake = model.discriminator(real), model.discriminator(fake)
        d_real += p_real.sum().item()
        d_fake += p_fake.sum().item()
        correct += (p_real > 0.5).sum().item() + (p_fake <= 0.5).sum().item()
        n += len(real)
    model.train()
    n = max(n, 1)
    return {"val_d_real": d_real / n, "val_d_fake": d_fake / n, "val_d_acc": correct / (2 * n)}


@torch.no_grad()
def pictures(model: GAN, test: ImageData, noise: Tensor, device: torch.device, binarize: bool) -> list[Tensor]:
    """G(z) for the same fixed noise every epoch, so progress is visible across grids."""
    model.eval()
    out = model.generator(noise.to(device))
    model.train()
    return [out]


D_WINS = 0.01  # mean D(G(z)) below this: the discriminator rejects every fake
D_WINS_WINDOWS = 10


def health(means: dict[str, float], state: dict) -> None:
    """Warn once when D has won for D_WINS_WINDOWS logging windows in a row (G gets no signal)."""
    streak = state.get("d_wins", 0) + 1 if means.get("d_fake", 1.0) < D_WINS else 0
    state["d_wins"] = streak
    if streak == D_WINS_WINDOWS:
        print(
            f"genlab: warning: D(G(z)) = {means['d_fake']:.2g} < {D_WINS} for {streak} logging windows at step "
            f"{state['step']}; the discriminator wins completely and G learns little (lower D's lr or restart)",
            file=sys.stderr,
        )
