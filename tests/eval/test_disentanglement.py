"""The metrics against disentanglement_lib's own conformance bounds, on identity-observation data (10 values a factor)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from genlab.eval import disentanglement as dm
from genlab.eval import mig_chen as mc

SIZES = (10, 10, 10, 10, 10)  # five factors of ten values: a duplicated code has ten dimensions
SMALL = {"num_train": 1000, "num_eval": 500}


def codes_of(represent, n: int = 1500, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    factors = dm.sample_factors(SIZES, n, np.random.default_rng(seed))
    return represent(factors), factors


def identity(f: np.ndarray) -> np.ndarray:
    return f.astype(np.float64)


def zeros(f: np.ndarray) -> np.ndarray:
    return np.zeros((len(f), len(SIZES)))


def duplicated(f: np.ndarray) -> np.ndarray:
    return np.hstack([identity(f), identity(f)])


@pytest.mark.slow
def test_identity_representation_scores_at_least_0_9() -> None:
    codes, factors = codes_of(identity)
    assert dm.mig(codes, factors) >= 0.9
    assert dm.sap(codes, factors, num_train=1000, continuous=True) >= 0.9  # as disentanglement_lib's own test
    # The study's discrete SAP: a 1-D linear classifier cannot cut ten ordered values one-vs-rest, so the
    # identity code scores far lower there; it still beats every other dimension by a clear gap.
    assert dm.sap(codes, factors, num_train=1000) >= 0.1
    scores = dm.dci(codes, factors, num_train=1000)
    assert scores["disentanglement"] >= 0.9 and scores["completeness"] >= 0.9 and scores["informativeness"] >= 0.9
    assert dm.beta_vae_score(identity, SIZES, **SMALL) >= 0.9
    assert dm.factor_vae_score(identity, SIZES, num_variance_estimate=1000, **SMALL) >= 0.9


def test_constant_representation_scores_at_most_0_2() -> None:
    codes, factors = codes_of(zeros)
    assert dm.mig(codes, factors) <= 0.2
    assert dm.sap(codes, factors, num_train=1000) <= 0.2
    assert dm.sap(codes, factors, num_train=1000, continuous=True) <= 0.2
    assert dm.factor_vae_score(zeros, SIZES, num_variance_estimate=1000, **SMALL) <= 0.2


@pytest.mark.slow
def test_duplicated_code() -> None:
    codes, factors = codes_of(duplicated)
    assert dm.mig(codes, factors) <= 0.1  # two dimensions tie for every factor
    assert dm.sap(codes, factors, num_train=1000, continuous=True) <= 0.2
    scores = dm.dci(codes, factors, num_train=1000)
    assert scores["disentanglement"] >= 0.9
    assert scores["completeness"] == pytest.approx(1 - math.log(2) / math.log(10), abs=0.1)  # dlib's tolerance


def test_dci_of_a_diagonal_importance_matrix_is_one() -> None:
    assert dm.dci_disentanglement(np.eye(4)) == pytest.approx(1.0)
    assert dm.dci_completeness(np.eye(4)) == pytest.approx(1.0)
    assert dm.dci_disentanglement(np.ones((4, 4))) == pytest.approx(0.0, abs=1e-6)


def test_mig_by_hand() -> None:
    # Factor 0 takes two values; code 0 copies it, code 1 agrees on 3 of 4 points, code 2 is constant.
    factors = np.array([[0], [0], [1], [1]])
    codes = np.array([[0.0, 0.0, 5.0], [0.0, 1.0, 5.0], [1.0, 1.0, 5.0], [1.0, 1.0, 5.0]])
    h = math.log(2)  # H(factor) in nats
    # I(code1; factor): p(c1=0)=1/4 (only with f=0), p(c1=1)=3/4 (f=0 once, f=1 twice)
    i1 = 0.25 * math.log(0.25 / (0.25 * 0.5)) + 0.25 * math.log(0.25 / (0.75 * 0.5)) + 0.5 * math.log(0.5 / (0.75 * 0.5))
    assert dm.mig(codes, factors, bins=2) == pytest.approx((h - i1) / h)


def test_gaussian_total_correlation() -> None:
    signs = np.array(np.meshgrid(*[[-1.0, 1.0]] * 3)).reshape(3, -1).T  # covariance exactly diagonal
    assert dm.gaussian_total_correlation(signs) == pytest.approx(0.0, abs=1e-12)
    rng = np.random.default_rng(0)
    rho = 0.8
    x = rng.multivariate_normal([0, 0], [[1, rho], [rho, 1]], 200_000)
    assert dm.gaussian_total_correlation(x) == pytest.approx(-0.5 * math.log(1 - rho**2), rel=0.02)


def test_latent_usage_counts_active_units() -> None:
    rng = np.random.default_rng(0)
    mu = np.stack([rng.normal(0, 1, 1000), np.zeros(1000), rng.normal(0, 0.05, 1000)], axis=1)
    logvar = np.stack([np.full(1000, -4.0), np.zeros(1000), np.zeros(1000)], axis=1)
    usage = dm.latent_usage(mu, logvar)
    assert usage["active_units"] == 1  # the third dimension's means vary by 0.0025 < 0.01
    assert usage["kl_per_dim"][1] == pytest.approx(0.0) and usage["kl_per_dim"][0] > 1.0


def test_bad_shapes_are_one_line_errors() -> None:
    with pytest.raises(ValueError, match="codes must be"):
        dm.mig(np.zeros((10, 2)), np.zeros((9, 1)))


def test_the_mi_matrix_is_the_one_mig_takes_its_gaps_from() -> None:
    rng = np.random.default_rng(0)
    factors = dm.sample_factors(SIZES, 2000, rng)
    codes = np.hstack([identity(factors)[:, :3] + rng.normal(0, 2, (2000, 3)), rng.normal(size=(2000, 3))])
    mi, normalised = dm.mutual_information_matrix(codes, factors)
    entropy = dm.factor_entropy(factors)
    assert mi.shape == normalised.shape == (6, 5) and (mi >= 0).all()
    assert dm.mutual_information_gap(mi, entropy) == dm.mig(codes, factors)  # the same arithmetic, not close
    np.testing.assert_allclose(normalised, mi / entropy)
    assert np.argmax(normalised[:3], axis=1).tolist() == [0, 1, 2]  # each noisy copy carries its own factor


def _mixture_entropy_float64(z: np.ndarray, mu: np.ndarray, logvar: np.ndarray) -> np.ndarray:
    from scipy.special import logsumexp

    lv = logvar.astype(np.float64)
    log_q = -0.5 * ((z[:, None].astype(np.float64) - mu[None]) ** 2 / np.exp(lv[None]) + lv[None] + math.log(2 * math.pi))
    return -(logsumexp(log_q, axis=1) - math.log(len(mu))).mean(axis=0)


def test_mixture_entropy_matches_a_float64_logsumexp() -> None:
    rng = np.random.default_rng(0)
    n = 9000  # the posteriors over several tiles and bands
    mu = rng.normal(size=(n, 3)).astype(np.float32)
    logvar = (rng.normal(size=(n, 3)) - 3).astype(np.float32)
    logvar[7, 0] = -90.0  # one posterior far narrower than its sample's: the float64 path
    eps = rng.standard_normal((n, 3)).astype(np.float32)
    z, own = mu + np.exp(0.5 * logvar) * eps, -0.5 * eps**2 - 0.5 * logvar
    got = mc.mixture_entropy(z[:200], own[:200], mu, logvar)  # several jobs, windows of many chunks
    np.testing.assert_allclose(got, _mixture_entropy_float64(z[:200], mu, logvar), atol=5e-7)


def test_the_compiled_exp_is_float32_exact_over_its_range() -> None:
    """mixture_entropy's inline exp (Cephes' expf) against float64 exp, term by term, over exponents in [-80, 0]."""
    x = np.linspace(-80.0, 0.0, 200_001).astype(np.float32)
    one = np.ones(1, np.float32)
    got = np.array([mc._exp_sum(np.float32(0), one * 0, one, np.array([v], np.float32)) for v in x[::50]])
    want = np.exp(x[::50].astype(np.float64))
    assert np.max(np.abs(got / want - 1)) < 3e-7  # float32's own rounding is 6e-8
    below = mc._exp_sum(np.float32(0), one * 0, one, np.array([-200.0], np.float32))
    assert below == np.float32(np.exp(-80.0))  # raised to e^-80, a normal float32, never a subnormal


def test_mixture_entropy_sums_the_wide_posteriors_far_away() -> None:
    """Only components within reach of a sample are summed: a wide one far off is within reach, and counts."""
    rng = np.random.default_rng(1)
    n, wide = 9000, 900
    mu = rng.normal(size=(n, 2)).astype(np.float32)
    logvar = np.full((n, 2), 2 * math.log(0.005), np.float32)
    mu[:wide] += 6.0
    logvar[:wide] = 2 * math.log(2.0)
    eps = rng.standard_normal((n, 2)).astype(np.float32)
    z, own = mu + np.exp(0.5 * logvar) * eps, -0.5 * eps**2 - 0.5 * logvar
    pick = np.arange(wide, wide + 300)  # samples of the narrow posteriors, ~3 wide sigmas from the wide ones
    want = _mixture_entropy_float64(z[pick], mu, logvar)
    narrow_only = _mixture_entropy_float64(z[pick], mu[wide:], logvar[wide:]) - math.log(n / (n - wide))
    assert np.all(np.abs(want - narrow_only) > 1e-3)  # the wide ones' share is far above the tolerance
    np.testing.assert_allclose(mc.mixture_entropy(z[pick], own[pick], mu, logvar), want, atol=5e-7)


def grid_codes(sizes: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Every factor combination once, and the code that is each factor scaled into [-2, 2]."""
    factors = np.stack(np.unravel_index(np.arange(math.prod(sizes)), sizes), axis=1)
    return (factors / (np.array(sizes) - 1) * 4 - 2).astype(np.float32), factors


