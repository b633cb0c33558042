from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from genlab.config import DataConfig
from genlab.data import (
    crop_to,
    decode_image,
    epoch_order,
    fit_images,
    iterate_batches,
    load_dataset,
    locate_idx,
    parse_idx,
    read_idx,
    to_float,
)
from genlab.errors import DataError

from conftest import idx_bytes, write_idx_dataset


def test_idx_round_trip_gz_and_raw(tmp_path: Path) -> None:
    array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    (tmp_path / "a").write_bytes(idx_bytes(array))
    (tmp_path / "a.gz").write_bytes(gzip.compress(idx_bytes(array)))
    assert np.array_equal(read_idx(tmp_path / "a"), array)
    assert np.array_equal(read_idx(tmp_path / "a.gz"), array)


def test_idx_wrong_magic_and_truncation_name_the_file(tmp_path: Path) -> None:
    good = idx_bytes(np.zeros((4, 5, 5), dtype=np.uint8))
    (tmp_path / "magic").write_bytes(b"\x00\x00\x0d\x03" + good[4:])
    (tmp_path / "short").write_bytes(good[:-7])
    (tmp_path / "badgz.gz").write_bytes(b"\x1f\x8b" + b"junk")
    with pytest.raises(DataError, match="magic.*bad magic|bad magic") as e:
        read_idx(tmp_path / "magic")
    assert "magic" in str(e.value) and str(tmp_path / "magic") in str(e.value)
    with pytest.raises(DataError, match="truncated"):
        read_idx(tmp_path / "short")
    with pytest.raises(DataError, match="badgz.gz"):
        read_idx(tmp_path / "badgz.gz")


@pytest.mark.slow
@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64))
def test_any_bytes_give_data_or_a_data_error(raw: bytes) -> None:
    try:
        out = parse_idx(raw)
    except DataError:
        return
    assert isinstance(out, np.ndarray)


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=300))
def test_any_file_bytes_decode_or_raise_data_error(tmp_path_factory: pytest.TempPathFactory, raw: bytes) -> None:
    path = tmp_path_factory.mktemp("fuzz") / "x.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + raw)
    try:
        out = decode_image(path, 3, 8, None)
    except DataError:
        return
    assert out.shape == (3, 8, 8)


def test_locate_prefers_the_given_root_and_refuses_without_download(tmp_path: Path, idx_data: Path) -> None:
    assert locate_idx("fashion-mnist", idx_data, download_missing=False) == idx_data
    with pytest.raises(DataError, match="mnist not found"):
        locate_idx("mnist", tmp_path / "nothing", download_missing=False)


def test_load_idx_dataset_pads_28_to_32(idx_data: Path) -> None:
    train, test = load_dataset(DataConfig(dataset="fashion-mnist", root=str(idx_data), download=False), 1, 32)
    assert train.images.shape == (256, 1, 32, 32) and train.images.dtype == torch.uint8
    assert test.images.shape == (64, 1, 32, 32) and train.original_size == (28, 28)
    assert train.images[:, :, :2].max() == 0  # the pad is black
    assert torch.equal(
        crop_to(train.images, (28, 28))[:, 0], torch.from_numpy(read_idx(idx_data / "train-images-idx3-ubyte.gz").copy())
    )


def test_idx_folder_as_data_path(tmp_path: Path) -> None:
    folder = write_idx_dataset(tmp_path / "mine", n_train=40, n_test=8, gz=False)
    train, test = load_dataset(DataConfig(dataset=str(folder)), 1, 28)
    assert len(train) == 40 and len(test) == 8


def test_fit_images_channels_and_sizes() -> None:
    grey = torch.randint(0, 256, (3, 1, 28, 28), dtype=torch.uint8)
    assert fit_images(grey, 3, 28).shape == (3, 3, 28, 28)
    assert fit_images(grey, 1, 64, "resize").shape == (3, 1, 64, 64)
    rgb = torch.randint(0, 256, (2, 3, 10, 10), dtype=torch.uint8)
    assert fit_images(rgb, 1, 10).shape == (2, 1, 10, 10)
    with pytest.raises(DataError, match="resize"):
        fit_images(grey, 1, 16, "pad")


def test_to_float_maps_to_minus_one_one() -> None:
    x = to_float(torch.tensor([0, 255], dtype=torch.uint8))
    assert x.tolist() == [-1.0, 1.0]


