"""A VAE's latent space against the data's known factors: codes gathered here, scored by eval/disentanglement.py.

The protocols look up the codes of arbitrary factor combinations, and every combination is one image
of the set, so the whole set is encoded once (streamed in uint8 chunks: at 64x64 it is 3 GB) and the
codes, float32 (N, D), serve every look-up. Progress goes to `log`, one line per part with its time.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import sklearn
import torch
from torch import Tensor, nn

from genlab.data import ImageData
from genlab.eval import disentanglement as dm
from genlab.eval import mig_chen as mc
from genlab.latents import encode, encode_batch_size, encode_chunks, label_dims

UNSUPERVISED_N = 10_000  # test images for the total correlation and the per-dimension KL
CHUNK = 8192  # uint8 images held at once when the set is in memory already
CHEN_SAMPLES = 10_000  # Chen et al.'s n_samples (estimate_entropies in rtqichen/beta-tcvae)
CHEN_EXCLUDED = ("shape",)  # their dSprites MIG uses scale, orientation, posX and posY
# bfloat16 encoding is used only where its codes stay this close to float32's on a test sample: |Δmu| in units
# of the dimension's spread (its std, or FactorVAE's 0.05 prune threshold where smaller), |Δlogvar| in nats.
BF16_TOLERANCE = {"mu_in_std": 0.01, "logvar": 0.02}
# Chen's MIG skips dimensions whose mean KL over the set is below this (nats): their MI with any factor is smaller.
CHEN_MIN_KL = 0.01
LABEL_THRESHOLD = 0.1  # normalised MI below which a dimension carries no factor in its label

Log = Callable[[str], None]


def _silent(_: str) -> None:
    pass


def latent_report(
    model: nn.Module,
    binarize: bool,
    data: Any,
    test: ImageData,
    seed: int = 0,
    sampled: bool = False,
    factor_metrics: bool = True,
    log: Log | None = None,
    chen_samples: int = CHEN_SAMPLES,
) -> dict[str, Any]:
    """Total correlation and per-dimension KL on test images; on factor data also MIG (with its MI matrix and
    Chen et al.'s MIG), SAP, DCI and the β-VAE and FactorVAE scores, on the mean representation (or one z ~
    q(z|x) per look-up if sampled). data: an ImageData with factors, or a FactorStream; chen_samples 0 skips
    Chen's MIG."""
    log = log or _silent
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

    def timed(name: str, label: str, fn: Callable[[], Any], show: Callable[[Any], str] = lambda v: f"{v:.3f}") -> Any:
        t = time.monotonic()
        value = fn()
        seconds[name] = round(time.monotonic() - t, 1)
        log(f"eval: {label} {show(value)} ({seconds[name]:.1f} s)")
        return value

    t = time.monotonic()
    encoder = encoder_precision(model, test.images[:2048], binarize)
    estimate = len(data) / encoder["images_per_s"]
    log(f"eval: encoding all {len(data):,} images of {data.source} in {encoder['dtype']}: ~{duration(estimate)}")
    all_mu, all_logvar = encode_chunks(model, _chunks(data, model), len(data), binarize, bf16=encoder["dtype"] == "bfloat16")
    seconds["encode_all"] = round(time.monotonic() - t, 1)
    log(f"eval: encoded {len(data):,} images ({seconds['encode_all']:.1f} s)")
    out["encoder"] = encoder
    sizes, names, rng = data.factors.sizes, data.factors.names, np.random.default_rng(seed)
    represent = representation(all_mu, all_logvar, sizes, rng, sampled)

    factors = dm.sample_factors(sizes, 10_000, rng)

    def mig() -> tuple[np.ndarray, np.ndarray, float]:
        mi, normalised = dm.mutual_information_matrix(represent(factors), factors)
        return mi, normalised, dm.mutual_information_gap(mi, dm.factor_entropy(factors))

    mi, normalised, out["mig"] = timed("mig", "MIG (disentanglement_lib)", mig, lambda v: f"{v[2]:.3f}")
    out["mutual_information"] = mi_record(mi, normalised, names)
    out["latent_factors"] = latent_factors(normalised, names)
    factors = dm.sample_factors(sizes, 15_000, rng)
    codes = represent(factors)
    out["sap"] = timed("sap", "SAP", lambda: dm.sap(codes, factors, seed=seed))
    trees, estimate = _dci_cost(codes, factors)
    log(f"eval: DCI: {trees:,} gradient-boosted trees (disentanglement_lib's 100 stages per factor): ~{duration(estimate)}")
    out["dci"] = timed("dci", "DCI", lambda: dm.dci(codes, factors, seed=seed), _show_dci)
    out["beta_vae_score"] = timed("beta_vae_score", "beta-VAE score", lambda: dm.beta_vae_score(represent, sizes, seed))
    out["factor_vae_score"] = timed("factor_vae_score", "FactorVAE score", lambda: dm.factor_vae_score(represent, sizes, seed))
    if chen_samples > 0:
        keep = [k for k, name in enumerate(names) if name not in CHEN_EXCLUDED]
        classes = data.factors.classes[:, keep]
        kl = mean_kl(all_mu, all_logvar)
        # I(z_d; v_k) <= I(z_d; x) <= KL_d: a dimension below CHEN_MIN_KL can move the gap by < CHEN_MIN_KL / H(v_k)
        dims = np.flatnonzero(kl >= CHEN_MIN_KL) if np.sum(kl >= CHEN_MIN_KL) >= 2 else np.sort(np.argsort(kl)[-2:])
        work = mc.mig_chen_work(classes, chen_samples, len(dims))
        rate = mc.mixture_entropy_rate(all_mu[:, dims[:8]], all_logvar[:, dims[:8]])
        log(f"eval: Chen et al.'s MIG over {len(dims)} dims: {work:.2g} log-densities, ~{duration(work / rate)}")
        chen = timed(
            "mig_chen",
            "MIG (Chen et al.)",
            lambda: mc.mig_chen(all_mu, all_logvar, classes, chen_samples, seed, dims=dims.tolist()),
            lambda v: f"{v['mig']:.3f}",
        )
        out["mig_chen"] = chen["mig"]
        skipped = np.setdiff1d(np.arange(len(kl)), dims)
        out["mig_chen_detail"] = {
            "factors": [names[k] for k in keep],
            "latent_dims": dims.tolist(),
            "left_out": {"dims": skipped.tolist(), "max_kl": round(float(kl[skipped].max()), 6) if len(skipped) else None},
            "mutual_information": _rounded(chen["mutual_information"]),
            "normalised": _rounded(chen["normalised"]),
            "marginal_entropy": _rounded(chen["marginal_entropy"]),
            "conditional_entropy": _rounded(chen["conditional_entropy"]),
            "units": "nats",
        }
    out["protocol"] = {
        **dm.PROTOCOL,
        "factors": dict(zip(names, sizes)),
        "seed": seed,
        "sklearn": sklearn.__version__,
        "sampled_note": "sampled: a fresh z ~ q(z|x) at every look-up" if sampled else "mean: E_q[z|x]",
        "mutual_information": "the MIG codes' (D, K) matrix; normalised: divided by H(v_k)",
        "latent_factors": f"each dimension's largest normalised MI; 'none' below {LABEL_THRESHOLD}",
    }
    if chen_samples > 0:
        out["protocol"]["mig_chen"] = {
            **mc.CHEN_PROTOCOL,
            "samples": chen_samples,
            "excluded_factors": list(CHEN_EXCLUDED),
            "dims": f"those with mean KL >= {CHEN_MIN_KL} nats over the set (at least two); for the others "
            f"I(z_d; v_k) <= KL_d, so leaving them out moves the score by < {CHEN_MIN_KL} / H(v_k)",
        }
    seconds["total"] = round(time.monotonic() - started, 1)
    out["seconds"] = seconds
    return out


