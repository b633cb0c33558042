"""Losses as plain functions of tensors. Per-example values; the caller reduces."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from genlab.errors import ConfigError


def gaussian_kl(mu: Tensor, logvar: Tensor) -> Tensor:
    """KL(N(mu, diag(exp(logvar))) || N(0, I)) per example, in nats (the notes' closed form).

    Equals -1/2 * sum(1 + logvar - mu^2 - exp(logvar)), Kingma & Welling (2014), App. B.
    """
    return 0.5 * (mu.square() + logvar.exp() - 1.0 - logvar).sum(dim=1)


def squared_error(recons: Tensor, x: Tensor) -> Tensor:
    """Sum of squared pixel errors per example: ||x - x_hat||^2."""
    return (recons - x).square().flatten(1).sum(dim=1)


def gaussian_nll(recons: Tensor, x: Tensor, var: float) -> Tensor:
    """-log N(x; recons, var * I) per example, in nats (continuous pixels in [-1, 1])."""
    d = x[0].numel()
    return squared_error(recons, x) / (2 * var) + 0.5 * d * math.log(2 * math.pi * var)


def bernoulli_nll(logits: Tensor, x01: Tensor) -> Tensor:
    """-log Bernoulli(x; sigmoid(logits)) per example, in nats, for x in {0, 1}."""
    return F.binary_cross_entropy_with_logits(logits, x01, reduction="none").flatten(1).sum(dim=1)


def decoder_variance(kld_weight: float, num_pixels: int) -> float:
    """The fixed Gaussian decoder variance under which MSE + kld_weight * KL is -ELBO / num_pixels.

    mean((x - x_hat)^2) + w * KL = (||x - x_hat||^2 / (2 var) + KL) * (2 var / D) when var = w * D / 2,
    so the notes' loss at beta = 1 is the negative ELBO (up to a constant) divided by D pixels.
    """
    return kld_weight * num_pixels / 2


def beta_from_normalised(beta_norm: float, latent_dim: int, kld_weight: float, pixels: int = 0, recon_sum: bool = False) -> float:
    """The beta of a normalised one (pixel-mean reconstruction, latent-mean KL: beta_norm * KL_sum / latent_dim).

    Against the notes' pixel-mean reconstruction kld_weight * beta = beta_norm / latent_dim; against a
    reconstruction summed over the D pixels (loss.recon_sum) kld_weight * beta = beta_norm * D / latent_dim.
    """
    if kld_weight == 0:
        raise ConfigError("loss.beta_norm needs loss.kld_weight > 0 (beta = beta_norm / (latent_dim * kld_weight))")
    return beta_norm * (pixels if recon_sum else 1) / (latent_dim * kld_weight)


def beta_conventions(loss, latent_dim: int, pixels: int) -> dict[str, float]:
    """The run's KL weight in the three conventions in use (the notes', the literature's per-image sum, normalised).

    The notes: MSE_mean + kld_weight * beta * KL_sum. Per-image sums (Higgins et al.; disentanglement_lib):
    D * (that) = SSE + (D * kld_weight * beta) * KL_sum, or kld_weight * beta itself where the reconstruction
    is summed per image already (loss.recon_sum). Normalised (disent): MSE_mean + beta_norm * KL_sum / latent_dim.
    """
    beta_sum = loss.kld_weight * loss.beta * (1 if getattr(loss, "recon_sum", False) else pixels)
    return {"beta": loss.beta, "beta_sum": beta_sum, "beta_norm": beta_sum * latent_dim / pixels}


MIN_LOG_SIGMA = -6.0  # Rybkin et al. 2021 keep the optimal sigma from collapsing on perfect reconstructions


def optimal_log_sigma(recons: Tensor, x: Tensor) -> Tensor:
    """The sigma-VAE's shared decoder log sigma: the maximum-likelihood value, sqrt(mean squared error), floored."""
    return (0.5 * (recons - x).square().mean().log()).clamp(min=MIN_LOG_SIGMA)


def inside(images: Tensor, margin: int) -> Tensor:
    """(..., H, W) without `margin` pixels on each side: the data's own pixels inside a padded image."""
    return images[..., margin : images.shape[-2] - margin, margin : images.shape[-1] - margin] if margin else images


def sigma_vae_loss(
    recons: Tensor, x: Tensor, mu: Tensor, logvar: Tensor, beta: float = 1.0, margin: int = 0
) -> dict[str, Tensor]:
    """-ELBO per image in nats (beta-weighted KL) under a Gaussian decoder with the batch's optimal shared sigma.

    At the optimum the gradient through sigma is zero, so sigma is taken as a constant (detached):
    NLL = ||x - x_hat||^2 / (2 sigma^2) + D log sigma + D/2 log(2 pi), over the D pixels inside the margin
    (the data's own: a padding pixel is the same constant in every image and in none of the data).
    """
    recons, x = inside(recons, margin), inside(x, margin)
    d = x[0].numel()
    log_sigma = optimal_log_sigma(recons.detach(), x)
    nll = squared_error(recons, x) / (2 * torch.exp(2 * log_sigma)) + d * log_sigma + 0.5 * d * math.log(2 * math.pi)
    kl = gaussian_kl(mu, logvar)
    return {
        "loss": (nll + beta * kl).mean(),
        "recon": F.mse_loss(recons.detach(), x),
        "kl": kl.mean().detach(),
        "elbo": -(nll.detach() + kl.detach()).mean(),
        "log_sigma": log_sigma,
    }


def vae_loss(
    recons: Tensor,
    x: Tensor,
    mu: Tensor,
    logvar: Tensor,
    kld_weight: float,
    beta: float = 1.0,
    capacity: float | None = None,
    gamma: float = 1000.0,
    decoder: str = "gaussian",
    recon_sum: bool = False,
) -> dict[str, Tensor]:
    """The notes' Listing 5 loss, with beta-VAE (Higgins et al. 2017) and capacity (Burgess et al. 2018).

    loss = MSE(x_hat, x) + kld_weight * beta * mean_batch(KL)            (capacity is None)
    loss = MSE(x_hat, x) + kld_weight * gamma * |mean_batch(KL) - C|      (capacity C)
    For decoder="bernoulli", recons are logits, x is in {0, 1} and the reconstruction term is the
    per-pixel mean BCE, or with recon_sum its sum over the image (the literature's per-image NLL, against
    which kld_weight = 1 makes beta the literature's). Also returns, detached, the true KL (positive) and
    the per-image ELBO in nats.
    """
    kl = gaussian_kl(mu, logvar)  # (B,)
    d = x[0].numel()
    if decoder == "bernoulli":
        nll = bernoulli_nll(recons, x)
        recon = nll.mean() if recon_sum else nll.mean() / d
    else:
        recon = F.mse_loss(recons, x)
        # The batch-mean NLL follows from the MSE (mean ||x - x_hat||^2 = MSE * D): no second pass.
        var = decoder_variance(kld_weight, d)
        nll = recon.detach() * d / (2 * var) + 0.5 * d * math.log(2 * math.pi * var)
    kl_mean = kl.mean()
    if capacity is None:
        loss = recon + kld_weight * beta * kl_mean
    else:
        loss = recon + kld_weight * gamma * (kl_mean - capacity).abs()
    return {
        "loss": loss,
        "recon": recon.detach(),
        "kl": kl_mean.detach(),
        "elbo": -(nll.detach().mean() + kl_mean.detach()),  # per image, nats; higher is better
    }


def gaussian_log_density(z: Tensor, mu: Tensor, logvar: Tensor) -> Tensor:
    """log N(z; mu, diag(exp(logvar))) per dimension (broadcasting)."""
    return -0.5 * (math.log(2 * math.pi) + logvar + (z - mu).square() * torch.exp(-logvar))


def mss_log_weights(batch_size: int, dataset_size: int, device: torch.device | None = None) -> Tensor:
    """log w (B, B) of minibatch stratified sampling (Chen et al. 2018, App. C.2): q(z_i) ~ sum_j w_ij q(z_i | x_j).

    With M = B - 1 others in the batch: w_ii = 1/N for the code's own image, (N - M)/(N M) for one other
    (the (i+1)-th, cyclically), 1/M for the remaining M - 1; each row sums to 1 and, the others being a
    uniform sample of the rest of the data, the estimate of q(z_i) is unbiased. (The released code's
    matrix fills columns 0 and 1 where it meant the diagonal and the one beside it.)
    """
    n, m = dataset_size, batch_size - 1
    w = torch.full((batch_size, batch_size), 1.0 / m, dtype=torch.float64)
    rows = torch.arange(batch_size)
    w[rows, rows] = 1.0 / n
    w[rows, (rows + 1) % batch_size] = (n - m) / (n * m)
    return w.log().to(device=device, dtype=torch.float32)


def tc_decomposition(z: Tensor, mu: Tensor, logvar: Tensor, dataset_size: int, estimator: str = "mws") -> dict[str, Tensor]:
    """β-TCVAE's KL decomposition (Chen et al. 2018), per example, from a batch of M codes z_i ~ q(z|x_i)
    of a data set of N images.

    estimator "mws", minibatch-weighted sampling:
      log q(z_i)          ~ logsumexp_j log q(z_i | x_j) - log(N M)
      log prod_d q(z_id)  ~ sum_d [logsumexp_j log q(z_id | x_j) - log(N M)]
    "mss", minibatch stratified sampling: the same sums weighted by mss_log_weights. With sharp posteriors
    weighted sampling reads log q(z_i) ~ log q(z_i|x_i) - log(N M), an MI of log(N M) > log N, the most a
    data set of N images can carry, and overstates TC by up to (D - 1) log M; stratified sampling keeps
    the image's own weight at 1/N.
    Returns {"mi": index-code mutual information, "tc": total correlation, "dwkl": dimension-wise KL},
    each (M,), with mi + tc + dwkl = log q(z|x) - log p(z), the one-sample KL estimate.
    """
    pairs = gaussian_log_density(z[:, None, :], mu[None, :, :], logvar[None, :, :])  # (M, M, D): z_i under q(.|x_j)
    if estimator == "mss":
        log_w = mss_log_weights(z.size(0), dataset_size, z.device)
        log_qz = torch.logsumexp(pairs.sum(2) + log_w, dim=1)
        log_prod_qzd = torch.logsumexp(pairs + log_w[:, :, None], dim=1).sum(1)
    else:
        log_norm = math.log(z.size(0) * dataset_size)
        log_qz = torch.logsumexp(pairs.sum(2), dim=1) - log_norm
        log_prod_qzd = (torch.logsumexp(pairs, dim=1) - log_norm).sum(1)
    log_qz_x = gaussian_log_density(z, mu, logvar).sum(1)
    log_pz = gaussian_log_density(z, torch.zeros_like(z), torch.zeros_like(z)).sum(1)
    return {"mi": log_qz_x - log_qz, "tc": log_qz - log_prod_qzd, "dwkl": log_prod_qzd - log_pz}


def gan_d_loss(real_scores: Tensor, fake_scores: Tensor, logits: bool = True, average: bool = True) -> Tensor:
    """The notes' discriminator loss (real_loss + fake_loss) / 2, BCE against 1 for real and 0 for fake;
    average=False: their sum, as pytorch/examples' DCGAN (errD_real + errD_fake)."""
    bce = F.binary_cross_entropy_with_logits if logits else F.binary_cross_entropy
    real_loss = bce(real_scores, torch.ones_like(real_scores))
    fake_loss = bce(fake_scores, torch.zeros_like(fake_scores))
    return (real_loss + fake_loss) / 2 if average else real_loss + fake_loss


def gan_g_loss(fake_scores: Tensor, logits: bool = True) -> Tensor:
    """The notes' generator loss: BCE of D(G(z)) against "real" (non-saturating, maximises log D(G(z)))."""
    bce = F.binary_cross_entropy_with_logits if logits else F.binary_cross_entropy
    return bce(fake_scores, torch.ones_like(fake_scores))


def hinge_d_loss(real_scores: Tensor, fake_scores: Tensor) -> Tensor:
    """The hinge loss of D (Lim & Ye 2017; Miyato et al. 2018): E[max(0, 1 - D(x))] + E[max(0, 1 + D(G(z)))]."""
    return F.relu(1 - real_scores).mean() + F.relu(1 + fake_scores).mean()


def hinge_g_loss(fake_scores: Tensor) -> Tensor:
    """The hinge loss of G: -E[D(G(z))]."""
    return -fake_scores.mean()


def gradient_penalty(critic, real: Tensor, fake: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """WGAN-GP's E[(||grad_x D(x_hat)||_2 - 1)^2], x_hat = e x + (1 - e) G(z), e ~ U[0, 1] per sample;
    the norm is taken over each flattened sample. Differentiable in D's weights (create_graph)."""
    eps = torch.rand(real.size(0), *([1] * (real.dim() - 1)), device=real.device, generator=generator)
    x_hat = (eps * real + (1 - eps) * fake).requires_grad_(True)
    (grad,) = torch.autograd.grad(critic(x_hat).sum(), x_hat, create_graph=True)
    return ((grad.flatten(1).norm(2, dim=1) - 1) ** 2).mean()
