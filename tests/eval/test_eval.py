from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import linalg

from genlab.cli import main
from genlab.eval import classifier as clf
from genlab.eval.classifier_score import class_histogram, classifier_score, collapse_warning
from genlab.eval.frechet import frechet_distance, frechet_distance_features
from genlab.eval.likelihood import elbo_and_iwae
from genlab.eval.precision_recall import density_coverage, precision_recall
from genlab.models import VanillaVAE

from conftest import small_config, train_args, write_idx_dataset


def test_fd_matches_a_direct_scipy_computation() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(500, 8)), rng.normal(0.3, 1.5, size=(400, 8))
    mu1, s1, mu2, s2 = a.mean(0), np.cov(a.T), b.mean(0), np.cov(b.T)
    direct = np.sum((mu1 - mu2) ** 2) + np.trace(s1 + s2 - 2 * linalg.sqrtm(s1 @ s2).real)
    assert frechet_distance_features(a, b) == pytest.approx(direct, rel=1e-9)
    # Closed form for isotropic Gaussians: |dmu|^2 + d (s1 - s2)^2 with s the standard deviations
    assert frechet_distance(np.zeros(3), np.eye(3), np.ones(3), 4 * np.eye(3)) == pytest.approx(3 + 3 * (1 - 2) ** 2)


def test_fd_of_a_set_with_itself_is_zero_and_grows_with_noise() -> None:
    rng = np.random.default_rng(1)
    f = rng.normal(size=(2000, 16))
    assert abs(frechet_distance_features(f, f)) < 1e-6
    fds = [frechet_distance_features(f, f + rng.normal(scale=s, size=f.shape)) for s in (0.1, 0.5, 1.0)]
    assert fds[0] < fds[1] < fds[2]


def test_precision_recall_on_toy_clouds() -> None:
    torch.manual_seed(0)
    a = torch.randn(300, 4)
    assert precision_recall(a, a.clone()) == (1.0, 1.0)
    far = torch.randn(300, 4) + 100
    assert precision_recall(a, far) == (0.0, 0.0)
    # Fakes on half of the real support: high precision, recall about a half.
    half = a[a[:, 0] > 0]
    p, r = precision_recall(a, half + 0.01 * torch.randn_like(half))
    assert p > 0.9 and 0.3 < r < 0.7


def test_density_and_coverage_on_toy_clouds() -> None:
    torch.manual_seed(0)
    a = torch.randn(400, 4)
    density, coverage = density_coverage(a, a.clone())
    assert coverage == 1.0 and 0.9 < density < 1.3
    assert density_coverage(a, torch.randn(400, 4) + 100) == (0.0, 0.0)
    # An outlier in the real set makes a huge ball: precision counts the far fakes inside it, density barely moves.
    real = torch.cat([a, torch.full((1, 4), 30.0)])
    far = torch.randn(100, 4) * 0.1 + 15
    assert precision_recall(real, far)[0] > 0.9 and density_coverage(real, far)[0] < 0.25


def test_classifier_score_bounds_and_histogram() -> None:
    confident_uniform = torch.eye(10).repeat(100, 1)
    assert classifier_score(confident_uniform, splits=5)[0] == pytest.approx(10.0)
    one_class = torch.zeros(1000, 10)
    one_class[:, 3] = 1
    assert classifier_score(one_class)[0] == pytest.approx(1.0)
    hist = class_histogram(one_class, 10)
    assert hist[3] == 1.0 and collapse_warning(hist, [0.1] * 10) is not None
    assert collapse_warning([0.1] * 10, [0.1] * 10) is None


def test_importance_weighted_bound_is_above_the_elbo_and_tightens_with_k() -> None:
    torch.manual_seed(0)
    model = VanillaVAE(1, 2, hidden_dims=(4,), image_size=4, decoder="bernoulli").eval()
    x = (torch.rand(200, 1, 4, 4) > 0.5).float()
    gen = torch.Generator().manual_seed(0)
    elbo, iw1, _ = elbo_and_iwae(model, x, 1, None, gen)
    _, iw5, _ = elbo_and_iwae(model, x, 5, None, gen)
    elbo50, iw50, _ = elbo_and_iwae(model, x, 50, None, gen)
    assert iw1.mean() == pytest.approx(elbo.mean().item(), abs=0.2)  # k=1 is an ELBO estimate
    assert elbo50.mean() < iw5.mean() < iw50.mean()


def test_elbo_matches_the_training_loss_terms() -> None:
    from genlab.losses import decoder_variance, gaussian_nll

    torch.manual_seed(0)
    model = VanillaVAE(1, 3, hidden_dims=(4,), image_size=4).eval()
    x = torch.rand(8, 1, 4, 4) * 2 - 1
    var = decoder_variance(0.01, 16)
    elbo, _, kl = elbo_and_iwae(model, x, 2000, var, torch.Generator().manual_seed(1))
    mu, logvar = model.encode(x)
    # With the decoder mean at z = mu, E_q[log p(x|z)] is close for a small posterior variance.
    assert torch.isfinite(elbo).all() and (kl >= 0).all()
    assert elbo.mean() <= -gaussian_nll(model.decode(mu), x, var).mean() + 5