def test_image_folder_mixed_modes(image_folder: Path) -> None:
    cfg = DataConfig(dataset=str(image_folder), val_fraction=0.2, workers=0)
    train, test = load_dataset(cfg, 3, 32)
    assert train.images.shape[1:] == (3, 32, 32) and len(train) + len(test) == 16
    grey_train, _ = load_dataset(cfg, 1, 32)
    assert grey_train.images.shape[1] == 1


def test_sixteen_bit_png_is_rescaled_not_clipped(tmp_path: Path) -> None:
    Image.fromarray(np.full((8, 8), 65535, dtype=np.uint16)).save(tmp_path / "white.png")
    Image.fromarray(np.full((8, 8), 30000, dtype=np.uint16)).save(tmp_path / "mid.png")
    assert decode_image(tmp_path / "white.png", 1, 8, None).max() == 255
    assert decode_image(tmp_path / "mid.png", 1, 8, None).max() == round(30000 / 257)


def test_bad_files_give_one_line_errors_or_are_skipped(image_folder: Path) -> None:
    (image_folder / "a" / "broken.png").write_bytes((image_folder / "a" / "0.png").read_bytes()[:60])
    (image_folder / "a" / "text.jpg").write_text("not an image")
    cfg = DataConfig(dataset=str(image_folder), workers=0)
    with pytest.raises(DataError, match="not a readable image") as e:
        load_dataset(cfg, 3, 32)
    assert "\n" not in str(e.value) and "skip_bad_files" in str(e.value)
    train, test = load_dataset(DataConfig(dataset=str(image_folder), workers=0, skip_bad_files=True, val_fraction=0.0), 3, 32)
    assert len(train) == 16


def test_too_small_images_are_named(tmp_path: Path) -> None:
    Image.fromarray(np.zeros((10, 10, 3), dtype=np.uint8)).save(tmp_path / "tiny.png")
    Image.fromarray(np.zeros((40, 40, 3), dtype=np.uint8)).save(tmp_path / "ok.png")
    with pytest.raises(DataError, match="tiny.png.*smaller"):
        load_dataset(DataConfig(dataset=str(tmp_path), workers=0), 3, 32)


def test_missing_and_empty_folders(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="neither a built-in"):
        load_dataset(DataConfig(dataset=str(tmp_path / "nope")), 3, 32)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="holds no images"):
        load_dataset(DataConfig(dataset=str(tmp_path / "empty")), 3, 32)


def test_streamed_folder_gives_same_batches_as_in_memory(image_folder: Path) -> None:
    mem, _ = load_dataset(DataConfig(dataset=str(image_folder), workers=0, val_fraction=0.2), 3, 32)
    stream, _ = load_dataset(DataConfig(dataset=str(image_folder), workers=0, val_fraction=0.2, max_memory_mb=0.001), 3, 32)
    assert not hasattr(stream, "images")
    a = list(iterate_batches(mem, 4, seed=3, epoch=1))
    b = list(iterate_batches(stream, 4, seed=3, epoch=1))
    assert len(a) == len(b) == 3 and all(torch.equal(x, y) for x, y in zip(a, b))


def test_epoch_order_depends_on_seed_and_epoch_only() -> None:
    assert torch.equal(epoch_order(100, 1, 2), epoch_order(100, 1, 2))
    assert not torch.equal(epoch_order(100, 1, 2), epoch_order(100, 1, 3))
    images = torch.arange(10, dtype=torch.uint8).view(10, 1, 1, 1)
    from genlab.data import ImageData

    data = ImageData(images, None, "x", (1, 1))
    full = list(iterate_batches(data, 3, 0, 0))
    assert len(full) == 3 and [torch.equal(a, b) for a, b in zip(full[1:], iterate_batches(data, 3, 0, 0, start=1))] == [
        True,
        True,
    ]


def test_folder_classes_from_subfolders(tmp_path: Path) -> None:
    from genlab.data.folders import folder_classes

    files = [tmp_path / "cat" / "1.png", tmp_path / "dog" / "a" / "2.png", tmp_path / "cat" / "3.png"]
    assert folder_classes(tmp_path, files) == [0, 1, 0]
    assert folder_classes(tmp_path, [tmp_path / "x.png", tmp_path / "cat" / "1.png"]) is None
    assert folder_classes(tmp_path, [tmp_path / "cat" / "1.png"]) is None  # one class is no labelling
