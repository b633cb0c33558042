"""Small data the tests make: no downloads."""

from __future__ import annotations

import gzip
import re
import struct
from pathlib import Path

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

    from test_cli import train_args

    root = tmp_path_factory.mktemp("runs")
    runs = {}
    for family in ("vae", "gan"):
        runs[family] = root / family
        assert main(train_args(family, idx_data, runs[family], "--epochs", "2")) == 0
    return runs