@pytest.mark.slow
def test_classifier_learns_toy_shapes(tmp_path: Path) -> None:
    from genlab.config import DataConfig
    from genlab.data import load_dataset

    def fit(n_train: int, epochs: int, out: Path) -> dict:
        folder = write_idx_dataset(tmp_path / f"toy-{n_train}", n_train=n_train, n_test=256)
        train, test = load_dataset(DataConfig(dataset=str(folder)), 1, 28)
        args = (train.images, train.labels, test.images, test.labels, out, "toy")
        return clf.train_classifier(*args, epochs=epochs, batch_size=32, log=lambda s: None)

    meta = fit(1024, 6, tmp_path / "c.safetensors")
    assert float(meta["test_accuracy"]) > 0.5  # chance is 0.1
    model, loaded = clf.load_classifier(tmp_path / "c.safetensors")
    assert loaded["sha256"] == meta["sha256"] and model.features(torch.zeros(2, 1, 28, 28)).shape == (2, clf.FEATURE_DIM)
    # retraining with the same seed reproduces the file (shown on a shorter fit: the same code path)
    once, again = (fit(256, 1, tmp_path / f"{name}.safetensors") for name in ("d", "e"))
    assert again["sha256"] == once["sha256"] != meta["sha256"]


def test_shipped_classifier_is_small_and_accurate() -> None:
    path = clf.shipped_path("fashion-mnist")
    assert path is not None and path.stat().st_size < 2 * 2**20
    model, meta = clf.load_classifier(path)
    assert float(meta["test_accuracy"]) >= 0.91 and meta["dataset"] == "fashion-mnist" and len(meta["sha256"]) == 64


@pytest.mark.parametrize("family", ["vae", "gan"])
def test_eval_cli_writes_all_fields_and_is_deterministic(family: str, tmp_path: Path, monkeypatch) -> None:
    # A data set called fashion-mnist (tiny, local) so the shipped classifier applies.
    root = write_idx_dataset(tmp_path / "fm", n_train=128, n_test=64)
    run = tmp_path / "run"
    args = train_args(family, root, run, "--max-steps", "16", "--set", "train.eval_every=1", "--set", "train.eval_n=64")
    args[args.index("--data") + 1] = "fashion-mnist"
    assert main([*args, "--set", f'data.root="{root}"']) == 0
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert any("eval_fd" in r for r in rows)
    outs = []
    for name in ("a.json", "b.json"):
        assert main(["eval", str(run), "--n", "64", "--k", "4", "--nll-n", "16", "--json", str(tmp_path / name)]) == 0
        outs.append(json.loads((tmp_path / name).read_text()))
    a, b = outs
    q = a["sample_quality"]
    for key in (
        "fd",
        "precision",
        "recall",
        "density",
        "coverage",
        "is_mean",
        "is_std",
        "class_hist",
        "reference_class_hist",
        "features",
    ):
        assert key in q
    assert q["features"]["sha256"] == clf.load_classifier(clf.shipped_path("fashion-mnist"))[1]["sha256"]
    assert a["n"] == 64 and a["seed"] == 0 and a["reference"].startswith("test split")
    if family == "vae":
        lk = a["likelihood"]
        assert lk["k"] == 4 and lk["n"] == 16 and math.isfinite(lk["nll_iw"]) and lk["nll_iw"] <= lk["neg_elbo"] + 1e-6
        assert "Gaussian" in lk["likelihood"]
    else:
        assert 0 <= a["gan_health"]["d_acc"] <= 1
    for result in (a, b):  # wall times, not results
        result.pop("seconds")
        result.get("disentanglement", {}).pop("seconds", None)
    assert a == b


def test_inception_fid_degrades_to_one_line() -> None:
    from genlab.eval.inception import inception_fid

    out = inception_fid(torch.zeros(2, 1, 8, 8), torch.zeros(2, 1, 8, 8))
    assert isinstance(out, float) or (out.startswith("unavailable:") and "\n" not in out)


def test_bce_sanity_for_bernoulli_terms() -> None:
    logits, x = torch.randn(3, 1, 2, 2), (torch.rand(3, 1, 2, 2) > 0.5).float()
    from genlab.losses import bernoulli_nll

    torch.testing.assert_close(
        bernoulli_nll(logits, x), F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum((1, 2, 3))
    )


