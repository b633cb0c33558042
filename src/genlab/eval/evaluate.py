"""`genlab eval`: every number with what it was computed from (features, reference set, n, seed)."""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from genlab import __version__
from genlab.config import RunConfig
from genlab.data import ImageData, crop_to, to_float, vae_input
from genlab.eval.classifier import FeatureClassifier, load_classifier, shipped_path
from genlab.eval.classifier_score import class_histogram, classifier_score, collapse_warning
from genlab.eval.factor_report import CHEN_SAMPLES, Log, duration, latent_report
from genlab.eval.frechet import frechet_distance_features
from genlab.eval.likelihood import decode_chunk, elbo_and_iwae
from genlab.eval.precision_recall import density_coverage, precision_recall
from genlab.losses import decoder_variance, inside
from genlab.models import family
from genlab.sampling import generate, generated_labels


def as_classifier_input(images: Tensor, original_size: tuple[int, int]) -> Tensor:
    """Model-space images in [-1, 1] -> (N, 1, 28, 28) as the classifier was trained on."""
    x = crop_to(images, original_size)
    if x.shape[1] == 3:
        x = (x * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True)
    return x


@torch.no_grad()
def classify(classifier: FeatureClassifier, images: Tensor, batch_size: int = 1000) -> tuple[Tensor, Tensor]:
    """(features (N, 256), class probabilities (N, 10))."""
    feats, probs = [], []
    for i in range(0, len(images), batch_size):
        f = classifier.features(images[i : i + batch_size].float())
        feats.append(f)
        probs.append(torch.softmax(classifier.head(f), dim=1))
    return torch.cat(feats), torch.cat(probs)


def sample_quality(
    fake: Tensor, real: Tensor, classifier: FeatureClassifier, k: int = 3, labels: Tensor | None = None
) -> dict[str, Any]:
    """FD, precision/recall, classifier score and class histograms of fake vs real (both classifier input);
    with the classes a conditional model was asked for, the share the classifier puts in them."""
    f_fake, p_fake = classify(classifier, fake)
    f_real, p_real = classify(classifier, real)
    precision, recall = precision_recall(f_real, f_fake, k=k)
    density, coverage = density_coverage(f_real, f_fake, k=5)
    is_mean, is_std = classifier_score(p_fake)
    ref_is, _ = classifier_score(p_real)
    hist, ref_hist = class_histogram(p_fake, 10), class_histogram(p_real, 10)
    return {
        "fd": frechet_distance_features(f_fake.numpy(), f_real.numpy()),
        "precision": precision,
        "recall": recall,
        "pr_k": k,
        "density": density,
        "coverage": coverage,
        "dc_k": 5,
        "is_mean": is_mean,
        "is_std": is_std,
        "is_reference": ref_is,
        "class_hist": [round(h, 4) for h in hist],
        "reference_class_hist": [round(h, 4) for h in ref_hist],
        "collapse_warning": collapse_warning(hist, ref_hist),
    } | ({"conditional_accuracy": (p_fake.argmax(1) == labels).float().mean().item()} if labels is not None else {})


def find_classifier(config: RunConfig, test: ImageData) -> tuple[FeatureClassifier | None, dict[str, str], str | None]:
    """The shipped classifier for the run's data, or (None, {}, why not)."""
    path = shipped_path(config.data.dataset)
    if path is None:
        return None, {}, f"no feature classifier ships for data set {config.data.dataset!r} (built in: fashion-mnist)"
    if tuple(test.original_size) != (28, 28):
        return None, {}, f"the classifier takes 28x28 images; this data is {test.original_size}"
    classifier, meta = load_classifier(path)
    return classifier, meta, None


COST_NOTE_S = 10.0  # a part expected to take longer says so before it starts


def stderr_progress(line: str) -> None:
    """One progress line on stderr ("genlab: eval: ..."), flushed: stdout keeps only the table and files written."""
    print(f"genlab: {line}", file=sys.stderr, flush=True)


