"""The eval's factor part beyond the metrics: MI matrix and row labels in the JSON, quick scores for training
logs, bf16 encoding only within tolerance, encoding in chunks, the heat map."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
import torch

from genlab.data import Factors, ImageData
from genlab.eval import disentanglement as dm
from genlab.eval import factor_report as fr
from genlab.latents import encode, encode_chunks, label_dims
from genlab.models import VanillaVAE

SIZES = (3, 2, 4, 4, 4)  # 384 images
NAMES = ("shape", "scale", "orientation", "pos_x", "pos_y")


def factor_data(size: int = 32) -> ImageData:
    classes = np.stack(np.unravel_index(np.arange(math.prod(SIZES)), SIZES), axis=1)
    images = torch.zeros(len(classes), 1, size, size, dtype=torch.uint8)
    for i, (shape, scale, _, x, y) in enumerate(classes):  # a square per image, placed and sized by its factors
        side = 4 + 2 * scale + shape
        images[i, 0, 4 + 5 * y : 4 + 5 * y + side, 4 + 5 * x : 4 + 5 * x + side] = 255
    return ImageData(images, None, "toy", (size, size), Factors(classes, NAMES, SIZES))


def tiny_vae() -> VanillaVAE:
    torch.manual_seed(0)
    return VanillaVAE(1, 4, hidden_dims=(8, 16), image_size=32, decoder="bernoulli").eval()


def test_rows_are_labelled_with_the_factor_they_carry() -> None:
    normalised = np.array([[0.02, 0.61, 0.0], [0.0, 0.04, 0.05], [0.3, 0.1, 0.2]])
    assert label_dims(normalised, ("scale", "pos_x", "pos_y")) == ["carries pos_x (MI 0.61)", "none", "carries scale (MI 0.30)"]
    dis = {"mutual_information": fr.mi_record(normalised, normalised, ("scale", "pos_x", "pos_y"))}
    assert fr.traversal_labels(dis, dims=[2, 0]) == ["carries scale (MI 0.30)", "carries pos_x (MI 0.61)"]
    assert fr.traversal_labels({"kl_per_dim": [0.1, 0.2]}) == ["", ""]  # no factor data: nothing to say
    rows = fr.latent_factors(normalised, ("scale", "pos_x", "pos_y"))
    assert rows[1] == {"dim": 1, "factor": "pos_y", "normalised_mi": 0.05, "label": "none"}


def test_encoding_in_chunks_gives_the_codes_of_one_pass() -> None:
    model, data = tiny_vae(), factor_data()
    mu, logvar = encode(model, data.images, True)
    chunks = (data.images[i : i + 100] for i in range(0, len(data), 100))
    mu32, logvar32 = encode_chunks(model, chunks, len(data), True, batch_size=64)
    assert mu32.dtype == np.float32 and mu32.shape == (384, 4)
    np.testing.assert_allclose(mu32, mu, atol=1e-5)
    np.testing.assert_allclose(logvar32, logvar, atol=1e-5)
    with pytest.raises(ValueError, match="announced"):
        encode_chunks(model, [data.images[:10]], 11, True)


def test_bf16_is_used_only_within_tolerance(monkeypatch: pytest.MonkeyPatch) -> None:
    model, data = tiny_vae(), factor_data()
    record = fr.encoder_precision(model, data.images[:256], True)
    assert record["dtype"] in ("float32", "bfloat16") and record["images_per_s"] > 0
    if isinstance(record["bf16"], dict):  # a CPU with bfloat16: the measurement is kept
        errors = record["bf16"]["max_error"]
        within = all(errors[k] <= fr.BF16_TOLERANCE[k] for k in errors)
        assert record["bf16"]["used"] == (record["dtype"] == "bfloat16")
        assert not record["bf16"]["used"] or within
        monkeypatch.setattr(fr, "BF16_TOLERANCE", {"mu_in_std": 0.0, "logvar": 0.0})
        assert fr.encoder_precision(model, data.images[:256], True)["dtype"] == "float32"


def test_latent_report_keeps_the_mi_matrix_labels_and_chen_mig(monkeypatch: pytest.MonkeyPatch) -> None:
    model, data = tiny_vae(), factor_data()
    # The protocol's point counts are for the real set; this one has 384 images.
    small = {"num_train": 200, "num_eval": 100}
    beta_vae, factor_vae = dm.beta_vae_score, dm.factor_vae_score
    monkeypatch.setattr(dm, "beta_vae_score", lambda r, s, seed=0: beta_vae(r, s, seed, **small))
    monkeypatch.setattr(dm, "factor_vae_score", lambda r, s, seed=0: factor_vae(r, s, seed, num_variance_estimate=384, **small))
    monkeypatch.setattr(dm, "dci", lambda c, f, seed=0: {"disentanglement": 0.0, "completeness": 0.0, "informativeness": 0.0})
    monkeypatch.setattr(dm, "sap", lambda c, f, seed=0: 0.0)
    lines: list[str] = []
    dis = fr.latent_report(model, True, data, data, log=lines.append, chen_samples=100)
    matrix = dis["mutual_information"]
    assert matrix["factors"] == list(NAMES) and matrix["latent_dims"] == [0, 1, 2, 3]
    assert np.array(matrix["nats"]).shape == (4, 5) and np.array(matrix["normalised"]).shape == (4, 5)
    assert [row["dim"] for row in dis["latent_factors"]] == [0, 1, 2, 3]
    for row in dis["latent_factors"]:
        assert row["factor"] in NAMES and (row["label"] == "none" or row["label"].startswith("carries"))
    assert 0.0 <= dis["mig_chen"] <= 1.0
    assert dis["mig_chen_detail"]["factors"] == ["scale", "orientation", "pos_x", "pos_y"]  # shape left out, as Chen et al.
    chen = dis["mig_chen_detail"]
    # An untrained encoder: its dimensions under 0.01 nats of KL are left out (at least two are kept).
    assert len(chen["latent_dims"]) >= 2 and sorted(chen["latent_dims"] + chen["left_out"]["dims"]) == [0, 1, 2, 3]
    assert np.array(chen["mutual_information"]).shape == (len(chen["latent_dims"]), 4)
    assert dis["protocol"]["mig_chen"]["samples"] == 100 and dis["encoder"]["dtype"] in ("float32", "bfloat16")
    assert any("MIG (disentanglement_lib)" in line for line in lines) and any("Chen et al." in line for line in lines)
    assert all(line.startswith("eval: ") for line in lines)


def test_quick_factor_scores_are_quick_and_named_so() -> None:
    model, data = tiny_vae(), factor_data()
    model.train()
    started = time.perf_counter()
    quick = fr.quick_factor_scores(model, data, True, n=384, votes=20)
    assert time.perf_counter() - started < 3.0 and model.training  # put back as it came
    assert set(quick) == {"quick_mig", "quick_factor_vae_score", "quick_kl_per_dim", "quick_n", "quick_votes"}
    assert 0.0 <= quick["quick_mig"] <= 1.0 and 0.0 <= quick["quick_factor_vae_score"] <= 1.0
    assert len(quick["quick_kl_per_dim"]) == 4 and min(quick["quick_kl_per_dim"]) >= 0.0


def test_mi_heatmap_draws_a_cell_per_entry() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from genlab.figures import draw_mi_heatmap

    fig, ax = plt.subplots()
    draw_mi_heatmap(ax, [[0.1, 0.9], [0.5, 0.0], [0.2, 0.3]], ["scale", "pos_x"], [4, 0, 7])
    assert len(ax.texts) == 6 and [t.get_text() for t in ax.get_yticklabels()] == ["z4", "z0", "z7"]
    with pytest.raises(ValueError, match="expected"):
        draw_mi_heatmap(ax, [[0.1, 0.9]], ["scale"], [0])
    plt.close(fig)
