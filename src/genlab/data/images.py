"""One split in memory, and what every source shares: fitting images to the model, batches, pixels."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from genlab.errors import DataError
from genlab.limits import require


@dataclass
class ImageData:
    """One split held in memory: uint8 images (N, C, H, W) and optional int64 labels (N,)."""

    images: Tensor
    labels: Tensor | None
    source: str
    original_size: tuple[int, int]
    factors: Factors | None = None  # known generative factors (shapes, dsprites), one row per image

    def __len__(self) -> int:
        return self.images.shape[0]


@dataclass
class Factors:
    """Generative factors of a data set: classes (N, K) int64, with each factor's name and number of values."""

    classes: np.ndarray
    names: tuple[str, ...]
    sizes: tuple[int, ...]


def fit_images(images: Tensor, channels: int, size: int, mode: str = "pad") -> Tensor:
    """uint8 (N, C, H, W) -> uint8 (N, channels, size, size): gray<->RGB, then centre pad or resize."""
    n, c = images.shape[:2]
    if images.shape[1:] != (channels, size, size):  # the fitted copy (and resize's chunks), before torch asks for it
        require(2 * n * channels * size * size, f"{n:,} images fitted to {channels}x{size}x{size}", "lower model.image_size",
                DataError)  # fmt: skip
    if c == 1 and channels == 3:
        images = images.expand(-1, 3, -1, -1)
    elif c == 3 and channels == 1:
        weights = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)  # ITU-R 601 luma, as PIL's "L"
        images = (images.float() * weights).sum(1, keepdim=True).round().clamp(0, 255).to(torch.uint8)
    elif c != channels:
        raise DataError(f"cannot turn {c}-channel images into {channels}-channel ones; set model channels to 1 or 3")
    h, w = images.shape[-2:]
    if (h, w) == (size, size):
        return images.contiguous()
    if mode == "pad":
        if h > size or w > size:
            raise DataError(f'{h}x{w} images do not fit a {size}x{size} model by padding; set data.fit = "resize"')
        top, left = (size - h) // 2, (size - w) // 2
        # Pad with 0 (-1 after scaling): the black background of the MNIST family.
        return F.pad(images, (left, size - w - left, top, size - h - top)).contiguous()
    out = []
    for chunk in images.split(4096):  # back to uint8 chunk by chunk: floats of the whole set would be 4x the result
        resized = F.interpolate(chunk.float(), size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        out.append(resized.round_().clamp_(0, 255).to(torch.uint8))
    return torch.cat(out)


def crop_to(images: Tensor, size: tuple[int, int]) -> Tensor:
    """Centre crop (..., H, W) to size: undo fit_images' padding for outputs at the data's own size."""
    h, w = images.shape[-2:]
    if (h, w) == tuple(size) or h < size[0] or w < size[1]:
        return images
    top, left = (h - size[0]) // 2, (w - size[1]) // 2
    return images[..., top : top + size[0], left : left + size[1]]


def vae_input(batch: Tensor, decoder: str, binarize: bool) -> Tensor:
    """uint8 batch -> a VAE's input: [-1, 1] for the Tanh (Gaussian) decoder, [0, 1] or {0, 1} for the Bernoulli one."""
    if decoder == "bernoulli":
        return (batch > 127).float() if binarize else batch.float() / 255
    return to_float(batch)


def to_float(batch: Tensor) -> Tensor:
    """uint8 pixels -> float in [-1, 1], matching the Tanh output range."""
    return batch.float().div_(127.5).sub_(1.0)


def epoch_order(n: int, seed: int, epoch: int) -> Tensor:
    """The permutation of epoch: a fixed function of (seed, epoch), so a resumed run sees the same order."""
    g = torch.Generator().manual_seed(int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0]))
    return torch.randperm(n, generator=g)


def iterate_batches(
    data: ImageData | torch.utils.data.Dataset,
    batch_size: int,
    seed: int,
    epoch: int,
    start: int = 0,
    workers: int = 0,
    rank: int = 0,
    world_size: int = 1,
    labels: bool = False,
) -> Iterator[Tensor] | Iterator[tuple[Tensor, Tensor]]:
    """uint8 batches of epoch, from batch index start on; the last partial batch is dropped.

    With world_size > 1, global batches hold batch_size * world_size images and rank r gets the
    r-th slice of each: together the ranks see the global batch a single process would.
    """
    n, step = len(data), batch_size * world_size
    order = epoch_order(n, seed, epoch)
    lo, hi = rank * batch_size, (rank + 1) * batch_size
    batches = [order[i * step : (i + 1) * step][lo:hi] for i in range(start, n // step)]
    if labels and not (isinstance(data, ImageData) and data.labels is not None):
        raise DataError("conditional training needs labels held in memory: IDX label files, or an image folder "
                        "with one subfolder per class under data.max_memory_mb")  # fmt: skip
    if isinstance(data, ImageData):
        for idx in batches:
            images = data.images[idx.to(data.images.device)]
            yield (images, data.labels[idx.to(data.labels.device)]) if labels else images
        return
    loader = torch.utils.data.DataLoader(
        data,
        batch_sampler=[b.tolist() for b in batches],
        num_workers=workers,
        collate_fn=_stack_readable,
        pin_memory=torch.cuda.is_available(),
    )
    yield from loader


def _stack_readable(items: list[Tensor]) -> Tensor:
    return torch.stack([t for t in items if t.numel()])  # skipped files come back empty
