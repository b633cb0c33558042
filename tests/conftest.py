"""What every test folder shares: the data the tests make (no downloads), the one table of tiny model
settings, and the helpers that train, read and compare runs."""

from __future__ import annotations

import gzip
import json
import re
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

# A bias that feeds BatchNorm has exactly zero true gradient; Adam turns the float noise in it into
# steps of up to lr, so two runs that agree elsewhere to 1e-6 wander apart there, and in the running
# means of the BatchNorm it feeds. Comparisons allow lr * steps for these entries only.
FEEDS_BATCHNORM = re.compile(
    r"(encoder|decoder)\.\d+\.0\.bias|(encoder|decoder)\.\d+\.1\.running_mean|final_layer\.0\.bias|"
    r"final_layer\.1\.running_mean|generator\.model\.(2|5|8)\.bias|generator\.model\.(3|6|9)\.running_mean"
)


# One table of tiny settings, for every registered family: each builds and steps in a moment.
TINY: dict[str, dict[str, Any]] = {
    "vae": {"model.hidden_dims": [8, 16], "model.latent_dim": 4},
    "gan": {"model.g_hidden_dims": [16, 32], "model.d_hidden_dims": [16], "model.latent_dim": 8},
    "dcgan": {"model.width": 4, "model.latent_dim": 8},
    "sngan": {"model.width": 4, "model.latent_dim": 8},
    "wgan-gp": {"model.width": 4, "model.latent_dim": 8},
    "cgan": {"model.width": 4, "model.latent_dim": 8},
    "cvae": {"model.hidden_dims": [8, 16], "model.latent_dim": 4},
    "factorvae": {
        "model.arch": "notes",
        "model.decoder": "gaussian",
        "model.hidden_dims": [8, 16],
        "model.latent_dim": 4,
        "model.d_hidden": 16,
        "model.d_layers": 2,
    },
}
NEW = ["dcgan", "sngan", "wgan-gp", "cgan", "cvae", "factorvae"]  # the families beyond the notes
LOSS_KEYS = {"vae": ("loss", "recon", "kl", "elbo", "val_loss"), "gan": ("g_loss", "d_loss", "d_real", "d_fake", "val_d_acc")}


def tiny_sets(family: str, **extra: Any) -> list[str]:
    """TINY[family] (and extra "section.key" values, dots as "__") as --set arguments."""
    values = {**TINY[family], **{k.replace("__", "."): v for k, v in extra.items()}}
    return [a for k, v in values.items() for a in ("--set", f"{k}={json.dumps(v)}")]


def tiny_model(family: str, size: int = 16, channels: int = 1) -> dict[str, Any]:
    """TINY[family]'s model keys as config-class keyword arguments, at size x size."""
    from genlab.models import family as record_of

    model = {k.partition(".")[2]: tuple(v) if isinstance(v, list) else v for k, v in TINY[family].items() if k[:6] == "model."}
    gan = record_of(family).kind == "gan"
    shape = {"img_shape": (channels, size, size)} if gan else {"in_channels": channels, "image_size": size}
    return {**model, **shape}


def small_config(family: str, size: int = 28, channels: int = 1, **extra):
    """A RunConfig of TINY[family] at size (a VAE pads 28 to 32) with batch 8; extra: {"loss.n_critic": 1, ...}."""
    from genlab.configfile import load_config
    from genlab.models import family as record_of

    shape = {"model.in_channels": channels, "model.image_size": 32 if size == 28 else size}
    if record_of(family).kind == "gan":
        shape = {"model.img_shape": [channels, size, size]}
    return load_config(family, None, {**TINY[family], **shape, "train.batch_size": 8, **extra})


def train_args(family: str, data: Path, out: Path, *extra: str) -> list[str]:
    """`genlab train FAMILY` of TINY settings on data into out, batch 16, quiet."""
    common = ["--batch-size", "16", "--quiet", "--set", "train.log_every=3", "--set", "train.num_samples=16"]
    validation = ["--set", "train.val_batches=2"] if family in ("vae", "cvae", "factorvae") else []
    return ["train", family, "--data", str(data), "--out", str(out), *common, *tiny_sets(family), *validation, *extra]


def weights(run: Path) -> dict[str, torch.Tensor]:
    from genlab import checkpoint as ckpt

    return ckpt.load_weights(ckpt.find_checkpoint(run))


