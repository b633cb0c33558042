"""β-TCVAE's estimators against brute force, its analytic-KL form, FactorVAE's permutation, and bad settings."""

from __future__ import annotations

import math

import pytest
import torch

from genlab.config import VAELossConfig
from genlab.configfile import load_config
from genlab.errors import ConfigError
from genlab.losses import gaussian_kl, gaussian_log_density, mss_log_weights, tc_decomposition
from genlab.models.factorvae import permute_dims
from genlab.train.vae import loss_terms, tc_weight


def posteriors(n: int, d: int, sigma: float, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g, dtype=torch.float64), torch.full((n, d), 2 * math.log(sigma), dtype=torch.float64)


def exact_log_qz(z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """log q(z) = log 1/N sum_n q(z | x_n) over the whole data set."""
    return torch.logsumexp(gaussian_log_density(z[:, None], mu[None], logvar[None]).sum(2), dim=1) - math.log(len(mu))


def test_stratified_weights_sum_to_one_and_give_the_own_image_one_nth() -> None:
    w = mss_log_weights(8, 1000).double().exp()
    torch.testing.assert_close(w.sum(1), torch.ones(8, dtype=torch.float64))
    torch.testing.assert_close(torch.diagonal(w), torch.full((8,), 1 / 1000, dtype=torch.float64))


def test_stratified_sampling_estimates_q_of_z_without_bias_and_weighted_sampling_does_not() -> None:
    """Brute force: for a data set of 40 posteriors, the mean over random batches of each estimate of q(z_i)
    against the exact mixture q(z_i) = 1/N sum_n q(z_i | x_n)."""
    n, d, m = 40, 2, 6
    mu, logvar = posteriors(n, d, sigma=0.3)
    g = torch.Generator().manual_seed(1)
    i = 3
    z_i = mu[i] + 0.3 * torch.randn(d, generator=g, dtype=torch.float64)
    exact = exact_log_qz(z_i[None], mu, logvar).exp().item()
    estimates = {"mss": [], "mws": []}
    for _ in range(4000):
        others = torch.randperm(n - 1, generator=g)[: m - 1]
        others = others + (others >= i).long()  # a uniform sample of the rest of the data
        batch = torch.cat([torch.tensor([i]), others])
        z = mu[batch] + 0.3 * torch.randn(m, d, generator=g, dtype=torch.float64)
        z[0] = z_i  # the code of image i is the one estimated
        for name in estimates:
            out = tc_decomposition(z, mu[batch], logvar[batch], n, name)
            log_qz = gaussian_log_density(z, mu[batch], logvar[batch]).sum(1) - out["mi"]  # log q(z|x) - MI
            estimates[name].append(log_qz[0].exp().item())
    mss, mws = (sum(v) / len(v) for v in (estimates["mss"], estimates["mws"]))
    assert mss == pytest.approx(exact, rel=0.05)  # unbiased
    assert abs(mws - exact) / exact > 0.2  # weighted sampling is not, at this batch size


def test_the_three_terms_sum_to_the_one_sample_kl_and_mi_stays_below_log_n_with_stratified_sampling() -> None:
    """Sharp, distinct posteriors: weighted sampling reads MI = log(N M) (the ~18 nats the issue saw at
    M = 64, N = 737,280), more than a data set of N images can carry; stratified sampling stays at log N."""
    n_data, m, d = 737_280, 64, 4
    mu, logvar = posteriors(m, d, sigma=1e-3)
    z = mu + 1e-3 * torch.randn(m, d, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    one_sample_kl = gaussian_log_density(z, mu, logvar).sum(1) - gaussian_log_density(z, 0 * z, 0 * z).sum(1)
    for estimator in ("mws", "mss"):
        parts = tc_decomposition(z, mu, logvar, n_data, estimator)
        torch.testing.assert_close(parts["mi"] + parts["tc"] + parts["dwkl"], one_sample_kl)
    assert tc_decomposition(z, mu, logvar, n_data, "mws")["mi"].mean() == pytest.approx(math.log(n_data * m), abs=0.05)
    assert tc_decomposition(z, mu, logvar, n_data, "mss")["mi"].mean() == pytest.approx(math.log(n_data), abs=0.05)


def test_analytic_form_is_the_closed_form_kl_plus_beta_minus_one_tc() -> None:
    torch.manual_seed(0)
    x = (torch.rand(16, 1, 8, 8) > 0.5).float()
    recons, mu, logvar = torch.randn(16, 1, 8, 8), torch.randn(16, 4), torch.randn(16, 4) * 0.2
    z = mu + torch.exp(0.5 * logvar) * torch.randn(16, 4)
    loss = VAELossConfig(loss_type="tcvae", tc_form="analytic", beta=6.0, kld_weight=1.0, dataset_size=1000,
                         estimator="mss", recon_sum=True)  # fmt: skip
    out = loss_terms(recons, x, mu, logvar, z, loss, 0, "bernoulli")
    nll = torch.nn.functional.binary_cross_entropy_with_logits(recons, x, reduction="none").flatten(1).sum(1).mean()
    tc = tc_decomposition(z, mu, logvar, 1000, "mss")["tc"].mean()
    expected = nll + gaussian_kl(mu, logvar).mean() + 5.0 * tc
    assert out["loss"].item() == pytest.approx(expected.item(), rel=1e-5)


def test_tc_warmup_grows_the_tc_weight_from_zero_to_beta() -> None:
    loss = VAELossConfig(loss_type="tcvae", beta=6.0, tc_warmup=100)
    assert [tc_weight(loss, s) for s in (0, 50, 100, 500)] == [0.0, 3.0, 6.0, 6.0]
    assert tc_weight(VAELossConfig(loss_type="tcvae", beta=6.0), 0) == 6.0


def test_permuted_codes_keep_each_dimension_and_break_their_dependence() -> None:
    base = torch.randn(5000, 1)
    z = torch.cat([base, 2 * base, -base], dim=1)  # fully dependent dimensions
    p = permute_dims(z, torch.Generator().manual_seed(0))
    for j in range(3):
        assert torch.equal(torch.sort(p[:, j]).values, torch.sort(z[:, j]).values)
    pairs = torch.triu_indices(3, 3, 1)
    off_diagonal = lambda c: c[pairs[0], pairs[1]].abs()  # noqa: E731
    assert off_diagonal(torch.corrcoef(p.T)).max() < 0.05 < off_diagonal(torch.corrcoef(z.T)).min()


@pytest.mark.parametrize(
    "name,overrides,message",
    [
        ("vae", {"model.arch": "standard", "model.image_size": 40}, "multiple of 16"),
        ("vae", {"model.arch": "standard", "model.hidden_dims": [8, 16]}, "has its own: drop it"),
        ("vae", {"loss.loss_type": "tcvae", "loss.estimator": "mss", "train.batch_size": 1}, "batch_size must be >= 2"),
        ("vae", {"model.d_hidden": 100}, "model.d_hidden is a setting of factorvae, not of vae: train factorvae"),
        ("vae", {"loss.gamma_tc": 10.0}, "loss.gamma_tc is a setting of factorvae, not of vae"),
        ("vae", {"loss.loss_type": "capacity", "train.max_steps": 1000}, "longer than the run's 1000 steps"),
        ("vae", {"loss.recon_sum": True}, 'set model.decoder = "bernoulli"'),
        ("factorvae", {"loss.loss_type": "tcvae"}, 'loss.loss_type must be "beta"'),
    ],
)
def test_bad_disentangling_settings_are_refused_with_one_line(name: str, overrides: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        load_config(name, None, overrides)
    assert "\n" not in str(info.value)
