from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from genlab.losses import (
    decoder_variance,
    gan_d_loss,
    gan_g_loss,
    gaussian_kl,
    gradient_penalty,
    hinge_d_loss,
    hinge_g_loss,
    vae_loss,
)


def test_kl_is_zero_at_the_prior_and_positive_elsewhere() -> None:
    assert gaussian_kl(torch.zeros(3, 5), torch.zeros(3, 5)).abs().max() == 0
    kl = gaussian_kl(torch.randn(100, 8), torch.randn(100, 8))
    assert (kl > 0).all()


def test_kl_closed_form_matches_the_notes_formula() -> None:
    mu, logvar = torch.randn(4, 6), torch.randn(4, 6)
    sigma2 = logvar.exp()
    notes = 0.5 * (mu**2 + sigma2 - torch.log(sigma2) - 1).sum(1)  # 1/2 sum(mu^2 + sigma^2 - log sigma^2 - 1)
    listing5 = -0.5 * torch.sum(1 + logvar - mu**2 - logvar.exp(), dim=1)
    torch.testing.assert_close(gaussian_kl(mu, logvar), notes)
    torch.testing.assert_close(gaussian_kl(mu, logvar), listing5)


def test_kl_closed_form_matches_monte_carlo() -> None:
    torch.manual_seed(0)
    mu = torch.tensor([[0.5, -1.0, 2.0]], dtype=torch.float64)
    logvar = torch.tensor([[0.3, -0.7, 0.0]], dtype=torch.float64)
    q = torch.distributions.Normal(mu, (0.5 * logvar).exp())
    p = torch.distributions.Normal(torch.zeros_like(mu), torch.ones_like(mu))
    z = q.sample((200_000,))
    mc = (q.log_prob(z) - p.log_prob(z)).sum(-1).mean()
    closed = gaussian_kl(mu, logvar)[0]
    stderr = (q.log_prob(z) - p.log_prob(z)).sum(-1).std() / math.sqrt(200_000)
    assert abs(mc - closed) < 4 * stderr, (mc, closed, stderr)


def test_vae_loss_equals_listing_5_by_hand() -> None:
    torch.manual_seed(0)
    recons, x = torch.rand(4, 1, 8, 8) * 2 - 1, torch.rand(4, 1, 8, 8) * 2 - 1
    mu, log_var = torch.randn(4, 3), torch.randn(4, 3)
    kld_weight = 0.00025
    # Listing 5, line by line
    recons_loss = F.mse_loss(recons, x)
    kld_loss = torch.mean(-0.5 * torch.sum(1 + log_var - mu**2 - log_var.exp(), dim=1))
    expected = recons_loss + kld_weight * kld_loss
    out = vae_loss(recons, x, mu, log_var, kld_weight)
    torch.testing.assert_close(out["loss"], expected)
    torch.testing.assert_close(out["recon"], recons_loss)
    torch.testing.assert_close(out["kl"], kld_loss)
    assert out["kl"] > 0
    # beta scales the KL term (beta-VAE)
    torch.testing.assert_close(
        vae_loss(recons, x, mu, log_var, kld_weight, beta=4.0)["loss"], recons_loss + 4 * kld_weight * kld_loss
    )
    # capacity: recon + gamma * w * |KL - C|
    cap = vae_loss(recons, x, mu, log_var, kld_weight, capacity=2.0, gamma=10.0)["loss"]
    torch.testing.assert_close(cap, recons_loss + 10 * kld_weight * (kld_loss - 2.0).abs())


def test_loss_at_beta_1_is_negative_elbo_per_pixel() -> None:
    torch.manual_seed(1)
    recons, x = torch.rand(5, 1, 4, 4) * 2 - 1, torch.rand(5, 1, 4, 4) * 2 - 1
    mu, log_var = torch.randn(5, 2), torch.randn(5, 2)
    w, d = 0.01, 16
    out = vae_loss(recons.double(), x.double(), mu.double(), log_var.double(), w)
    var = decoder_variance(w, d)
    const = 0.5 * d * math.log(2 * math.pi * var)
    # loss = (-ELBO - const) * 2 var / D
    torch.testing.assert_close(out["loss"], (-out["elbo"] - const) * 2 * var / d)


def test_gan_losses_on_logits_equal_bce_on_sigmoid() -> None:
    real, fake = torch.randn(7, 1), torch.randn(7, 1)
    pr, pf = torch.sigmoid(real), torch.sigmoid(fake)
    notes_d = (F.binary_cross_entropy(pr, torch.ones_like(pr)) + F.binary_cross_entropy(pf, torch.zeros_like(pf))) / 2
    torch.testing.assert_close(gan_d_loss(real, fake), notes_d)
    torch.testing.assert_close(gan_d_loss(pr, pf, logits=False), notes_d)
    torch.testing.assert_close(gan_g_loss(fake), F.binary_cross_entropy(pf, torch.ones_like(pf)))


def test_bce_on_logits_stays_finite_where_sigmoid_saturates() -> None:
    fake = torch.tensor([[-200.0]])
    assert torch.isfinite(gan_g_loss(fake)) and gan_g_loss(fake) > 100


def test_hinge_losses() -> None:
    real, fake = torch.tensor([2.0, 0.5]), torch.tensor([-2.0, 0.0])
    assert hinge_d_loss(real, fake).item() == pytest.approx((0 + 0.5) / 2 + (0 + 1) / 2)
    assert hinge_g_loss(fake).item() == pytest.approx(1.0)


def test_gradient_penalty_of_a_linear_critic() -> None:
    """D(x) = <w, x> has gradient w everywhere: the penalty is (||w|| - 1)^2 whatever the points."""
    w = torch.tensor([3.0, 4.0, 0.0, 0.0]).view(1, 1, 2, 2)
    critic = lambda x: (x * w).flatten(1).sum(1, keepdim=True)  # noqa: E731
    gp = gradient_penalty(critic, torch.randn(5, 1, 2, 2), torch.randn(5, 1, 2, 2))
    assert gp.item() == pytest.approx((5.0 - 1.0) ** 2)


def test_sigma_vae_uses_the_maximum_likelihood_sigma() -> None:
    from genlab.losses import gaussian_kl, gaussian_nll, optimal_log_sigma, sigma_vae_loss

    torch.manual_seed(0)
    x, recons = torch.rand(6, 1, 8, 8) * 2 - 1, torch.rand(6, 1, 8, 8) * 2 - 1
    mu, logvar = torch.randn(6, 4), torch.randn(6, 4) * 0.1
    out = sigma_vae_loss(recons, x, mu, logvar, beta=1.0)
    var = torch.exp(2 * optimal_log_sigma(recons, x)).item()
    expected = gaussian_nll(recons, x, var) + gaussian_kl(mu, logvar)
    assert out["loss"].item() == pytest.approx(expected.mean().item(), rel=1e-5)
    assert -out["elbo"].item() == pytest.approx(expected.mean().item(), rel=1e-5)
    for factor in (0.9, 1.1):  # any other shared variance gives a larger NLL
        assert gaussian_nll(recons, x, var * factor).mean() > gaussian_nll(recons, x, var).mean()
