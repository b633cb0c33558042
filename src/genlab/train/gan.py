"""One GAN update (the notes' training loop: G step, then D step) and what a GAN run shows."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.optim import Adam, Optimizer

from genlab.config import GANLossConfig, RunConfig
from genlab.data import ImageData, to_float
from genlab.losses import gan_d_loss, gan_g_loss, hinge_d_loss, hinge_g_loss
from genlab.models.gan import GAN
from genlab.train import Trainer
from genlab.train.common import FP32, Precision, backward, update
from genlab.train.common import step as optimizer_step

LOG_KEYS = ("g_loss", "d_loss", "d_real", "d_fake")
# The report's charts (title -> keys, horizontal reference line): D's outputs against the notes' equilibrium D = 1/2.
CHARTS = {
    "D(x), D(G(z)) and D's test accuracy": (("d_real", "d_fake", "val_d_real", "val_d_fake", "val_d_acc"), 0.5),
    "losses": (("g_loss", "d_loss"), None),
}


def make_optimizers(model: GAN, config: RunConfig) -> dict[str, Optimizer]:
    t = config.train
    # fused: one kernel per step for all parameters (measured 1.4x faster than foreach here)
    kw = {"lr": t.lr, "betas": t.betas, "weight_decay": t.weight_decay, "fused": True}
    return {"opt_g": Adam(model.generator.parameters(), **kw), "opt_d": Adam(model.discriminator.parameters(), **kw)}


def prepare(model: GAN, batch: Tensor, binarize: bool) -> Tensor:
    return to_float(batch)


def gan_step(
    model: GAN,
    real: Tensor,
    optimizers: dict[str, Optimizer],
    loss: GANLossConfig,
    step: int,
    skip_nonfinite: bool = False,
    amp: Precision = FP32,
) -> dict[str, Tensor]:
    """The notes' alternating update; returns detached losses and mean D outputs (no host sync).

    model.generator / model.discriminator may be DistributedDataParallel wrappers (train/loop.py).
    """
    g, d = model.generator, model.discriminator
    z = torch.randn(real.size(0), model.config.latent_dim, device=real.device)
    if isinstance(d, DistributedDataParallel) or hasattr(d, "_orig_mod"):  # DDP or torch.compile: see _two_forwards
        return _two_forwards(model, real, z, optimizers, loss, skip_nonfinite, amp)
    opt_g, opt_d = optimizers["opt_g"], optimizers["opt_d"]
    # The notes' G step scores G(z) with D, then their D step scores the same detached G(z) with the
    # same D (D is not updated in between), so one scoring of G(z) serves both losses, and each loss
    # takes gradients into its own network only: the notes' update exactly. Where D keeps no state
    # between calls, one forward over [real; G(z)] also equals its two calls (tested). A D with batch
    # statistics would pool real and fake in one batch, and spectral norm runs a power iteration per
    # call: those D see the real and the fake batch apart (the papers' own Ds train in train/dcgan.py
    # and train/sngan.py; this path keeps it for a user's D on the notes' loop).
    with amp.autocast():
        fake = g(z)
        if one_forward_is_exact(d):
            real_scores, fake_scores = d(torch.cat([real, fake]), logits=loss.logits).float().split(real.size(0))
        else:
            real_scores, fake_scores = d(real, logits=loss.logits).float(), d(fake, logits=loss.logits).float()
        g_loss = g_objective(fake_scores, loss)  # 1. G: make D call the fakes real
        d_loss = d_objective(real_scores, fake_scores, loss)  # 2. D: real -> 1, fakes -> 0, averaged
    opt_g.zero_grad(set_to_none=True)
    opt_d.zero_grad(set_to_none=True)
    # D's weights get no gradient from g_loss and G's none from d_loss (the notes' detach).
    g_ok = backward(g_loss, list(g.parameters()), skip_nonfinite, amp.scaler("opt_g"), retain_graph=True)
    d_ok = backward(d_loss, list(d.parameters()), skip_nonfinite, amp.scaler("opt_d"))
    if g_ok:
        optimizer_step(opt_g, amp.scaler("opt_g"))
    if d_ok:
        optimizer_step(opt_d, amp.scaler("opt_d"))
    return _outputs(g_loss, d_loss, real_scores, fake_scores, loss.logits)


def has_batch_statistics(module: nn.Module) -> bool:
    """Whether a forward pass mixes the samples of a batch (BatchNorm in training mode)."""
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in module.modules())


def has_spectral_norm(module: nn.Module) -> bool:
    """Whether a forward pass changes the module's state (spectral norm's power iteration in training)."""
    return any(nn.utils.parametrize.is_parametrized(m) for m in module.modules())


def one_forward_is_exact(d: nn.Module) -> bool:
    """Whether D over [real; fake] in one call gives what D(real) and D(fake) give in two."""
    return not has_batch_statistics(d) and not has_spectral_norm(d)


def _two_forwards(
    model: GAN, real: Tensor, z: Tensor, optimizers: dict[str, Optimizer], loss: GANLossConfig, skip: bool, amp: Precision
) -> dict[str, Tensor]:
    """The notes' two steps as written: DistributedDataParallel wants one backward per forward, and
    torch.compile's backward (donated buffers) cannot retain its graph for a second one."""
    opt_g, opt_d = optimizers["opt_g"], optimizers["opt_d"]
    g, d = model.generator, model.discriminator
    with amp.autocast():
        fake = g(z)
        g_loss = g_objective(d(fake, logits=loss.logits), loss)
    update(opt_g, g_loss, skip, amp.scaler("opt_g"))
    with amp.autocast():
        # One forward over both halves, as DDP needs one per backward: exact for the notes' MLP D; for a
        # spectral-norm D it runs one power iteration where the two calls run two.
        scores = d(torch.cat([real, fake.detach()]), logits=loss.logits)  # detach: no gradient into G
        real_scores, fake_scores = scores.float().split(real.size(0))
        d_loss = d_objective(real_scores, fake_scores, loss)
    update(opt_d, d_loss, skip, amp.scaler("opt_d"))
    return _outputs(g_loss, d_loss, real_scores, fake_scores, loss.logits)


