"""Chen et al.'s MIG (2018), their own protocol: sampled codes of every image, entropies estimated against
the mixture of all posteriors (rtqichen/beta-tcvae, `mutual_info_metric_shapes`). Not comparable with
disentanglement_lib's MIG (`disentanglement.mig`), and reported beside it as a second column."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numba
import numpy as np
import torch
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

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


def mixture_entropy_rate(mu: np.ndarray, logvar: np.ndarray, samples: int = 4096, posteriors: int = 1 << 16) -> float:
    """Log-densities per second that mixture_entropy stands for on this machine (those it leaves out as out of
    reach counted too), timed on a random part of the problem (the second of two runs: the first compiles
    and starts the threads). A part drawn at random keeps the share of components within a sample's reach."""
    rows = np.random.default_rng(0).permutation(len(mu))[:posteriors]
    mu, logvar = np.asarray(mu[rows], dtype=np.float32), np.asarray(logvar[rows], dtype=np.float32)
    z, own = mu[:samples], -0.5 * logvar[:samples]
    mixture_entropy(z[:8], own[:8], mu, logvar)
    t = time.perf_counter()
    mixture_entropy(z, own, mu, logvar)
    return len(z) * mu.shape[0] * mu.shape[1] / max(time.perf_counter() - t, 1e-9)


# A component whose term at a sample is below this fraction of the sample's own term, over the mixture's size,
# is left out of that sample's sum: all of them together move it by less than this (relative), below the
# float32 rounding of the sums.
LEFT_OUT = 1e-7
CHUNK = 512  # terms summed in float32 before they join the sample's float64 sum


def mixture_entropy(z: np.ndarray, own: np.ndarray, mu: np.ndarray, logvar: np.ndarray, groups: int = 16) -> np.ndarray:
    """(D,) mean over samples of -log q(z_sd), q(z_d) = (1/M) Σ_m N(z_d; mu_md, exp(logvar_md)), each dimension apart.

    z, own: (S, D) samples and log q(z_s | x_s) less log sqrt(2 pi) (their own component, which must be in
    the mixture); mu, logvar: (M, D). The terms are exponentiated in float32, shifted per dimension by the
    largest -log sigma_m so that none overflows, summed CHUNK at a time in float32 and the chunks in float64.
    Only the components within reach of a sample are summed: a component whose term is below LEFT_OUT / M of
    the sample's own term is left out (all of them move the sum by < LEFT_OUT of it). Per dimension, the
    components lie in `groups` bands by sigma, each sorted by its means, and each sample takes from each band
    the components within its reach. Where a sample's own term lies more than 40 nats below the shift (a
    posterior e^25 times wider than the narrowest: no trained encoder gives it), its sum is taken again over
    every component with logsumexp in float64.
    """
    z, own = np.asarray(z, dtype=np.float32), np.asarray(own, dtype=np.float32)
    mu, logvar = np.asarray(mu, dtype=np.float32), np.asarray(logvar, dtype=np.float32)
    dims, count, size = z.shape[1], z.shape[0], mu.shape[0]
    log_norm = -0.5 * logvar  # -log sigma_m
    peak = log_norm.max(axis=0)  # (D,): no component's log-density exceeds it (less log sqrt(2 pi))
    # The exponent as log_norm - peak - t^2, t = (z - mu) * scale: sqrt(1/2) / sigma_m folded into the scale.
    # (z * scale - mu * scale would save an op but cancels catastrophically for a narrow posterior.)
    scale = np.exp(-0.5 * logvar) * np.float32(math.sqrt(0.5))
    shifted = log_norm - peak
    # Left out: log_norm_m - t^2 < own_s - cut, i.e. |z - mu_m| > sqrt(log_norm_m - own_s + cut) / scale_m.
    cut = math.log(size / LEFT_OUT)
    log_sum = np.zeros((dims, count))
    bands = []
    for d in range(dims):
        by_sigma = np.array_split(np.argsort(logvar[:, d], kind="stable"), min(groups, size))
        order = [b[np.argsort(mu[b, d], kind="stable")] for b in by_sigma]
        starts = np.cumsum([0] + [len(b) for b in order])
        every = np.concatenate(order)
        # the band's largest log_norm and 1/scale bound every one of its components' reach
        top = np.array([log_norm[b, d].max() for b in order], dtype=np.float64)
        widest = np.array([1.0 / scale[b, d].min() for b in order], dtype=np.float64)
        columns = [np.ascontiguousarray(a[every, d]) for a in (mu, scale, shifted)]
        bands.append((*columns, top, widest, starts))
    rows = 64  # samples a job, in the order of z so that neighbours read the same components
    jobs = []
    for d in range(dims):
        rank = np.argsort(z[:, d], kind="stable")
        jobs += [(d, rank[a : a + rows]) for a in range(0, count, rows)]

    def job(task: tuple[int, np.ndarray]) -> None:
        d, picked = task
        out = np.empty(len(picked))
        _window_log_sums(z[picked, d], own[picked, d], *bands[d], cut, out)  # fancy indexing: contiguous copies
        log_sum[d, picked] = out

    # The kernel releases the GIL: a thread per core.
    with ThreadPoolExecutor(max(1, min(torch.get_num_threads(), len(jobs)))) as pool:
        list(pool.map(job, jobs))
    for d, s in zip(*np.nonzero(own.T - peak[:, None] < -40.0)):
        e = log_norm[:, d] - 0.5 * (np.float64(z[s, d]) - mu[:, d]) ** 2 * np.exp(-logvar[:, d].astype(np.float64))
        log_sum[d, s] = float(np.logaddexp.reduce(e)) - float(peak[d])
    mean_log = log_sum.mean(axis=1) + peak.astype(np.float64)
    return -(mean_log - math.log(size) - 0.5 * math.log(2 * math.pi))


