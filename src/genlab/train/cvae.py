"""One class-conditional VAE update: the notes' loss, with the label given to the encoder and the decoder."""

from __future__ import annotations

import torch
from torch import Tensor

from genlab.data import ImageData, vae_input
from genlab.models.cgan import balanced_labels
from genlab.train.common import unwrap
from genlab.train.vae import CHARTS, LOG_KEYS, health, make_optimizers, vae_step, validate  # noqa: F401

CONDITIONAL = True  # batches are (images, labels)


def prepare(model, batch: tuple[Tensor, Tensor], binarize: bool) -> tuple[Tensor, Tensor]:
    images, labels = batch
    return vae_input(images, unwrap(model).config.decoder, binarize), labels


step = vae_step  # the notes' update; its objective passes (images, labels) to the model


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