def losses(run: Path, kind: str) -> list[dict]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [{k: r[k] for k in ("step", *LOSS_KEYS[kind]) if k in r} for r in rows]


def assert_same_state(a: Path, b: Path) -> None:
    """Two runs hold bit-identical weights, optimiser states, positions and RNG."""
    from genlab import checkpoint as ckpt

    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    sa, sb = ckpt.load_state(ckpt.find_checkpoint(a)), ckpt.load_state(ckpt.find_checkpoint(b))
    assert (sa["step"], sa["epoch"], sa["batch"]) == (sb["step"], sb["epoch"], sb["batch"])
    for name, opt in sa["optimizers"].items():
        for key, st in opt["state"].items():
            other = sb["optimizers"][name]["state"][key]
            assert all(torch.equal(st[k], other[k]) for k in st)
    assert all(torch.equal(a, b) for a, b in zip(sa["rng"], sb["rng"], strict=True))


def assert_same_weights(a: dict, b: dict, noise_atol: float, rtol: float = 1e-4, atol: float = 1e-5) -> None:
    """a == b to float tolerance, but for the BatchNorm-fed entries (noise_atol there)."""
    for key, value in a.items():
        if key.endswith("num_batches_tracked"):
            continue
        tol = noise_atol if FEEDS_BATCHNORM.fullmatch(key) else atol
        torch.testing.assert_close(value, b[key], rtol=rtol, atol=tol, msg=key)


def idx_bytes(array: np.ndarray) -> bytes:
    """An IDX file (uint8) for array, as the MNIST family stores them."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(struct.pack(">I", s) for s in array.shape)
    return header + array.astype(np.uint8).tobytes()


def toy_images(n: int, seed: int, size: int = 28) -> tuple[np.ndarray, np.ndarray]:
    """n grey images of bright rectangles on black, one shape per label, plus their labels."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, n)
    images = np.zeros((n, size, size), dtype=np.uint8)
    for i, label in enumerate(labels):
        h, w = 6 + label, 16 - label
        top, left = rng.integers(2, size - h - 1), rng.integers(2, size - w - 1)
        images[i, top : top + h, left : left + w] = rng.integers(120, 255)
    return images, labels.astype(np.uint8)


def write_idx_dataset(folder: Path, n_train: int = 256, n_test: int = 64, gz: bool = True) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for prefix, n, seed in (("train", n_train, 0), ("t10k", n_test, 1)):
        images, labels = toy_images(n, seed)
        for kind, array, ndim in (("images", images, 3), ("labels", labels, 1)):
            data = idx_bytes(array)
            name = f"{prefix}-{kind}-idx{ndim}-ubyte"
            if gz:
                (folder / f"{name}.gz").write_bytes(gzip.compress(data))
            else:
                (folder / name).write_bytes(data)
    return folder


@pytest.fixture(scope="session")
def idx_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_idx_dataset(tmp_path_factory.mktemp("idx"))


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    """RGB, grey, RGBA and 16-bit PNG/JPEG files of at least 40x40 pixels in nested folders."""
    root = tmp_path / "images"
    (root / "a").mkdir(parents=True)
    (root / "b").mkdir()
    rng = np.random.default_rng(0)
    for i in range(12):
        rgb = rng.integers(0, 255, (48, 40, 3), dtype=np.uint8)
        Image.fromarray(rgb).save(root / "a" / f"{i}.png")
    Image.fromarray(rng.integers(0, 255, (40, 40), dtype=np.uint8)).save(root / "b" / "grey.png")
    Image.fromarray(rng.integers(0, 255, (40, 40, 4), dtype=np.uint8), "RGBA").save(root / "b" / "rgba.png")
    Image.fromarray(rng.integers(0, 65535, (40, 40), dtype=np.uint16)).save(root / "b" / "deep.png")
    Image.fromarray(rng.integers(0, 255, (50, 60, 3), dtype=np.uint8)).save(root / "b" / "photo.jpg")
    return root


@pytest.fixture(autouse=True)
def _threads() -> None:
    torch.set_num_threads(2)


@pytest.fixture(scope="session")
def tiny_runs(idx_data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny VAE and GAN run of two epochs each (per-epoch pictures, a report), trained once per session."""
    from genlab.cli import main

    root = tmp_path_factory.mktemp("runs")
    runs = {}
    for family in ("vae", "gan"):
        runs[family] = root / family
        assert main(train_args(family, idx_data, runs[family], "--epochs", "2")) == 0
    return runs
