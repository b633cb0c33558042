"""One VAE update (the notes' Listing 4 + 5) and what a VAE run shows between epochs."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.optim import Adam, Optimizer

from genlab.config import RunConfig, VAELossConfig
from genlab.data import ImageData, vae_input
from genlab.latents import beside_reconstructions
from genlab.losses import gaussian_kl, sigma_vae_loss, tc_decomposition, vae_loss
from genlab.models.vae import VanillaVAE
from genlab.train import Trainer
from genlab.train.common import FP32, Precision, unwrap, update

LOG_KEYS = ("loss", "recon", "kl", "elbo")
ACTIVE_VAR = 0.01  # a code dimension is active when its mean varies over the inputs by more (Burda et al. 2016)
SIGMA_MOMENTUM = 0.01  # σ-VAE: weight of each batch's optimal log sigma in the running value
# The report's charts (title -> keys, reference line): each term in training and on test batches together.
CHARTS = {f"{k} (train, test)": ((k, f"val_{k}"), None) for k in LOG_KEYS}


def make_optimizers(model: VanillaVAE, config: RunConfig) -> dict[str, Optimizer]:
    t = config.train
    # fused: one kernel per step for all parameters (measured faster than foreach and for-loop Adam)
    return {"opt": Adam(model.parameters(), lr=t.lr, betas=t.betas, weight_decay=t.weight_decay, fused=True)}


def capacity(loss: VAELossConfig, step: int) -> float | None:
    """Burgess et al. (2018): C grows linearly from 0 to max_capacity over capacity_max_iter steps."""
    if loss.loss_type != "capacity":
        return None
    return min(loss.max_capacity, loss.max_capacity * step / loss.capacity_max_iter)


def prepare(model: VanillaVAE, batch: Tensor, binarize: bool) -> Tensor:
    """uint8 batch -> model input: [-1, 1] for the Tanh decoder, {0, 1} for the Bernoulli one."""
    return vae_input(batch, model.config.decoder, binarize)


def objective(model: VanillaVAE, x: Tensor | tuple[Tensor, Tensor], loss: VAELossConfig, step: int) -> dict[str, Tensor]:
    """The notes' loss terms for one batch, (images, labels) for a conditional VAE; model may be
    wrapped in DistributedDataParallel."""
    recons, x, mu, log_var, z = model(*(x if isinstance(x, tuple) else (x,)), return_z=True)
    inner = unwrap(model)
    out = loss_terms(recons, x, mu, log_var, z, loss, step, inner.config.decoder)
    if "log_sigma" in out and inner.training:  # the σ-VAE's calibrated sigma: a running mean over batches
        with torch.no_grad():
            inner.log_sigma.lerp_(out["log_sigma"].to(inner.log_sigma.dtype), SIGMA_MOMENTUM)
    return out


def loss_terms(
    recons: Tensor, x: Tensor, mu: Tensor, log_var: Tensor, z: Tensor, loss: VAELossConfig, step: int, decoder: str
) -> dict[str, Tensor]:
    """The configured objective: the notes' (β-)VAE loss, capacity annealing, β-TCVAE, or the σ-VAE's, with
    `active_dims`, the batch's count of code dimensions whose mean varies (logged, not optimised)."""
    active = {"active_dims": (mu.detach().float().var(0) > ACTIVE_VAR).sum().float()} if len(mu) > 1 else {}
    return {**objective_terms(recons, x, mu, log_var, z, loss, step, decoder), **active}


def objective_terms(
    recons: Tensor, x: Tensor, mu: Tensor, log_var: Tensor, z: Tensor, loss: VAELossConfig, step: int, decoder: str
) -> dict[str, Tensor]:
    if decoder == "sigma":
        return sigma_vae_loss(recons, x, mu, log_var, loss.beta, max(loss.margin, 0))
    if loss.loss_type != "tcvae":
        return vae_loss(recons, x, mu, log_var, loss.kld_weight, loss.beta, capacity(loss, step), loss.gamma, decoder,
                        loss.recon_sum)  # fmt: skip
    # β-TCVAE (Chen et al. 2018), in kld_weight units: the KL's three parts weighted alpha, beta, gamma_dwkl,
    # or (tc_form "analytic", disentanglement_lib) the closed-form KL plus (beta - 1) times the TC estimate.
    out = vae_loss(recons, x, mu, log_var, loss.kld_weight, 0.0, None, loss.gamma, decoder, loss.recon_sum)
    terms = tc_decomposition(z.float(), mu.float(), log_var.float(), loss.dataset_size, loss.estimator)
    parts = {k: v.mean() for k, v in terms.items()}
    beta = tc_weight(loss, step)
    if loss.tc_form == "analytic":
        penalty = gaussian_kl(mu.float(), log_var.float()).mean() + (beta - 1) * parts["tc"]
    else:
        penalty = loss.alpha * parts["mi"] + beta * parts["tc"] + loss.gamma_dwkl * parts["dwkl"]
    return {**out, "loss": out["loss"] + loss.kld_weight * penalty, **{k: v.detach() for k, v in parts.items()}}


