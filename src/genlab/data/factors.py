"""Data sets with known generative factors: dSprites (Matthey et al. 2017) and `shapes`, its procedural twin.

Both hold every combination of shape (3), scale (6), orientation (40), posX (32) and posY (32)
exactly once, posY varying fastest: 737,280 images, so image i has the factors
`np.unravel_index(i, FACTOR_SIZES)`. The disentanglement protocols (disentanglement_lib) sample
factors from the whole set; there is no held-out split. Training holds the set in memory; evaluation
reads it once, in order, as a FactorStream of uint8 chunks (3 GB at 64x64 would not fit beside it).
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from genlab.data.idx import default_root, download, md5_of
from genlab.data.images import Factors, ImageData, fit_images
from genlab.errors import DataError
from genlab.io import atomic_write

FACTOR_NAMES = ("shape", "scale", "orientation", "pos_x", "pos_y")
FACTOR_SIZES = (3, 6, 40, 32, 32)
SHAPES = ("square", "ellipse", "heart")
DSPRITES_FILE = "dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz"
DSPRITES_URL = f"https://github.com/google-deepmind/dsprites-dataset/raw/master/{DSPRITES_FILE}"
DSPRITES_MD5 = "7da33b31b13a06f4b04a70402ce90c2e"
FACTOR_SETS = ("shapes", "dsprites")
VALIDATION_IMAGES = 10_000  # a fixed sample of the set for the per-epoch losses and pictures
SHAPES_SIZES = (32, 64)
STREAM_CHUNK = 8192  # images per streamed chunk: 32 MiB of uint8 at 64x64


def load_factor_set(name: str, root: str | None, download_missing: bool, size: int | None) -> tuple[ImageData, ImageData]:
    """(all images, a fixed sample of them for validation) of a factor data set, uint8 (N, 1, H, W) in {0..255}."""
    if name == "shapes":
        images = shapes_images(size or 64, Path(root) if root else default_root("shapes"))
        classes = np.stack(np.unravel_index(np.arange(len(images)), FACTOR_SIZES), axis=1)
        sizes = FACTOR_SIZES
    else:
        images, classes, sizes = load_dsprites(Path(root) if root else default_root("dsprites"), download_missing)
        if size is not None and size != images.shape[-1]:
            images = resize_chunked(images, size)
    factors = Factors(classes.astype(np.int64), FACTOR_NAMES, tuple(sizes))
    side = images.shape[-1]
    train = ImageData(images, None, name, (side, side), factors)
    pick = _validation_pick(len(images))
    picked = Factors(factors.classes[pick], FACTOR_NAMES, tuple(sizes))
    test = ImageData(images[torch.from_numpy(pick)], None, name, (side, side), picked)
    return train, test


def resize_chunked(images: torch.Tensor, size: int, chunk: int = STREAM_CHUNK) -> torch.Tensor:
    """uint8 (N, C, H, W) -> uint8 (N, C, size, size) as fit_images resizes, a chunk at a time: fit_images
    turns the whole set into floats first (737,280 dSprites in float32: 12 GB at 64x64, 3 GB at 32x32)."""
    out = torch.empty((len(images), images.shape[1], size, size), dtype=torch.uint8)
    for i in range(0, len(images), chunk):
        out[i : i + chunk] = fit_images(images[i : i + chunk], images.shape[1], size, "resize")
    return out


@dataclass
class FactorStream:
    """A factor data set read once, in index order, as uint8 chunks: every image of the set without holding
    them all (the evaluation's encoder needs each image once; 737,280 images are 3 GB at 64x64)."""

    source: str
    factors: Factors
    original_size: tuple[int, int]
    root: Path
    native_size: int  # the side the set is rendered or stored at, before fitting to a model
    download: bool = False

    def __len__(self) -> int:
        return len(self.factors.classes)

    def chunks(self, channels: int, size: int, chunk: int = STREAM_CHUNK) -> Iterator[torch.Tensor]:
        """uint8 (n, channels, size, size) chunks of every image in index order, fitted to a model as load_dataset fits them."""
        if self.source == "shapes":
            raw = _shapes_chunks(self.native_size, self.root, chunk)
        else:
            raw = _dsprites_chunks(self.root, self.download, chunk)
        for images in raw:
            if self.source == "dsprites" and self.native_size != images.shape[-1]:
                images = fit_images(images, 1, self.native_size, "resize")  # as load_factor_set does
            yield fit_images(images, channels, size, "resize")

    def validation(self, channels: int, size: int) -> ImageData:
        """The fixed validation sample of load_factor_set, gathered in one pass and fitted to the model."""
        pick = _validation_pick(len(self))
        parts, start = [], 0
        for images in self.chunks(channels, size):
            lo, hi = np.searchsorted(pick, [start, start + len(images)])
            parts.append(images[torch.from_numpy(pick[lo:hi] - start)])
            start += len(images)
        picked = Factors(self.factors.classes[pick], self.factors.names, self.factors.sizes)
        return ImageData(torch.cat(parts), None, self.source, self.original_size, picked)


def open_factor_stream(name: str, root: str | None, download_missing: bool, size: int | None) -> FactorStream:
    """The factor set `name` as a FactorStream, checked as load_factor_set checks it, with no image read yet."""
    if name == "shapes":
        if size is not None and size not in SHAPES_SIZES:
            raise DataError(f"data.image_size={size}: shapes is rendered at {' or '.join(map(str, SHAPES_SIZES))}")
        side, folder = size or 64, Path(root) if root else default_root("shapes")
        classes, sizes = np.stack(np.unravel_index(np.arange(int(np.prod(FACTOR_SIZES))), FACTOR_SIZES), axis=1), FACTOR_SIZES
    else:
        folder = Path(root) if root else default_root("dsprites")
        classes, sizes = _dsprites_classes(_dsprites_file(folder, download_missing))
        side = size or 64
    factors = Factors(classes.astype(np.int64), FACTOR_NAMES, tuple(sizes))
    return FactorStream(name, factors, (side, side), folder, side, download_missing)


def _validation_pick(n: int) -> np.ndarray:
    return np.sort(np.random.default_rng(0).permutation(n)[: min(VALIDATION_IMAGES, n)])


# ---------------------------------------------------------------- dSprites


def load_dsprites(folder: Path, download_missing: bool) -> tuple[torch.Tensor, np.ndarray, tuple[int, ...]]:
    """dSprites' images (N, 1, 64, 64) uint8 in {0, 255}, factor classes (N, 5) without the constant colour, sizes."""
    path = _dsprites_file(folder, download_missing)
    try:
        # allow_pickle=False: the file's `metadata` entry is a pickle, and is never read.
        with np.load(path, allow_pickle=False) as npz:
            imgs = npz["imgs"]
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
        raise DataError(f"{path}: not a dSprites npz ({e}); delete it and download {DSPRITES_FILE} again") from None
    classes, sizes = _dsprites_classes(path)
    if imgs.ndim != 3 or len(imgs) != len(classes):
        raise DataError(f"{path}: expected imgs (N, 64, 64) beside latents_classes (N, 6), got {imgs.shape}")
    return torch.from_numpy(imgs).unsqueeze(1).mul_(255), classes, sizes


def _dsprites_file(folder: Path, download_missing: bool) -> Path:
    """The npz in folder, downloaded if missing and allowed, its MD5 checked."""
    path = folder / DSPRITES_FILE
    if not path.is_file():
        if not download_missing:
            raise DataError(f"dsprites: {path} is missing; put {DSPRITES_FILE} (MD5 {DSPRITES_MD5}) there, or allow download")
        download(DSPRITES_URL, path, DSPRITES_MD5)
    got = md5_of(path)
    if got != DSPRITES_MD5:
        raise DataError(f"{path}: MD5 {got}, expected {DSPRITES_MD5}; delete it and download {DSPRITES_FILE} again")
    return path


def _dsprites_classes(path: Path) -> tuple[np.ndarray, tuple[int, ...]]:
    """Factor classes (N, 5) without the constant colour, and each factor's number of values, checked."""
    try:
        # allow_pickle=False: the file's `metadata` entry is a pickle, and is never read.
        with np.load(path, allow_pickle=False) as npz:
            classes = npz["latents_classes"]
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
        raise DataError(f"{path}: not a dSprites npz ({e}); delete it and download {DSPRITES_FILE} again") from None
    if classes.ndim != 2 or classes.shape[1] != 6:
        raise DataError(f"{path}: expected latents_classes (N, 6), got {classes.shape}")
    classes = classes[:, 1:]  # colour: one value
    sizes = tuple(int(s) for s in classes.max(axis=0) + 1)
    if not np.array_equal(np.ravel_multi_index(classes.T, sizes), np.arange(len(classes))):
        raise DataError(f"{path}: factors are not every combination once, posY fastest; download {DSPRITES_FILE} again")
    return classes, sizes


def _dsprites_chunks(folder: Path, download_missing: bool, chunk: int) -> Iterator[torch.Tensor]:
    """dSprites' images as uint8 (n, 1, 64, 64) chunks in {0, 255}, inflated from the npz as they are read."""
    path = _dsprites_file(folder, download_missing)
    try:
        with zipfile.ZipFile(path) as npz, npz.open("imgs.npy") as f:
            version = np.lib.format.read_magic(f)
            read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, fortran, dtype = read_header(f)
            if len(shape) != 3 or fortran or dtype != np.uint8:
                raise ValueError(f"imgs is {shape} {dtype}{' (Fortran order)' if fortran else ''}")
            row = shape[1] * shape[2]
            for start in range(0, shape[0], chunk):
                n = min(chunk, shape[0] - start)
                data = f.read(n * row)
                if len(data) != n * row:
                    raise ValueError("imgs.npy ends early")
                yield torch.frombuffer(bytearray(data), dtype=torch.uint8).view(n, 1, shape[1], shape[2]).mul_(255)
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
        raise DataError(f"{path}: not a dSprites npz ({e}); delete it and download {DSPRITES_FILE} again") from None


# ---------------------------------------------------------------- shapes, the procedural twin

# Geometry on the 64x64 canvas, in pixels. Positions move the sprite centre by one pixel a step over
# 32 steps (dSprites moves about 1.5 px a step); scale 1 is a shape of radius ~10 px.
_CANVAS = 64
_FIRST_CENTRE = 16.0  # centre of the sprite at pos 0; at pos 31 it is 47.0
_RADIUS = 10.0
_PAD = 32  # sprites are drawn on a (64 + 2 * _PAD)^2 canvas and cut out at each position
_QUARTERS = np.array([0, 64, 128, 191, 255], dtype=np.uint8)  # 0..4 of a 2x2 block covered -> grey


def _inside(shape: int, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Whether local coordinates (unit radius, v up) are inside the shape."""
    if shape == 0:  # square of half-side 0.8
        return np.maximum(np.abs(u), np.abs(v)) <= 0.8
    if shape == 1:  # ellipse, 2:1
        return u**2 + (v / 0.5) ** 2 <= 1.0
    x, y = u * 1.2, v * 1.2 - 0.1  # heart curve (x^2 + y^2 - 1)^3 <= x^2 y^3, spans about [-1, 1]
    return (x**2 + y**2 - 1) ** 3 - x**2 * y**3 <= 0


def render_sprites() -> np.ndarray:
    """(3, 6, 40, 128, 128) bool: every shape, scale and orientation centred on a padded canvas.

    A pixel is set when its centre lies inside the rotated, scaled shape: binary like dSprites, no
    antialiasing. Orientation spans 0..2pi with both ends (as in dSprites, 0 and 2pi are one image).
    """
    side = _CANVAS + 2 * _PAD
    centre = _PAD + _FIRST_CENTRE
    yy, xx = np.mgrid[0:side, 0:side].astype(np.float64) + 0.5
    dx, dy = xx - centre, centre - yy  # y up
    out = np.zeros((3, 6, 40, side, side), dtype=bool)
    for k, scale in enumerate(np.linspace(0.5, 1.0, 6)):
        r = _RADIUS * scale
        for o, theta in enumerate(np.linspace(0.0, 2 * np.pi, 40)):
            c, s = np.cos(theta), np.sin(theta)
            u, v = (c * dx + s * dy) / r, (-s * dx + c * dy) / r
            for shape in range(3):
                out[shape, k, o] = _inside(shape, u, v)
    return out


def generate_shapes(size: int) -> np.ndarray:
    """All 737,280 images of `shapes` at size x size, uint8 (N, size, size).

    64: binary {0, 255}. 32: the 64x64 image averaged over 2x2 blocks (so edges are grey).
    """
    if size not in SHAPES_SIZES:
        raise DataError(f"data.image_size={size}: shapes is rendered at {' or '.join(map(str, SHAPES_SIZES))}")
    out = np.empty((720 * FACTOR_SIZES[3] * FACTOR_SIZES[4], size, size), dtype=np.uint8)
    block = FACTOR_SIZES[3] * FACTOR_SIZES[4]
    for i, images in enumerate(shapes_blocks(size)):
        out[i * block : (i + 1) * block] = images
    return out


def shapes_blocks(size: int) -> Iterator[np.ndarray]:
    """`shapes` one (shape, scale, orientation) at a time, in index order: 720 blocks of uint8 (1024, size, size)."""
    if size not in SHAPES_SIZES:
        raise DataError(f"data.image_size={size}: shapes is rendered at {' or '.join(map(str, SHAPES_SIZES))}")
    sprites = render_sprites().reshape(720, _CANVAS + 2 * _PAD, _CANVAS + 2 * _PAD)
    starts = _PAD - np.arange(FACTOR_SIZES[3])  # moving the centre right/down by p = cutting the window p up-left
    half, parity = starts // 2, starts % 2
    blocks = (_CANVAS + 2 * _PAD) // 2 - 1
    for sprite in sprites:
        if size == 64:
            windows = np.lib.stride_tricks.sliding_window_view(sprite, (_CANVAS, _CANVAS))
            out = windows[starts[None, :], starts[:, None]] * np.uint8(255)  # (pos_x, pos_y, 64, 64)
            yield out.reshape(-1, size, size)
            continue
        # 32x32: a window's 2x2 blocks are the sprite's 2x2 blocks on the grid of the window's parity,
        # so pool once per parity (row b, column a) and cut 32x32 windows from the pooled sprites.
        pooled = np.stack(
            [
                [
                    sprite[b : b + 2 * blocks, a : a + 2 * blocks].reshape(blocks, 2, blocks, 2).sum((1, 3), dtype=np.uint8)
                    for a in (0, 1)
                ]
                for b in (0, 1)
            ]
        )
        windows = np.lib.stride_tricks.sliding_window_view(pooled, (size, size), axis=(2, 3))
        covered = windows[parity[None, :], parity[:, None], half[None, :], half[:, None]]  # 0..4 of each block
        yield _QUARTERS[covered].reshape(-1, size, size)


def _shapes_chunks(size: int, cache_dir: Path, chunk: int) -> Iterator[torch.Tensor]:
    """`shapes` as uint8 (n, 1, size, size) chunks in index order: from the 32x32 cache where it is, else rendered."""
    n = int(np.prod(FACTOR_SIZES))
    path = cache_dir / f"shapes-{size}-v1.npy"
    if size == 32 and path.is_file() and (offset := _npy_data_offset(path, (n, size, size))) is not None:
        with path.open("rb") as f:  # read in order, not mapped: mapped pages would count as the process's memory
            f.seek(offset)
            for i in range(0, n, chunk):
                rows = min(chunk, n - i)
                images = np.fromfile(f, dtype=np.uint8, count=rows * size * size)
                if len(images) != rows * size * size:
                    raise DataError(f"{path} ended while it was read; delete it and it is generated again")
                yield torch.from_numpy(images.reshape(rows, 1, size, size))
        return
    pending: list[np.ndarray] = []
    for block in shapes_blocks(size):
        pending.append(block)
        if sum(map(len, pending)) >= chunk:
            yield torch.from_numpy(np.concatenate(pending)).unsqueeze(1)
            pending = []
    if pending:
        yield torch.from_numpy(np.concatenate(pending)).unsqueeze(1)


def _npy_data_offset(path: Path, shape: tuple[int, ...]) -> int | None:
    """Where the uint8 array of `shape` starts in the .npy file at path; None for a torn or foreign file."""
    try:
        with path.open("rb") as f:
            version = np.lib.format.read_magic(f)
            read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            found, fortran, dtype = read_header(f)
            offset = f.tell()
    except (OSError, ValueError):
        return None
    whole = path.stat().st_size == offset + int(np.prod(shape))
    return offset if found == shape and dtype == np.uint8 and not fortran and whole else None


def shapes_images(size: int, cache_dir: Path) -> torch.Tensor:
    """`shapes` at size, (N, 1, size, size) uint8; the 32x32 set is generated once, then read from cache_dir.

    The 64x64 set is generated each time: 6 s on 2 cores, as long as reading back its 3 GB (or
    unpacking 377 MB of packed bits) took.
    """
    if size != 32:
        return torch.from_numpy(generate_shapes(size)).unsqueeze(1)
    n = int(np.prod(FACTOR_SIZES))
    path = cache_dir / f"shapes-{size}-v1.npy"  # v1: this renderer; a changed renderer gets a new name
    if path.is_file():
        try:
            images = np.load(path, allow_pickle=False)
            if images.shape == (n, size, size) and images.dtype == np.uint8:
                return torch.from_numpy(images).unsqueeze(1)
        except (OSError, ValueError):
            pass  # a torn or foreign cache file: generate again
    images = generate_shapes(size)
    try:
        atomic_write(path, lambda f: np.save(f, images))
    except OSError:
        pass  # no cache (a read-only home): generated again next time, the same images
    return torch.from_numpy(images).unsqueeze(1)
