"""Hostile or broken data files, written by the tests: each gives a one-line DataError (or is skipped as a bad
file), never a traceback, an inflated gigabyte or a decoder that should not run."""

from __future__ import annotations

import gzip
import struct
import tracemalloc
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import EpsImagePlugin, Image

from genlab import data, limits
from genlab.config import DataConfig
from genlab.configfile import load_config
from genlab.data import decode_image, fit_images, folder_channels, list_images, load_dataset, native_shape, parse_idx, read_idx
from genlab.data.folders import walk_files
from genlab.data.idx import IDX_MAX_SIDE, read_idx_header
from genlab.errors import DataError

from conftest import idx_bytes


def header(shape: tuple[int, ...]) -> bytes:
    return bytes([0, 0, 0x08, len(shape)]) + b"".join(struct.pack(">I", s) for s in shape)


def zeros_gz(head: bytes, zeros: int) -> bytes:
    """head, then zeros zero bytes, gzipped a MiB at a time (64 MiB of zeros compress to ~64 KiB)."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)  # wbits 31: a gzip stream
    parts = [packer.compress(head)]
    block = bytes(1 << 20)
    for _ in range(zeros // len(block)):
        parts.append(packer.compress(block))
    return b"".join([*parts, packer.flush()])


def png(width: int, height: int, rows: int) -> bytes:
    """A 1-bit grey PNG of width x height whose pixel data holds rows zero rows (all of them: a valid image)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    pixels = zlib.compress(bytes((width + 7) // 8 + 1) * rows)  # a filter byte, then the row's bits
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")


def good_images(folder: Path, n: int = 4, grey: bool = False) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        shape = (40, 40) if grey else (40, 40, 3)
        Image.fromarray(np.full(shape, 40 * i, dtype=np.uint8)).save(folder / f"img{i}.png")
    return folder


# IDX


def test_gzip_bomb_is_read_only_as_far_as_its_header_says(tmp_path: Path) -> None:
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(zeros_gz(header((1, 28, 28)) + bytes(784), 64 << 20))  # ~64 KiB that inflate to 64 MiB
    tracemalloc.start()
    try:
        with pytest.raises(DataError, match="longer than its header says") as e:
            read_idx(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20 and "\n" not in str(e.value)


def test_dimensions_whose_product_passes_int64_do_not_wrap(tmp_path: Path) -> None:
    huge = header((65536, 65536, 65536, 65536))  # 2**64 bytes: np.prod in int64 made it 0
    with pytest.raises(DataError, match="truncated"):
        parse_idx(huge)
    (tmp_path / "huge").write_bytes(huge)
    with pytest.raises(DataError, match="header declares .* needs about .* of memory"):
        read_idx(tmp_path / "huge")


def test_headers_without_dimensions_or_magic_are_named(tmp_path: Path) -> None:
    folder = tmp_path / "idx"
    folder.mkdir()
    images = folder / "train-images-idx3-ubyte"
    for raw, message in [
        (bytes([0, 0, 8, 3]), "header is truncated"),  # says three dimensions, holds none
        (b"\x12\x34\x08\x03" + header((2, 28, 28))[4:], "bad magic"),
        (header((2, 784)), r"expected \(N, H, W\) images"),
    ]:
        images.write_bytes(raw)
        with pytest.raises(DataError, match=message):
            native_shape(DataConfig(dataset=str(folder)))
        with pytest.raises(DataError, match=message):
            load_dataset(DataConfig(dataset=str(folder)), 1, 28)


def test_idx_images_wider_than_the_stated_maximum_are_refused(tmp_path: Path) -> None:
    folder = tmp_path / "wide"
    folder.mkdir()
    (folder / "train-images-idx3-ubyte").write_bytes(header((2, 1, 65536)) + bytes(2 * 65536))
    with pytest.raises(DataError, match=f"1x65536 images, beyond the 1 to {IDX_MAX_SIDE} pixels a side"):
        read_idx_header(folder / "train-images-idx3-ubyte")
    with pytest.raises(DataError, match="1x65536"):  # before model.image_size becomes 65536
        load_config("vae", None, {"data.dataset": str(folder)})
    with pytest.raises(DataError, match="1x65536"):
        load_dataset(DataConfig(dataset=str(folder)), 1, 32)


def test_fitting_images_checks_memory_before_padding(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(limits, "memory_bytes", lambda: 1 << 30)
    with pytest.raises(DataError, match=r"2 images fitted to 1x32768x32768 needs about 4.0 GiB"):
        fit_images(torch.zeros(2, 1, 28, 28, dtype=torch.uint8), 1, 32768)
    assert fit_images(torch.zeros(2, 1, 28, 28, dtype=torch.uint8), 1, 32).shape == (2, 1, 32, 32)


def test_valid_idx_files_still_read(tmp_path: Path) -> None:
    array = np.arange(3 * 5 * 7, dtype=np.uint8).reshape(3, 5, 7)
    (tmp_path / "a.gz").write_bytes(gzip.compress(idx_bytes(array)))
    (tmp_path / "a").write_bytes(idx_bytes(array))
    assert np.array_equal(read_idx(tmp_path / "a.gz", images=True), array)
    assert np.array_equal(read_idx(tmp_path / "a"), array)
    assert read_idx_header(tmp_path / "a.gz") == (3, 5, 7)
    assert np.array_equal(parse_idx(idx_bytes(array)), array)


# Images


@pytest.mark.parametrize("side", [20_000, 10_000])  # Pillow refuses 400 Mpixels and warns at 100 Mpixels
def test_a_decompression_bomb_is_a_bad_file(tmp_path: Path, side: int, capsys: pytest.CaptureFixture) -> None:
    folder = good_images(tmp_path / "images")
    (folder / "bomb.png").write_bytes(png(side, side, side))  # a few KiB
    with pytest.raises(DataError, match="bomb.png: not a readable image") as e:
        load_dataset(DataConfig(dataset=str(folder), workers=0, val_fraction=0.0), 3, 32)
    assert "\n" not in str(e.value)
    train, _ = load_dataset(DataConfig(dataset=str(folder), workers=0, val_fraction=0.0, skip_bad_files=True), 3, 32)
    assert len(train) == 4 and "skipped 1 unreadable" in capsys.readouterr().out


def test_folder_channels_passes_over_a_bomb(tmp_path: Path) -> None:
    folder = good_images(tmp_path / "grey", grey=True)
    (folder / "a-bomb.png").write_bytes(png(20_000, 20_000, 1))  # sorted first; its header alone is the bomb
    assert folder_channels(folder) == 1


def test_a_png_holding_eps_never_reaches_ghostscript(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ran = []
    monkeypatch.setattr(EpsImagePlugin, "Ghostscript", lambda *args, **kwargs: ran.append(args))
    path = tmp_path / "eps.png"
    path.write_text("%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 40 40\nnewpath 0 0 moveto showpage\n%%EOF\n")
    with pytest.raises(DataError, match="not a readable image"):
        decode_image(path, 3, 32, None)
    assert folder_channels(good_images(tmp_path, grey=True)) == 1  # eps.png among them, passed over
    assert ran == []


def test_an_image_under_another_images_suffix_still_decodes(tmp_path: Path) -> None:
    Image.fromarray(np.full((40, 40, 3), 200, dtype=np.uint8)).save(tmp_path / "really-a-png.jpg", format="PNG")
    assert decode_image(tmp_path / "really-a-png.jpg", 3, 32, None).shape == (3, 32, 32)


# Folders


def test_a_folder_1500_levels_deep_is_listed(tmp_path: Path) -> None:
    deep = tmp_path / "deep"
    path = deep
    for _ in range(1500):
        path = path / "d"
        path.mkdir(parents=True)
    Image.fromarray(np.zeros((40, 40, 3), dtype=np.uint8)).save(path / "x.png")
    try:
        assert list_images(deep) == [path / "x.png"]
    finally:  # shutil.rmtree (and so pytest's clean-up) recurses too: take the tree down by a loop
        (path / "x.png").unlink()
        while path != tmp_path:
            path.rmdir()
            path = path.parent


def test_the_walk_lists_what_rglob_lists(image_folder: Path) -> None:
    (image_folder / "a" / "notes.txt").write_text("not an image")
    (image_folder / "link").symlink_to(image_folder / "a", target_is_directory=True)  # not followed, as by rglob
    expected = sorted(p for p in image_folder.rglob("*") if p.is_file())
    assert sorted(walk_files(image_folder)) == expected
    assert list_images(image_folder) == sorted(p for p in expected if p.suffix.lower() in data.IMAGE_SUFFIXES)