def mean_kl(mu: np.ndarray, logvar: np.ndarray, chunk: int = 65_536) -> np.ndarray:
    """(D,) mean over the rows of KL(q(z_d|x) || N(0, 1)), nats, accumulated in float64 a chunk at a time."""
    total = np.zeros(mu.shape[1])
    for i in range(0, len(mu), chunk):
        m, lv = mu[i : i + chunk].astype(np.float64), logvar[i : i + chunk].astype(np.float64)
        total += 0.5 * np.sum(m**2 + np.exp(lv) - 1.0 - lv, axis=0)
    return total / len(mu)


def representation(mu: np.ndarray, logvar: np.ndarray, sizes, rng: np.random.Generator, sampled: bool = False):
    """Factor classes (n, K) -> float64 codes: the image of each combination is row ravel(classes) of a factor set."""

    def represent(factors: np.ndarray) -> np.ndarray:
        index = np.ravel_multi_index(factors.T, sizes)
        means = mu[index].astype(np.float64)
        if not sampled:
            return means
        std = np.exp(0.5 * logvar[index].astype(np.float64))
        return means + std * rng.standard_normal(std.shape)

    return represent


def encode_set(model: nn.Module, binarize: bool, data: Any, bf16: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Posterior means and log-variances (N, D), float32, of every image of a factor set, in index order."""
    return encode_chunks(model, _chunks(data, model), len(data), binarize, bf16=bf16)


def factor_scores(model: nn.Module, binarize: bool, data: Any, seed: int = 0) -> dict[str, float]:
    """MIG (with its latent x factor MI matrix) and the FactorVAE score alone (the sweep's interpretability side)."""
    all_mu, all_logvar = encode_set(model, binarize, data)
    sizes, rng = data.factors.sizes, np.random.default_rng(seed)
    represent = representation(all_mu, all_logvar, sizes, rng)

    factors = dm.sample_factors(sizes, 10_000, rng)
    mi, normalised = dm.mutual_information_matrix(represent(factors), factors)
    return {
        "mig": dm.mutual_information_gap(mi, dm.factor_entropy(factors)),
        "factor_vae_score": dm.factor_vae_score(represent, sizes, seed),
        "mutual_information": mi_record(mi, normalised, data.factors.names),
    }


def quick_factor_scores(
    model: nn.Module, data: ImageData, binarize: bool, n: int = 2000, votes: int = 60, seed: int = 0
) -> dict[str, Any]:
    """A quick estimate, for logging during training, not the protocol: MIG on n random images (20 bins, as
    dlib), the FactorVAE score from `votes` training and `votes` test votes of 64 images (variance from the
    same n codes), and the mean KL of each dimension over the n images. Encodes n + 128 * votes images.

    The model is put back in the mode it came in. Keys carry `quick_` so that no one reads them as the figures.
    """
    was_training = model.training
    sizes, rng = data.factors.sizes, np.random.default_rng(seed)
    factors = dm.sample_factors(sizes, n, rng)
    mu, logvar = encode(model, data.images[torch.from_numpy(np.ravel_multi_index(factors.T, sizes))], binarize)

    def represent(f: np.ndarray) -> np.ndarray:
        return encode(model, data.images[torch.from_numpy(np.ravel_multi_index(f.T, sizes))], binarize)[0]

    global_var = np.var(mu, axis=0, ddof=1)
    score = dm.factor_vae_score(
        represent, sizes, seed, num_train=votes, num_eval=votes, num_variance_estimate=n, global_var=global_var
    )
    kl = 0.5 * np.mean(mu**2 + np.exp(logvar) - 1.0 - logvar, axis=0)
    model.train(was_training)
    return {
        "quick_mig": dm.mig(mu, factors),
        "quick_factor_vae_score": score,
        "quick_kl_per_dim": [round(float(v), 4) for v in kl],
        "quick_n": n,
        "quick_votes": votes,
    }


def mi_record(mi: np.ndarray, normalised: np.ndarray, names: tuple[str, ...]) -> dict[str, Any]:
    """The (latent x factor) MI matrix as the eval JSON keeps it: rows are latent dimensions, columns factors."""
    return {
        "factors": list(names),
        "latent_dims": list(range(mi.shape[0])),
        "nats": _rounded(mi),
        "normalised": _rounded(normalised),
    }


def latent_factors(normalised: np.ndarray, names: tuple[str, ...]) -> list[dict[str, Any]]:
    """For each latent dimension the factor it carries most (largest normalised MI), with the value and its row label."""
    labels = label_dims(normalised, names, LABEL_THRESHOLD)
    rows = []
    for d, row in enumerate(normalised):
        k = int(np.argmax(row))
        rows.append({"dim": d, "factor": names[k], "normalised_mi": round(float(row[k]), 4), "label": labels[d]})
    return rows


def traversal_labels(dis: dict[str, Any], dims: list[int] | None = None) -> list[str]:
    """Row labels for a traversal from an eval JSON's "disentanglement" part: "carries <factor> (MI x)" or "none",
    for the latent dimensions dims (all by default); "" for each when the eval had no factor data."""
    matrix = dis.get("mutual_information")
    if matrix is None:
        return [""] * (len(dims) if dims is not None else len(dis.get("kl_per_dim", [])))
    labels = label_dims(np.array(matrix["normalised"]), matrix["factors"], LABEL_THRESHOLD)
    return labels if dims is None else [labels[d] for d in dims]


def encoder_precision(model: nn.Module, sample: Tensor, binarize: bool) -> dict[str, Any]:
    """float32 or bfloat16 for encoding a whole set, decided on a sample of images, with the measurements.

    bfloat16 only on a CPU with AMX (without it bfloat16 convolutions are no faster) and where the sample's
    codes stay within BF16_TOLERANCE of float32's: a decision that repeats, since it never rests on a timing.
    """
    device = next(model.parameters()).device
    fp32_s, (mu, logvar) = _timed_encode(model, sample, binarize, False)
    batch = encode_batch_size(model.config.image_size)
    record: dict[str, Any] = {"dtype": "float32", "batch_size": batch, "batchnorm": "folded into the convolutions"}
    record["images_per_s"] = len(sample) / fp32_s
    if device.type != "cpu" or not torch.cpu._is_amx_tile_supported():
        record["bf16"] = "not tried: no AMX on this CPU"
        record["images_per_s"] = round(record["images_per_s"])
        return record
    bf16_s, (mu16, logvar16) = _timed_encode(model, sample, binarize, True)
    spread = np.maximum(mu.std(axis=0), 0.05)
    error = {"mu_in_std": float(np.max(np.abs(mu16 - mu) / spread)), "logvar": float(np.max(np.abs(logvar16 - logvar)))}
    speedup = fp32_s / bf16_s
    ok = all(error[k] <= BF16_TOLERANCE[k] for k in error)
    record["bf16"] = {
        "max_error": {k: round(v, 5) for k, v in error.items()},
        "tolerance": BF16_TOLERANCE,
        "speedup": round(speedup, 2),
        "sample": len(sample),
        "used": ok,
    }
    if ok:
        record["dtype"], record["images_per_s"] = "bfloat16", len(sample) / bf16_s
    record["images_per_s"] = round(record["images_per_s"])
    return record


def _timed_encode(model: nn.Module, sample: Tensor, binarize: bool, bf16: bool) -> tuple[float, tuple[np.ndarray, np.ndarray]]:
    """(seconds, codes) of encoding sample, timed on the second of two passes (the first builds the kernels)."""
    encode_chunks(model, [sample], len(sample), binarize, bf16=bf16)
    t = time.perf_counter()
    codes = encode_chunks(model, [sample], len(sample), binarize, bf16=bf16)
    return max(time.perf_counter() - t, 1e-6), codes


def _dci_cost(codes: np.ndarray, factors: np.ndarray, num_train: int = 10_000) -> tuple[int, float]:
    """(trees DCI fits, seconds expected on this machine), from the time of one of its trees (the second: the
    first compiles genlab's tree builder, or loads it from numba's cache)."""
    from genlab.eval.boosting import SortedFeatures, fit_tree

    counts = [len(np.unique(factors[:num_train, k])) for k in range(factors.shape[1])]
    per_stage = [c if c > 2 else 1 for c in counts if c > 1]  # a tree per class; one for a binary factor
    trees = dm.GBT["n_estimators"] * sum(per_stage)
    rows, target = SortedFeatures(codes[:num_train]), factors[:num_train, int(np.argmax(counts))].astype(np.float64)
    fit_tree(rows, target, seed=0, max_depth=dm.GBT["max_depth"])
    t = time.perf_counter()
    fit_tree(rows, target, seed=0, max_depth=dm.GBT["max_depth"])
    # The factors' fits run side by side, and the one with the most classes sets the pace. A booster's own
    # steps (gradients, leaf values, predictions) add about a quarter to its trees' time.
    workers = max(1, min(os.cpu_count() or 1, len(per_stage)))
    longest = dm.GBT["n_estimators"] * max(per_stage, default=0)
    return trees, 1.25 * (time.perf_counter() - t) * max(trees / workers, longest)


def _chunks(data: Any, model: nn.Module) -> Iterator[Tensor]:
    """uint8 chunks of every image of data in index order: a FactorStream's, or slices of one held in memory."""
    if isinstance(data, ImageData):
        return (data.images[i : i + CHUNK] for i in range(0, len(data), CHUNK))
    return data.chunks(model.config.in_channels, model.config.image_size)


def _rounded(a: np.ndarray) -> list:
    return np.round(np.asarray(a, dtype=np.float64), 6).tolist()


def _show_dci(d: dict[str, float]) -> str:
    return f"D {d['disentanglement']:.3f} C {d['completeness']:.3f} I {d['informativeness']:.3f}"


def duration(seconds: float) -> str:
    """A rough duration for a progress line: '40 s', '3 min'."""
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min"