def test_fd_in_classifier_features_grows_with_blur(idx_data: Path) -> None:
    from genlab.config import DataConfig
    from genlab.data import load_dataset, to_float
    from genlab.eval.evaluate import classify

    model, _ = clf.load_classifier(clf.shipped_path("fashion-mnist"))
    _, test = load_dataset(DataConfig(dataset=str(idx_data)), 1, 28)
    x = to_float(test.images)
    base, _ = classify(model, x)
    fds = []
    for k in (1, 3, 5, 7):
        blurred = F.avg_pool2d(F.pad(x, (k // 2,) * 4, mode="replicate"), k, stride=1) if k > 1 else x
        feats, _ = classify(model, blurred)
        fds.append(frechet_distance_features(base.numpy(), feats.numpy()))
    assert abs(fds[0]) < 1e-3 and 0.01 < fds[1] < fds[2] < fds[3]  # 64 images, 256-d: sqrtm noise ~1e-5


def test_bernoulli_vae_on_binarized_data_trains_and_evaluates(idx_data: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    extra = ["--max-steps", "6", "--set", 'model.decoder="bernoulli"', "--set", "data.binarize=true"]
    assert main(train_args("vae", idx_data, run, *extra)) == 0
    assert main(["eval", str(run), "--n", "32", "--k", "8", "--nll-n", "8", "--json", str(tmp_path / "e.json")]) == 0
    lk = json.loads((tmp_path / "e.json").read_text())["likelihood"]
    assert lk["likelihood"].startswith("Bernoulli on pixels binarized") and 0 < lk["nll_iw"] <= lk["neg_elbo"] + 1e-6


def test_a_long_likelihood_states_its_cost_up_front(monkeypatch) -> None:
    from genlab.data import ImageData
    from genlab.eval import evaluate as ev

    config = small_config("vae")
    model = VanillaVAE(1, 4, hidden_dims=(8, 16), image_size=32).eval()
    test = ImageData(torch.randint(0, 256, (8, 1, 32, 32), dtype=torch.uint8), None, "toy", (32, 32))
    lines: list[str] = []
    ev.vae_likelihood(model, config, test, 8, 40, 0, batch_size=4, log=lines.append)
    assert lines == []  # well under COST_NOTE_S: nothing to announce
    monkeypatch.setattr(ev, "COST_NOTE_S", 0.0)
    ev.vae_likelihood(model, config, test, 8, 40, 0, batch_size=4, log=lines.append)
    assert len(lines) == 1 and "--k 40 over 8 images: ~" in lines[0] and "--k 4 is ~10x faster" in lines[0]


def test_calibrate_gives_the_conditional_accuracy_real_images_score(idx_data: Path) -> None:
    """The ceiling for a conditional model's accuracy: real images scored with their own labels, the
    training subset (drawn in a shuffled order) paired with its labels and the test images with theirs."""
    from genlab.config import DataConfig
    from genlab.data import load_dataset, to_float
    from genlab.eval.evaluate import calibrate, classify

    train, test = load_dataset(DataConfig(dataset=str(idx_data)), 1, 28)
    train.source = test.source = "fashion-mnist"  # the shipped classifier applies
    model, _ = clf.load_classifier(clf.shipped_path("fashion-mnist"))
    for split in (train, test):  # labels the classifier agrees with everywhere: any mis-pairing shows
        split.labels = classify(model, to_float(split.images))[1].argmax(1)
    result = calibrate(train, test, n=48)
    assert result["rows"]["train subset (floor)"]["conditional_accuracy"] == 1.0 and result["test_accuracy"] == 1.0
    test.labels = (test.labels + 1) % 10
    train.labels = (train.labels + 1) % 10
    result = calibrate(train, test, n=48)
    assert result["rows"]["train subset (floor)"]["conditional_accuracy"] == 0.0 and result["test_accuracy"] == 0.0
    assert "conditional_accuracy" not in result["rows"]["uniform noise"]


class _Brightest(torch.nn.Module):
    """A stand-in classifier: the class is the brightest of an image's first 10 pixels."""

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)[:, :10]

    def head(self, f: torch.Tensor) -> torch.Tensor:
        return f * 100


class _LabelOrCode(torch.nn.Module):
    """A stand-in conditional VAE that draws its class as one bright pixel, taken from the label or from z."""

    def __init__(self, follows_label: bool) -> None:
        super().__init__()
        self.follows_label, self.weight = follows_label, torch.nn.Parameter(torch.zeros(1))
        self.config = type("C", (), {"num_classes": 10, "decoder": "gaussian"})()

    def encode(self, x: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        code = F.one_hot(labels, 10).float()  # z carries the image's own class
        return code, torch.zeros_like(code)

    def decode(self, u: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        cls = labels if self.follows_label else u.argmax(1)
        out = -torch.ones(len(u), 1, 28, 28)
        out[torch.arange(len(u)), 0, 0, cls] = 1.0
        return out

    def to_image(self, out: torch.Tensor) -> torch.Tensor:
        return out


def test_label_accuracies_tell_a_label_that_decides_from_a_code_that_does() -> None:
    from types import SimpleNamespace

    from genlab.data import ImageData
    from genlab.eval.evaluate import label_accuracies

    config = SimpleNamespace(data=SimpleNamespace(binarize=False))  # the one field it reads
    test = ImageData(torch.zeros(40, 1, 28, 28, dtype=torch.uint8), torch.arange(40) % 10, "fashion-mnist", (28, 28))
    follows = label_accuracies(_LabelOrCode(True), config, test, _Brightest(), 40, 0)
    assert follows == {"swap_accuracy": 1.0, "recon_accuracy": 1.0}
    ignores = label_accuracies(_LabelOrCode(False), config, test, _Brightest(), 40, 0)
    assert ignores == {"swap_accuracy": 0.0, "recon_accuracy": 1.0}
