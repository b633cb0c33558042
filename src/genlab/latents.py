"""The latent-space toolkit: encode, decode, per-dimension KL, interpolate and traverse.

For a VAE a traversal's seed is a test image's posterior mean and rows are sorted by the dimension's
KL (the dimensions the model uses first; inactive ones, KL < 0.01 nats, are dimmed). For a GAN the
seed is a draw of z and rows are z's coordinates. A conditional model is given labels throughout:
the seed image's class (VAE) or the one asked for.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from genlab.data import vae_input
from genlab.losses import gaussian_kl

INACTIVE_KL = 0.01  # nats: below this a dimension carries (almost) no information about x
MAX_ROWS = 16  # default rows of a VAE traversal: the 16 highest-KL dimensions (the notes' VAE has 128)


def _cond(labels: Tensor | None) -> tuple[Tensor, ...]:
    return () if labels is None else (labels,)


def decode(model: nn.Module, kind: str, z: Tensor, labels: Tensor | None = None) -> Tensor:
    """Codes (B, latent_dim) -> images in [-1, 1]: a VAE's decoder or a GAN's generator."""
    if kind == "vae":
        return model.to_image(model.decode(z, *_cond(labels)))
    return model.generator(z, *_cond(labels))


def _input(model: nn.Module, images: Tensor, binarize: bool) -> Tensor:
    device = next(model.parameters()).device
    return vae_input(images.to(device), model.config.decoder, binarize)


@torch.no_grad()
def encode(
    model: nn.Module, images: Tensor, binarize: bool, labels: Tensor | None = None, batch_size: int = 1024
) -> tuple[np.ndarray, np.ndarray]:
    """Posterior means and log-variances (N, D) of uint8 images, in eval mode, as float64 arrays."""
    device = next(model.parameters()).device
    model.eval()
    mus, logvars = [], []
    for i in range(0, len(images), batch_size):
        x = _input(model, images[i : i + batch_size], binarize)
        cond = _cond(None if labels is None else labels[i : i + batch_size].to(device))
        mu, logvar = model.encode(x.contiguous(memory_format=torch.channels_last), *cond)
        mus.append(mu.float().cpu())
        logvars.append(logvar.float().cpu())
    return torch.cat(mus).numpy().astype(np.float64), torch.cat(logvars).numpy().astype(np.float64)


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """A copy of model for inference with each Conv2d -> BatchNorm2d pair of a Sequential as one Conv2d.

    In eval mode BatchNorm is an affine map per channel, so it folds into the convolution before it: the
    same function, to float rounding, without a pass over every activation (~15% of a 32x32 encode).
    """
    folded = copy.deepcopy(model).eval()
    for block in folded.modules():
        if not isinstance(block, nn.Sequential):
            continue
        for i in range(len(block) - 1):
            conv, norm = block[i], block[i + 1]
            if not (isinstance(conv, nn.Conv2d) and type(norm) is nn.BatchNorm2d and norm.track_running_stats):
                continue
            scale = (norm.weight if norm.affine else 1.0) / torch.sqrt(norm.running_var + norm.eps)
            shift = norm.bias if norm.affine else 0.0
            with torch.no_grad():
                bias = conv.bias if conv.bias is not None else torch.zeros_like(norm.running_mean)
                conv.weight.mul_(scale.view(-1, 1, 1, 1))
                conv.bias = nn.Parameter((bias - norm.running_mean) * scale + shift)
            block[i + 1] = nn.Identity()
    return folded


def encode_batch_size(image_size: int) -> int:
    """Images per encoder call when encoding many: small enough that a batch's activations stay in cache.

    Measured on 2 AVX-512 cores, the beta_vae_shapes encoder at 32x32: 128-256 images a call ran at
    ~12k images/s, 1024 (encode's default) at ~9k, 4096 at ~7k.
    """
    return max(32, 256 * 32 * 32 // (image_size * image_size))


def encode_chunks(
    model: nn.Module, chunks: Iterable[Tensor], n: int, binarize: bool, batch_size: int | None = None, bf16: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Posterior means and log-variances (n, D), float32, of n uint8 images arriving in chunks: one pass, the
    images never all in memory; BatchNorm folded into the convolutions, batch_size by default from
    encode_batch_size. bf16: the encoder under CPU bfloat16 autocast (the caller checks the codes)."""
    device = next(model.parameters()).device
    model = fold_batchnorm(model)
    batch_size = batch_size or encode_batch_size(model.config.image_size)
    mu_all = np.empty((n, model.latent_dim), dtype=np.float32)
    logvar_all = np.empty((n, model.latent_dim), dtype=np.float32)

    @torch.inference_mode()
    def encode_batch(batch: Tensor, start: int) -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            mu, logvar = model.encode(_input(model, batch, binarize).contiguous(memory_format=torch.channels_last))
        mu_all[start : start + len(mu)] = mu.float().cpu().numpy()
        logvar_all[start : start + len(mu)] = logvar.float().cpu().numpy()

    # On the CPU, whole batches on a thread each with one torch thread apiece: with other work on the cores,
    # torch's threads inside each convolution wait for one another (2 shared cores: ~480 images/s against ~3,000).
    previous = torch.get_num_threads()
    workers = previous if device.type == "cpu" else 1
    torch.set_num_threads(1 if device.type == "cpu" else previous)
    done = 0
    try:
        with ThreadPoolExecutor(workers) as pool:
            for chunk in chunks:
                if done + len(chunk) > n:
                    raise ValueError(f"more than the {n} images announced")
                starts = range(0, len(chunk), batch_size)
                list(pool.map(encode_batch, [chunk[i : i + batch_size] for i in starts], [done + i for i in starts]))
                done += len(chunk)
    finally:
        torch.set_num_threads(previous)
    if done != n:
        raise ValueError(f"{done} images arrived, {n} were announced")
    return mu_all, logvar_all


def label_dims(normalised_mi: np.ndarray, factor_names: Sequence[str], threshold: float = 0.1) -> list[str]:
    """Each latent dimension's row label from its (D, K) normalised mutual information with the factors:
    "carries <factor> (MI x)" for its largest entry, or "none" where no entry reaches threshold."""
    labels = []
    for row in np.asarray(normalised_mi, dtype=np.float64):
        k = int(np.argmax(row)) if row.size else 0
        labels.append(f"carries {factor_names[k]} (MI {row[k]:.2f})" if row.size and row[k] >= threshold else "none")
    return labels


@torch.no_grad()
def kl_per_dim(model: nn.Module, images: Tensor, binarize: bool, labels: Tensor | None = None) -> Tensor:
    """Mean KL(q(z_d|x) || N(0, 1)) of each latent dimension over uint8 images, nats."""
    device = next(model.parameters()).device
    cond = _cond(None if labels is None else labels.to(device))
    mu, logvar = model.encode(_input(model, images, binarize), *cond)
    return torch.stack([gaussian_kl(mu[:, d : d + 1], logvar[:, d : d + 1]).mean() for d in range(mu.shape[1])]).cpu()


@torch.no_grad()
def interpolate(model: nn.Module, images: Tensor, binarize: bool, steps: int, labels: Tensor | None = None) -> tuple[Tensor, int]:
    """Decoded straight lines between the posterior means of images (0, 1), (2, 3), ...:
    ((pairs * steps, C, H, W) in [-1, 1] row by row, pairs). A conditional VAE decodes each line with
    its first image's class."""
    device = next(model.parameters()).device
    x = _input(model, images, binarize)
    labels = None if labels is None else labels.to(device)
    mu, _ = model.encode(x, *_cond(labels))
    a, b = mu[0::2], mu[1::2]
    n = min(len(a), len(b))
    w = torch.linspace(0, 1, steps, device=device).view(1, -1, 1)
    z = (1 - w) * a[:n, None] + w * b[:n, None]  # (pairs, steps, latent)
    line_labels = None if labels is None else labels[0::2][:n].repeat_interleave(steps)
    return decode(model, "vae", z.flatten(0, 1), line_labels), n


@torch.no_grad()
def beside_reconstructions(model: nn.Module, images: Tensor, binarize: bool, labels: Tensor | None = None) -> Tensor:
    """uint8 test images -> (2N, C, H, W) in [-1, 1]: original, reconstruction (through the posterior mean), ..."""
    x = _input(model, images, binarize)
    shown = x * 2 - 1 if model.config.decoder == "bernoulli" else x
    cond = _cond(None if labels is None else labels.to(x.device))
    return torch.stack([shown, model.reconstruct(x, *cond)], dim=1).flatten(0, 1)


@dataclass
class Traversal:
    images: Tensor  # (rows * steps, C, H, W) in [-1, 1], row-major
    dims: list[int]  # latent dimension of each row
    kl: list[float | None]  # its mean KL over the reference images (VAE), None for GANs
    steps: int

    @property
    def active(self) -> list[bool]:
        return [k is None or k >= INACTIVE_KL for k in self.kl]


@torch.no_grad()
def traverse(
    model: nn.Module,
    kind: str,
    reference: Tensor | None = None,
    binarize: bool = False,
    seed_index: int = 0,
    dims: int | None = None,
    span: float = 2.0,
    steps: int = 9,
    seed: int = 0,
    labels: Tensor | None = None,
    label: int | None = None,
) -> Traversal:
    """The traversal of model around one seed code; reference: uint8 test images (VAE: the seed and the KL).

    A conditional model needs labels (the reference's, VAE) or a label (the class every row is drawn in);
    a conditional VAE's rows take the seed image's class unless label is given.
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    values = torch.linspace(-span, span, steps, device=device)
    if kind == "vae":
        if reference is None or len(reference) == 0:
            raise ValueError("a VAE traversal needs reference images")
        ref_labels = None if labels is None else labels[:500]
        kl = kl_per_dim(model, reference[:500], binarize, ref_labels)
        order = torch.argsort(kl, descending=True).tolist()[: dims or min(len(kl), MAX_ROWS)]
        seed_labels = None if labels is None else labels[seed_index : seed_index + 1].to(device)
        base = model.encode(_input(model, reference[seed_index : seed_index + 1], binarize), *_cond(seed_labels))[0][0]
        kls: list[float | None] = [float(kl[d]) for d in order]
        if label is None and seed_labels is not None:
            label = int(seed_labels[0])
    else:
        base = torch.randn(model.config.latent_dim, generator=torch.Generator().manual_seed(seed)).to(device)
        order = list(range(dims or min(10, base.numel())))
        kls = [None] * len(order)
    z = base.repeat(len(order), steps, 1)  # (rows, steps, latent)
    for row, d in enumerate(order):
        z[row, :, d] = values
    flat = z.flatten(0, 1)
    row_labels = None if label is None else torch.full((len(flat),), label, device=device)
    images = decode(model, kind, flat, row_labels)
    model.train(was_training)
    return Traversal(images.float().cpu(), order, kls, steps)


def dim_inactive(traversal: Traversal, brightness: float = 0.3) -> Tensor:
    """The traversal's images with inactive rows darkened, so a grid shows which dimensions carry nothing."""
    images = traversal.images.clone().view(len(traversal.dims), traversal.steps, *traversal.images.shape[1:])
    for row, active in enumerate(traversal.active):
        if not active:
            images[row] = (images[row] + 1) * brightness - 1
    return images.flatten(0, 1)


def there_and_back(frames: list) -> list:
    """An animation's frames played forward then back, without repeating the ends (a seamless loop)."""
    return [*frames, *frames[-2:0:-1]]