@torch.no_grad()
def vae_likelihood(
    model: nn.Module,
    config: RunConfig,
    test: ImageData,
    n: int,
    k: int,
    seed: int,
    batch_size: int = 50,
    log: Log | None = None,
) -> dict[str, Any]:
    """Test-set ELBO, IW_k bound and reconstruction MSE, per image, with the decoder likelihood stated.

    log: told the expected cost, from the first batch's time, when it exceeds COST_NOTE_S."""
    device = next(model.parameters()).device
    gen = torch.Generator(device).manual_seed(seed)
    d = math.prod(test.images.shape[1:])
    var = None if model.config.decoder == "bernoulli" else decoder_variance(config.loss.kld_weight, d)
    margin = 0
    if model.config.decoder == "sigma":
        var = math.exp(2 * float(model.log_sigma))  # calibrated in training
        margin = max(getattr(config.loss, "margin", 0), 0)  # the data's own pixels, as in training
        d = math.prod(inside(test.images[:1], margin).shape[1:])
    elbos, iws, kls, sq = [], [], [], []
    n = min(n, len(test))
    if log is not None and n > 0:  # the cost up front, from one chunk of decodes (on a generator of its own)
        x = vae_input(test.images[: min(batch_size, n)].to(device), model.config.decoder, config.data.binarize)
        per_chunk = min(k, max(1, decode_chunk(x) // len(x)))
        elbo_and_iwae(model, x, per_chunk, var, torch.Generator(device).manual_seed(seed), margin=margin)  # warm up
        started = time.perf_counter()
        elbo_and_iwae(model, x, per_chunk, var, torch.Generator(device).manual_seed(seed), margin=margin)
        cost = (time.perf_counter() - started) * -(-k // per_chunk) * -(-n // batch_size)
        if cost > COST_NOTE_S:
            faster = f"; --k {k // 10} is ~10x faster" if k >= 20 else ""
            log(f"eval: likelihood, --k {k} over {n} images: ~{duration(cost)} on this machine{faster}")
    for i in range(0, n, batch_size):
        x = vae_input(test.images[i : min(i + batch_size, n)].to(device), model.config.decoder, config.data.binarize)
        elbo, iw, kl = elbo_and_iwae(model, x, k, var, gen, margin=margin)
        elbos.append(elbo.cpu())
        iws.append(iw.cpu())
        kls.append(kl.cpu())
        recon = model.to_image(model.decode(model.encode(x)[0]))
        target = x * 2 - 1 if model.config.decoder == "bernoulli" else x
        sq.append((recon - target).square().flatten(1).mean(1).cpu())
    elbo, iw = torch.cat(elbos).double(), torch.cat(iws).double()
    if model.config.decoder == "bernoulli":
        likelihood = "Bernoulli on pixels binarized at 127" if config.data.binarize else "Bernoulli on grey levels in [0, 1]"
    else:
        kind_ = "learned (σ-VAE)" if model.config.decoder == "sigma" else "fixed"
        likelihood = f"Gaussian, {kind_} variance {var:.4g} on pixels in [-1, 1] (a density: not comparable to discrete NLLs)"
    return {
        "likelihood": likelihood,
        "pixels": d,
        "n": len(elbo),
        "k": k,
        "neg_elbo": -elbo.mean().item(),
        "neg_elbo_sem": (elbo.std() / math.sqrt(len(elbo))).item(),
        "nll_iw": -iw.mean().item(),
        "nll_iw_sem": (iw.std() / math.sqrt(len(iw))).item(),
        "kl": torch.cat(kls).double().mean().item(),
        "recon_mse": torch.cat(sq).double().mean().item(),
    }


@torch.no_grad()
def gan_health(model: nn.Module, test: ImageData, fake: Tensor) -> dict[str, float]:
    """D(x) and D(G(z)) means and D's accuracy on real test images vs generated ones."""
    device = next(model.parameters()).device
    real = to_float(test.images[: len(fake)]).to(device)
    real_labels, fake_labels = test.labels, generated_labels(model, len(fake))
    real_labels = real_labels[: len(real)] if real_labels is not None else None

    def scores(x: Tensor, labels: Tensor | None) -> Tensor:  # conditional D's score an image with its class
        if fake_labels is None:
            return torch.cat([model.discriminator(x[i : i + 1000].to(device)) for i in range(0, len(x), 1000)]).cpu()
        chunks = range(0, len(x), 1000)
        return torch.cat([model.discriminator(x[i : i + 1000].to(device), labels[i : i + 1000].to(device)) for i in chunks]).cpu()

    p_real, p_fake = scores(real, real_labels), scores(fake, fake_labels)
    if getattr(model, "critic", False):  # WGAN: unbounded scores, no probabilities to threshold
        w = (p_real.mean() - p_fake.mean()).item()
        return {"critic_real": p_real.mean().item(), "critic_fake": p_fake.mean().item(), "w_estimate": w}
    acc = ((p_real > 0.5).float().mean() + (p_fake <= 0.5).float().mean()) / 2
    return {"d_real": p_real.mean().item(), "d_fake": p_fake.mean().item(), "d_acc": acc.item()}


@torch.no_grad()
def label_accuracies(
    model: nn.Module, config: RunConfig, test: ImageData, classifier: FeatureClassifier, n: int, seed: int
) -> dict[str, float]:
    """A conditional VAE's use of its label, and what its decoder can show of a class.

    swap_accuracy: decode each test image's code mu(x, y) with another class y' and take the share the
    classifier puts in y' (1: the label decides the class; ~0: z already carried it). recon_accuracy: the
    same codes decoded with their own class, the share put in y: the decoder's best, which prior samples
    (conditional_accuracy) do not exceed where the decoder's blur hides what tells classes apart."""
    device = next(model.parameters()).device
    gen = torch.Generator().manual_seed(seed)
    images, labels = test.images[:n], test.labels[:n]
    classes = model.config.num_classes
    swapped = (labels + torch.randint(1, classes, labels.shape, generator=gen)) % classes
    hits = {"swap_accuracy": 0, "recon_accuracy": 0}
    for i in range(0, n, 500):
        x = vae_input(images[i : i + 500].to(device), model.config.decoder, config.data.binarize)
        mu, _ = model.encode(x, labels[i : i + 500].to(device))
        for key, asked in (("swap_accuracy", swapped[i : i + 500]), ("recon_accuracy", labels[i : i + 500])):
            out = model.to_image(model.decode(mu, asked.to(device))).cpu()
            _, probs = classify(classifier, as_classifier_input(out, tuple(test.original_size)))
            hits[key] += (probs.argmax(1) == asked).sum().item()
    return {key: count / max(n, 1) for key, count in hits.items()}


def evaluate(
    config: RunConfig,
    model: nn.Module,
    state: dict[str, Any],
    test: ImageData,
    n: int = 10_000,
    seed: int = 0,
    nll_n: int = 1000,
    k: int = 1000,
    inception: bool = False,
    data: Any = None,
    sampled: bool = False,
    sampler: nn.Module | None = None,
    log: Log | None = None,
    chen_samples: int = CHEN_SAMPLES,
    temperature: float = 1.0,
) -> dict[str, Any]:
    """All metrics of a trained run, as one JSON-ready dict; data (the training split, or a FactorStream of the
    whole factor set) for factor metrics. log: one line per part with its time (e.g. stderr_progress)."""
    started = time.monotonic()
    log = log or (lambda _: None)

    def part(name: str, fn: Callable[[], Any]) -> Any:
        t = time.monotonic()
        value = fn()
        log(f"eval: {name} ({time.monotonic() - t:.1f} s)")
        return value

    n_ref = min(n, len(test))
    result: dict[str, Any] = {
        "run_step": state.get("step"),
        "family": config.family,
        "data": config.data.dataset,
        "n": n,
        "seed": seed,
        "train_seed": config.train.seed,
        "reference": f"test split, first {n_ref} images",
        "genlab": __version__,
        "torch": torch.__version__,
        "sampler": "2-Stage VAE (second stage, then this VAE's decoder)" if sampler is not None else "the model's prior",
        "temperature": temperature,
    }
    record = family(config.family)
    classifier, meta, why = find_classifier(config, test)
    fake = None
    if classifier is not None or record.kind != "vae" or inception:  # a VAE on other data scores no samples
        # sampler: e.g. the 2-Stage VAE
        fake = part(f"{n:,} samples drawn", lambda: generate(sampler or model, n, seed, temperature=temperature))
    if classifier is None:
        result["sample_quality"] = {"skipped": why}
    else:
        original = tuple(test.original_size)
        real = as_classifier_input(to_float(test.images[:n_ref]), original)
        labels = generated_labels(model, n)
        fake_input = as_classifier_input(fake, original)
        quality = part("sample quality", lambda: sample_quality(fake_input, real, classifier, labels=labels))
        quality["features"] = {
            "network": f"genlab {meta.get('dataset')} classifier ({meta.get('feature_layer')})",
            "sha256": meta["sha256"],
            "test_accuracy": meta.get("test_accuracy"),
        }
        quality["class_hist_tv_from_uniform"] = 0.5 * sum(abs(h - 1 / len(quality["class_hist"])) for h in quality["class_hist"])
        quality["largest_class_share"] = max(quality["class_hist"])
        if record.kind == "vae" and record.conditional and test.labels is not None:
            quality |= part("label swap", lambda: label_accuracies(model, config, test, classifier, n_ref, seed))
        result["sample_quality"] = quality
    if record.kind == "vae" and record.conditional:
        result["likelihood"] = {"skipped": "conditional VAE: likelihoods given the class are not computed yet"}
    elif record.kind == "vae":
        result["likelihood"] = part(
            f"likelihood (k={k}, {min(nll_n, len(test))} images)",
            lambda: vae_likelihood(model, config, test, nll_n, k, seed, log=log),
        )
        dis = latent_report(model, config.data.binarize, data or test, test, seed, sampled, log=log, chen_samples=chen_samples)
        log(f"eval: disentanglement ({dis['seconds'].get('total', dis['seconds']['unsupervised']):.1f} s)")
        result["disentanglement"] = dis
    else:
        result["gan_health"] = part("discriminator health", lambda: gan_health(model, test, fake))
    if inception:
        from genlab.eval.inception import inception_fid

        result["inception_fid"] = part("Inception FID", lambda: inception_fid(fake, to_float(test.images[:n_ref])))
    result["seconds"] = round(time.monotonic() - started, 1)
    return result


def summary(result: dict[str, Any]) -> dict[str, float]:
    """The scalar figures of a result, flat, for metrics.jsonl during training."""
    q = result.get("sample_quality", {})
    return {f"eval_{key}": float(q[key]) for key in ("fd", "precision", "recall", "density", "coverage", "is_mean") if key in q}


@torch.no_grad()
def calibrate(train: ImageData, test: ImageData, n: int = 10_000, seed: int = 0, log: Log | None = None) -> dict[str, Any]:
    """The scale of the sample-quality metrics on one data set: what real data, noise and a pixel Gaussian score.

    Each "sample set" is compared with the first n test images in the shipped classifier's features;
    log: a line per sample set with its time.
    """
    path = shipped_path(test.source)
    if path is None:
        return {"skipped": f"no feature classifier ships for {test.source!r}"}
    classifier, meta = load_classifier(path)
    gen = torch.Generator().manual_seed(seed)
    n = min(n, len(test), len(train))
    real = as_classifier_input(to_float(test.images[:n]), test.original_size)
    train_x = as_classifier_input(to_float(train.images), train.original_size)
    picked = torch.randperm(len(train_x), generator=gen)[:n]
    subset = train_x[picked]
    flat = train_x.flatten(1).double()
    mean, cov = flat.mean(0), torch.cov(flat.T)
    # A Gaussian with the training pixels' mean and full covariance: right first and second moments, no structure.
    gauss = torch.distributions.MultivariateNormal(mean, cov + 1e-4 * torch.eye(len(mean)))
    torch.manual_seed(seed)
    candidates = {
        "train subset (floor)": subset,
        "Gaussian fit to pixels": gauss.sample((n,)).float().clamp(-1, 1).view_as(subset),
        "uniform noise": torch.rand(subset.shape, generator=gen) * 2 - 1,
    }
    rows = {}
    for name, images in candidates.items():
        t = time.monotonic()
        # Real images with their own labels: the conditional accuracy a generator of the training data would score.
        labels = train.labels[picked] if name.startswith("train") and train.labels is not None else None
        q = sample_quality(images, real, classifier, labels=labels)
        keys = ("fd", "precision", "recall", "density", "coverage", "is_mean", "is_std", "conditional_accuracy")
        rows[name] = {k: q[k] for k in keys if k in q}
        if log is not None:
            log(f"calibrate: {name} scored against {n:,} test images ({time.monotonic() - t:.1f} s)")
    result = {"n": n, "seed": seed, "reference": f"test split, first {n} images", "features_sha256": meta["sha256"], "rows": rows}
    if test.labels is not None:  # held-out images the classifier never saw: the ceiling for a model that generalises
        result["test_accuracy"] = (classify(classifier, real)[1].argmax(1) == test.labels[:n]).float().mean().item()
    return result


def quick_eval(config: RunConfig, model, test: ImageData) -> dict[str, float]:
    """Sample-quality figures with cheap settings (train.eval_n samples, no likelihoods)."""
    classifier, _, _ = find_classifier(config, test)
    if classifier is None:
        return {}
    n = min(config.train.eval_n, len(test))
    fake = as_classifier_input(generate(model, n, config.train.seed), tuple(test.original_size))
    real = as_classifier_input(to_float(test.images[:n]), tuple(test.original_size))
    quality = sample_quality(fake, real, classifier)
    if quality["collapse_warning"]:
        print(f"genlab: warning: {quality['collapse_warning']}", file=sys.stderr)
    model.train()
    return summary({"sample_quality": quality})
