"""Chen et al.'s MIG (2018), their own protocol: sampled codes of every image, entropies estimated against
the mixture of all posteriors (rtqichen/beta-tcvae, `mutual_info_metric_shapes`). Not comparable with
disentanglement_lib's MIG (`disentanglement.mig`), and reported beside it as a second column."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import torch
from torch import Tensor

from genlab.eval.disentanglement import _check, factor_entropy, mutual_information_gap

CHEN_PROTOCOL = {
    "source": "Chen et al. 2018, rtqichen/beta-tcvae mutual_info_metric_shapes: not comparable with dlib's MIG",
    "data": "every image of the set, one z ~ q(z|x) each",
    "entropies": "H(z_d) and H(z_d | v_k = v) from up to `samples` of those z against the mixture of all "
    "(or the subset's) posteriors; H(z_d | v_k) weighted by p(v)",
    "normaliser": "H(v_k) (log of the factor's size on the full grid); MI clipped at 0",
    "units": "nats",
}


def mig_chen(
    mu: np.ndarray,
    logvar: np.ndarray,
    factors: np.ndarray,
    samples: int = 10_000,
    seed: int = 0,
    dims: Sequence[int] | None = None,
    group: int = 8,
) -> dict[str, Any]:
    """MIG as Chen et al. (2018) compute it (rtqichen/beta-tcvae, `mutual_info_metric_shapes`): not dlib's variant.

    Every row is one image of the whole set with its posterior q(z|x) = N(mu, exp(logvar)); one z is
    sampled per image. I(z_d; v_k) = H(z_d) - Σ_v p(v) H(z_d | v_k = v), each entropy estimated from
    `samples` of those z (all of them where a subset is smaller) against the mixture of the posteriors
    of the whole set (or of the subset with v_k = v). MI is clipped at 0 and divided by H(v_k); the
    score is the mean gap between the two largest over the factors that vary. Chen et al. leave out
    dSprites' shape: pass only the factor columns the protocol uses. dims: the code dimensions to
    estimate (all by default), `group` at a time so that memory stays a few (N, group) arrays.

    Returns the score and its parts over dims: mutual_information (D, K) in nats, normalised (D, K),
    marginal_entropy (D,), conditional_entropy (K, D), factor_entropy (K,).
    """
    _, factors = _check(np.zeros((len(factors), 0)), factors)
    dims = list(range(mu.shape[1]) if dims is None else dims)
    if mu.shape != logvar.shape or len(mu) != len(factors) or len(dims) < 2:
        raise ValueError(f"mu and logvar must be the same (N, D) as factors' N, with >= 2 dims; got {mu.shape}, {logvar.shape}")
    rng = np.random.default_rng(seed)
    h_factor = factor_entropy(factors)
    # Every entropy's rows and the samples it takes among them, drawn first: the same for every group of dims.
    parts: list[tuple[int, float, np.ndarray, np.ndarray]] = []  # (factor or -1, weight, rows, samples)
    everything = np.arange(len(mu))
    parts.append((-1, 1.0, everything, rng.permutation(len(mu))[:samples]))
    for k in np.flatnonzero(h_factor > 0):
        for value in np.unique(factors[:, k]):
            rows = np.flatnonzero(factors[:, k] == value)
            parts.append((int(k), len(rows) / len(mu), rows, rows[rng.permutation(len(rows))[:samples]]))
    marginal = np.zeros(len(dims))
    conditional = np.zeros((factors.shape[1], len(dims)))
    for g in range(0, len(dims), group):
        cols = dims[g : g + group]
        m, lv = np.asarray(mu[:, cols], dtype=np.float32), np.asarray(logvar[:, cols], dtype=np.float32)
        eps = rng.standard_normal(m.shape, dtype=np.float32)
        z = m + np.exp(0.5 * lv) * eps  # the one sampled code of each image
        own = -0.5 * eps**2 - 0.5 * lv  # log q(z_n | x_n) less log sqrt(2 pi): each sample's own component
        del eps
        for k, weight, rows, picked in parts:
            h = mixture_entropy(z[picked], own[picked], m[rows], lv[rows])
            if k < 0:
                marginal[g : g + group] = h
            else:
                conditional[k, g : g + group] += weight * h
    mi = np.maximum(marginal[:, None] - conditional.T, 0.0)
    mi[:, h_factor == 0] = 0.0
    normalised = np.divide(mi, h_factor, out=np.zeros_like(mi), where=h_factor > 0)
    return {
        "mig": mutual_information_gap(mi, h_factor),
        "mutual_information": mi,
        "normalised": normalised,
        "marginal_entropy": marginal,
        "conditional_entropy": conditional,
        "factor_entropy": h_factor,
    }


def mig_chen_work(factors: np.ndarray, samples: int, dims: int) -> int:
    """The log-densities of mig_chen's estimates, samples x posteriors x dimensions over H(z) and every H(z | v_k = v)
    (it sums only the components within reach of each sample: a fraction of these)."""
    n = len(factors)
    work = min(samples, n) * n
    for k in range(factors.shape[1]):
        counts = np.unique(factors[:, k], return_counts=True)[1]
        if len(counts) > 1:
            work += int(sum(min(samples, int(c)) * int(c) for c in counts))
    return work * dims


def mixture_entropy_rate(mu: np.ndarray, logvar: np.ndarray, samples: int = 256, posteriors: int = 1 << 15) -> float:
    """Log-densities per second that mixture_entropy stands for on this machine (those it leaves out as out of
    reach counted too), timed on a corner of the problem (the second of two runs: the first starts the threads)."""
    mu, logvar = np.asarray(mu[:posteriors], dtype=np.float32), np.asarray(logvar[:posteriors], dtype=np.float32)
    z, own = mu[:samples], -0.5 * logvar[:samples]
    mixture_entropy(z[:8], own[:8], mu, logvar)
    t = time.perf_counter()
    mixture_entropy(z, own, mu, logvar)
    return len(z) * mu.shape[0] * mu.shape[1] / max(time.perf_counter() - t, 1e-9)


# A component whose term at a sample is below this fraction of the sample's own term, over the mixture's size,
# is left out of that sample's sum: all of them together move it by less than this (relative), below the
# float32 rounding of the tiles' sums.
LEFT_OUT = 1e-7


def mixture_entropy(
    z: np.ndarray, own: np.ndarray, mu: np.ndarray, logvar: np.ndarray, block: int = 1 << 20, groups: int = 16
) -> np.ndarray:
    """(D,) mean over samples of -log q(z_sd), q(z_d) = (1/M) Σ_m N(z_d; mu_md, exp(logvar_md)), each dimension apart.

    z, own: (S, D) samples and log q(z_s | x_s) less log sqrt(2 pi) (their own component, which must be in
    the mixture); mu, logvar: (M, D). The log-densities are exponentiated tile by tile in float32, shifted
    per dimension by the largest -log sigma_m so that none overflows, and the tiles' sums added in float64.
    Only the components within reach of a sample are summed: a component whose term is below LEFT_OUT / M of
    the sample's own term is left out (all of them move the sum by < LEFT_OUT of it). Per dimension, the
    components lie in `groups` bands by sigma, each sorted by its means, and a block of samples sorted by z
    (`block` log-densities a tile) takes from each band the components within the reach of its smallest own
    term. Where a sample's own term lies more than 40 nats below the shift (a posterior e^25 times wider than
    the narrowest: no trained encoder gives it), its sum is taken again over every component with logsumexp
    in float64.
    """
    z, own = np.asarray(z, dtype=np.float32), np.asarray(own, dtype=np.float32)
    mu, logvar = np.asarray(mu, dtype=np.float32), np.asarray(logvar, dtype=np.float32)
    dims, count, size = z.shape[1], z.shape[0], mu.shape[0]
    log_norm = -0.5 * logvar  # -log sigma_m
    peak = log_norm.max(axis=0)  # (D,): no component's log-density exceeds it (less log sqrt(2 pi))
    # The exponent as log_norm - peak - t^2, t = (z - mu) * scale: sqrt(1/2) / sigma_m folded into the scale.
    # (z * scale - mu * scale would save a pass but cancels catastrophically for a narrow posterior.)
    scale = np.exp(-0.5 * logvar) * np.float32(math.sqrt(0.5))
    shifted = log_norm - peak
    # Left out: log_norm_m - t^2 < own_s - cut, i.e. |z - mu_m| > sqrt(log_norm_m - own_s + cut) / scale_m.
    cut = math.log(size / LEFT_OUT)
    rows = max(1, min(count, 128))  # sorted samples a tile: their spread widens every window a little
    cols = max(256, block // rows)
    log_sum = torch.zeros(dims, count, dtype=torch.float64)
    bands: list[list[tuple[np.ndarray, Tensor, Tensor, Tensor, float, float]]] = []
    for d in range(dims):
        parts = []
        for band in np.array_split(np.argsort(logvar[:, d], kind="stable"), min(groups, size)):
            band = band[np.argsort(mu[band, d], kind="stable")]
            tensors = [torch.from_numpy(np.ascontiguousarray(a[band, d]))[None, None, :] for a in (mu, scale, shifted)]
            # the band's largest log_norm and 1/scale bound every one of its components' reach
            parts.append((mu[band, d], *tensors, float(log_norm[band, d].max()), float(1.0 / scale[band, d].min())))
        bands.append(parts)
    ranks = [np.argsort(z[:, d], kind="stable") for d in range(dims)]
    jobs = [(d, ranks[d][a : a + rows]) for d in range(dims) for a in range(0, count, rows)]

    def tile_rows(job: tuple[int, np.ndarray]) -> None:
        d, picked = job
        zd = z[picked, d]  # ascending
        zs = torch.from_numpy(zd)[None, :, None]
        lowest = float(own[picked, d].min())
        acc = torch.zeros(1, len(picked), dtype=torch.float64)
        work = torch.empty(1, len(picked), cols)  # one tile's scratch, reused: a fresh one per tile is a fresh mmap
        for means, *tensors, top_log_norm, widest in bands[d]:
            far = math.sqrt(max(top_log_norm - lowest + cut, 0.0)) * widest
            lo, hi = int(np.searchsorted(means, zd[0] - far)), int(np.searchsorted(means, zd[-1] + far, side="right"))
            for b in range(lo, hi, cols):
                c = min(cols, hi - b)
                acc += _tile_sum(zs, *(t[:, :, b : b + c] for t in tensors), work[:, :, :c])
        log_sum[d, torch.from_numpy(picked)] = acc[0].log()

    # Blocks of rows on a thread each, every op single-threaded: the ops release the GIL, and on 2 shared
    # cores torch's own two threads per op ran this 4x slower than one (each op waits for both).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with ThreadPoolExecutor(max(1, min(threads, len(jobs)))) as pool:
            list(pool.map(tile_rows, jobs))
    finally:
        torch.set_num_threads(threads)
    for d, s in zip(*np.nonzero(own.T - peak[:, None] < -40.0)):
        e = log_norm[:, d] - 0.5 * (np.float64(z[s, d]) - mu[:, d]) ** 2 * np.exp(-logvar[:, d].astype(np.float64))
        log_sum[d, s] = float(np.logaddexp.reduce(e)) - float(peak[d])
    mean_log = log_sum.mean(dim=1).numpy() + peak.astype(np.float64)
    return -(mean_log - math.log(size) - 0.5 * math.log(2 * math.pi))


def _tile_sum(z: Tensor, mu: Tensor, scale: Tensor, log_norm: Tensor, work: Tensor | None = None) -> Tensor:
    """Σ_m exp(log_norm_m - ((z - mu_m) scale_m)^2) over the last axis: (D, r, 1) against (D, 1, c) -> (D, r) float64.

    Terms below e^-80 are raised to it (< 1e-17 of the sample's own term): exp of large negative float32
    ran ~17x slower on this CPU than in range, denormals slower still. Each tile is summed in float32
    (pairwise) and only the tiles' sums in float64, which ran ~30x faster than a float64 sum. work: a
    (D, r, c) float32 scratch tensor to compute in (every op in place in it), or None for a new one.
    """
    t = torch.sub(z, mu, out=work) if work is not None else torch.sub(z, mu)
    t.mul_(scale)
    return torch.addcmul(log_norm, t, t, value=-1.0, out=t).clamp_min_(-80.0).exp_().sum(2).double()


# ---------------------------------------------------------------- from new batches with a factor fixed
