"""One class-conditional VAE update: the notes' loss, with the label given to the encoder and the decoder."""

from __future__ import annotations

import torch
from torch import Tensor

from genlab.data import ImageData, vae_input
from genlab.latents import beside_reconstructions
from genlab.models.cgan import balanced_labels
from genlab.train import Trainer
from genlab.train.common import unwrap
from genlab.train.vae import CHARTS, LOG_KEYS, health, make_optimizers, vae_step, validate


def prepare(model, batch: tuple[Tensor, Tensor], binarize: bool) -> tuple[Tensor, Tensor]:
    images, labels = batch
    return vae_input(images, unwrap(model).config.decoder, binarize), labels


@torch.no_grad()
def pictures(model, test: ImageData, noise: Tensor, device: torch.device, binarize: bool) -> list[Tensor]:
    """Prior samples of the classes in turn from fixed noise, and test images beside their reconstructions."""
    model.eval()
    samples = model.to_image(model.decode(noise.to(device), balanced_labels(len(noise), model.num_classes, device)))
    half = len(noise) // 2
    pairs = beside_reconstructions(model, test.images[:half].to(device), binarize, test.labels[:half])
    model.train()
    return [samples, pairs]


# The notes' update: its objective passes (images, labels) to the model.
TRAINER = Trainer(vae_step, make_optimizers, prepare, validate, pictures, LOG_KEYS, CHARTS, health)
