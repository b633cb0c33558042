"""A VAE's latent space against the data's known factors: codes gathered here, scored by eval/disentanglement.py."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import sklearn
from torch import nn

from genlab.data import ImageData
from genlab.eval import disentanglement as dm
from genlab.latents import encode

UNSUPERVISED_N = 10_000  # test images for the total correlation and the per-dimension KL


def latent_report(
    model: nn.Module,
    binarize: bool,
    data: ImageData,
    test: ImageData,
    seed: int = 0,
    sampled: bool = False,
    factor_metrics: bool = True,
) -> dict[str, Any]:
    """Total correlation and per-dimension KL on test images; on factor data also MIG, SAP, DCI and the
    β-VAE and FactorVAE scores, on the mean representation (or one z ~ q(z|x) per look-up if sampled)."""
    started = time.monotonic()
    mu, logvar = encode(model, test.images[:UNSUPERVISED_N], binarize)
    out: dict[str, Any] = {
        "representation": "sampled" if sampled else "mean",
        "total_correlation": dm.gaussian_total_correlation(mu),
        "unsupervised_n": len(mu),
        **dm.latent_usage(mu, logvar),
    }
    if data.factors is None or not factor_metrics:
        why = f"{data.source} has no known generative factors" if data.factors is None else "not asked for"
        out["factor_metrics"] = f"skipped: {why} (the factor data sets are shapes and dsprites)"
        out["seconds"] = {"unsupervised": round(time.monotonic() - started, 1)}
        return out
    seconds = {"unsupervised": round(time.monotonic() - started, 1)}
    t = time.monotonic()
    # Every factor combination is one image of the set (index = ravel of the classes), so the codes of
    # all images, computed once, serve every look-up the protocols make.
    all_mu, all_logvar = encode(model, data.images, binarize)
    seconds["encode_all"] = round(time.monotonic() - t, 1)
    sizes, rng = data.factors.sizes, np.random.default_rng(seed)
    represent = representation(all_mu, all_logvar, sizes, rng, sampled)

    def timed(name: str, fn):
        t = time.monotonic()
        value = fn()
        seconds[name] = round(time.monotonic() - t, 1)
        return value

    factors = dm.sample_factors(sizes, 10_000, rng)
    out["mig"] = timed("mig", lambda: dm.mig(represent(factors), factors))
    factors = dm.sample_factors(sizes, 15_000, rng)
    codes = represent(factors)
    out["sap"] = timed("sap", lambda: dm.sap(codes, factors, seed=seed))
    out["dci"] = timed("dci", lambda: dm.dci(codes, factors, seed=seed))
    out["beta_vae_score"] = timed("beta_vae_score", lambda: dm.beta_vae_score(represent, sizes, seed))
    out["factor_vae_score"] = timed("factor_vae_score", lambda: dm.factor_vae_score(represent, sizes, seed))
    out["protocol"] = {
        **dm.PROTOCOL,
        "factors": dict(zip(data.factors.names, sizes)),
        "seed": seed,
        "sklearn": sklearn.__version__,
        "sampled_note": "sampled: a fresh z ~ q(z|x) at every look-up" if sampled else "mean: E_q[z|x]",
    }
    seconds["total"] = round(time.monotonic() - started, 1)
    out["seconds"] = seconds
    return out


def representation(mu: np.ndarray, logvar: np.ndarray, sizes, rng: np.random.Generator, sampled: bool = False):
    """Factor classes (n, K) -> codes: the image of each combination is row ravel(classes) of a factor set."""
    std = np.exp(0.5 * logvar)

    def represent(factors: np.ndarray) -> np.ndarray:
        index = np.ravel_multi_index(factors.T, sizes)
        return mu[index] + (std[index] * rng.standard_normal(std[index].shape) if sampled else 0.0)

    return represent


def factor_scores(model: nn.Module, binarize: bool, data: ImageData, seed: int = 0) -> dict[str, float]:
    """MIG and FactorVAE score alone (the sweep's interpretability side)."""
    all_mu, all_logvar = encode(model, data.images, binarize)
    sizes, rng = data.factors.sizes, np.random.default_rng(seed)
    represent = representation(all_mu, all_logvar, sizes, rng)

    factors = dm.sample_factors(sizes, 10_000, rng)
    return {"mig": dm.mig(represent(factors), factors), "factor_vae_score": dm.factor_vae_score(represent, sizes, seed)}