@intrinsic
def _float_with_bits(typingctx, bits):  # noqa: ARG001 (numba's signature)
    """The float32 whose IEEE 754 bits are the int32 `bits`: a reinterpretation, free, so the loop stays vectorised."""

    def codegen(context, builder, signature, args):  # noqa: ARG001
        return builder.bitcast(args[0], ir.FloatType())

    return types.float32(types.int32), codegen


@numba.njit(nogil=True, fastmath=True, cache=True, inline="always")
def _exp_sum(zi, mu, scale, shifted):
    """Σ_m exp(max(shifted_m - ((zi - mu_m) scale_m)^2, -80)) in float32, for exponents <= 0.

    exp as Cephes' expf writes it (2^k times a degree-5 polynomial on |r| <= ln 2 / 2, ~1 ulp), inline so
    that the loop is vectorised: torch's six ops over a materialised tile (six passes) ran 3.5x slower.
    Terms below e^-80 are raised to it (< 1e-17 of the sample's own term), which keeps 2^k a normal number."""
    s = np.float32(0.0)
    for m in range(len(mu)):
        t = (zi - mu[m]) * scale[m]
        x = max(shifted[m] - t * t, np.float32(-80.0))
        k = np.int32(x * np.float32(1.4426950408889634) - np.float32(0.5))  # round to nearest, for x <= 0
        kf = np.float32(k)
        r = (x - kf * np.float32(0.693359375)) + kf * np.float32(2.12194440e-4)  # x - k ln 2, ln 2 in two parts
        p = np.float32(1.9875691500e-4) * r + np.float32(1.3981999507e-3)
        p = p * r + np.float32(8.3334519073e-3)
        p = p * r + np.float32(4.1665795894e-2)
        p = p * r + np.float32(1.6666665459e-1)
        p = p * r + np.float32(5.0000001201e-1)
        p = p * (r * r) + r + np.float32(1.0)
        s += p * _float_with_bits((k + np.int32(127)) << np.int32(23))
    return s


@numba.njit(nogil=True, fastmath=True, cache=True)
def _window_log_sums(z, own, mu, scale, shifted, top, widest, starts, cut, out):
    """out_i = log Σ over each band's components within sample i's reach (see mixture_entropy), float64."""
    for i in range(len(z)):
        zi = z[i]
        total = 0.0
        for b in range(len(top)):
            a0, a1 = starts[b], starts[b + 1]
            far = math.sqrt(max(top[b] - own[i] + cut, 0.0)) * widest[b]
            lo = a0 + np.searchsorted(mu[a0:a1], zi - far)
            hi = a0 + np.searchsorted(mu[a0:a1], zi + far, side="right")
            for c in range(lo, hi, CHUNK):
                e = min(c + CHUNK, hi)  # slices, not index bounds: only then did LLVM vectorise the sum
                total += _exp_sum(zi, mu[c:e], scale[c:e], shifted[c:e])
        out[i] = math.log(total)


# ---------------------------------------------------------------- from new batches with a factor fixed
