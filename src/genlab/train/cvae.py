"""One class-conditional VAE update: the notes' loss, with the label given to the encoder and the decoder."""

from __future__ import annotations

import torch
from torch import Tensor
from torch.optim import Optimizer

from genlab.config import VAELossConfig
from genlab.data import ImageData, vae_input
from genlab.models.cgan import balanced_labels
from genlab.train.common import FP32, Precision, unwrap, update
from genlab.train.vae import CHARTS, LOG_KEYS, health, loss_terms, make_optimizers  # noqa: F401

CONDITIONAL = True  # batches are (images, labels)


def prepare(model, batch: tuple[Tensor, Tensor], binarize: bool) -> tuple[Tensor, Tensor]:
    images, labels = batch
    return vae_input(images, unwrap(model).config.decoder, binarize), labels


def objective(model, batch: tuple[Tensor, Tensor], loss: VAELossConfig, step: int) -> dict[str, Tensor]:
    x, labels = batch
    recons, x, mu, log_var, z = model(x, labels, return_z=True)
    return loss_terms(recons, x, mu, log_var, z, loss, step, unwrap(model).config.decoder)


def cvae_step(
    model,
    batch: tuple[Tensor, Tensor],
    optimizers: dict[str, Optimizer],
    loss: VAELossConfig,
    step: int,
    skip_nonfinite: bool = False,
    amp: Precision = FP32,
) -> dict[str, Tensor]:
    with amp.autocast():
        out = objective(model, batch, loss, step)
    update(optimizers["opt"], out["loss"], skip_nonfinite, amp.scaler("opt"))
    return {k: v.detach().float() for k, v in out.items()}


step = cvae_step


@torch.no_grad()
def validate(model, test: ImageData, config, step: int, device: torch.device) -> dict[str, float]:
    """The training objective's terms on the first val_batches labelled test batches, eval mode."""
    model.eval()
    gen = torch.Generator(device).manual_seed(config.train.seed)
    bs, sums, n = config.train.batch_size, dict.fromkeys(LOG_KEYS, 0.0), 0
    for i in range(min(config.train.val_batches, -(-len(test) // bs))):
        x, labels = prepare(
            model, (test.images[i * bs : (i + 1) * bs].to(device), test.labels[i * bs : (i + 1) * bs].to(device)), False
        )
        mu, log_var = model.encode(x, labels)
        z = model.vae.reparameterize(mu, log_var, generator=gen)
        out = loss_terms(model.decode(z, labels), x, mu, log_var, z, config.loss, step, model.config.decoder)
        for k in LOG_KEYS:
            sums[k] += out[k].item() * len(x)
        n += len(x)
    model.train()
    return {f"val_{k}": v / max(n, 1) for k, v in sums.items()}


@torch.no_grad()
def pictures(model, test: ImageData, noise: Tensor, device: torch.device, binarize: bool) -> list[Tensor]:
    """Prior samples of the classes in turn from fixed noise, and test images beside their reconstructions."""
    model.eval()
    samples = model.to_image(model.decode(noise.to(device), balanced_labels(len(noise), model.num_classes, device)))
    half = len(noise) // 2
    x, labels = prepare(model, (test.images[:half].to(device), test.labels[:half].to(device)), binarize)
    shown = x * 2 - 1 if model.config.decoder == "bernoulli" else x
    pairs = torch.stack([shown, model.reconstruct(x, labels)], dim=1).flatten(0, 1)
    model.train()
    return [samples, pairs]