def test_chen_mig_on_synthetic_codes() -> None:
    codes, factors = grid_codes((4, 6, 8, 8))
    narrow = np.full(codes.shape, -8.0, dtype=np.float32)  # sigma 0.02, well inside a step of 4/7
    aligned = mc.mig_chen(codes, narrow, factors, samples=2000)
    assert aligned["mig"] >= 0.95 and aligned["mutual_information"].shape == (4, 4)
    np.testing.assert_allclose(np.diag(aligned["normalised"]), 1.0, atol=0.05)
    rotation, _ = np.linalg.qr(np.random.default_rng(0).normal(size=(4, 4)))
    rotated = mc.mig_chen(codes @ rotation.T.astype(np.float32), narrow, factors, samples=2000)["mig"]
    assert rotated <= aligned["mig"] - 0.3
    duplicated = mc.mig_chen(np.hstack([codes, codes]), np.hstack([narrow, narrow]), factors, samples=2000)["mig"]
    assert duplicated <= 0.1  # two dimensions tie for every factor
    constant = mc.mig_chen(np.zeros_like(codes), np.zeros_like(codes), factors, samples=2000)
    assert constant["mig"] <= 0.05 and (constant["mutual_information"] <= 0.05).all()


def test_chen_mig_work_counts_every_log_density() -> None:
    _, factors = grid_codes((2, 3, 4))
    # H(z): 24 samples x 24 posteriors; H(z | v_k = v): n_v samples x n_v posteriors for each value of each factor
    per_dim = 24 * 24 + 2 * 12 * 12 + 3 * 8 * 8 + 4 * 6 * 6
    assert mc.mig_chen_work(factors, 10_000, 5) == 5 * per_dim
    assert mc.mig_chen_work(factors, 10, 1) == 10 * 24 + 2 * 10 * 12 + 3 * 8 * 8 + 4 * 6 * 6  # samples capped at 10