def g_objective(fake_scores: Tensor, loss: GANLossConfig) -> Tensor:
    return hinge_g_loss(fake_scores) if loss.adversarial == "hinge" else gan_g_loss(fake_scores, loss.logits)


def d_objective(real_scores: Tensor, fake_scores: Tensor, loss: GANLossConfig) -> Tensor:
    if loss.adversarial == "hinge":
        return hinge_d_loss(real_scores, fake_scores)
    return gan_d_loss(real_scores, fake_scores, loss.logits)


def _outputs(g_loss: Tensor, d_loss: Tensor, real_scores: Tensor, fake_scores: Tensor, logits: bool) -> dict[str, Tensor]:
    prob = torch.sigmoid if logits else (lambda t: t)
    return {
        "g_loss": g_loss.detach().float(),
        "d_loss": d_loss.detach().float(),
        "d_real": prob(real_scores.detach()).mean(),
        "d_fake": prob(fake_scores.detach()).mean(),
    }


@torch.no_grad()
def validate(model: GAN, test: ImageData, config: RunConfig, step: int, device: torch.device) -> dict[str, float]:
    """D's accuracy and mean outputs on test images and on fakes from a fixed generator, eval mode."""
    model.eval()
    gen = torch.Generator(device).manual_seed(config.train.seed)
    bs = config.train.batch_size
    n_batches = min(config.train.val_batches, -(-len(test) // bs))
    d_real = d_fake = correct = n = 0.0
    conditional = getattr(model.config, "num_classes", None) is not None
    for i in range(n_batches):
        real = to_float(test.images[i * bs : (i + 1) * bs].to(device))
        # A conditional D scores each image with its class; the fakes get the test images' classes.
        cond = (test.labels[i * bs : (i + 1) * bs].to(device),) if conditional else ()
        fake = model.sample(len(real), gen, *cond)
        p_real, p_fake = model.discriminator(real, *cond), model.discriminator(fake, *cond)
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


def health(means: dict[str, float], memory: dict[str, Any], step: int) -> str | None:
    """A warning, once, when D has won for D_WINS_WINDOWS logging windows in a row (G gets no signal).

    memory is the run's health record, kept in its checkpoints: here the current streak.
    """
    streak = memory.get("d_wins", 0) + 1 if means.get("d_fake", 1.0) < D_WINS else 0
    memory["d_wins"] = streak
    if streak == D_WINS_WINDOWS:
        return (
            f"D(G(z)) = {means['d_fake']:.2g} < {D_WINS} for {streak} logging windows at step "
            f"{step}; the discriminator wins completely and G learns little (lower D's lr or restart)"
        )
    return None


TRAINER = Trainer(gan_step, make_optimizers, prepare, validate, pictures, LOG_KEYS, CHARTS, health)
