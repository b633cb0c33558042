"""VAE likelihoods on test images: the ELBO and the importance-weighted bound (Burda et al. 2016).

log p(x) >= IW_k = E[log (1/k) sum_i p(x|z_i) p(z_i) / q(z_i|x)],  z_i ~ q(z|x),
IW_1 = ELBO and IW_k increases towards log p(x) with k. All in nats per image, under the decoder
likelihood the caller states: Bernoulli on binarized pixels, or Gaussian with a fixed variance.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from genlab.losses import bernoulli_nll, gaussian_kl, gaussian_nll, inside
from genlab.models.vae import VanillaVAE


def log_px_given_z(model: VanillaVAE, out: Tensor, x: Tensor, decoder_var: float | None, margin: int = 0) -> Tensor:
    """log p(x|z) per example for decoder output out: Bernoulli logits, or a Gaussian mean in [-1, 1]; over
    the pixels inside margin (the σ-VAE's: the data's own, not the padding)."""
    out, x = inside(out, margin), inside(x, margin)
    if model.config.decoder == "bernoulli":
        return -bernoulli_nll(out, x)
    return -gaussian_nll(out, x, decoder_var)


DECODE_PIXELS = 4096 * 32 * 32  # images x pixels decoded at once: 4096 at 32x32, 1024 at 64x64 (~1.5 GB there)


def decode_chunk(x: Tensor) -> int:
    """Images decoded at once for a batch like x: the decoder's activations grow with the pixels, so fewer at 64x64."""
    return max(1, DECODE_PIXELS // (x.shape[-1] * x.shape[-2]))


@torch.no_grad()
def elbo_and_iwae(
    model: VanillaVAE,
    x: Tensor,
    k: int,
    decoder_var: float | None,
    generator: torch.Generator,
    chunk: int | None = None,
    margin: int = 0,
) -> tuple[Tensor, Tensor, Tensor]:
    """Per-image (ELBO, IW_k bound, KL) for a batch x, from k posterior samples each, `chunk` images decoded
    at once (decode_chunk by default).

    The ELBO uses the closed-form KL and the mean of log p(x|z) over the same k samples.
    """
    model.eval()
    mu, logvar = model.encode(x)
    std = torch.exp(0.5 * logvar)
    d = mu.shape[1]
    per_chunk = max(1, (chunk or decode_chunk(x)) // len(x))
    log_w, log_px = [], []
    for start in range(0, k, per_chunk):
        kc = min(per_chunk, k - start)
        eps = torch.randn((kc, *mu.shape), generator=generator, device=mu.device, dtype=mu.dtype)
        z = mu + std * eps  # (kc, B, d)
        out = model.decode(z.flatten(0, 1))
        lp_x = log_px_given_z(model, out, x.repeat(kc, *([1] * (x.dim() - 1))), decoder_var, margin).view(kc, -1)
        lp_z = -0.5 * (z.square().sum(-1) + d * math.log(2 * math.pi))
        lq_z = -0.5 * (eps.square().sum(-1) + d * math.log(2 * math.pi)) - torch.log(std).sum(-1)
        log_w.append(lp_x + lp_z - lq_z)
        log_px.append(lp_x)
    log_w_all, log_px_all = torch.cat(log_w), torch.cat(log_px)  # (k, B)
    kl = gaussian_kl(mu, logvar)
    elbo = log_px_all.mean(0) - kl
    iwae = torch.logsumexp(log_w_all, dim=0) - math.log(k)
    return elbo, iwae, kl
