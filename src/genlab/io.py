"""File output: atomic writes, image grids, arrays. Tensors in [-1, 1] become pictures here only."""

from __future__ import annotations

import io
import math
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
from PIL import Image
from torch import Tensor

_UMASK = os.umask(0)
os.umask(_UMASK)


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: str | Path, write: Callable[[BinaryIO], None]) -> Path:
    """Write a file through write(fileobj) into a temp file beside it, fsync, then rename over path.

    A crash at any moment leaves either the old file or the new one, never a torn one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the file the usual permissions
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
    return path


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    return atomic_write(path, lambda f: f.write(data))


def to_uint8(images: Tensor) -> np.ndarray:
    """(N, C, H, W) in [-1, 1] -> (N, H, W, C) uint8."""
    x = ((images.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).numpy()


def make_grid(images: Tensor, nrow: int | None = None, padding: int = 2) -> np.ndarray:
    """(N, C, H, W) in [-1, 1] -> one (H', W', C) uint8 picture, nrow images a row."""
    pixels = to_uint8(images)
    n, h, w, c = pixels.shape
    nrow = nrow or math.ceil(math.sqrt(n))
    rows = math.ceil(n / nrow)
    grid = np.zeros((rows * (h + padding) + padding, nrow * (w + padding) + padding, c), dtype=np.uint8)
    for i in range(n):
        r, col = divmod(i, nrow)
        top, left = padding + r * (h + padding), padding + col * (w + padding)
        grid[top : top + h, left : left + w] = pixels[i]
    return grid


def picture(array: np.ndarray, scale: int = 1) -> Image.Image:
    """An (H, W, C) uint8 grid as a PIL image, enlarged scale times nearest-neighbour."""
    img = Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array)
    return img.resize((img.width * scale, img.height * scale), Image.NEAREST) if scale > 1 else img


def png_bytes(array: np.ndarray, scale: int = 1) -> bytes:
    img = picture(array, scale)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


MIN_GRID_PIXELS = 512  # grids of small images are enlarged to at least this, so they are visible on a screen
MAX_AUTO_SCALE = 8


def auto_scale(width: int, height: int) -> int:
    """The nearest-neighbour factor that brings a grid's longer side to MIN_GRID_PIXELS (1 if it is there)."""
    return max(1, min(MAX_AUTO_SCALE, math.ceil(MIN_GRID_PIXELS / max(width, height, 1))))


def save_grid(path: str | Path, images: Tensor, nrow: int | None = None, scale: int | None = None) -> Path:
    """Atomically write images in [-1, 1] as a PNG grid, enlarged by scale (None: auto_scale)."""
    grid = make_grid(images, nrow)
    return atomic_write_bytes(path, png_bytes(grid, scale or auto_scale(grid.shape[1], grid.shape[0])))


def save_npy(path: str | Path, images: Tensor) -> Path:
    """Atomically write an (N, C, H, W) float32 array."""
    array = images.detach().float().cpu().numpy()
    return atomic_write(path, lambda f: np.save(f, array))


def save_images(path: str | Path, images: Tensor, nrow: int | None = None, scale: int | None = None) -> Path:
    """PNG grid (enlarged by scale; None: auto_scale) or .npy array (never scaled), by the file's suffix."""
    path = Path(path)
    if path.suffix.lower() == ".npy":
        return save_npy(path, images)
    if path.suffix.lower() != ".png":
        from genlab.errors import GenlabError

        raise GenlabError(f"cannot write {path.name}: the output must end in .png (grid) or .npy (array)")
    return save_grid(path, images, nrow, scale)


def save_gif(path: str | Path, frames: list[Tensor], nrow: int | None = None, scale: int | None = None, ms: int = 120) -> Path:
    """Atomically write an animated GIF: each frame an (N, C, H, W) batch in [-1, 1] laid out as a grid, looping."""
    grids = [make_grid(f, nrow) for f in frames]
    factor = scale or auto_scale(grids[0].shape[1], grids[0].shape[0])
    pictures = [picture(g, factor) for g in grids]

    def write(f: BinaryIO) -> None:
        pictures[0].save(f, format="GIF", save_all=True, append_images=pictures[1:], duration=ms, loop=0)

    return atomic_write(path, write)