def warmed_up(weight: float, loss: VAELossConfig, step: int) -> float:
    """A TC weight at a step: weight, or during loss.tc_warmup steps weight * step / tc_warmup."""
    return weight if not loss.tc_warmup else weight * min(1.0, step / loss.tc_warmup)


def tc_weight(loss: VAELossConfig, step: int) -> float:
    """β-TCVAE's weight on TC at a step (Chen et al.'s beta_anneal over loss.tc_warmup steps)."""
    return warmed_up(loss.beta, loss, step)


def vae_step(
    model: VanillaVAE,
    x: Tensor,
    optimizers: dict[str, Optimizer],
    loss: VAELossConfig,
    step: int,
    skip_nonfinite: bool = False,
    amp: Precision = FP32,
) -> dict[str, Tensor]:
    """Forward, the notes' loss, backward, Adam step; returns detached terms (no host sync)."""
    with amp.autocast():
        out = objective(model, x, loss, step)
    update(optimizers["opt"], out["loss"], skip_nonfinite, amp.scaler("opt"))
    return {k: v.detach().float() for k, v in out.items()}


@torch.no_grad()
def validate(model: VanillaVAE, test: ImageData, config: RunConfig, step: int, device: torch.device) -> dict[str, float]:
    """The training objective and its terms on the first val_batches test batches, eval mode.

    Same kld_weight, beta and capacity as training; z is drawn from a fixed generator so the
    figure is repeatable and the training RNG stream is left alone.
    """
    model.eval()
    gen = torch.Generator(device).manual_seed(config.train.seed)
    bs, sums, n = config.train.batch_size, dict.fromkeys(LOG_KEYS, 0.0), 0
    conditional = getattr(model.config, "num_classes", None) is not None
    for i in range(min(config.train.val_batches, -(-len(test) // bs))):
        x = vae_input(test.images[i * bs : (i + 1) * bs].to(device), model.config.decoder, config.data.binarize)
        cond = (test.labels[i * bs : (i + 1) * bs].to(device),) if conditional else ()  # a conditional VAE's classes
        mu, log_var = model.encode(x, *cond)
        z = model.reparameterize(mu, log_var, generator=gen)
        out = loss_terms(model.decode(z, *cond), x, mu, log_var, z, config.loss, step, model.config.decoder)
        for k in LOG_KEYS:
            sums[k] += out[k].item() * len(x)
        n += len(x)
    model.train()
    return {f"val_{k}": v / max(n, 1) for k, v in sums.items()}


@torch.no_grad()
def pictures(model: VanillaVAE, test: ImageData, noise: Tensor, device: torch.device, binarize: bool) -> list[Tensor]:
    """Prior samples from fixed noise, and test images beside their reconstructions."""
    model.eval()
    samples = model.to_image(model.decode(noise.to(device)))
    n = min(len(test), noise.shape[0] // 2)
    pairs = beside_reconstructions(model, test.images[:n].to(device), binarize)
    model.train()
    return [samples, pairs]


COLLAPSE_WINDOWS = 20


def health(means: dict[str, float], memory: dict[str, Any], step: int) -> str | None:
    """A warning, once, when no code dimension has been active for COLLAPSE_WINDOWS logging windows in a row:
    the posterior has collapsed, and whatever KL is left is a constant offset or a shrunk sigma.

    memory is the run's health record, kept in its checkpoints: here the current streak.
    """
    streak = memory.get("collapsed", 0) + 1 if means.get("active_dims", 1.0) < 0.5 else 0
    memory["collapsed"] = streak
    if streak == COLLAPSE_WINDOWS:
        return (
            f"posterior collapse: no dimension of the mean code has varied over a batch (Var(mu) > {ACTIVE_VAR}) for "
            f"{streak} logging windows up to step {step}, with {means.get('kl', 0.0):.3g} nats of KL: the code carries "
            "nothing about the image; weaken the KL term (loss.beta, loss.gamma or loss.kld_weight) or restart"
        )
    return None


TRAINER = Trainer(vae_step, make_optimizers, prepare, validate, pictures, LOG_KEYS, CHARTS, health)
